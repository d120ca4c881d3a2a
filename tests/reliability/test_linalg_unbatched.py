"""plasticity_dynamics.linalg: the same values as NumPy float64, and under vmap every LAPACK
custom call sees one matrix (a batched call is what deadlocks XLA:CPU in jaxlib 0.10.2)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticity_dynamics import linalg


def _sym(rng, b, k):
    a = rng.normal(size=(b, k, k))
    return (a + np.swapaxes(a, -1, -2)).astype(np.float32)


def _cases(rng):
    s = _sym(rng, 3, 6)
    spd = np.einsum("bij,bkj->bik", s, s) + 6 * np.eye(6, dtype=np.float32)
    tall = rng.normal(size=(3, 9, 5)).astype(np.float32)
    rhs = rng.normal(size=(3, 6, 2)).astype(np.float32)
    upper = np.triu(rng.normal(size=(3, 5, 5))).astype(np.float32) + 4 * np.eye(5, dtype=np.float32)
    return {
        "eigh": (linalg.eigh, (s,), lambda a: np.linalg.eigh(a.astype(np.float64))[0], lambda out: out[0]),
        "eigvalsh": (linalg.eigvalsh, (s,), lambda a: np.linalg.eigvalsh(a.astype(np.float64)), lambda out: out),
        "qr_r": (linalg.qr_r, (tall,), lambda a: np.abs(np.linalg.qr(a.astype(np.float64), mode="r")),
                 lambda out: np.abs(out)),
        "qr": (linalg.qr, (tall,), lambda a: np.abs(np.linalg.qr(a.astype(np.float64))[1]), lambda out: np.abs(out[1])),
        "svd_values": (linalg.svd_values, (tall,), lambda a: np.linalg.svd(a.astype(np.float64), compute_uv=False),
                       lambda out: out),
        "cho_solve_lower": (linalg.cho_solve_lower, (spd, rhs),
                            lambda a, b: np.linalg.solve(a.astype(np.float64), b), lambda out: out),
        "solve_upper_triangular": (linalg.solve_upper_triangular, (upper, rhs[:, :5]),
                                   lambda r, b: np.linalg.solve(r.astype(np.float64), b), lambda out: out),
    }


@pytest.mark.parametrize("name", ["eigh", "eigvalsh", "qr_r", "qr", "svd_values", "cho_solve_lower",
                                  "solve_upper_triangular"])
def test_vmapped_calls_match_float64_and_lower_to_single_matrix_lapack_calls(name):
    fn, args, oracle, pick = _cases(np.random.default_rng(0))[name]
    f = jax.jit(jax.vmap(fn))
    out = pick(jax.device_get(f(*args)))
    for i in range(args[0].shape[0]):
        want = oracle(*(a[i] for a in args))
        np.testing.assert_allclose(np.asarray(out[i], np.float64), want, rtol=2e-4, atol=2e-4 * np.abs(want).max())
        np.testing.assert_allclose(pick(jax.device_get(fn(*(a[i] for a in args)))), out[i], rtol=1e-5, atol=1e-5)
    hlo = f.lower(*args).as_text()
    calls = [line for line in hlo.splitlines() if "custom_call" in line and "lapack" in line]
    assert calls, "expected a LAPACK custom call in the lowered program"
    for line in calls:  # every call sees one matrix (XLA's batch-dims attribute is 0)
        assert re.search(r'num_batch_dims = "0"', line), line
    # the negative control: jax.numpy's own eigh under vmap is one batched call
    plain = jax.jit(jax.vmap(jnp.linalg.eigh)).lower(_sym(np.random.default_rng(0), 3, 6)).as_text()
    assert 'num_batch_dims = "1"' in plain


def test_unbatched_broadcasts_unbatched_arguments_and_nests():
    rng = np.random.default_rng(1)
    spd = _sym(rng, 1, 4)[0]
    spd = spd @ spd.T + 4 * np.eye(4, dtype=np.float32)
    rhs = rng.normal(size=(2, 3, 4, 1)).astype(np.float32)
    out = jax.vmap(jax.vmap(linalg.cho_solve_lower, in_axes=(None, 0)), in_axes=(None, 0))(spd, rhs)
    want = np.linalg.solve(spd.astype(np.float64), rhs)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-4, atol=1e-5)
    assert jnp.shape(out) == (2, 3, 4, 1)

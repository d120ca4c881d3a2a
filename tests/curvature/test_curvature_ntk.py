"""eNTK spectra (plain and normal) against jax.jacobian + eigh in float64, and churn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _curvature_testkit import (ClonePairManifold, flat64, mlp_apply, mlp_params, normal_data, projector_matrix,
                               unflattener)

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

curv = pdx.curvature
P = mlp_params(0, 3, 6, 4)
X, = normal_data(1, (5, 3))
MAN = ClonePairManifold([(0, 1), (2, 3)], 3, 4)


def fn(p, x):
    return mlp_apply(p, x)


def jac64(p, x):
    """(B C, n) float64 Jacobian of the flattened logits (jax leaf order), by jax.jacobian."""
    with jax.enable_x64(True):
        unflat = unflattener(p)

        def f(vec):
            return mlp_apply(unflat(vec), jnp.asarray(np.asarray(x, np.float64))).reshape(-1)

        return np.asarray(jax.jacobian(f)(jnp.asarray(flat64(p))), np.float64)


def test_ntk_dense_and_lanczos_match_jacobian_eigh():
    j = jac64(P, X)
    ev = np.linalg.eigvalsh(j @ j.T)[::-1]
    s = curv.ntk_spectrum(fn, P, X)
    assert s.method == "dense" and s.size == 20 and s.eigenvalues.shape == (20,)
    assert np.allclose(s.eigenvalues, ev, atol=1e-4 * ev[0])
    p = ev / ev.sum()
    assert s.effective_rank == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-4)
    q = np.sqrt(ev) / np.sqrt(ev).sum()  # LoP-NeurIPS: entropy of J's singular values
    assert s.effective_rank_sv == pytest.approx(np.exp(-np.sum(q * np.log(q))), rel=1e-4)
    assert s.condition_number == pytest.approx(ev[0] / ev[-1], rel=1e-2)
    assert s.trace == pytest.approx(np.sum(j * j), rel=1e-5)
    lz = curv.ntk_spectrum(fn, P, X, k=4, method="lanczos")
    assert lz.method == "lanczos" and lz.eigenvalues.shape == (4,)
    assert np.allclose(lz.eigenvalues, ev[:4], rtol=1e-4)
    assert lz.condition_number == pytest.approx(ev[0] / ev[3], rel=1e-3)


def test_normal_ntk_is_j_pn_jt():
    j = jac64(P, X)
    pn = projector_matrix(MAN.normal, P)
    ev = np.clip(np.linalg.eigvalsh(j @ pn @ j.T)[::-1], 0, None)
    s = curv.ntk_spectrum(fn, P, X, manifold=MAN)
    assert np.allclose(s.eigenvalues, ev, atol=1e-4 * ev[0])
    # rank of J P_N J^T is at most normal_dim = 2 (3 + 1 + 4) = 16 < 20: singular kernel
    assert s.condition_number == np.inf


def test_ntk_bad_input_is_one_line_error():
    with pytest.raises(InputError, match="k=0"):
        curv.ntk_spectrum(fn, P, X, k=0)
    with pytest.raises(InputError, match=r"shape \(5, 2, 2\)"):
        curv.ntk_spectrum(lambda p, x: fn(p, x).reshape(5, 2, 2), P, X)
    with pytest.raises(InputError, match="method='qr'"):
        curv.ntk_spectrum_fn(fn, method="qr")


def test_churn_matches_numpy_formulas():
    after = jax.tree.map(lambda a: a + 0.05, P)
    a, b = np.asarray(fn(P, X), np.float64), np.asarray(fn(after, X), np.float64)
    ch = pdx.metrics.churn
    assert float(ch(fn, P, after, X)) == pytest.approx(np.mean(np.abs(b - a)), rel=1e-5)
    assert float(ch(fn, P, after, X, kind="l2")) == pytest.approx(np.mean(np.linalg.norm(b - a, axis=1)), rel=1e-5)
    la = a - np.log(np.sum(np.exp(a), 1, keepdims=True))
    lb = b - np.log(np.sum(np.exp(b), 1, keepdims=True))
    kl = np.mean(np.sum(np.exp(la) * (la - lb), 1))
    assert float(ch(fn, P, after, X, kind="kl")) == pytest.approx(kl, rel=1e-3, abs=1e-7)
    flip = np.mean(np.argmax(a, 1) != np.argmax(b, 1))
    assert float(ch(fn, P, after, X, kind="flip")) == pytest.approx(flip)
    assert float(ch(fn, P, after, X, kind="sq")) == pytest.approx(np.mean((b - a) ** 2), rel=1e-5)  # LoP-NeurIPS
    assert float(ch(fn, P, P, X)) == 0.0
    with pytest.raises(InputError, match="kind='mse'"):
        ch(fn, P, after, X, kind="mse")


def test_summed_output_kernel_is_lop_neurips_per_example_ntk():
    """LoP-NeurIPS's eNTK: rows = gradient of each example's summed outputs, K = G G^T (B, B);
    ntk_spectrum of the summed-output fn gives its eigenvalues and singular-value entropy rank."""
    j = jac64(P, X)  # (B C, n), example-major rows
    b = np.asarray(X).shape[0]
    g = j.reshape(b, -1, j.shape[1]).sum(1)  # per-example gradient of the summed outputs
    ev = np.linalg.eigvalsh(g @ g.T)[::-1]
    s = curv.ntk_spectrum(lambda p, x: fn(p, x).sum(-1, keepdims=True), P, X)
    assert s.size == b and np.allclose(s.eigenvalues, ev, atol=1e-4 * ev[0])
    q = np.sqrt(np.clip(ev, 0, None)) / np.sqrt(np.clip(ev, 0, None)).sum()
    q = q[q > 0]
    assert s.effective_rank_sv == pytest.approx(np.exp(-np.sum(q * np.log(q))), rel=1e-4)

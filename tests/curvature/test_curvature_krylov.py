"""Lanczos and Arnoldi on explicit matrices: exactness at full depth, breakdown, convergence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

curv = pdx.curvature
N = 48


def _sym(eigs, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigs), len(eigs))))
    return q @ np.diag(eigs) @ q.T


@jax.jit
def _lanczos_full(a, v0):
    return curv.lanczos(lambda x: a @ x, v0, N)


def test_lanczos_full_depth_is_exact_and_error_falls_with_depth():
    eigs = np.r_[np.linspace(-3.0, -0.5, 8), np.linspace(0.1, 1.0, 32), np.linspace(2.0, 6.0, 8)]
    a = _sym(eigs)
    v0 = np.random.default_rng(1).standard_normal(N)
    res = _lanczos_full(jnp.asarray(a, jnp.float32), jnp.asarray(v0, jnp.float32))
    assert int(res.depth) == N
    theta, coeffs, est = curv.lanczos_ritz(res)
    assert np.max(np.abs(theta - np.sort(eigs))) <= 1e-5 * 6.0
    # basis stays orthonormal with full reorthogonalisation
    v = np.asarray(res.basis, np.float64)
    assert np.max(np.abs(v @ v.T - np.eye(N))) <= 1e-5
    # depth-m runs are the leading blocks; the extreme-eigenvalue error shrinks with m
    errs = []
    for m in (2, 4, 8, 16, 32):
        t, _, _ = curv.lanczos_ritz(curv.LanczosResult(res.alphas[:m], res.betas[:m], res.basis[:m], m))
        errs.append(max(abs(t[0] - eigs.min()), abs(t[-1] - eigs.max())))
    assert np.all(np.diff(errs) <= 1e-6) and errs[-1] < 1e-3 * errs[0], errs
    # Paige's estimates match explicit residuals (float64 from the returned basis)
    m = 16
    t, c, e = curv.lanczos_ritz(curv.LanczosResult(res.alphas[:m], res.betas[:m], res.basis[:m], m))
    y = v[:m].T @ c
    assert np.allclose(e, np.linalg.norm(a @ y - y * t, axis=0), atol=1e-5 * 6.0)


def test_lanczos_breakdown_stops_at_the_number_of_distinct_eigenvalues():
    eigs = np.repeat([-1.0, 0.5, 2.0], 16)  # a random start spans a 3-dim invariant subspace
    a = _sym(eigs, seed=2)
    v0 = np.random.default_rng(3).standard_normal(N)
    res = _lanczos_full(jnp.asarray(a, jnp.float32), jnp.asarray(v0, jnp.float32))
    assert int(res.depth) == 3
    theta, _, est = curv.lanczos_ritz(res)
    assert np.allclose(theta, [-1.0, 0.5, 2.0], atol=1e-5)
    assert np.all(np.asarray(res.basis)[3:] == 0)


def test_arnoldi_finds_the_dominant_complex_pair_and_is_exact_at_full_depth():
    # block-diagonal real matrix: a rotation-scaling block (eigenvalues 1.2 e^{+-0.3i}) and a
    # random symmetric part with spectrum in [-0.9, 0.9], conjugated by a random orthogonal Q
    rng = np.random.default_rng(4)
    r, phi = 1.2, 0.3
    blk = r * np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    d = np.zeros((20, 20))
    d[:2, :2] = blk
    d[2:, 2:] = np.diag(np.linspace(-0.9, 0.9, 18))
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    a = q @ d @ q.T
    run = jax.jit(lambda m, v: curv.arnoldi(lambda x: m @ x, v, 20))
    res = run(jnp.asarray(a, jnp.float32), jnp.asarray(rng.standard_normal(20), jnp.float32))
    vals = curv.arnoldi_ritz(res)
    assert abs(abs(vals[0]) - r) <= 1e-5 and abs(abs(vals[1]) - r) <= 1e-5
    assert abs(abs(np.angle(vals[0])) - phi) <= 1e-5
    want = np.sort_complex(np.linalg.eigvals(a))
    assert np.allclose(np.sort_complex(vals), want, atol=1e-4)


def test_krylov_input_checks():
    with pytest.raises(InputError, match="num_iters"):
        curv.lanczos(lambda x: x, jnp.ones(4), 0)
    with pytest.raises(InputError, match="5\\*k < n"):
        curv.lobpcg_lowest(lambda x: x, jnp.ones((8, 2)), shift=1.0)

"""KPM and SLQ densities converging to the dense eigenvalue distribution, Hutch++ against
Hutchinson at equal HVP counts, principal angles against SciPy, block spectra against the
dense block of a float64 Hessian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from _curvature_testkit import (ClonePairManifold, dense_hessian64, mlp_params, mse_loss, normal_data,
                                projector_matrix)

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

curv = pdx.curvature
N = 160
RNG = np.random.default_rng(7)
_Q, _ = np.linalg.qr(RNG.standard_normal((N, N)))
# a Hessian-like spectrum: a bulk near zero of both signs plus a few outliers
EIGS = np.r_[RNG.gamma(1.0, 0.5, 110) - 0.2, 4 + 0.5 * RNG.standard_normal(45), [12, 15, 20, 30, 45]]
A = jnp.asarray(_Q @ np.diag(EIGS) @ _Q.T, jnp.float32)
P = {"x": jnp.zeros(N, jnp.float32)}
GRID = np.linspace(EIGS.min() - 2, EIGS.max() + 2, 6000)
TRUE_CDF = np.searchsorted(np.sort(EIGS), GRID, side="right") / N


def quad(p, a):
    return 0.5 * p["x"] @ a @ p["x"]


def w1_kpm(d):
    k = curv.kpm_density(quad, P, args=(A,), num_iters=d, num_probes=16, grid=GRID)
    cdf = np.cumsum(k.density) * (GRID[1] - GRID[0])
    return np.trapezoid(np.abs(cdf - TRUE_CDF), GRID), k


def w1_slq(m):
    s = curv.slq_density(quad, P, args=(A,), num_iters=m, num_probes=16)
    nodes, w = s.nodes.ravel(), s.weights.ravel() / 16
    # right-continuous step CDF of the quadrature measure (interp would smear it)
    cdf = np.array([w[nodes <= g].sum() for g in GRID[::10]])
    return np.trapezoid(np.abs(cdf - TRUE_CDF[::10]), GRID[::10])


@pytest.mark.slow
def test_kpm_and_slq_wasserstein_distance_falls_with_degree():
    kpm = [w1_kpm(d)[0] for d in (8, 32, 128)]
    slq = [w1_slq(m) for m in (4, 16, 64)]
    assert kpm[0] > kpm[1] > kpm[2] and kpm[2] < 0.35 * kpm[0], kpm
    assert slq[0] > slq[1] > slq[2] and slq[2] < 0.35 * slq[0], slq


def test_kpm_density_bounds_trace_and_positivity():
    w1, k = w1_kpm(48)
    assert w1 < 1.0  # 0.66 measured (12.4 at degree 8, 0.26 at 128: the slow test above)
    lo, hi = k.bounds
    assert lo <= EIGS.min() and hi >= EIGS.max()  # Lanczos-estimated bounds enclose the spectrum
    assert k.trace == pytest.approx(EIGS.sum(), rel=0.1)
    assert np.trapezoid(k.density, GRID) == pytest.approx(1.0, abs=0.02)
    assert np.all(k.density > -1e-6)  # Jackson damping keeps it non-negative
    with pytest.raises(InputError, match="num_iters=1"):
        curv.kpm_density(quad, P, args=(A,), num_iters=1)


# power-law decay (the regime of Meyer et al.'s analysis and of network Hessians' top end)
DECAY = 50.0 * np.arange(1, N + 1) ** -1.5
A_DECAY = jnp.asarray(_Q @ np.diag(DECAY) @ _Q.T, jnp.float32)


def test_hutchpp_has_lower_variance_than_hutchinson_at_equal_matvecs():
    """Measured over 24 keys at 30 HVPs each on a power-law spectrum: Hutch++ deflates the
    top 10 eigenvalues exactly and must beat Hutchinson's variance by at least 3x."""
    keys = [jax.random.PRNGKey(i) for i in range(24)]
    h = np.array([curv.hutchinson_trace(quad, P, args=(A_DECAY,), num_samples=30, key=k).estimate
                  for k in keys])
    pp = np.array([curv.hutchpp_trace(quad, P, args=(A_DECAY,), num_samples=30, key=k).estimate
                   for k in keys])
    assert abs(pp.mean() - DECAY.sum()) < 4 * pp.std(ddof=1) / np.sqrt(24) + 1e-4 * DECAY.sum()
    assert pp.var(ddof=1) < h.var(ddof=1) / 3, (pp.var(ddof=1), h.var(ddof=1))
    with pytest.raises(InputError, match="num_samples=2"):
        curv.hutchpp_trace(quad, P, args=(A,), num_samples=2)


def test_principal_angles_match_scipy_subspace_angles():
    rng = np.random.default_rng(0)
    u = np.linalg.qr(rng.standard_normal((30, 4)))[0]
    v = np.linalg.qr(rng.standard_normal((30, 6)))[0]
    want = np.sort(scipy.linalg.subspace_angles(u, v))
    assert np.allclose(curv.principal_angles(u, v), want, atol=1e-10)
    assert np.allclose(curv.principal_angles(u.T, v.T), want, atol=1e-10)  # rows convention
    # nearly equal subspaces: small angles are accurate (sine formula)
    w = np.linalg.qr(u + 1e-7 * rng.standard_normal(u.shape))[0]
    assert np.allclose(curv.principal_angles(u, w), np.sort(scipy.linalg.subspace_angles(u, w)), atol=1e-12)
    # eigenvector pytrees (leading axis k)
    tu = {"a": jnp.asarray(u.T[:, :10]), "b": jnp.asarray(u.T[:, 10:].reshape(4, 4, 5))}
    tv = {"a": jnp.asarray(v.T[:, :10]), "b": jnp.asarray(v.T[:, 10:].reshape(6, 4, 5))}
    assert np.allclose(curv.principal_angles(tu, tv), want, atol=1e-6)
    with pytest.raises(InputError, match="dimension 30 vs 29"):
        curv.principal_angles(u, v[:29])


def _block_setup():
    p = mlp_params(0, 3, 5, 2)
    x, y = normal_data(1, (6, 3), (6, 2))
    make = mse_loss()

    def loss(p, x, y):
        return make(x, y)(p)

    return p, x, y, loss, dense_hessian64(make, p, x, y)  # flat order b1 (5), b2 (2), w1 (15), w2 (10)


def test_block_spectrum_matches_dense_block():
    p, x, y, loss, h = _block_setup()
    sp = curv.block_spectrum(loss, p, "w2", k=3, args=(x, y))
    ev = np.linalg.eigvalsh(h[22:, 22:])
    assert np.allclose(sp.eigenvalues, np.r_[ev[:3], ev[-3:]], atol=1e-5)
    assert curv.layer_names(p) == ["b1", "b2", "w1", "w2"]
    with pytest.raises(InputError, match="match no parameter"):
        curv.layer_mask(p, "conv")


@pytest.mark.slow
def test_layer_restricted_normal_spectrum_matches_dense():
    """The normal block of a clone manifold restricted to w1: M P_N H P_N M on N ∩ w1."""
    p, x, y, loss, h = _block_setup()
    man = ClonePairManifold([(0, 1), (2, 4)], 3, 2)
    restr = curv.BlockRestriction(curv.layer_mask(p, "w1"), man)
    assert restr.normal_dim == 6  # 2 pairs x 3 inputs
    pm = projector_matrix(restr.normal, p)
    w, vecs = np.linalg.eigh(pm)
    basis = vecs[:, w > 0.5]
    want = np.linalg.eigvalsh(basis.T @ h @ basis)
    got = curv.block_spectrum(loss, p, "w1", man, k=3, args=(x, y))
    assert got.normal_dim == 6 and np.allclose(got.eigenvalues, want, atol=1e-5)
    assert curv.BlockRestriction(curv.layer_mask(p, "b2"), man).normal_dim == 0  # skipped by layer_spectra

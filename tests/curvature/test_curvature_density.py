"""Hutchinson traces and stochastic Lanczos quadrature against exact spectra."""

import jax.numpy as jnp
import numpy as np

from _curvature_testkit import CoordinateManifold

import plasticity_dynamics as pdx

curv = pdx.curvature
N, DN = 40, 12
RNG = np.random.default_rng(0)
EIGS = np.r_[np.linspace(-2.0, -0.5, 6), np.linspace(0.0, 1.0, 24), np.linspace(3.0, 5.0, 10)]
_Q, _ = np.linalg.qr(RNG.standard_normal((N, N)))
A_DENSE = _Q @ np.diag(EIGS) @ _Q.T
A_DIAG = np.diag(EIGS)
PARAMS = {"x": jnp.asarray(RNG.standard_normal(N), jnp.float32)}
MAN = CoordinateManifold({"x": np.r_[np.ones(DN), np.zeros(N - DN)]}, PARAMS)


def quad(p, a):
    return 0.5 * p["x"] @ a @ p["x"]


def test_hutchinson_is_exact_for_diagonal_and_unbiased_otherwise():
    # Rademacher z: z^T D z = tr(D) for every probe when D is diagonal
    t = curv.hutchinson_trace(quad, PARAMS, num_samples=4, args=(jnp.asarray(A_DIAG, jnp.float32),))
    assert np.allclose(t.samples, EIGS.sum(), rtol=1e-5)
    tn = curv.hutchinson_trace(quad, PARAMS, num_samples=4, manifold=MAN,
                               args=(jnp.asarray(A_DIAG, jnp.float32),))
    assert np.allclose(tn.samples, EIGS[:DN].sum(), rtol=1e-5)
    # dense A: mean within 4 standard errors; stderr matches the closed-form variance
    a = jnp.asarray(A_DENSE, jnp.float32)
    est = curv.hutchinson_trace(quad, PARAMS, num_samples=400, args=(a,))
    sd = np.sqrt(2 * (np.sum(A_DENSE ** 2) - np.sum(np.diag(A_DENSE) ** 2)))
    assert abs(est.estimate - EIGS.sum()) <= 4 * sd / np.sqrt(400)
    assert 0.8 < est.stderr / (sd / np.sqrt(400)) < 1.2
    sub = A_DENSE[:DN, :DN]
    estn = curv.hutchinson_trace(quad, PARAMS, num_samples=400, manifold=MAN, args=(a,))
    sdn = np.sqrt(2 * (np.sum(sub ** 2) - np.sum(np.diag(sub) ** 2)))
    assert abs(estn.estimate - np.trace(sub)) <= 4 * sdn / np.sqrt(400)


def _w1(nodes, weights, nodes2, weights2):
    """1-Wasserstein distance between two weighted discrete measures (normalised)."""
    x = np.r_[nodes, nodes2]
    w = np.r_[weights / weights.sum(), -weights2 / weights2.sum()]
    order = np.argsort(x)
    cdf = np.cumsum(w[order])
    return float(np.sum(np.abs(cdf[:-1]) * np.diff(x[order])))


def test_slq_quadrature_is_exact_for_low_degree_moments_and_converges_in_distribution():
    a = jnp.asarray(A_DENSE, jnp.float32)
    dens = curv.slq_density(quad, PARAMS, num_iters=N, num_probes=6, args=(a,))
    assert dens.dim == N
    # depth = n: each probe's Gauss rule is exact for every polynomial, so the nodes are the
    # eigenvalues and per-probe weights sum to 1 (Rademacher probes have |z|^2 = n)
    for p in range(6):
        used = dens.weights[p] > 1e-10
        gap = np.abs(dens.nodes[p][used][:, None] - EIGS[None]).min(axis=1)
        assert np.all(gap <= 1e-4) and used.sum() >= N - 2
        assert abs(dens.weights[p].sum() - 1) <= 1e-5
    # the smoothed density integrates to 1 and the trace estimate is within Hutchinson's error
    assert abs(np.trapezoid(dens.density, dens.grid) - 1) <= 1e-3
    sd = np.sqrt(2 * (np.sum(A_DENSE ** 2) - np.sum(np.diag(A_DENSE) ** 2)))
    assert abs(dens.trace - EIGS.sum()) <= 4 * sd / np.sqrt(6)
    # shallow quadrature converges to the same probes' exact measure as the depth grows (same
    # key, same probes): the 1-Wasserstein distance falls with m
    ref = (dens.nodes.ravel(), dens.weights.ravel())
    w = [_w1(d.nodes.ravel(), d.weights.ravel(), *ref) for d in
         (curv.slq_density(quad, PARAMS, num_iters=m, num_probes=6, args=(a,)) for m in (2, 6, 20))]
    assert w[0] > w[1] > w[2] and w[2] < 0.1 * w[0], w


def test_slq_on_the_normal_block():
    a = jnp.asarray(A_DENSE, jnp.float32)
    dens = curv.slq_density(quad, PARAMS, num_iters=DN, num_probes=4, manifold=MAN, args=(a,))
    want = np.linalg.eigvalsh(A_DENSE[:DN, :DN])
    assert dens.dim == DN
    used = dens.weights > 1e-12
    assert dens.nodes[used].min() >= want[0] - 1e-4 and dens.nodes[used].max() <= want[-1] + 1e-4
    # with depth = normal_dim every probe's nodes are the block's eigenvalues
    assert np.allclose(np.sort(dens.nodes[0][used[0]]), want, atol=1e-4)

"""Rank metrics on matrices with known spectra (U diag(s) V^T) and against NumPy SVD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.metrics.ranks import default_route

m = pdx.metrics


def _with_spectrum(rng, n, d, s):
    u, _ = np.linalg.qr(rng.normal(size=(n, len(s))))
    v, _ = np.linalg.qr(rng.normal(size=(d, len(s))))
    return (u * np.asarray(s)) @ v.T


def _np_ranks(h, frac=0.99, centred=False):
    h = np.asarray(h, np.float64)
    if centred:
        h = h - h.mean(0)
    s = np.linalg.svd(h, compute_uv=False)
    s = s[s > 1e-6 * s.max()] if s.max() > 0 else s[:0]
    p = s / s.sum()
    lam = s**2
    return {
        "effective_rank": np.exp(-np.sum(p * np.log(p))),
        "participation": lam.sum() ** 2 / np.sum(lam**2),
        "srank": int(np.searchsorted(np.cumsum(s) / s.sum(), frac) + 1),
        "approx": int(np.searchsorted(np.cumsum(lam) / lam.sum(), frac) + 1),
        "hard": len(s),
    }


def test_known_spectrum_closed_forms():
    rng = np.random.default_rng(0)
    s = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    h = _with_spectrum(rng, 200, 30, s).astype(np.float32)
    p = s / s.sum()
    assert float(m.effective_rank(h)) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-4)
    assert float(m.renyi2_rank(h)) == pytest.approx(np.sum(s**2) ** 2 / np.sum(s**4), rel=1e-4)
    assert int(m.hard_rank(h)) == 6
    # srank at 0.9: cumulative sigma mass 5/15.5, 9/15.5, 12/15.5, 14/15.5=0.903 -> k = 4
    assert int(m.srank(h, 0.9)) == 4
    # approximate rank at 0.9 on sigma^2: 25, 41, 50, 54, 55, 55.25 of 55.25 -> 50/55.25=0.905 -> k = 3
    assert int(m.approximate_rank(h, 0.9)) == 3
    np.testing.assert_allclose(np.asarray(m.singular_values(h))[:7], np.r_[s, 0.0], rtol=1e-4, atol=1e-5)


def test_equal_spectrum_gives_exact_rank():
    rng = np.random.default_rng(1)
    h = _with_spectrum(rng, 50, 120, np.ones(7)).astype(np.float32)  # wide: Gram of the rows
    for f in (m.effective_rank, m.renyi2_rank):
        assert float(f(h)) == pytest.approx(7.0, rel=1e-4)
    assert int(m.srank(h)) == 7 and int(m.approximate_rank(h)) == 7 and int(m.hard_rank(h)) == 7


def test_stable_rank_is_centred():
    rng = np.random.default_rng(2)
    h = _with_spectrum(rng, 300, 20, [3.0, 2.0, 1.0]) + 50.0  # a huge mean direction
    h = h.astype(np.float32)
    want = _np_ranks(h, centred=True)["participation"]
    assert float(m.stable_rank(h)) == pytest.approx(want, rel=1e-3)
    assert float(m.renyi2_rank(h)) < 1.01  # uncentred: dominated by the mean


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_numpy_svd_on_random_matrices(seed):
    rng = np.random.default_rng(seed)
    n, d = (300, 40) if seed != 1 else (25, 60)
    h = (rng.normal(size=(n, 8)) @ rng.normal(size=(8, d)) + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
    h = np.maximum(h, 0)  # a ReLU-like layer
    want = _np_ranks(h)
    assert float(m.effective_rank(h)) == pytest.approx(want["effective_rank"], rel=1e-3)
    assert float(m.renyi2_rank(h)) == pytest.approx(want["participation"], rel=1e-3)
    assert float(m.stable_rank(h)) == pytest.approx(_np_ranks(h, centred=True)["participation"], rel=1e-3)
    assert abs(int(m.srank(h)) - want["srank"]) <= 1  # a threshold on a cumulative sum
    assert abs(int(m.approximate_rank(h)) - want["approx"]) <= 1
    assert int(m.hard_rank(h)) == want["hard"]


def test_subsampling_is_seeded_and_bounded():
    rng = np.random.default_rng(3)
    h = _with_spectrum(rng, 3000, 16, np.linspace(1, 4, 16)).astype(np.float32)
    a = float(m.effective_rank(h, max_rows=1024, seed=5))
    assert a == float(m.effective_rank(h, max_rows=1024, seed=5))
    assert a != float(m.effective_rank(h, max_rows=1024, seed=6))
    assert a == pytest.approx(_np_ranks(h)["effective_rank"], rel=0.02)
    assert np.asarray(m.singular_values(h, max_rows=100)).shape == (16,)
    assert np.asarray(m.singular_values(h[:, :4].T.copy(), max_rows=3)).shape == (3,)


def test_degenerate_layers_give_defined_values():
    zeros, ones = jnp.zeros((40, 8)), jnp.full((40, 8), 0.1)
    for f in (m.effective_rank, m.renyi2_rank, m.stable_rank, m.srank, m.approximate_rank, m.hard_rank):
        assert float(f(zeros)) == 0.0
        assert np.isfinite(float(f(ones)))
    assert float(m.effective_rank(ones)) == pytest.approx(1.0)
    assert int(m.hard_rank(ones)) == 1 and int(m.srank(ones)) == 1
    assert float(m.stable_rank(ones)) == 0.0  # centred constant = zero matrix
    big = jnp.full((40, 8), 1e30).at[0, 0].set(2e30)  # no overflow in the Gram matrix
    assert np.isfinite(float(m.effective_rank(big))) and float(m.effective_rank(big)) >= 1.0


def test_vmap_over_seeds():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    hs = jax.vmap(lambda k: jax.random.normal(k, (64, 5)) @ jnp.diag(jnp.array([1.0, 1, 1, 0, 0])))(keys)
    hard, er = jax.jit(jax.vmap(lambda h: (m.hard_rank(h), m.effective_rank(h))))(hs)
    np.testing.assert_array_equal(np.asarray(hard), [3, 3, 3])
    for h, e in zip(hs, np.asarray(er)):
        s = np.linalg.svd(np.asarray(h, np.float64), compute_uv=False)[:3]
        assert e == pytest.approx(np.exp(-np.sum(s / s.sum() * np.log(s / s.sum()))), rel=1e-4)


@pytest.mark.parametrize("shape", [(200, 30), (20, 64)])
def test_wide_dynamic_range_and_dead_units(shape):
    """Singular values spanning 4 decades next to exact zeros (dead units): one float32 eigh of
    the Gram matrix only resolves sigma down to sqrt(eps) sigma_max ~ 3e-4; the refined route
    must give each sigma to ~1e-3 relative and the exact hard rank."""
    rng = np.random.default_rng(4)
    n, d = shape
    s = np.logspace(0, -4, 9)
    h = _with_spectrum(rng, n, d - 3, s)
    h = np.concatenate([h, np.zeros((n, 3))], axis=1).astype(np.float32)  # 3 dead units
    want = np.linalg.svd(h.astype(np.float64), compute_uv=False)
    got = np.asarray(m.singular_values(h))
    np.testing.assert_allclose(got[:9], want[:9], rtol=2e-3)
    assert np.all(got[9:] == 0.0)
    assert int(m.hard_rank(h)) == 9
    assert float(m.effective_rank(h)) == pytest.approx(_np_ranks(h)["effective_rank"], rel=1e-4)


@pytest.mark.parametrize("route", ["qr", "gram"])
@pytest.mark.parametrize("shape", [(400, 48), (30, 64)])
def test_layer_factors_both_routes_match_float64(route, shape):
    """One factorisation per layer: singular values and both Gram matrices, on either route,
    against NumPy float64 from their definitions (a ReLU layer with dead units, a constant
    unit, a clone pair, a large mean and singular values spanning 4 decades)."""
    rng = np.random.default_rng(7)
    n, d = shape
    h = _with_spectrum(rng, n, d, np.logspace(0, -4, min(n, d) // 2)) * 40 + 1.5
    h = np.maximum(h, 0)
    h[:, :3] = 0.0  # dead
    h[:, 3] = 2.0  # constant
    h[:, 5] = h[:, 4]  # clones
    h = h.astype(np.float32)
    f = jax.jit(lambda a: m.layer_factors(a, route))(h)
    h64 = h.astype(np.float64) / float(f.scale)
    s64 = np.linalg.svd(h64, compute_uv=False)
    sig = np.asarray(f.sigma, np.float64)
    assert float(f.scale) == pytest.approx(np.abs(h).max())
    assert np.max(np.abs(sig - s64)) <= 2e-5 * s64[0]
    assert float(f.floor) < 1e-4 * s64[0]  # resolves the 4 decades
    g64 = h64.T @ h64
    c64 = h64 - h64.mean(0)
    c64[:, :4] = 0.0  # constant columns centre to exactly zero
    gc64 = c64.T @ c64
    for got, want in ((f.gram, g64), (f.gram_centred, gc64)):
        norms = np.sqrt(np.outer(np.diag(want), np.diag(want)))
        assert np.all(np.abs(np.asarray(got, np.float64) - want) <= 1e-5 * norms + 1e-7 * np.abs(want).max())
    assert np.all(np.asarray(f.gram_centred)[:, 3] == 0.0)
    er = float(pdx.metrics.metrics_from_arrays({"L": h}, layer_kinds={"L": "dense"})["effective_rank"]["L"])
    p = s64[s64 > 1e-6 * s64[0]] / s64[s64 > 1e-6 * s64[0]].sum()
    assert er == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=2e-5)


def test_default_route_picks_gram_for_tall_large_matrices_on_cpu():
    """On CPU the default route follows the shape ("gram" when N >= 8 D and N D >= 2^19, where
    its matrix products use every core); the default factors are that route's, and they match
    float64 on a tall, large layer with dead, constant and cloned units."""
    if jax.default_backend() != "cpu":
        pytest.skip("the shape rule is the CPU default")
    assert default_route((1000, 512)) == "qr"  # not tall
    assert default_route((4096, 64)) == "qr"  # tall, but 2^18 entries
    assert default_route((16384, 32)) == "gram"  # tall and 2^19 entries
    assert default_route((8 * 512 - 1, 512)) == "qr"  # one row short of 8 D
    assert default_route(None) == "qr"
    rng = np.random.default_rng(3)
    n, d = 16384, 40
    h = np.maximum(_with_spectrum(rng, n, d, np.logspace(0, -4, d // 2)) * 40 + 1.5, 0)
    h[:, :3] = 0.0
    h[:, 3] = 2.0
    h[:, 5] = h[:, 4]
    h = h.astype(np.float32)
    assert default_route(h.shape) == "gram"
    default = jax.jit(lambda a: m.layer_factors(a))(h)
    gram = jax.jit(lambda a: m.layer_factors(a, "gram"))(h)
    for a, b in zip(default, gram):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    s64 = np.linalg.svd(h.astype(np.float64) / float(default.scale), compute_uv=False)
    assert np.max(np.abs(np.asarray(default.sigma, np.float64) - s64)) <= 2e-5 * s64[0]

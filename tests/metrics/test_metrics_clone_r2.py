"""Cloning R^2: exact clones, independent units, NumPy oracles of both definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

m = pdx.metrics


def _np_r2(h, part, adjusted=True):
    h = np.asarray(h, np.float64)
    n, d = h.shape
    blocks = np.unique(part)
    res = 0.0
    for b in blocks:
        cols = h[:, part == b]
        res += np.sum((cols - cols.mean(1, keepdims=True)) ** 2)
    tot = np.sum((h - h.mean(1, keepdims=True)) ** 2)
    if adjusted:
        res /= d - len(blocks)
        tot /= d - 1
    return 1 - res / tot


def _np_std_ratio(h, part):
    h = np.asarray(h, np.float64)
    std_all = h.std(1, ddof=1)
    ratios = []
    for b in np.unique(part):
        cols = h[:, part == b]
        if cols.shape[1] > 1:
            ratios.append(cols.std(1, ddof=1) / (std_all + 1e-10))
    return 1 - np.mean(np.stack(ratios))


def test_interleaved_partition_layout():
    np.testing.assert_array_equal(m.interleaved_partition(6, 2), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(m.interleaved_partition(6, 3), [0, 0, 0, 1, 1, 1])
    with pytest.raises(InputError, match="multiple"):
        m.interleaved_partition(7, 2)


def test_exact_clones_give_one_and_independent_units_near_zero():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(256, 16)).astype(np.float32)
    cloned = np.repeat(base, 2, axis=1)  # interleaved layout k*E + c
    part = m.interleaved_partition(32, 2)
    assert float(m.clone_r2(cloned, part)) == pytest.approx(1.0, abs=1e-6)
    assert float(m.clone_r2_std_ratio(cloned, part)) == pytest.approx(1.0, abs=1e-6)
    indep = rng.normal(size=(256, 32)).astype(np.float32)
    assert abs(float(m.clone_r2(indep, part))) < 0.05
    # plain SS ratio: (blocks - 1) / (units - 1) for independent units
    assert float(m.clone_r2(indep, part, adjusted=False)) == pytest.approx(15 / 31, abs=0.05)
    # partial cloning: a perturbation of size s gives R^2 ~ 1 - s^2 / (1 + s^2 / 2) ... just monotone
    r = [float(m.clone_r2(cloned + s * rng.normal(size=cloned.shape), part)) for s in (0.01, 0.1, 1.0)]
    assert r[0] > r[1] > r[2] and r[0] > 0.999


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_numpy_on_random_partitions(seed):
    rng = np.random.default_rng(seed)
    d = 20
    part = rng.integers(0, 7, size=d).astype(np.int32)
    part[:2] = [0, 0]  # at least one non-singleton block
    centre = rng.normal(size=(64, d))
    h = (centre[:, part] + 0.3 * rng.normal(size=(64, d))).astype(np.float32)
    assert float(m.clone_r2(h, part)) == pytest.approx(_np_r2(h, part), rel=1e-4, abs=1e-5)
    assert float(m.clone_r2(h, part, adjusted=False)) == pytest.approx(_np_r2(h, part, False), rel=1e-4)
    assert float(m.clone_r2_std_ratio(h, part)) == pytest.approx(_np_std_ratio(h, part), rel=1e-4, abs=1e-5)


def test_degenerate_layers_are_finite():
    part = m.interleaved_partition(8, 2)
    for h in (jnp.zeros((10, 8)), jnp.ones((10, 8)), jnp.tile(jnp.arange(10.0)[:, None], (1, 8))):
        assert float(m.clone_r2(h, part)) == 1.0
        assert np.isfinite(float(m.clone_r2_std_ratio(h, part)))
    assert float(m.clone_r2(np.random.default_rng(0).normal(size=(5, 4)), np.arange(4))) == 1.0  # singletons


def test_vmap_over_seeds_and_traced_partition():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    part = jnp.asarray(m.interleaved_partition(12, 3))
    hs = jax.vmap(lambda k: jnp.repeat(jax.random.normal(k, (30, 4)), 3, axis=1))(keys)
    got = jax.jit(jax.vmap(m.clone_r2, in_axes=(0, None)))(hs, part)
    np.testing.assert_allclose(np.asarray(got), 1.0, atol=1e-6)


def test_bad_partition():
    with pytest.raises(InputError, match="partition"):
        m.clone_r2(jnp.ones((3, 4)), np.arange(3))
    with pytest.raises(InputError, match="block ids"):
        m.clone_r2(jnp.ones((3, 4)), np.array([0, 1, 2, 9]))

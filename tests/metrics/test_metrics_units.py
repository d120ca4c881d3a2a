"""Unit activity criteria: planted units found exactly, NumPy oracles, degenerate layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

m = pdx.metrics


def _planted(rng, n=400, d=12):
    """Positive activations with planted units: 0 dead (all zero), 1 dead up to 3 % noise,
    2 never-active, 3 active on 0.5 % of samples, 4 tiny (dormant), 5 active on 6 % (not dead)."""
    h = rng.uniform(0.5, 2.0, size=(n, d)).astype(np.float32)
    h[:, 0] = 0.0
    h[:, 1] = 0.0
    h[rng.choice(n, size=12, replace=False), 1] = 1.0  # active on 3 % of samples
    h[:, 2] = 0.0
    h[:, 3] = 0.0
    h[:2, 3] = 1.0  # active on 0.5 %
    h[:, 4] *= 1e-3  # alive but tiny: dormant by the ReDo score
    h[:, 5] = 0.0
    h[rng.choice(n, size=24, replace=False), 5] = 1.0  # active on 6 %: not dead at 0.95
    return h


def test_planted_dead_never_active_low_activity_dormant():
    h = _planted(np.random.default_rng(0))
    np.testing.assert_array_equal(np.flatnonzero(m.dead_units(h)), [0, 1, 2, 3])
    np.testing.assert_array_equal(np.flatnonzero(m.never_active_units(h)), [0, 2])
    np.testing.assert_array_equal(np.flatnonzero(m.low_activity_units(h, 0.01)), [0, 2, 3])
    np.testing.assert_array_equal(np.flatnonzero(m.dormant_units(h, 0.025)), [0, 2, 3, 4])
    np.testing.assert_array_equal(np.flatnonzero(m.dormant_units(h, 0.1)), [0, 1, 2, 3, 4, 5])
    assert float(m.dead_fraction(h)) == pytest.approx(4 / 12)
    assert float(m.dormant_fraction(h, 0.1)) == pytest.approx(6 / 12)


def test_planted_saturated_frozen_linearised():
    rng = np.random.default_rng(1)
    n, d = 300, 6
    h = rng.uniform(0.5, 1.5, size=(n, d)).astype(np.float32)
    g = rng.normal(size=(n, d)).astype(np.float32)
    g[:, 1] = 0.0  # no gradient: saturated
    g[:, 2] = 1e-7  # |g| / mean|h| ~ 1e-7 < 1e-4: saturated
    g[:2, 3] = 0.0  # vanishing on < 99 % of samples: not saturated
    np.testing.assert_array_equal(np.flatnonzero(m.saturated_units(h, g)), [1, 2])
    z = rng.normal(size=(n, d)).astype(np.float32)
    z[:, 0] = -np.abs(z[:, 0]) - 0.1  # ReLU off everywhere: frozen
    z[:, 4] = np.abs(z[:, 4]) + 0.1  # always on: linearised
    z[:, 5] = 8.0 + np.abs(z[:, 5])  # tanh saturated: |1 - tanh^2| < 0.01
    np.testing.assert_array_equal(np.flatnonzero(m.frozen_units(z, jax.nn.relu)), [0])
    np.testing.assert_array_equal(np.flatnonzero(m.frozen_units(z, "relu")), [0])
    np.testing.assert_array_equal(np.flatnonzero(m.frozen_units(z, "tanh")), [5])
    np.testing.assert_array_equal(np.flatnonzero(m.linearised_units(z, 0.9)), [4, 5])
    assert float(m.frozen_fraction(z, "leaky_relu")) == 0.0  # slope 0.01 is not < 0.01


def _np_unit_fracs(h, g, z):
    """Independent NumPy statement of each rule (float64)."""
    h, g, z = (np.asarray(a, np.float64) for a in (h, g, z))
    a = np.abs(h)
    s = a.mean(0)
    mu = np.maximum(s, 1e-12)
    return {
        "dead": np.mean((a < 1e-7).mean(0) > 0.95),
        "never": np.mean((h == 0).all(0)),
        "low": np.mean((a > 0).mean(0) < 0.01),
        "dormant": np.mean(s / (s.mean() + 1e-9) <= 0.1),
        "linear": np.mean((z > 0).mean(0) >= 0.9),
        "sat": np.mean(((np.abs(g) / mu) < 1e-4).mean(0) > 0.99),
        "frozen_sigmoid": np.mean((np.abs(1 / (1 + np.exp(-z)) * (1 - 1 / (1 + np.exp(-z)))) < 0.01).mean(0) > 0.5),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fractions_match_numpy_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n, d = 200, 40
    z = rng.normal(loc=rng.normal(scale=2.0, size=d), size=(n, d)).astype(np.float32)
    z[:, : d // 4] -= 6.0  # some mostly-off units
    h = np.maximum(z, 0) * (rng.random((n, d)) > 0.3)
    g = rng.normal(size=(n, d)) * rng.choice([0.0, 1e-9, 1.0], size=d)
    h, g = h.astype(np.float32), g.astype(np.float32)
    want = _np_unit_fracs(h, g, z)
    assert float(m.dead_fraction(h)) == pytest.approx(want["dead"])
    assert float(m.never_active_fraction(h)) == pytest.approx(want["never"])
    assert float(m.low_activity_fraction(h)) == pytest.approx(want["low"])
    assert float(m.dormant_fraction(h, 0.1)) == pytest.approx(want["dormant"])
    assert float(m.linearised_fraction(z)) == pytest.approx(want["linear"])
    assert float(m.saturated_fraction(h, g)) == pytest.approx(want["sat"])
    assert float(m.frozen_fraction(z, "sigmoid", 0.01, 0.5)) == pytest.approx(want["frozen_sigmoid"])
    assert 0.0 < want["dead"] < 1.0 and 0.0 < want["sat"] < 1.0  # the inputs exercise both outcomes


def test_degenerate_layers_are_finite_and_defined():
    zeros = jnp.zeros((50, 8))
    ones = jnp.ones((50, 8))
    assert float(m.dead_fraction(zeros)) == 1.0 and float(m.dead_fraction(ones)) == 0.0
    assert float(m.dormant_fraction(zeros)) == 1.0 and float(m.dormant_fraction(ones)) == 0.0
    assert float(m.saturated_fraction(zeros, zeros)) == 1.0
    assert float(m.saturated_fraction(ones, zeros)) == 1.0
    assert np.all(np.isfinite(np.asarray(m.dormant_scores(zeros))))


def test_jit_and_vmap_over_seeds():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    hs = jax.vmap(lambda k: jax.nn.relu(jax.random.normal(k, (64, 10)) - jnp.arange(10) * 0.5))(keys)
    got = jax.jit(jax.vmap(lambda h: m.dead_fraction(h, 1e-7, 0.95)))(hs)
    want = [float(m.dead_fraction(h)) for h in hs]
    np.testing.assert_allclose(np.asarray(got), want)


def test_bad_input_raises_one_line():
    with pytest.raises(InputError, match="frac=1.5"):
        m.dead_fraction(jnp.ones((3, 2)), frac=1.5)
    with pytest.raises(InputError, match=r"\(samples, units\)"):
        m.dead_fraction(jnp.ones((3, 2, 2)))
    with pytest.raises(InputError, match="shape of h"):
        m.saturated_fraction(jnp.ones((3, 2)), jnp.ones((3, 3)))
    with pytest.raises(InputError, match="activation"):
        m.frozen_fraction(jnp.ones((3, 2)), 3)

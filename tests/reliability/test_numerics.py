"""Degenerate numerics: defined values or a clear error, never a silent NaN."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import ConvergenceWarning, InputError

M = pdx.metrics
ARRAY_METRICS = ["dead_fraction", "dormant_fraction", "duplicate_fraction", "effective_rank", "renyi2_rank",
                 "stable_rank", "srank", "approximate_rank", "hard_rank"]


@pytest.mark.parametrize("name", ARRAY_METRICS)
@pytest.mark.parametrize("kind", ["zeros", "constant", "huge", "tiny", "one_sample"])
def test_degenerate_activations_give_finite_values(name, kind):
    h = {"zeros": np.zeros((40, 6)), "constant": np.full((40, 6), 3.0), "huge": np.full((40, 6), 1e30),
         "tiny": np.full((40, 6), 1e-30), "one_sample": np.ones((1, 6))}[kind].astype(np.float32)
    value = np.asarray(getattr(M, name)(jnp.asarray(h)))
    assert np.all(np.isfinite(value)), (name, kind, value)


@pytest.mark.parametrize("name", ARRAY_METRICS)
def test_nan_in_a_batch_is_a_clear_error(name):
    h = np.ones((20, 4), np.float32)
    h[5, 1] = np.nan
    with pytest.raises(InputError, match=r"nan at index \(5, 1\)"):
        getattr(M, name)(jnp.asarray(h))


def test_unit_metrics_rejects_nan_inputs():
    model = pdx.models.create("mlp", preset="tiny", num_outputs=3)
    x = np.ones((8, 5), np.float32)
    variables = model.init(jax.random.PRNGKey(0), x)
    x[2, 3] = np.inf
    with pytest.raises(InputError, match="batch x"):
        M.unit_metrics(model, variables, (x, np.zeros(8, np.int32)))


def test_all_dead_network_metrics_are_defined():
    model = pdx.models.create("mlp", preset="tiny", num_outputs=3, norm="none")
    x = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(0), x)
    params = jax.tree_util.tree_map(lambda a: a, variables["params"])
    params["dense_0"]["bias"] = jnp.full_like(params["dense_0"]["bias"], -1e6)  # every unit dead
    out = M.unit_metrics(model, {**variables, "params": params}, (x, np.zeros(16, np.int32)))
    flat = [v for per in out.values() for v in per.values()]
    assert all(np.isfinite(flat))
    assert out["dead_frac@1e-07,0.95"]["hidden_0"] == 1.0


def test_eigensolver_reports_non_convergence():
    from plasticity_dynamics.curvature import normal_spectrum

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 400))
    h = jnp.asarray((a + a.T) / 2, jnp.float32)

    class Everything:  # the whole space is "normal"
        normal_dim = 400

        def normal(self, v):
            return v

        def tangent(self, v):
            return jax.tree_util.tree_map(jnp.zeros_like, v)

    loss = lambda p: 0.5 * p @ (h @ p)  # noqa: E731
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = normal_spectrum(loss, jnp.zeros(400), Everything(), k=5, method="lanczos", num_iters=12)
    assert any(issubclass(w.category, ConvergenceWarning) for w in caught)
    assert np.all(np.isfinite(spec.residuals)) and spec.residuals.max() > spec.tolerance

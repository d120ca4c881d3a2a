"""Activations: values against independent NumPy/math formulas, closed-form derivatives against
jax.grad (float64, away from kinks) and against central differences of the NumPy values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

# Grid avoiding the kink at 0 (relu, leaky_relu, elu, selu) by an offset that is not a grid step.
GRID = np.linspace(-6.0, 6.0, 241) + 0.0137

ALPHA = 1.6732632423543772848170429916717
SCALE = 1.0507009873554804934193349852946


def numpy_reference(name, z):
    """Independent definitions (math module / NumPy only)."""
    erf = np.vectorize(math.erf)
    return {
        "relu": lambda: np.maximum(z, 0.0),
        "leaky_relu": lambda: np.where(z > 0, z, 0.01 * z),
        "tanh": lambda: np.tanh(z),
        "sigmoid": lambda: 1.0 / (1.0 + np.exp(-z)),
        "gelu": lambda: 0.5 * z * (1.0 + erf(z / math.sqrt(2.0))),
        "elu": lambda: np.where(z > 0, z, np.exp(z) - 1.0),
        "selu": lambda: SCALE * np.where(z > 0, z, ALPHA * (np.exp(z) - 1.0)),
        "linear": lambda: z,
    }[name]()


def test_activation_list_is_the_contract():
    assert set(pdx.models.ACTIVATIONS) == {"relu", "leaky_relu", "tanh", "sigmoid", "gelu", "elu",
                                           "selu", "linear"}


@pytest.mark.parametrize("name", pdx.models.ACTIVATIONS)
def test_values_match_numpy(name):
    with jax.enable_x64(True):
        got = np.asarray(pdx.models.activation_fn(name)(jnp.asarray(GRID, jnp.float64)))
    np.testing.assert_allclose(got, numpy_reference(name, GRID), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", pdx.models.ACTIVATIONS)
def test_derivative_matches_autodiff(name):
    with jax.enable_x64(True):
        z = jnp.asarray(GRID, jnp.float64)
        auto = jax.vmap(jax.grad(pdx.models.activation_fn(name)))(z)
        closed = pdx.models.activation_derivative(name)(z)
        assert closed.shape == z.shape
        np.testing.assert_allclose(np.asarray(closed), np.asarray(auto), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", pdx.models.ACTIVATIONS)
def test_derivative_matches_finite_differences(name):
    # Central differences on the NumPy reference: error <= h^2/6 max|phi'''| + 2 eps64 max|phi|/h
    # (<= 1e-8 * 10 + 3e-12 here, |phi'''| <= 10 on this grid for all eight functions).
    h = 1e-4
    fd = (numpy_reference(name, GRID + h) - numpy_reference(name, GRID - h)) / (2 * h)
    with jax.enable_x64(True):
        closed = np.asarray(pdx.models.activation_derivative(name)(jnp.asarray(GRID)))
    np.testing.assert_allclose(closed, fd, rtol=0, atol=2e-7)


def test_kink_conventions():
    d = pdx.models.activation_derivative
    zero = jnp.zeros(())
    assert float(d("relu")(zero)) == 0.0
    assert float(d("leaky_relu")(zero)) == pytest.approx(0.01)
    assert float(d("elu")(zero)) == 1.0


def test_derivatives_finite_for_large_inputs():
    z = jnp.asarray([-1e4, -100.0, 100.0, 1e4], jnp.float32)
    for name in pdx.models.ACTIVATIONS:
        assert np.isfinite(np.asarray(pdx.models.activation_fn(name)(z))).all(), name
        assert np.isfinite(np.asarray(pdx.models.activation_derivative(name)(z))).all(), name
        g = jax.vmap(jax.grad(pdx.models.activation_fn(name)))(z)
        assert np.isfinite(np.asarray(g)).all(), name


@pytest.mark.parametrize("getter", [pdx.models.activation_fn, pdx.models.activation_derivative])
def test_unknown_activation_raises(getter):
    with pytest.raises(InputError, match="swish"):
        getter("swish")

"""The theory package's float64 activation table: derivatives and agreement with pdx.models."""

import numpy as np
import pytest

import plasticity_dynamics as pdx

T = pdx.theory
NAMES = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "elu", "selu", "linear")
U = np.concatenate((np.linspace(-8, -0.01, 400), np.linspace(0.01, 8, 400)))  # away from kinks


def test_table_has_the_eight_activations():
    assert set(T.ACTIVATIONS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_central_difference(name):
    """(φ(u+h) − φ(u−h))/2h = φ'(u) + h²φ'''(ξ)/6 ± ε|φ|/h: with h = 1e-5, |φ'''| ≤ 2, |φ| ≤ 9
    on [−8, 8], the error is below 4e-10 + 2e-10; the tolerance is 1e-9."""
    act, h = T.ACTIVATIONS[name], 1e-5
    fd = (act.fn(U + h) - act.fn(U - h)) / (2 * h)
    np.testing.assert_allclose(act.deriv(U), fd, rtol=0, atol=1e-9)


def test_tails_are_accurate_and_finite():
    u = np.array([-800.0, -40.0, 40.0, 800.0])
    acts = T.ACTIVATIONS
    assert np.all(np.isfinite([acts[n].fn(u) for n in NAMES]))
    assert np.all(np.isfinite([acts[n].deriv(u) for n in NAMES]))
    assert acts["sigmoid"].fn(np.array(-40.0)) == pytest.approx(np.exp(-40.0), rel=1e-14)
    assert acts["tanh"].deriv(np.array(20.0)) == pytest.approx(4 * np.exp(-40.0), rel=1e-12)


def test_table_agrees_with_models_activation_fn():
    if not hasattr(pdx.models, "activation_fn"):
        pytest.skip("plasticity_dynamics.models.activation_fn does not exist yet")
    import jax.numpy as jnp

    u = np.linspace(-6, 6, 1201)
    u = u[np.abs(u) > 1e-6]
    for name in NAMES:
        ours = T.ACTIVATIONS[name].fn(u)
        theirs = np.asarray(pdx.models.activation_fn(name)(jnp.asarray(u, dtype=jnp.float32)), dtype=np.float64)
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6, err_msg=name)
        if hasattr(pdx.models, "activation_derivative"):
            d = pdx.models.activation_derivative(name)(jnp.asarray(u, dtype=jnp.float32))
            np.testing.assert_allclose(np.asarray(d, dtype=np.float64), T.ACTIVATIONS[name].deriv(u),
                                       rtol=1e-5, atol=1e-6, err_msg=name)

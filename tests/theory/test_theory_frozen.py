"""frozen_probability against closed forms and an independent fine-grid integral."""

import math

import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

T = pdx.theory
A = np.array([0.3, 1.0, 2.5, 10.0])
B = np.array([-4.0, -0.7, 0.0, 1.3])
SELU_LA = 1.0507009873554805 * 1.6732632423543772


def Phi(x):
    return np.vectorize(lambda v: 0.5 * math.erfc(-v / math.sqrt(2)))(x)


def two_sided(a, b, u):  # P(|a z + b| > u)
    return Phi((-u - b) / a) + Phi(-(u - b) / a)


@pytest.mark.parametrize("eps", [0.01, 0.3])
def test_relu_equals_phi_of_minus_b_over_a(eps):
    a, b = np.meshgrid(A, B)
    np.testing.assert_allclose(T.frozen_probability("relu", a, b, eps), Phi(-b / a), rtol=0, atol=1e-14)
    ok = eps <= np.minimum(1.0, a)  # with the gain factor the two readings agree here
    with_gain = T.frozen_probability("relu", a, b, eps, include_gain=True)
    np.testing.assert_allclose(with_gain[ok], Phi(-b / a)[ok], rtol=0, atol=1e-14)
    assert T.frozen_probability(("relu", 2.0, -1.0)) == pytest.approx(float(Phi(0.5)), abs=1e-15)


def test_closed_forms_tanh_sigmoid_elu_selu_leaky_linear():
    a, b = np.meshgrid(A, B)
    eps = 0.01
    u_t = math.acosh(eps**-0.5)  # sech²(u) < eps  <=>  |u| > u_t
    np.testing.assert_allclose(T.frozen_probability("tanh", a, b, eps), two_sided(a, b, u_t), atol=1e-13)
    u_g = np.arccosh((eps / a) ** -0.5)  # |a sech²(u)| < eps, needs eps/a < 1 (true here)
    np.testing.assert_allclose(T.frozen_probability("tanh", a, b, eps, include_gain=True),
                               two_sided(a, b, u_g), atol=1e-13)
    q = math.sqrt(1 - 4 * eps)
    u_s = math.log((1 + q) / (1 - q))
    np.testing.assert_allclose(T.frozen_probability("sigmoid", a, b, eps), two_sided(a, b, u_s), atol=1e-13)
    np.testing.assert_allclose(T.frozen_probability("elu", a, b, eps), Phi((math.log(eps) - b) / a), atol=1e-13)
    np.testing.assert_allclose(T.frozen_probability("selu", a, b, eps),
                               Phi((math.log(eps / SELU_LA) - b) / a), atol=1e-13)
    np.testing.assert_allclose(T.frozen_probability("leaky_relu", a, b, 0.05), Phi(-b / a), atol=1e-14)
    assert np.all(T.frozen_probability("leaky_relu", a, b, 0.005) == 0.0)
    assert T.frozen_probability("linear", 1.0, 0.0, 0.5) == 0.0
    assert T.frozen_probability("linear", 1.0, 0.0, 1.5) == 1.0
    assert T.frozen_probability("sigmoid", 1.0, 0.0, 0.3) == 1.0  # max σ' = 1/4


def test_gelu_matches_fine_grid_integral():
    """Midpoint rule for ∫ 1{|φ'(a z + b)| < ε} ϕ(z) dz: error ≤ (#edges ≤ 4) · (h/2) · max ϕ ≈ 8e-5."""
    erf = np.frompyfunc(math.erf, 1, 1)
    h = 1e-4
    z = np.arange(-10 + h / 2, 10, h)
    w = np.exp(-z * z / 2) / math.sqrt(2 * math.pi) * h
    for a, b in [(1.0, 0.0), (0.2, -0.75), (3.0, -2.0), (0.5, -3.5)]:
        u = a * z + b
        d = 0.5 * (1 + erf(u / math.sqrt(2)).astype(float)) + u * np.exp(-u * u / 2) / math.sqrt(2 * math.pi)
        ref = w @ (np.abs(d) < 0.01)
        assert T.frozen_probability("gelu", a, b) == pytest.approx(ref, abs=8e-5)


def test_shapes_and_bad_inputs():
    p = T.frozen_probability("tanh", A[:, None], B[None, :])
    assert p.shape == (4, 4) and np.all((p >= 0) & (p <= 1))
    assert isinstance(T.frozen_probability("tanh"), float)
    with pytest.raises(InputError, match="eps"):
        T.frozen_probability("tanh", eps=0.0)
    with pytest.raises(InputError, match="gain"):
        T.frozen_probability("tanh", a=-1.0)
    with pytest.raises(InputError, match="leave a and b unset"):
        T.frozen_probability(("tanh", 1.0, 0.0), a=2.0)
    with pytest.raises(InputError, match="swish"):
        T.frozen_probability("swish")

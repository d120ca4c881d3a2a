"""Hermite coefficients, K_φ, α, γ_φ, κ_φ against closed forms and independent integrals."""

import math

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermeval

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

T = pdx.theory
NAMES = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "elu", "selu", "linear")
NONLINEAR = tuple(n for n in NAMES if n != "linear")


def _Phi(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _pdf(x):
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def relu_coeffs_oracle(a, b, n):
    """a_k of relu(a z + b) by Stein: a_k = E[ψ^{(k)}]/√k!, written independently of the package."""
    c = b / a
    out = [a * (c * _Phi(c) + _pdf(c)), a * _Phi(c)]
    for k in range(2, n + 1):
        he = hermeval(-c, [0.0] * (k - 2) + [1.0])  # He_{k-2}(-c)
        out.append(a * _pdf(c) * he / math.sqrt(math.factorial(k)))
    return np.array(out)


def relu_kernel_oracle(r):
    r = np.asarray(r, dtype=float)
    return (np.sqrt(1 - r**2) + r * (np.pi - np.arccos(r)) - 1) / (np.pi - 1)


@pytest.mark.parametrize("spec", ["relu", ("relu", 2.0, -3.0), ("relu", 0.5, 1.0), ("relu", 1.0, -8.0)])
def test_relu_closed_form_equals_quadrature(spec):
    a, b = (1.0, 0.0) if isinstance(spec, str) else spec[1:]
    ref = relu_coeffs_oracle(a, b, 24)
    scale = np.abs(ref).max()
    quad = T.hermite_coefficients(spec, 24, method="composite")
    closed = T.hermite_coefficients(spec, 24, method="closed-form")
    np.testing.assert_allclose(quad, ref, rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(closed, ref, rtol=0, atol=1e-13 * scale)


def test_composite_quadrature_converges_geometrically():
    ref = relu_coeffs_oracle(1.0, -0.3, 20)
    errs = [np.abs(T.hermite_coefficients(("relu", 1.0, -0.3), 20, order=o, method="composite") - ref).max()
            for o in (2, 3, 4, 6, 8)]
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-13


def test_gauss_hermite_converges_like_one_over_order_on_relu_and_fast_on_tanh():
    ref = relu_coeffs_oracle(1.0, 0.0, 10)
    errs = [np.abs(T.hermite_coefficients("relu", 10, order=o, method="gauss-hermite") - ref).max()
            for o in (50, 100, 200)]
    for e1, e2 in zip(errs, errs[1:]):
        assert 0.3 * e1 < e2 < 0.7 * e1  # halves when the order doubles: O(1/order)
    tref = T.hermite_coefficients("tanh", 10, method="composite")
    terrs = [np.abs(T.hermite_coefficients("tanh", 10, order=o, method="gauss-hermite") - tref).max()
             for o in (10, 20, 40, 80, 160)]
    assert all(e2 < 0.05 * e1 for e1, e2 in zip(terrs, terrs[1:])) and terrs[-1] < 1e-13


def test_relu_alpha_gamma_and_kernel_closed_forms():
    a = math.pi / (2 * (math.pi - 1))
    assert T.alpha("relu") == pytest.approx(a, abs=1e-15)
    assert T.alpha("relu", method="composite") == pytest.approx(a, abs=1e-13)
    assert T.gamma("relu") == pytest.approx((1 - a) / (1 + a), abs=1e-15)
    r = np.linspace(-1, 1, 2001)
    for method in ("auto", "composite"):
        k = T.kernel("relu", method=method)
        err = np.abs(k(r) - relu_kernel_oracle(r))
        assert np.all(err <= k.error_bound(r) + 1e-12)
    assert k.error_bound(0.99) < 4e-5


@pytest.mark.parametrize("spec", NAMES + (("tanh", 3.0, 0.5), ("gelu", 2.0, -0.75), ("elu", 0.4, 1.0)))
def test_kernel_fixed_points_and_contraction(spec):
    k = T.kernel(spec)
    assert abs(float(k(0.0))) < 1e-15
    assert float(k(1.0)) == pytest.approx(1.0, abs=1e-12)
    assert np.all(k.weights >= 0) and k.weights.sum() == pytest.approx(1.0, abs=1e-12)
    r = np.concatenate((np.linspace(-0.999, -1e-3, 500), np.linspace(1e-3, 0.999, 500)))
    if spec == "linear":
        np.testing.assert_allclose(k(r), r, atol=1e-12)
    else:
        assert np.all(np.abs(k(r)) < np.abs(r))


def test_kernel_at_minus_one_odd_and_relu():
    assert float(T.kernel("tanh")(-1.0)) == pytest.approx(-1.0, abs=1e-12)
    assert float(T.kernel("relu")(-1.0)) == pytest.approx(-1 / (math.pi - 1), abs=1e-12)


def _trapezoid_moments(phi, dphi, a, b):
    z = np.linspace(-12, 12, 400_001)
    w = np.exp(-z * z / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    w[[0, -1]] *= 0.5
    psi = phi(a * z + b)
    mean = w @ psi
    return (w @ (a * dphi(a * z + b))) ** 2, w @ (psi - mean) ** 2


_erf = np.frompyfunc(math.erf, 1, 1)
LOCAL = {
    "tanh": (np.tanh, lambda u: 1 / np.cosh(u) ** 2),
    "sigmoid": (lambda u: 1 / (1 + np.exp(-u)), lambda u: np.exp(-u) / (1 + np.exp(-u)) ** 2),
    "gelu": (lambda u: u * 0.5 * (1 + _erf(u / math.sqrt(2)).astype(float)),
             lambda u: 0.5 * (1 + _erf(u / math.sqrt(2)).astype(float)) + u * np.exp(-u * u / 2) / math.sqrt(2 * math.pi)),
}


@pytest.mark.parametrize("name,a,b", [("tanh", 2.0, 0.5), ("sigmoid", 3.0, -1.0), ("gelu", 1.7, -0.4)])
def test_modulated_alpha_is_stein_with_chain_rule_factor(name, a, b):
    num, var = _trapezoid_moments(*LOCAL[name], a, b)
    assert T.alpha((name, a, b)) == pytest.approx(num / var, rel=1e-8)
    assert T.alpha((name, a, b)) != pytest.approx(num / a**2 / var, rel=1e-2)  # without a: wrong


def test_tanh_gamma_monotone_in_gain_with_sign_limit():
    gains = np.logspace(-1, 3, 9)
    g = [T.gamma(("tanh", a, 0.0)) for a in gains]
    assert all(x < y for x, y in zip(g, g[1:]))
    assert T.gamma(("tanh", 1e4, 0.0)) == pytest.approx((math.pi - 2) / (math.pi + 2), abs=1e-4)
    assert T.gamma("linear") == pytest.approx(0.0, abs=1e-15)


def test_kappa_matches_brute_force_on_relu_closed_form():
    r = np.linspace(0, 1, 200_001)
    brute = np.max(r**2 - relu_kernel_oracle(r) ** 2)
    assert T.kappa("relu") == pytest.approx(brute, abs=1e-6)
    assert abs(T.kappa("linear")) < 1e-12


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError, match="swish"):
        T.kernel("swish")
    with pytest.raises(InputError, match="gain"):
        T.alpha(("tanh", 0.0, 1.0))
    with pytest.raises(InputError, match="closed-form"):
        T.hermite_coefficients("tanh", method="closed-form")
    with pytest.raises(InputError, match="r="):
        T.kernel("tanh")(1.5)
    with pytest.raises(InputError, match="constant"):
        T.kernel(("relu", 1.0, -50.0))
    with pytest.raises(InputError, match="order"):
        T.hermite_coefficients("tanh", order=400, method="gauss-hermite")

"""Mehler's identity and K_φ against Monte-Carlo, with CLT-based tolerances.

Each estimate is a mean over M i.i.d. samples (for correlations: the full-sample correlation,
with its standard error from the spread of B independent batch correlations); the standard error
is estimated from the same samples and the tolerance is 5 standard errors
(two-sided miss probability 6e-7 per check under the CLT) plus the kernel's stated truncation
bound. Seeds are fixed, so the test is deterministic.
"""

import math

import numpy as np
import pytest

import plasticity_dynamics as pdx

T = pdx.theory
_erf = np.frompyfunc(math.erf, 1, 1)

LOCAL = {  # independent NumPy definitions, not the package's table
    "relu": lambda u: np.maximum(u, 0),
    "tanh": np.tanh,
    "sigmoid": lambda u: 1 / (1 + np.exp(-u)),
    "gelu": lambda u: 0.5 * u * (1 + _erf(u / math.sqrt(2)).astype(float)),
    "selu": lambda u: 1.0507009873554805 * np.where(u > 0, u, 1.6732632423543772 * (np.exp(np.minimum(u, 0)) - 1)),
    "elu": lambda u: np.where(u > 0, u, np.exp(np.minimum(u, 0)) - 1),
}


def _pairs(rng, r, m):
    x = rng.standard_normal(m)
    y = r * x + math.sqrt(1 - r * r) * rng.standard_normal(m)
    return x, y


def _h(k, x):  # orthonormal probabilists' Hermite polynomials, explicit
    return [np.ones_like(x), x, (x**2 - 1) / math.sqrt(2), (x**3 - 3 * x) / math.sqrt(6)][k]


@pytest.mark.parametrize("r", [-0.6, 0.35, 0.9])
def test_mehler_identity_by_monte_carlo(r):
    rng = np.random.default_rng(1234)
    x, y = _pairs(rng, r, 200_000)
    for j in range(4):
        for k in range(4):
            s = _h(j, x) * _h(k, y)
            se = s.std(ddof=1) / math.sqrt(s.size)
            expected = r**k if j == k else 0.0
            assert abs(s.mean() - expected) <= 5 * se, (j, k, s.mean(), expected, se)


@pytest.mark.parametrize("spec", ["relu", "tanh", "gelu", "selu", ("sigmoid", 2.0, 0.5), ("elu", 1.5, -1.0)])
def test_kernel_matches_monte_carlo_correlation(spec):
    name, a, b = (spec, 1.0, 0.0) if isinstance(spec, str) else spec
    k = T.kernel(spec)
    rng = np.random.default_rng(99)
    batches, size = 40, 5000
    for r in (-0.7, 0.3, 0.9):
        x, y = _pairs(rng, r, batches * size)
        fx = LOCAL[name](a * x + b).reshape(batches, size)
        fy = LOCAL[name](a * y + b).reshape(batches, size)
        corr = np.array([np.corrcoef(u, v)[0, 1] for u, v in zip(fx, fy)])
        est = np.corrcoef(fx.ravel(), fy.ravel())[0, 1]  # full-sample estimate, bias O(1/(B size))
        se = corr.std(ddof=1) / math.sqrt(batches)  # its standard error from the batch spread
        tol = 5 * se + float(k.error_bound(r)) + 1e-4
        assert abs(est - float(k(r))) <= tol, (spec, r, est, float(k(r)), se)

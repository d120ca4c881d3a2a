"""Quartic gap bound, the v2 er₂ rank-gain bound (property test), rank surrogates, generators."""

import math

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import assume, given, settings

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

T = pdx.theory
NAMES = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "elu", "selu", "linear")
MODULATED = (("relu", 1.0, -2.0), ("tanh", 3.0, 0.5), ("gelu", 2.0, -0.75), ("sigmoid", 0.5, 1.0),
             ("selu", 4.0, -1.0))
_KERNELS = {}


def _kernel(spec):
    if spec not in _KERNELS:
        _KERNELS[spec] = T.kernel(spec)
    return _KERNELS[spec]


def _gamma_of(k):
    return (1 - k.alpha) / (1 + k.alpha)


@pytest.mark.parametrize("spec", NAMES + MODULATED)
def test_quartic_gap_bound_on_fine_grid(spec):
    k = _kernel(spec)
    r = np.linspace(-1, 1, 20_001)
    gap = r**2 - k(r) ** 2
    bound = T.gamma(spec) * r**2 * (1 - r**2)
    assert np.all(gap - bound >= -1e-13)
    assert T.gamma(spec) == pytest.approx(_gamma_of(k), abs=1e-12)


def test_quartic_gap_bound_on_relu_closed_form():
    r = np.linspace(-1, 1, 20_001)
    kc = (np.sqrt(1 - r**2) + r * (np.pi - np.arccos(r)) - 1) / (np.pi - 1)
    a = np.pi / (2 * (np.pi - 1))
    assert np.all(r**2 - kc**2 >= (1 - a) / (1 + a) * r**2 * (1 - r**2) - 1e-15)


def _corr_from_factors(g):
    s = g @ g.T
    d = 1 / np.sqrt(np.diag(s))
    c = s * d[:, None] * d[None, :]
    c = np.clip((c + c.T) / 2, -1, 1)
    np.fill_diagonal(c, 1.0)
    return c


@st.composite
def correlation_matrices(draw):
    d = draw(st.integers(2, 6))
    k = draw(st.integers(1, 6))
    vals = draw(st.lists(st.floats(-3, 3, allow_nan=False), min_size=d * k, max_size=d * k))
    g = np.array(vals).reshape(d, k)
    assume(np.all(np.linalg.norm(g, axis=1) > 1e-3))  # every variable has non-zero variance
    return _corr_from_factors(g)


@settings(max_examples=80, deadline=None)
@given(c=correlation_matrices(), spec=st.sampled_from(NAMES + MODULATED))
def test_er2_ratio_at_least_bound(c, spec):
    k = _kernel(spec)
    kc = T.kernel_matrix(c, k)
    d = c.shape[0]
    ratio = (d**2 / np.sum(kc**2)) / (d**2 / np.sum(c**2))  # er2 of unit-diagonal matrices, inline
    off = ~np.eye(d, dtype=bool)
    psi = np.sum(c[off] ** 2 * (1 - c[off] ** 2))
    bound = 1 + _gamma_of(k) * psi / np.sum(c**2)
    assert ratio >= bound - 1e-12
    assert T.rank_gain_bound(c, k) == pytest.approx(bound, abs=1e-12)
    assert T.rank_gain(c, k) == pytest.approx(ratio, rel=1e-12)
    assert T.er2(kc) / T.er2(c) == pytest.approx(ratio, rel=1e-12)


def test_linear_has_gamma_zero_and_ratio_one():
    c = T.random_correlation_matrix(7, 3, rank=3)
    assert T.gamma("linear") == pytest.approx(0.0, abs=1e-15)
    assert T.rank_gain(c, "linear") == pytest.approx(1.0, abs=1e-12)
    assert T.rank_gain_bound(c, "linear") == pytest.approx(1.0, abs=1e-12)


def test_equality_case_erratum_minus_one_correlations():
    c = np.array([[1.0, -1.0], [-1.0, 1.0]])
    assert T.decorrelation_potential(c) == 0.0
    assert T.rank_gain(c, "relu") == pytest.approx(4 / (2 + 2 / (math.pi - 1) ** 2), rel=1e-10)
    assert T.rank_gain(c, "tanh") == pytest.approx(1.0, abs=1e-12)  # odd: |K(-1)| = 1
    blocks = np.kron(np.eye(2), np.ones((2, 2)))  # entries in {0, 1}
    assert T.rank_gain(blocks, "relu") == pytest.approx(1.0, abs=1e-12)
    assert T.rank_gain(0.5 * np.eye(3) + 0.5, "relu") > 1 + 1e-3


def test_rank_surrogates_known_values():
    assert T.er2(np.eye(5)) == pytest.approx(5.0)
    assert T.effective_rank_shannon(np.eye(5)) == pytest.approx(5.0)
    assert T.er2(np.ones((4, 4))) == pytest.approx(1.0)
    assert T.effective_rank_shannon(np.ones((4, 4))) == pytest.approx(1.0)
    m = np.diag([1.0, 1.0, 2.0])
    assert T.er2(m) == pytest.approx(16 / 6)
    assert T.effective_rank_shannon(m) == pytest.approx(2**1.5)  # exp(H(1/4, 1/4, 1/2))
    x = np.random.default_rng(0).standard_normal((6, 4))
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum()
    assert T.effective_rank_shannon(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    batch = np.stack([np.eye(3), np.ones((3, 3))])
    np.testing.assert_allclose(T.er2(batch), [3.0, 1.0])
    with pytest.raises(InputError):
        T.er2(np.zeros((3, 3)))
    with pytest.raises(InputError):
        T.er2(np.ones((2, 3)))


def test_decorrelation_potential_hand_example():
    c = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, -1.0], [0.0, -1.0, 1.0]])
    assert T.decorrelation_potential(c) == pytest.approx(2 * 0.25 * 0.75)
    assert T.decorrelation_potential(np.eye(4)) == 0.0


def test_kernel_matrix_relu_closed_form_and_bad_input():
    c = T.random_correlation_matrix(6, 11, rank=2)
    kc = (np.sqrt(1 - c**2) + c * (np.pi - np.arccos(c)) - 1) / (np.pi - 1)
    np.testing.assert_allclose(T.kernel_matrix(c, "relu"), kc, atol=4e-5)
    with pytest.raises(InputError, match="diagonal"):
        T.kernel_matrix(2 * np.eye(3), "relu")
    with pytest.raises(InputError, match="symmetric"):
        T.rank_gain_bound(np.array([[1, 0.2], [0.1, 1]]), "relu")


def test_random_correlation_matrix_and_seeds():
    import jax

    for seed in (5, np.random.default_rng(5), jax.random.key(5), jax.random.PRNGKey(5)):
        c = T.random_correlation_matrix(8, seed, rank=3)
        assert np.array_equal(c, c.T) and np.all(np.diag(c) == 1.0)
        ev = np.linalg.eigvalsh(c)
        assert ev.min() > -1e-12 and np.sum(ev > 1e-9) == 3
    np.testing.assert_array_equal(T.random_correlation_matrix(8, 5), T.random_correlation_matrix(8, 5))
    np.testing.assert_array_equal(T.random_correlation_matrix(4, jax.random.key(1)),
                                  T.random_correlation_matrix(4, jax.random.key(1)))
    assert not np.allclose(T.random_correlation_matrix(4, 1), T.random_correlation_matrix(4, 2))
    assert np.allclose(np.abs(T.random_correlation_matrix(5, 0, rank=1)), 1.0)
    with pytest.raises(InputError, match="seed"):
        T.random_correlation_matrix(4, "abc")


def test_correlation_path():
    c = T.random_correlation_matrix(5, 0)
    lam = np.linspace(0, 1, 7)
    path = T.correlation_path(c, lam)
    assert path.shape == (7, 5, 5)
    np.testing.assert_allclose(path[0], np.eye(5))
    np.testing.assert_allclose(path[-1], c)
    np.testing.assert_allclose(path[3], 0.5 * np.eye(5) + 0.5 * c)
    assert np.all(np.linalg.eigvalsh(path).min(axis=-1) > -1e-12)
    with pytest.raises(InputError, match="lambdas"):
        T.correlation_path(c, [0.5, 1.2])

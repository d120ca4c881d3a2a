"""Hermite coefficients, the correlation kernel K_φ, and the scalars α, γ_φ, κ_φ.

For ψ(z) = φ(a z + b) (an activation spec, see :mod:`.activations`) and Z ~ N(0, 1):

* a_k = E[ψ(Z) h_k(Z)] with h_k = He_k/√(k!) the orthonormal probabilists' Hermite polynomials
  (PAPER.md §2.3). By Gaussian integration by parts a_1 = E[Z ψ(Z)] = E[ψ'(Z)] with
  ψ'(z) = a φ'(a z + b): the chain-rule factor a is part of a_1 automatically.
* K_φ(r) = Corr(ψ(X), ψ(Y)) for a standard bivariate normal (X, Y) with correlation r
  = Σ_{k≥1} w_k r^k, w_k = a_k² / Var ψ(Z) (Mehler). The w_k are ≥ 0 and sum to 1.
* α = K'(0) = w_1 = (E ψ')² / Var ψ (linearity coefficient; α = 1 iff ψ is affine);
  γ_φ = (1 − α)/(1 + α) (v2 decorrelation strength); κ_φ = max_{r∈[0,1]} r² − K(r)² (v1).

Methods (argument ``method``): ``"closed-form"`` — ReLU only: for ψ = relu(a z + b) = a·relu(z + c),
c = b/a, a_0 = a(cΦ(c) + ϕ(c)), a_1 = aΦ(c), a_k = a ϕ(c) He_{k−2}(−c)/√(k!) for k ≥ 2, and
the variances in closed form (relative error ≲ (1 + c⁴)·1e-16 from cancellation at c ≪ 0);
``"composite"`` / ``"gauss-hermite"`` — quadrature, see :mod:`.quadrature` for the accuracy
of each; ``"auto"`` — closed form for relu, composite otherwise.

Truncation of the series (``n`` terms): the variance of ψ splits exactly into its odd and even
parts, V_odd = (V − E[ψ̃(Z)ψ̃(−Z)])/2 (ψ̃ = ψ − Eψ), so the missing odd and even masses τ_odd,
τ_even are known and are placed on the first omitted odd and even degree. The truncated K is
then still a convex combination of powers, K(0) = 0 and K(±1) are exact, and for |r| ≤ 1
|K_true(r) − K(r)| ≤ (τ_odd + τ_even)·|r|^{n+1} (:meth:`HermiteKernel.error_bound`); for ReLU
with n = 256 the bound is 3.0e-5 (the actual error against the arccos closed form is 6e-6)
and it shrinks like n^{-3/2} (kinked activations) or geometrically (analytic ones: tanh, gelu
below 1e-15).

Failure mode: when ψ is nearly constant, rounding in ψ − Eψ dominates. :func:`kernel` and
:func:`alpha` raise InputError when sd ψ < 1e4 · eps · |Eψ| (relative rounding error of the
centred values above 1e-4), e.g. relu(z + b) for b < −37 or selu(0.2 z − 30).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from plasticity_dynamics.errors import InputError, check_choice, check_positive
from plasticity_dynamics.theory.activations import Spec, normal_cdf, normal_pdf, resolve
from plasticity_dynamics.theory.quadrature import hermite_matrix, rule

METHODS = ("auto", "closed-form", "composite", "gauss-hermite")
DEFAULT_ORDER = 20
MAX_TERMS = 512


def _relu_closed(spec: Spec, n: int):
    a, c = spec.a, spec.b / spec.a
    pdf, cdf = float(normal_pdf(c)), float(normal_cdf(c))
    coef = np.zeros(n + 1)
    coef[0] = a * (c * cdf + pdf)
    if n >= 1:
        coef[1] = a * cdf
    h_prev, h = 0.0, 1.0  # normalised He_m(-c)/sqrt(m!) for m = -1, 0
    for k in range(2, n + 1):
        m = k - 2
        coef[k] = a * pdf * h / math.sqrt(k * (k - 1))
        h_prev, h = h, (-c * h - math.sqrt(m) * h_prev) / math.sqrt(m + 1)
    var = a * a * ((c * c + 1.0) * cdf + c * pdf) - coef[0] ** 2
    raw_cross = a * a * ((c * c - 1.0) * (2.0 * cdf - 1.0) + 2.0 * c * pdf) if c > 0 else 0.0
    return coef, var, raw_cross - coef[0] ** 2


def _quadrature(spec: Spec, n: int, order: int, quadrature: str, want_cross: bool):
    z, w = rule(spec, order, quadrature)
    psi = spec.psi(z)
    mean = float(w @ psi)
    cen = psi - mean
    var = float(w @ (cen * cen))
    coef = np.zeros(n + 1)
    coef[0] = mean
    if n == 1:
        coef[1] = w @ (cen * z)
    elif n > 1:
        coef[1:] = hermite_matrix(z, w, n)[1:] @ cen
    cross = float(w @ (cen * (spec.psi(-z) - mean))) if want_cross else float("nan")
    return coef, var, cross


def _series(act, n: int, order: int, method: str, want_cross: bool = False):
    """(spec, coefficients a_0..a_n, Var ψ, E[ψ̃(Z)ψ̃(−Z)]) with input checks."""
    spec = resolve(act)
    check_positive("n", n, integer=True, allow_zero=True)
    if n > MAX_TERMS:
        raise InputError(f"n={n} must be <= {MAX_TERMS}")
    check_choice("method", method, METHODS)
    if method == "closed-form" and spec.name != "relu":
        raise InputError(f"method='closed-form' exists only for relu, not activation={spec.name!r}")
    if method in ("auto", "closed-form") and spec.name == "relu":
        coef, var, cross = _relu_closed(spec, n)
    else:
        quad = "composite" if method == "auto" else method
        coef, var, cross = _quadrature(spec, n, order, quad, want_cross)
    return spec, coef, var, cross


def _check_variance(spec: Spec, mean: float, var: float) -> None:
    if not (var > (1e4 * np.finfo(np.float64).eps * abs(mean)) ** 2 and var > 1e-300):
        raise InputError(
            f"activation {tuple(spec)} is numerically constant under N(0,1) "
            f"(Var = {var:.3g}, mean = {mean:.3g}); its correlation kernel is undefined"
        )


def hermite_coefficients(act, n: int = 32, *, order: int = DEFAULT_ORDER, method: str = "auto"):
    """Normalised Hermite coefficients a_0..a_n of ψ(z) = φ(a z + b), shape (n + 1,), float64.

    act: a name from ACTIVATIONS or a modulation (name, a, b). ``order``: quadrature nodes
    (per panel for ``composite``, total for ``gauss-hermite``). Cost O(n · 200 · order) for
    composite. Accuracy: see the module docstring of :mod:`plasticity_dynamics.theory.quadrature`
    (composite order ≥ 16: ~1e-15 absolute on ReLU; gauss-hermite on ReLU: O(1/order)).
    """
    check_positive("order", order, integer=True)
    return _series(act, n, order, method)[1]


@dataclass(frozen=True)
class HermiteKernel:
    """K_φ(r) = Σ_k weights[k] r^k on [−1, 1]; call it on an array of correlations.

    Attributes: ``spec`` (the activation), ``coefficients`` a_0..a_n, ``weights`` (polynomial
    coefficients of K, degree ≤ n + 2, non-negative, summing to 1; ``weights[0] = 0``),
    ``tail_odd`` / ``tail_even`` (series mass beyond degree n), ``alpha`` = K'(0) = weights[1].
    """

    spec: Spec
    coefficients: np.ndarray
    weights: np.ndarray
    tail_odd: float
    tail_even: float

    @property
    def n(self) -> int:
        return self.coefficients.size - 1

    @property
    def alpha(self) -> float:
        return float(self.weights[1])

    def _r(self, r):
        r = np.asarray(r, dtype=np.float64)
        if not np.all(np.abs(r) <= 1.0 + 1e-12):
            bad = r[~(np.abs(r) <= 1.0 + 1e-12)].ravel()[0]
            raise InputError(f"correlation r={bad!r} must lie in [-1, 1]")
        return np.clip(r, -1.0, 1.0)

    def __call__(self, r):
        """K(r) for r of any shape (entries in [−1, 1]); same shape, float64."""
        return np.polynomial.polynomial.polyval(self._r(r), self.weights)

    def derivative(self, r):
        """K'(r), same shape as r."""
        return np.polynomial.polynomial.polyval(self._r(r), np.polynomial.polynomial.polyder(self.weights))

    def error_bound(self, r):
        """Bound on the truncation error |K_true(r) − K(r)| = (τ_odd + τ_even) |r|^{n+1}."""
        return (self.tail_odd + self.tail_even) * np.abs(self._r(r)) ** (self.n + 1)


def kernel(act, n: int = 256, *, order: int = DEFAULT_ORDER, method: str = "auto") -> HermiteKernel:
    """The correlation kernel K_φ of ψ = φ(a z + b) as a Hermite series with ``n`` terms.

    Returns a callable :class:`HermiteKernel`: ``kernel("tanh")(0.5)``. Cost: one quadrature of
    n + 1 coefficients (a few ms); each call is a degree-(n + 2) Horner evaluation.
    Raises InputError when ψ is numerically constant (e.g. relu(z + b) with b < −37).
    Reference: PAPER.md §2.3 (Mehler expansion), v1 Lemma A.1 / A.2.
    """
    check_positive("n", n, integer=True)
    check_positive("order", order, integer=True)
    spec, coef, var, cross = _series(act, n, order, method, want_cross=True)
    _check_variance(spec, coef[0], var)
    sq = coef[1:] ** 2
    deg = np.arange(1, n + 1)
    v_odd, v_even = 0.5 * (var - cross), 0.5 * (var + cross)
    tail_odd = max(v_odd - sq[deg % 2 == 1].sum(), 0.0) / var
    tail_even = max(v_even - sq[deg % 2 == 0].sum(), 0.0) / var
    weights = np.zeros(n + 3)
    weights[1 : n + 1] = sq / var
    weights[n + 1 if n % 2 == 0 else n + 2] += tail_odd
    weights[n + 2 if n % 2 == 0 else n + 1] += tail_even
    return HermiteKernel(spec, coef, weights, float(tail_odd), float(tail_even))


def alpha(act, *, order: int = DEFAULT_ORDER, method: str = "auto") -> float:
    """Linearity coefficient α = K_φ'(0) = (E ψ'(Z))² / Var ψ(Z) ∈ [0, 1] for ψ = φ(a z + b).

    ψ' includes the chain-rule factor a (Stein: a_1 = E[Z ψ(Z)] = E[ψ'(Z)]); computed as
    a_1²/Var from the quadrature (no derivative needed). This is the quantity PAPER.md §2.7 calls
    "γ(a, b)" in v2 Appendix A.2 — it is the *linearity*, not the decorrelation strength; see
    :func:`gamma`. Cost: one quadrature (≈ 4000 evaluations of φ).
    """
    check_positive("order", order, integer=True)
    spec, coef, var, _ = _series(act, 1, order, method)
    _check_variance(spec, coef[0], var)
    return float(min(coef[1] ** 2 / var, 1.0))


def gamma(act, *, order: int = DEFAULT_ORDER, method: str = "auto") -> float:
    """Decorrelation strength γ_φ = (1 − α)/(1 + α) ∈ [0, 1] (v2 Theorem 3.1).

    Erratum (PAPER.md §2.7): v2 Appendix A.2 defines "γ(a, b) = (E ψ')²/Var ψ" and calls it a
    monotone reparameterisation of γ_φ. That expression is α (the linearity coefficient), and
    γ_φ is *decreasing* in it. This function returns the decorrelation strength the figures plot
    (rising to 1 in the frozen regime), γ_φ = (1 − α)/(1 + α) with α from :func:`alpha`.
    Examples: γ = 0 for linear; relu: (π − 2)/(3π − 2) ≈ 0.1538; tanh(a z) → (π − 2)/(π + 2)
    ≈ 0.2220 as a → ∞ (the sign function).
    """
    a = alpha(act, order=order, method=method)
    return (1.0 - a) / (1.0 + a)


def kappa(act, n: int = 256, *, order: int = DEFAULT_ORDER, method: str = "auto") -> float:
    """v1 decorrelation strength κ_φ = max_{r∈[0,1]} (r² − K_φ(r)²).

    Maximised on a 4097-point grid, then refined by golden-section search (60 steps) around the
    best grid point; error below 1e-12 plus the kernel's truncation error. 0 for linear φ.
    """
    k = kernel(act, n, order=order, method=method)
    f = lambda r: r * r - k(r) ** 2  # noqa: E731
    grid = np.linspace(0.0, 1.0, 4097)
    i = int(np.argmax(f(grid)))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    g = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(60):
        x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
        if f(x1) >= f(x2):
            hi = x2
        else:
            lo = x1
    return float(max(f(grid[i]), f(0.5 * (lo + hi))))

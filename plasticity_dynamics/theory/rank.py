"""Rank surrogates, the decorrelation potential, and the v2 rank-gain bound (PAPER.md §2.2, §2.5).

All functions take NumPy or JAX arrays, work in float64 NumPy, and accept leading batch axes
(..., d, d) unless stated. For a d×d correlation matrix C (unit diagonal) and an activation φ:

* er₂(M) = (tr M)² / ‖M‖_F² (Rényi-2 effective rank); for correlation matrices d² / ‖C‖_F².
* Shannon effective rank exp(H(s / Σ s)) of the singular values s (= eigenvalues for PSD M).
* Ψ(C) = Σ_{i≠j} C_ij² (1 − C_ij²) (decorrelation potential), zero iff every C_ij ∈ {0, ±1}.
* v2 Theorem 3.1: er₂(K_φ(C)) / er₂(C) ≥ 1 + γ_φ Ψ(C) / ‖C‖_F² (:func:`rank_gain_bound`).

Equality (erratum, PAPER.md §2.5). The theorem's last sentence in v2 is garbled. What the proof
gives: the ratio equals 1 iff C_ij² = K_φ(C_ij)² for every i ≠ j. Since r² − K(r)² ≥ γ_φ r²(1 − r²)
(quartic gap bound), ratio = 1 *implies* γ_φ Ψ(C) = 0: φ affine, or every off-diagonal C_ij ∈
{0, ±1}. The converse holds for φ affine or C_ij ∈ {0, 1}, but *not* for C_ij = −1 unless
|K_φ(−1)| = 1, i.e. φ(Z) − Eφ(Z) is odd or even in Z (tanh, sigmoid, linear): for relu
K(−1) = −1/(π − 1), so C = [[1, −1], [−1, 1]] has Ψ = 0 yet ratio 4/(2 + 2/(π − 1)²) ≈ 1.64.
For nonlinear φ the ratio is strictly above 1 as soon as some |C_ij| ∈ (0, 1).
"""

from __future__ import annotations

import numbers

import numpy as np

from plasticity_dynamics.errors import InputError, check_positive
from plasticity_dynamics.theory.hermite import HermiteKernel, kernel


def _square(name: str, m) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.ndim < 2 or m.shape[-1] != m.shape[-2]:
        raise InputError(f"{name} has shape {m.shape}; expected a square matrix (..., d, d)")
    if not np.all(np.isfinite(m)):
        raise InputError(f"{name} has non-finite entries")
    return m


def _correlation(c, tol: float = 1e-8) -> np.ndarray:
    c = _square("C", c)
    diag = np.diagonal(c, axis1=-2, axis2=-1)
    if not np.allclose(diag, 1.0, rtol=0.0, atol=tol):
        raise InputError(f"C must have unit diagonal (max |C_ii - 1| = {np.abs(diag - 1).max():.3g})")
    if not np.allclose(c, np.swapaxes(c, -1, -2), rtol=0.0, atol=tol):
        raise InputError("C must be symmetric")
    if np.abs(c).max() > 1.0 + tol:
        raise InputError(f"C entries must lie in [-1, 1] (max |C_ij| = {np.abs(c).max():.6g})")
    return np.clip(c, -1.0, 1.0)


def decorrelation_potential(c) -> np.ndarray | float:
    """Ψ(C) = Σ_{i≠j} C_ij² (1 − C_ij²); shape (...,). Cost O(d²)."""
    c = _square("C", c)
    off = ~np.eye(c.shape[-1], dtype=bool)
    sq = np.where(off, c * c, 0.0)
    out = np.sum(sq * (1.0 - sq), axis=(-2, -1))
    return float(out) if out.ndim == 0 else out


def er2(m) -> np.ndarray | float:
    """Rényi-2 effective rank (tr M)² / ‖M‖_F² of a square matrix; shape (...,).

    d for a multiple of the identity, 1 for rank one PSD M. InputError if ‖M‖_F = 0.
    """
    m = _square("M", m)
    fro = np.sum(m * m, axis=(-2, -1))
    if np.any(fro == 0):
        raise InputError("er2 of a zero matrix is undefined")
    out = np.trace(m, axis1=-2, axis2=-1) ** 2 / fro
    return float(out) if out.ndim == 0 else out


def effective_rank_shannon(m) -> np.ndarray | float:
    """exp of the Shannon entropy of the normalised singular values of M (..., p, q).

    Roy & Vetterli (2007); equals the eigenvalue form exp(H(λ/tr M)) of PAPER.md §2.2 for PSD M.
    Cost: one SVD, O(p q min(p, q)). InputError for a zero matrix.
    """
    m = np.asarray(m, dtype=np.float64)
    if m.ndim < 2 or not np.all(np.isfinite(m)):
        raise InputError(f"M must be a finite matrix (..., p, q), got shape {m.shape}")
    s = np.linalg.svd(m, compute_uv=False)
    total = s.sum(axis=-1, keepdims=True)
    if np.any(total == 0):
        raise InputError("effective_rank_shannon of a zero matrix is undefined")
    p = s / total
    h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
    out = np.exp(h)
    return float(out) if out.ndim == 0 else out


def _as_kernel(act, kernel_kw) -> HermiteKernel:
    return act if isinstance(act, HermiteKernel) else kernel(act, **kernel_kw)


def kernel_matrix(c, act, **kernel_kw) -> np.ndarray:
    """K_φ(C) applied entrywise: the correlation matrix of φ(Z), Z ~ N(0, C); shape of C.

    act: a name, a modulation (name, a, b), or a :class:`HermiteKernel` (reused as is);
    kernel_kw go to :func:`~plasticity_dynamics.theory.hermite.kernel` (n, order, method).
    """
    c = _correlation(c)
    return _as_kernel(act, kernel_kw)(c)


def rank_gain(c, act, **kernel_kw) -> np.ndarray | float:
    """Actual er₂ ratio er₂(K_φ(C)) / er₂(C) = ‖C‖_F² / ‖K_φ(C)‖_F² for correlation matrices."""
    c = _correlation(c)
    k = _as_kernel(act, kernel_kw)(c)
    out = np.sum(c * c, axis=(-2, -1)) / np.sum(k * k, axis=(-2, -1))
    return float(out) if out.ndim == 0 else out


def rank_gain_bound(c, act, **kernel_kw) -> np.ndarray | float:
    """Lower bound 1 + γ_φ Ψ(C) / ‖C‖_F² on er₂(K_φ(C)) / er₂(C) (v2 Theorem 3.1).

    C: correlation matrix/matrices (..., d, d) (unit diagonal, symmetric, entries in [−1, 1];
    positive semi-definiteness is not checked). See the module docstring for when equality holds
    (the corrected statement of the theorem's last sentence).
    """
    c = _correlation(c)
    k = _as_kernel(act, kernel_kw)
    g = (1.0 - k.alpha) / (1.0 + k.alpha)
    out = 1.0 + g * np.asarray(decorrelation_potential(c)) / np.sum(c * c, axis=(-2, -1))
    return float(out) if out.ndim == 0 else out


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if seed < 0:
            raise InputError(f"seed={seed} must be >= 0")
        return np.random.default_rng(int(seed))
    if hasattr(seed, "dtype"):
        import jax  # local: only when a JAX key is passed

        data = jax.random.key_data(seed) if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key) else seed
        words = np.asarray(data)
        if words.dtype == np.uint32 and words.ndim >= 1:
            return np.random.default_rng(np.random.SeedSequence([int(x) for x in words.ravel()]))
    raise InputError(f"seed={seed!r} must be an int >= 0, a numpy Generator or a JAX PRNG key")


def random_correlation_matrix(d: int, seed, *, rank: int | None = None) -> np.ndarray:
    """Dense random d×d correlation matrix D^{-1/2} G Gᵀ D^{-1/2}, G ~ N(0, 1)^{d×rank}.

    seed: int, numpy Generator, or JAX PRNG key (new-style typed or raw uint32), used
    explicitly (same seed, same matrix). ``rank`` (default d) sets the number of latent factors:
    small rank gives strong correlations (rank 1: every C_ij = ±1), rank ≫ d gives C ≈ I.
    The result is exactly symmetric with an exactly unit diagonal; PSD of rank min(d, rank).
    """
    check_positive("d", d, integer=True)
    rank = d if rank is None else rank
    check_positive("rank", rank, integer=True)
    g = _rng(seed).standard_normal((d, rank))
    s = g @ g.T
    inv = 1.0 / np.sqrt(np.diag(s))
    c = s * inv[:, None] * inv[None, :]
    c = np.clip(0.5 * (c + c.T), -1.0, 1.0)
    np.fill_diagonal(c, 1.0)
    return c


def correlation_path(target, lambdas) -> np.ndarray:
    """C(λ) = (1 − λ) I + λ C_target for each λ in ``lambdas`` (in [0, 1]); shape (L, d, d).

    Every C(λ) is a correlation matrix (convex combination of two); C(0) = I, C(1) = target;
    off-diagonals scale linearly, Ψ(C(λ)) = Σ_{i≠j} λ² C_ij² (1 − λ² C_ij²).
    """
    c = _correlation(target)
    if c.ndim != 2:
        raise InputError(f"target has shape {c.shape}; expected one matrix (d, d)")
    lam = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    if lam.size == 0 or not np.all((lam >= 0) & (lam <= 1)):
        raise InputError("lambdas must be a non-empty array of numbers in [0, 1]")
    eye = np.eye(c.shape[0])
    return (1.0 - lam)[:, None, None] * eye + lam[:, None, None] * c

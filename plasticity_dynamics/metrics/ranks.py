"""Rank metrics of a layer's (samples, units) activation matrix.

All come from the singular values sigma of ``h``: by default of every row (as Dohare et al.
2024 and torch.linalg.svdvals do); ``max_rows=K`` subsamples K rows with a seeded permutation
when the matrix has more (the metric names then carry ``rows=K``, see :mod:`.names`). The
values are obtained without an SVD (which can fail to converge on GPUs) from the Gram matrix of
the smaller side, computed once in float32 at HIGHEST matmul precision and shared with the
cosine similarities of the layer (see :func:`sigma_from_gram`):

1. ``eigh`` of the Gram matrix gives right singular vectors V; sigma_i = ||h v_i|| is read
   off the data, accurate to about eps * sigma_max for every direction with eigenvalue above
   ``1e-5 * lambda_max`` (square roots of Gram eigenvalues would only be accurate to
   sqrt(eps) * sigma_max).
2. The directions below that split, which one ``eigh`` mixes, are resolved from the Gram matrix
   C = P^T P of the projections P = h V (entries accurate relative to each column's own norm):
   the Schur complement C_ss - C_sb C_bb^-1 C_bs is the Gram matrix of the small directions
   with the large ones projected out, and its eigenvalues give the small sigma to about
   sqrt(k * eps * 1e-5) * sigma_max (k = min(rows, units)).

Two cutoffs, both of the computing dtype (float32), checked against float64 NumPy in the tests:

- ``hard_rank`` counts sigma > sigma_max * max(N, D) * eps (N rows used, D units): the
  standard numerical-rank tolerance of numpy.linalg.matrix_rank and torch.linalg.matrix_rank,
  which Dohare et al. 2024 apply to their float32 activations;
- the entropy and mass ranks use every sigma above the resolution of step 2,
  sqrt(k * eps * 1e-5) * sigma_max, so genuine small singular values still count
  (effective rank within ~1e-5 relative of float64 on trained-like ReLU layers).

``h`` is scaled by max|h| first (no overflow). Cost: one Gram matrix (shared), one ``eigh`` of
size k = min(N, D), two products of the Gram's cost (P = h V and P^T P), one Cholesky solve and
one ``eigvalsh`` of size k.

| function | definition | centred | source |
|---|---|---|---|
| effective_rank | exp(entropy of sigma / sum sigma) | no | the paper (Roy & Vetterli); Dohare et al. |
| renyi2_rank | (sum sigma^2)^2 / sum sigma^4 | no | the paper's er_2 (theory) |
| stable_rank | (sum sigma^2)^2 / sum sigma^4 = ||H||_F^4 / tr((H^T H)^2) | yes | the paper, App. B.1.2 |
| srank(frac) | smallest k with top-k sigma >= frac * sum sigma | no | Kumar et al.; Dohare et al. |
| approximate_rank(frac) | smallest k with top-k sigma^2 >= frac * sum sigma^2 | no | Dohare et al. 2024 |
| hard_rank | number of sigma above the matrix_rank tolerance | no | linear algebra; Dohare et al. |

An all-zero matrix gives 0 for every rank (the paper returns 0 for a vanishing spectrum);
a constant matrix gives rank 1 uncentred and stable rank 0 (centred it is zero). Never NaN.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..errors import check_choice, check_positive, check_range
from .layout import check_matrix

_HIGHEST = jax.lax.Precision.HIGHEST
CUTOFFS = ("resolution", "matrix_rank")
_SPLIT = 1e-5  # eigenvalues below _SPLIT * lambda_max are resolved again in a second level


def _subsample(h, max_rows, seed):
    n = h.shape[0]
    if max_rows is None or n <= max_rows:
        return h
    idx = jax.random.permutation(jax.random.PRNGKey(seed), n)[:max_rows]
    return h[idx]


def rows_used(n: int, max_rows) -> int:
    """Rows a rank metric uses for a matrix of ``n`` rows: n, or max_rows when smaller."""
    return n if max_rows is None else min(n, max_rows)


def check_max_rows(max_rows) -> None:
    """InputError unless ``max_rows`` is None (every row) or a positive integer."""
    if max_rows is not None:
        check_positive("max_rows", max_rows, integer=True)


def _check_seed(seed):
    if not hasattr(seed, "shape"):  # Python numbers are checked; traced seeds pass through
        check_positive("seed", seed, integer=True, allow_zero=True)


def singular_values(h, *, centred: bool = False, max_rows: int | None = None, seed: int = 0,
                    cutoff: str = "resolution") -> jnp.ndarray:
    """Singular values of ``h`` (every row, or ``max_rows`` sampled ones), descending, shape
    (min(rows, units),).

    ``centred=True`` subtracts column means of the rows used first. ``seed`` fixes the row
    subsample, so repeated calls on the same matrix agree; it may be a traced integer (no
    recompilation per seed). ``cutoff``: "resolution" zeroes values below the resolution of
    the method, "matrix_rank" below sigma_max * max(N, D) * eps (see the module docstring).
    """
    check_max_rows(max_rows)
    _check_seed(seed)
    check_choice_cutoff(cutoff)
    return _singular_values(check_matrix("h", h), bool(centred), max_rows, seed, cutoff)


def check_choice_cutoff(cutoff):
    check_choice("cutoff", cutoff, CUTOFFS)


def centre_columns(h):
    """Column-centred ``h``; a constant column centres to rounding noise of its mean
    (~log2(n) eps |c|) and is set to exactly zero."""
    hc = h - jnp.mean(h, axis=0, keepdims=True)
    noise = 32 * jnp.finfo(h.dtype).eps * jnp.max(jnp.abs(h), axis=0, keepdims=True)
    return jnp.where(jnp.max(jnp.abs(hc), axis=0, keepdims=True) > noise, hc, 0.0)


def scale_by_max(h):
    """(h / max|h|, max|h|) with scale 1 for an all-zero matrix."""
    scale = jnp.max(jnp.abs(h))
    scale = jnp.where(scale > 0, scale, 1.0)
    return h / scale, scale


def _prepare(h, centred, max_rows, seed):
    """Subsample rows, optionally centre columns, scale by max|h|: (scaled h, scale)."""
    h = _subsample(h, max_rows, seed)
    if centred:
        h = centre_columns(h)
    return scale_by_max(h)


def gram(a):
    """a^T a at HIGHEST precision, shape (cols, cols)."""
    return jnp.matmul(a.T, a, precision=_HIGHEST)


def _small_gram(hs):
    n, d = hs.shape
    return gram(hs) if n >= d else gram(hs.T)


def sigma_from_gram(a, g):
    """Singular values (k,) of a tall (m, k) matrix ``a`` (m >= k) given g = a^T a, descending,
    unfiltered, with the resolution described in the module docstring. Returns (sigma, floor):
    floor is the resolution below which values are indistinguishable from zero."""
    k = a.shape[1]
    lam, vecs = jnp.linalg.eigh(g)
    proj = jnp.matmul(a, vecs, precision=_HIGHEST)
    c = gram(proj)  # Gram of the projections: entries accurate relative to the column norms
    sig = jnp.sqrt(jnp.maximum(jnp.diagonal(c), 0.0))
    big = lam > _SPLIT * lam[-1]
    fb = big.astype(a.dtype)
    fs = 1.0 - fb
    # normalise the large directions so their block is ~ identity (well conditioned)
    u = jnp.where(big, 1.0 / jnp.where(sig > 0, sig, 1.0), 1.0)
    cn = c * u[:, None] * u[None, :]
    cbb = cn * fb[:, None] * fb[None, :] + jnp.diag(fs)
    cbs = cn * fb[:, None] * fs[None, :]
    x = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(cbb, lower=True), cbs)
    schur = cn * fs[:, None] * fs[None, :] - jnp.matmul(cbs.T, x, precision=_HIGHEST)
    schur = 0.5 * (schur + schur.T)
    small = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(schur), 0.0))
    sig = jnp.sort(jnp.concatenate([jnp.where(big, sig, 0.0), small]))[::-1][:k]
    floor = jnp.sqrt(k * jnp.finfo(a.dtype).eps * _SPLIT) * sig[0]
    return sig, floor


def spectrum(hs, g=None):
    """(sigma descending (min(n, d),), resolution floor) of a scaled (n, d) matrix; ``g`` is its
    (d, d) Gram matrix when already computed (used only when n >= d)."""
    n, d = hs.shape
    if n >= d:
        return sigma_from_gram(hs, gram(hs) if g is None else g)
    return sigma_from_gram(hs.T, gram(hs.T))


def apply_cutoff(sig, floor, shape, cutoff):
    """Zero sigma below the chosen cutoff (see the module docstring)."""
    if cutoff == "matrix_rank":
        tol = max(shape) * jnp.finfo(sig.dtype).eps * sig[0]
    else:
        tol = floor
    return jnp.where(sig > tol, sig, 0.0)


@functools.partial(jax.jit, static_argnums=(1, 2, 4))
def _singular_values(h, centred, max_rows, seed, cutoff):
    hs, scale = _prepare(h, centred, max_rows, seed)
    sig, floor = spectrum(hs)
    return apply_cutoff(sig, floor, hs.shape, cutoff) * scale


def participation_of_gram(g):
    """(tr M)^2 / ||M||_F^2 of a Gram matrix M: (sum sigma^2)^2 / sum sigma^4, 0 for M = 0."""
    den = jnp.sum(g * g)
    return jnp.where(den > 0, jnp.trace(g) ** 2 / jnp.where(den > 0, den, 1.0), 0.0)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _gram_participation(h, centred, max_rows, seed):
    """(tr M)^2 / ||M||_F^2 for M the Gram matrix (sum sigma^2)^2 / sum sigma^4, without eigh."""
    hs, _ = _prepare(h, centred, max_rows, seed)
    return participation_of_gram(_small_gram(hs))


@jax.jit
def _entropy_rank(s):
    total = jnp.sum(s)
    p = s / jnp.where(total > 0, total, 1.0)
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.where(total > 0, jnp.exp(ent), 0.0)


@jax.jit
def _participation(s):
    lam = (s / jnp.where(s[0] > 0, s[0], 1.0)) ** 2  # scale-free, no overflow
    den = jnp.sum(lam * lam)
    return jnp.where(den > 0, jnp.sum(lam) ** 2 / jnp.where(den > 0, den, 1.0), 0.0)


@jax.jit
def _mass_rank(w, frac):
    total = jnp.sum(w)
    cum = jnp.cumsum(w)
    k = jnp.sum(cum < frac * total) + 1
    k = jnp.minimum(k, jnp.sum(w > 0))
    return jnp.where(total > 0, k, 0).astype(jnp.int32)


def spectrum_ranks(s, frac: float = 0.99, *, hard=None) -> dict:
    """Rank summaries of one descending singular-value vector ``s``: a dict with keys
    effective_rank, renyi2_rank, srank, approximate_rank, hard_rank (float32 scalars).
    ``hard``: the vector to count for hard_rank (default ``s``; pass the values after the
    matrix_rank cutoff)."""
    check_range("frac", frac, 0.0, 1.0, high_inclusive=True)
    return {
        "effective_rank": _entropy_rank(s),
        "renyi2_rank": _participation(s),
        "srank": _mass_rank(s, frac).astype(jnp.float32),
        "approximate_rank": _mass_rank(s * s, frac).astype(jnp.float32),
        "hard_rank": jnp.sum((s if hard is None else hard) > 0).astype(jnp.float32),
    }


def effective_rank(h, *, max_rows: int | None = None, seed: int = 0) -> jnp.ndarray:
    """exp(-sum p log p), p = sigma / sum sigma, of the uncentred ``h`` (paper, App. B.1.2)."""
    return _entropy_rank(singular_values(h, max_rows=max_rows, seed=seed))


def renyi2_rank(h, *, max_rows: int | None = None, seed: int = 0) -> jnp.ndarray:
    """Renyi-2 effective rank (tr M)^2 / ||M||_F^2 of the uncentred Gram matrix M = h^T h."""
    return _participation(singular_values(h, max_rows=max_rows, seed=seed))


def stable_rank(h, *, max_rows: int | None = None, seed: int = 0) -> jnp.ndarray:
    """The paper's stable rank ||H~||_F^4 / tr((H~^T H~)^2) of the column-centred H~ (from the
    Gram matrix directly: no eigendecomposition)."""
    check_max_rows(max_rows)
    _check_seed(seed)
    return _gram_participation(check_matrix("h", h), True, max_rows, seed)


def srank(h, frac: float = 0.99, *, max_rows: int | None = None, seed: int = 0) -> jnp.ndarray:
    """Smallest k whose top-k singular values hold ``frac`` of sum sigma (int32)."""
    check_range("frac", frac, 0.0, 1.0, high_inclusive=True)
    return _mass_rank(singular_values(h, max_rows=max_rows, seed=seed), frac)


def approximate_rank(h, frac: float = 0.99, *, max_rows: int | None = None, seed: int = 0) -> jnp.ndarray:
    """Smallest k whose top-k squared singular values hold ``frac`` of sum sigma^2 (int32)."""
    check_range("frac", frac, 0.0, 1.0, high_inclusive=True)
    s = singular_values(h, max_rows=max_rows, seed=seed)
    return _mass_rank(s * s, frac)


def hard_rank(h, *, max_rows: int | None = None, seed: int = 0) -> jnp.ndarray:
    """Number of singular values above sigma_max * max(N, D) * eps(float32), the tolerance of
    numpy/torch ``matrix_rank`` (int32)."""
    s = singular_values(h, max_rows=max_rows, seed=seed, cutoff="matrix_rank")
    return jnp.sum(s > 0).astype(jnp.int32)

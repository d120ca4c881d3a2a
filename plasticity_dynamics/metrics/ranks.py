"""Rank metrics of a layer's (samples, units) activation matrix.

All come from the singular values sigma of ``h``: by default of every row (as Dohare et al.
2024 and torch.linalg.svdvals do); ``max_rows=K`` subsamples K rows with a seeded permutation
when the matrix has more (the metric names then carry ``rows=K``, see :mod:`.names`).
:func:`layer_factors` is the one place they are computed, together with the two Gram matrices
the layer's similarities need, in float32 with ``h`` scaled by max|h| first (no overflow). Two
routes (both checked against float64 NumPy in the tests; :func:`default_route` picks by
backend and shape: "qr" on CPU unless the matrix is tall and large, "gram" otherwise):

- ``"qr"`` (the CPU default for all but tall, large matrices). One Householder QR of the column-centred matrix
  ``hc = Q R_c`` (k = units, rows >= units) serves everything: ``h = hc + 1 mu^T`` and ``1`` is
  orthogonal to the columns of ``hc``, so ``h`` has the singular values of the (k + 1, k) matrix
  ``B = [R_c; sqrt(n) mu^T]`` (one values-only SVD of size k + 1, padded square), the centred
  Gram matrix is ``R_c^T R_c`` and the uncentred one ``B^T B = R_c^T R_c + n mu mu^T`` (one k^3
  product instead of two n k^2 ones; a sum, so no cancellation). Backward stable: sigma to about eps * sigma_max (measured <= 6e-7 sigma_max at
  4096 x 1024); the resolution floor is 4 sqrt(max(N, D)) eps sigma_max. A wide matrix
  (rows < units) takes the QR of h^T; its Gram matrices are formed as on the "gram" route.
- ``"gram"`` (the default on other backends, and on CPU for N >= 8 D and N D >= 2^19): the Gram matrix of the
  smaller side, ``eigh`` of it gives right singular vectors V; sigma_i = ||h v_i|| is read off
  the data for every direction with eigenvalue above ``1e-5 * lambda_max``; the directions
  below that split are resolved from the Schur complement of the projections' Gram matrix
  (floor sqrt(k * eps * 1e-5) * sigma_max). See :func:`sigma_from_gram`.

Two cutoffs, both of the computing dtype (float32):

- ``hard_rank`` counts sigma > sigma_max * max(N, D) * eps (N rows used, D units): the
  standard numerical-rank tolerance of numpy.linalg.matrix_rank and torch.linalg.matrix_rank,
  which Dohare et al. 2024 apply to their float32 activations;
- the entropy and mass ranks use every sigma above the route's resolution floor, so genuine
  small singular values still count (effective rank within ~1e-5 relative of float64 on
  trained-like ReLU layers).

Cost ("gram" route, N >= D): three N D^2 products (the centred Gram matrix, the projections
h V and their Gram matrix; the uncentred Gram matrix is G_cen + n mu mu^T), one eigendecomposition
with vectors and one values-only (tridiagonal reduction + bisection) of size D, a Cholesky
solve of size D; ("qr" route, N >= D): the centring (N D), one QR (2 N D^2 flops), one SVD of
size D + 1, one D^3 product: 1.1-1.6x faster than "gram" at 1000 x 512 - 4096 x 1024 on 2
CPU cores, but up to 2x slower on tall large matrices, whose "gram" products use every core
while jaxlib's LAPACK QR runs on one (numbers in :func:`default_route`).

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
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import linalg
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
                    cutoff: str = "resolution", route: str | None = None) -> jnp.ndarray:
    """Singular values of ``h`` (every row, or ``max_rows`` sampled ones), descending, shape
    (min(rows, units),).

    ``centred=True`` subtracts column means of the rows used first. ``seed`` fixes the row
    subsample, so repeated calls on the same matrix agree; it may be a traced integer (no
    recompilation per seed). ``cutoff``: "resolution" zeroes values below the resolution of
    the method, "matrix_rank" below sigma_max * max(N, D) * eps (see the module docstring).
    ``route``: "qr" or "gram" (default: :func:`default_route`).
    """
    check_max_rows(max_rows)
    _check_seed(seed)
    check_choice_cutoff(cutoff)
    if route is not None:
        check_choice("route", route, ROUTES)
    return _singular_values(check_matrix("h", h), bool(centred), max_rows, seed, cutoff, route)


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
    lam, vecs = linalg.eigh(g)
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
    x = linalg.cho_solve_lower(cbb, cbs)
    schur = cn * fs[:, None] * fs[None, :] - jnp.matmul(cbs.T, x, precision=_HIGHEST)
    schur = 0.5 * (schur + schur.T)
    small = jnp.sqrt(jnp.maximum(linalg.eigvalsh(schur), 0.0))
    sig = jnp.sort(jnp.concatenate([jnp.where(big, sig, 0.0), small]))[::-1][:k]
    floor = jnp.sqrt(k * jnp.finfo(a.dtype).eps * _SPLIT) * sig[0]
    return sig, floor


ROUTES = ("qr", "gram")
_QR_FLOOR = 4.0  # resolution floor of the "qr" route, in units of sqrt(max(N, D)) eps sigma_max


_GRAM_MIN_ASPECT = 8  # on CPU "gram" is the faster route for matrices with rows >= 8 units ...
_GRAM_MIN_SIZE = 1 << 19  # ... and at least this many entries (see default_route)


def default_route(shape: tuple[int, int] | None = None) -> str:
    """The default singular-value route for an (N, D) matrix of ``shape``: "gram" on other
    backends than CPU (a values-only SVD on GPUs can fail to converge); on CPU "gram" when the
    matrix is tall and large (N >= 8 D and N D >= 2^19 entries: its three N D^2 products run on
    every core, while LAPACK's QR runs on one), "qr" otherwise (shape None: "qr"). Measured on 2
    cores, ``layer_factors`` (ms, qr / gram): 1000 x 512 25 / 39, 4096 x 1024 305 / 336,
    4096 x 64 2.9 / 3.4 (qr); 8192 x 64 5.1 / 4.2, 8192 x 128 23 / 8.9, 32768 x 256 170 / 103,
    100000 x 512 1756 / 876 (gram). Both are vmap-safe: their LAPACK calls go through
    :mod:`plasticity_dynamics.linalg`, which keeps XLA:CPU from deadlocking on batched calls."""
    if jax.default_backend() != "cpu":
        return "gram"
    if shape is not None:
        n, d = shape
        if n >= _GRAM_MIN_ASPECT * d and n * d >= _GRAM_MIN_SIZE:
            return "gram"
    return "qr"


class LayerFactors(NamedTuple):
    """What every rank and similarity of one (N, D) layer is computed from, all of ``h / scale``.

    sigma: (min(N, D),) singular values, descending, unfiltered; floor: scalar, the resolution
    below which they are indistinguishable from zero; gram: (D, D) uncentred Gram matrix;
    gram_centred: (D, D) Gram matrix of the column-centred matrix (constant columns exactly
    zero, see :func:`centre_columns`); scale: max|h| (1 for an all-zero matrix).
    """

    sigma: jnp.ndarray
    floor: jnp.ndarray
    gram: jnp.ndarray
    gram_centred: jnp.ndarray
    scale: jnp.ndarray


def layer_factors(h, route: str | None = None) -> LayerFactors:
    """:class:`LayerFactors` of a float (N, D) matrix ``h`` (see the module docstring for the
    two routes; ``route=None`` takes :func:`default_route`). Jit- and vmap-able.

    Cost, "qr" route with N >= D: the centring, one QR of (N, D), one values-only SVD of size
    D + 1 and one D^3 product; "gram" route: three N D^2 products, two eigendecompositions (the
    second values-only) and a Cholesky solve of size D (see the module docstring).
    """
    route = default_route(h.shape) if route is None else route
    check_choice("route", route, ROUTES)
    n, d = h.shape
    hs, scale = scale_by_max(h)
    hc = centre_columns(hs)
    mu = jnp.mean(hs, axis=0)
    if route == "qr" and n >= d:
        rc = linalg.qr_r(hc)  # (D, D): hc = Q rc
        b = jnp.concatenate([rc, jnp.sqrt(float(n)) * mu[None, :]], axis=0)  # h = [Q, 1/sqrt(n)] b
        sig = linalg.svd_values(jnp.pad(b, ((0, 0), (0, 1))))[:d]  # padded square: one extra zero
        g_cen = gram(rc)
    else:
        g_cen = gram(hc)
    # every route: the uncentred Gram matrix is the centred one plus n mu mu^T (= b^T b above; a
    # sum of two PSD terms, so no cancellation), one (D, D) product fewer than forming it from h
    g_unc = g_cen + float(n) * mu[:, None] * mu[None, :]
    if route == "gram":
        sig, floor = sigma_from_gram(hs, g_unc) if n >= d else sigma_from_gram(hs.T, gram(hs.T))
        return LayerFactors(sig, floor, g_unc, g_cen, scale)
    if n < d:  # wide: sigma from the QR of h^T
        sig = linalg.svd_values(linalg.qr_r(hs.T))
    floor = _QR_FLOOR * jnp.sqrt(float(max(n, d))) * jnp.finfo(hs.dtype).eps * sig[0]
    return LayerFactors(sig, floor, g_unc, g_cen, scale)


def apply_cutoff(sig, floor, shape, cutoff):
    """Zero sigma below the chosen cutoff (see the module docstring)."""
    if cutoff == "matrix_rank":
        tol = max(shape) * jnp.finfo(sig.dtype).eps * sig[0]
    else:
        tol = floor
    return jnp.where(sig > tol, sig, 0.0)


@functools.partial(jax.jit, static_argnums=(1, 2, 4, 5))
def _singular_values(h, centred, max_rows, seed, cutoff, route=None):
    h = _subsample(h, max_rows, seed)
    if centred:
        h = centre_columns(h)
    f = layer_factors(h, route)  # (its Gram matrices, unused here, are dropped by XLA)
    return apply_cutoff(f.sigma, f.floor, h.shape, cutoff) * f.scale


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

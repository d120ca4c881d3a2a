"""Rank metrics of a layer's (samples, units) activation matrix.

All come from the singular values sigma of ``h`` (rows subsampled to at most ``max_rows`` with a
seeded permutation), obtained without an SVD (which can fail to converge on GPUs): ``eigh`` of
the smaller Gram matrix (h^T h or h h^T, at HIGHEST matmul precision) gives the singular vectors
and sigma_i = ||h v_i|| is read off the data, accurate to about eps * sigma_max (square roots of
Gram eigenvalues would only be accurate to sqrt(eps) * sigma_max, which skews entropy ranks of
layers with one dominant direction, such as uncentred ReLU layers, and hard ranks of layers with
dead units). Directions with eigenvalue below 1e-5 * lambda_max, which one ``eigh`` cannot tell
apart, are resolved again by a second ``eigh`` of their own projections (one Rayleigh-Ritz
refinement). ``h`` is scaled by max|h| first (no overflow), and singular values below
max(n, d) * eps * sigma_max (eps of the dtype; numpy.linalg.matrix_rank's default) are set to
zero. Cost: two Gram matrices, two projections (O(n d min(n, d)) each) and two ``eigh`` of size
min(n, d).

| function | definition | centred | source |
|---|---|---|---|
| effective_rank | exp(entropy of sigma / sum sigma) | no | the paper (Roy & Vetterli) |
| renyi2_rank | (sum sigma^2)^2 / sum sigma^4 | no | the paper's er_2 (theory) |
| stable_rank | (sum sigma^2)^2 / sum sigma^4 = ||H||_F^4 / tr((H^T H)^2) | yes | the paper, App. B.1.2 |
| srank(frac) | smallest k with top-k sigma >= frac * sum sigma | no | Kumar et al.; Dohare et al. |
| approximate_rank(frac) | smallest k with top-k sigma^2 >= frac * sum sigma^2 | no | Dohare et al. 2024 |
| hard_rank | number of non-zero sigma (at the resolution above) | no | linear algebra |

An all-zero matrix gives 0 for every rank (the paper returns 0 for a vanishing spectrum);
a constant matrix gives rank 1 uncentred and stable rank 0 (centred it is zero). Never NaN.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..errors import check_positive, check_range
from .layout import check_matrix

_HIGHEST = jax.lax.Precision.HIGHEST


def _subsample(h, max_rows: int, seed: int):
    n = h.shape[0]
    if n <= max_rows:
        return h
    idx = jax.random.permutation(jax.random.PRNGKey(seed), n)[:max_rows]
    return h[idx]


def _check_seed(seed):
    if not hasattr(seed, "shape"):  # Python numbers are checked; traced seeds pass through
        check_positive("seed", seed, integer=True, allow_zero=True)


def singular_values(h, *, centred: bool = False, max_rows: int = 1024, seed: int = 0) -> jnp.ndarray:
    """Singular values of ``h`` (rows subsampled), descending, shape (min(rows, units),).

    ``centred=True`` subtracts column means of the (subsampled) rows first. ``seed`` fixes the
    row subsample, so repeated calls on the same matrix agree; it may be a traced integer
    (no recompilation per seed). See the module docstring for the
    resolution of small singular values.
    """
    check_positive("max_rows", max_rows, integer=True)
    _check_seed(seed)
    return _singular_values(check_matrix("h", h), bool(centred), max_rows, seed)


def _prepare(h, centred, max_rows, seed):
    """Subsample rows, optionally centre columns, scale by max|h|: (scaled h, scale)."""
    h = _subsample(h, max_rows, seed)
    if centred:
        # a constant column centres to rounding noise of the mean (~log2(n) eps |c|): zero it
        hc = h - jnp.mean(h, axis=0, keepdims=True)
        noise = 32 * jnp.finfo(h.dtype).eps * jnp.max(jnp.abs(h), axis=0, keepdims=True)
        h = jnp.where(jnp.max(jnp.abs(hc), axis=0, keepdims=True) > noise, hc, 0.0)
    scale = jnp.max(jnp.abs(h))
    scale = jnp.where(scale > 0, scale, 1.0)
    return h / scale, scale


def _small_gram(hs):
    n, d = hs.shape
    return jnp.matmul(hs.T, hs, precision=_HIGHEST) if n >= d else jnp.matmul(hs, hs.T, precision=_HIGHEST)


_SPLIT = 1e-5  # eigenvalues below _SPLIT * lambda_max are resolved again in a second level


def _norms_of_ritz(a):
    """Column norms of a @ V, V the eigenvectors of a^T a: the singular values of ``a`` with
    error ~ eps * ||a|| each, except that values below sqrt(eps) * ||a|| are mixed together."""
    lam, vecs = jnp.linalg.eigh(jnp.matmul(a.T, a, precision=_HIGHEST))
    proj = jnp.matmul(a, vecs, precision=_HIGHEST)
    return lam, proj, jnp.sqrt(jnp.sum(proj * proj, axis=0))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _singular_values(h, centred, max_rows, seed):
    hs, scale = _prepare(h, centred, max_rows, seed)
    n, d = hs.shape
    a = hs if n >= d else hs.T  # work on the smaller Gram matrix
    lam, proj, sig = _norms_of_ritz(a)
    # level 2: directions with lambda < _SPLIT * lambda_max are mixed by the first eigh; their
    # projections hold all their energy, so re-resolve them against their own (small) scale
    big = lam > _SPLIT * lam[-1]
    q = jnp.where(big[None, :], proj / jnp.where(sig > 0, sig, 1.0)[None, :], 0.0)
    rest = jnp.where(big[None, :], 0.0, proj)
    for _ in range(2):  # remove what leaked in from the resolved directions (CGS2)
        rest = rest - jnp.matmul(q, jnp.matmul(q.T, rest, precision=_HIGHEST), precision=_HIGHEST)
    _, _, small = _norms_of_ritz(rest)
    sig = jnp.sort(jnp.concatenate([jnp.where(big, sig, 0.0), small]))[::-1][: lam.shape[0]]
    tol = max(n, d) * jnp.finfo(hs.dtype).eps * sig[0]
    return jnp.where(sig > tol, sig, 0.0) * scale


@functools.partial(jax.jit, static_argnums=(1, 2))
def _gram_participation(h, centred, max_rows, seed):
    """(tr M)^2 / ||M||_F^2 for M the Gram matrix (sum sigma^2)^2 / sum sigma^4, without eigh."""
    hs, _ = _prepare(h, centred, max_rows, seed)
    gram = _small_gram(hs)
    den = jnp.sum(gram * gram)
    return jnp.where(den > 0, jnp.trace(gram) ** 2 / jnp.where(den > 0, den, 1.0), 0.0)


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


def spectrum_ranks(s, frac: float = 0.99) -> dict:
    """Rank summaries of one descending singular-value vector ``s``: a dict with keys
    effective_rank, renyi2_rank, srank, approximate_rank, hard_rank (float32 scalars)."""
    check_range("frac", frac, 0.0, 1.0, high_inclusive=True)
    return {
        "effective_rank": _entropy_rank(s),
        "renyi2_rank": _participation(s),
        "srank": _mass_rank(s, frac).astype(jnp.float32),
        "approximate_rank": _mass_rank(s * s, frac).astype(jnp.float32),
        "hard_rank": jnp.sum(s > 0).astype(jnp.float32),
    }


def effective_rank(h, *, max_rows: int = 1024, seed: int = 0) -> jnp.ndarray:
    """exp(-sum p log p), p = sigma / sum sigma, of the uncentred ``h`` (paper, App. B.1.2)."""
    return _entropy_rank(singular_values(h, max_rows=max_rows, seed=seed))


def renyi2_rank(h, *, max_rows: int = 1024, seed: int = 0) -> jnp.ndarray:
    """Renyi-2 effective rank (tr M)^2 / ||M||_F^2 of the uncentred Gram matrix M = h^T h."""
    return _participation(singular_values(h, max_rows=max_rows, seed=seed))


def stable_rank(h, *, max_rows: int = 1024, seed: int = 0) -> jnp.ndarray:
    """The paper's stable rank ||H~||_F^4 / tr((H~^T H~)^2) of the column-centred H~ (from the
    Gram matrix directly: no eigendecomposition)."""
    check_positive("max_rows", max_rows, integer=True)
    _check_seed(seed)
    return _gram_participation(check_matrix("h", h), True, max_rows, seed)


def srank(h, frac: float = 0.99, *, max_rows: int = 1024, seed: int = 0) -> jnp.ndarray:
    """Smallest k whose top-k singular values hold ``frac`` of sum sigma (int32)."""
    check_range("frac", frac, 0.0, 1.0, high_inclusive=True)
    return _mass_rank(singular_values(h, max_rows=max_rows, seed=seed), frac)


def approximate_rank(h, frac: float = 0.99, *, max_rows: int = 1024, seed: int = 0) -> jnp.ndarray:
    """Smallest k whose top-k squared singular values hold ``frac`` of sum sigma^2 (int32)."""
    check_range("frac", frac, 0.0, 1.0, high_inclusive=True)
    s = singular_values(h, max_rows=max_rows, seed=seed)
    return _mass_rank(s * s, frac)


def hard_rank(h, *, max_rows: int = 1024, seed: int = 0) -> jnp.ndarray:
    """Number of singular values above the Gram-route resolution (int32)."""
    return jnp.sum(singular_values(h, max_rows=max_rows, seed=seed) > 0).astype(jnp.int32)

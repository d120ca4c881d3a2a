"""Principal angles between subspaces, and per-layer (block) restrictions of the normal space.

Principal angles (Björck & Golub 1973): for orthonormal bases Q_U (n x p), Q_V (n x q), the
cosines of the angles are the singular values of ``Q_U^T Q_V``. Small angles are taken from
the sines instead (singular values of ``Q_V - Q_U Q_U^T Q_V``), since arccos loses accuracy
near 0 (Knyazev & Argentati 2002); the two are combined at 45 degrees.

Block restriction: :class:`BlockRestriction` composes a 0/1 mask over the params pytree (one
layer, or any set of leaves) with a manifold's normal projector. The restricted operator is
``M P_N H P_N M`` on ``range(M P_N M)``. When P_N acts leaf by leaf (true for frozen-unit and
clone manifolds, whose projectors never mix two leaves) M and P_N commute and ``M P_N`` is the
orthogonal projector onto N ∩ (the masked coordinates): the normal spectrum restricted to that
layer's parameters.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..errors import InputError
from ._protocol import PyTree, manifold_args, resolve_manifold


def _as_rows(a, name) -> np.ndarray:
    """(k, n) float64 rows from an array or from a pytree with a leading axis k."""
    if isinstance(a, (np.ndarray, jax.Array)):
        arr = np.asarray(a, np.float64)
        if arr.ndim == 1:
            return arr[None, :]
        if arr.ndim != 2:
            raise InputError(f"{name} has shape {arr.shape}; expected (n, k) columns, (k, n) rows "
                             "or a pytree with a leading axis k")
        # basis vectors along the longer axis: tall (n, k) = columns (SciPy's convention),
        # wide (k, n) = rows (the leading-axis convention of eigenvector pytrees)
        return arr.T if arr.shape[0] >= arr.shape[1] else arr
    leaves = jax.tree.leaves(a)
    if not leaves:
        raise InputError(f"{name} is an empty pytree; expected arrays with a leading axis k")
    k = np.shape(leaves[0])[0] if np.ndim(leaves[0]) else None
    if k is None or any(np.ndim(x) == 0 or np.shape(x)[0] != k for x in leaves):
        raise InputError(f"{name}: every leaf needs the same leading axis k (the basis index)")
    return np.concatenate([np.asarray(x, np.float64).reshape(k, -1) for x in leaves], axis=1)


def _orthonormal_columns(rows: np.ndarray) -> np.ndarray:
    q, r = np.linalg.qr(rows.T)
    d = np.abs(np.diag(r))
    keep = d > 1e-10 * max(float(d.max(initial=0.0)), 1e-300)
    return q[:, keep]


def principal_angles(U: Any, V: Any) -> np.ndarray:
    """Principal angles between span(U) and span(V), radians, ascending.

    Args:
      U, V: bases, each either a 2-D array (a tall ``(n, k)`` array holds the basis vectors as
        columns, as in SciPy; a wide ``(k, n)`` array holds them as rows), a 1-D vector, or a
        pytree whose leaves share a leading axis k (e.g. ``Spectrum.eigenvectors``: row i is
        vector i, flattened in jax leaf order). Bases are re-orthonormalised (QR), so nearly
        orthonormal float32 eigenvectors are fine; dependent vectors are dropped.
    Returns:
      float64 ``(min(p, q),)`` angles in ``[0, pi/2]``, ascending (0: a shared direction).
    Cost: O(n (p + q)^2) on the host in float64.
    Reference: Björck & Golub (1973); Knyazev & Argentati (2002) for the sine formula.
    Raises InputError when the two bases live in spaces of different dimension.
    """
    a = _as_rows(U, "U")
    b = _as_rows(V, "V")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"U and V live in different spaces: dimension {a.shape[1]} vs {b.shape[1]}")
    qa, qb = _orthonormal_columns(a), _orthonormal_columns(b)
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    r = min(qa.shape[1], qb.shape[1])
    if r == 0:
        return np.zeros(0)
    cos = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)[:r]  # descending
    resid = qb - qa @ (qa.T @ qb)
    sin = np.clip(np.linalg.svd(resid, compute_uv=False), 0.0, 1.0)[::-1][:r]  # ascending
    ang = np.where(cos ** 2 >= 0.5, np.arcsin(sin), np.arccos(cos))
    return np.sort(ang)


def layer_mask(params: PyTree, layers) -> PyTree:
    """A 0/1 mask over ``params`` (same structure, float32 leaves) selecting the leaves whose
    path contains any of ``layers`` (a name or a list of names; matched against the
    ``/``-joined key path, e.g. ``"Dense_0"`` or ``"params/Dense_0/kernel"``).
    Raises InputError when nothing matches (naming the available paths)."""
    names = [layers] if isinstance(layers, str) else list(layers)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p) for p, _ in flat]
    hits = [any(n == p or n in p.split("/") or p.startswith(n + "/") for n in names) for p in paths]
    if not any(hits):
        raise InputError(f"layers={names!r} match no parameter; paths are: {', '.join(paths)}")
    leaves = [jnp.full(jnp.shape(x), 1.0 if h else 0.0, jnp.float32) for (_, x), h in zip(flat, hits)]
    return jax.tree.unflatten(jax.tree.structure(params), leaves)


def layer_names(params: PyTree) -> list[str]:
    """The parameter blocks :func:`layer_spectra` iterates over: the parents of the leaves
    (``Dense_0`` for ``Dense_0/kernel`` and ``Dense_0/bias``; a leaf's own name at top level)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    out = []
    for p, _ in flat:
        parts = [str(getattr(k, "key", getattr(k, "idx", k))) for k in p]
        name = "/".join(parts[:-1]) if len(parts) > 1 else parts[0]
        if name not in out:
            out.append(name)
    return out


@jax.tree_util.register_pytree_node_class
class BlockRestriction:
    """A :class:`ManifoldLike` whose normal space is N ∩ (a masked set of coordinates).

    ``normal(v) = M P_N(M v)`` (``P_N = I`` when ``manifold`` is None: the block Hessian of
    the masked parameters). ``normal_dim``: the exact rank when given or when the mask selects
    at most 4096 coordinates (columns of ``M P_N M`` counted on the host at construction), else
    the upper bound ``min(mask count, manifold.normal_dim)`` (Lanczos stops at breakdown, so an
    upper bound only costs nothing; the dense route needs the exact value).
    Exact when P_N acts leaf by leaf (see the module docstring). A pytree (mask and manifold as
    children) when the manifold is one, so new masks reuse compiled kernels.
    """

    def __init__(self, mask: PyTree, manifold=None, normal_dim: int | None = None):
        self.mask = mask
        self.manifold = manifold
        if normal_dim is None:
            normal_dim = _restricted_dim(mask, manifold)
        self.normal_dim = normal_dim

    def _m(self, v):
        return jax.tree.map(lambda x, m: x * m.astype(x.dtype), v, self.mask)

    def normal(self, v):
        w = self._m(v)
        if self.manifold is not None:
            w = self.manifold.normal(w)
        return self._m(w)

    def tangent(self, v):
        return jax.tree.map(lambda x, n: x - n, v, self.normal(v))

    def project(self, p):  # pragma: no cover - a restriction has no reference point
        return self.manifold.project(p) if self.manifold is not None else p

    def distance(self, p):
        return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(self.normal(p))))

    def leakage(self, g):
        return self.distance(g)

    def tree_flatten(self):
        return (self.mask, self.manifold, self.normal_dim), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.mask, obj.manifold, obj.normal_dim = children
        return obj


def _restricted_dim(mask, manifold) -> int:
    m = np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(mask)])
    idx = np.flatnonzero(m)
    if manifold is None or idx.size == 0:
        return int(idx.size)
    if idx.size > 4096:
        return int(min(idx.size, int(manifold.normal_dim)))
    bucket = 1 << max(int(idx.size) - 1, 0).bit_length()  # one compile per power of two
    padded = np.zeros(bucket, np.int32)
    padded[:idx.size] = idx
    live = np.arange(bucket) < idx.size
    man_static, man_dyn = manifold_args(manifold)
    diag = _diag_kernel(mask, man_dyn, jnp.asarray(padded), jnp.asarray(live), man_static=man_static)
    return int(round(float(np.sum(np.asarray(diag, np.float64)))))  # trace of a projector = its rank


@partial(jax.jit, static_argnames=("man_static",))
def _diag_kernel(like, man_dyn, idx, live, man_static):
    """``e_i^T P_N e_i`` for the coordinates ``idx`` (zero where not ``live``)."""
    manifold = resolve_manifold(man_static, man_dyn)
    flat, unravel = ravel_pytree(like)

    def one(c):
        i, on = c
        e = jnp.zeros(flat.shape, jnp.float32).at[i].set(1.0)
        return jnp.where(on, ravel_pytree(manifold.normal(unravel(e)))[0][i], 0.0)

    return jax.lax.map(one, (idx, live), batch_size=256)


def block_spectrum(loss_fn, params: PyTree, layers, manifold=None, k: int = 5, **kwargs):
    """Extreme eigenpairs of the Hessian block of one layer's parameters (``manifold=None``),
    or of the normal block restricted to that layer: ``M P_N H P_N M`` on N ∩ layer.

    ``layers``: a name / list of names for :func:`layer_mask`, or a 0/1 mask pytree.
    Other keyword arguments go to :func:`~._spectrum.normal_spectrum` (``args``, ``method``,
    ``num_iters``, ``key``, ...). Returns its :class:`~._spectrum.Spectrum`. Cost: that of
    ``normal_spectrum`` on a space of dimension ``normal_dim`` of the restriction.
    Reference: the block Hessian of a layer is the diagonal block ``H_ll`` (e.g. Sankar et al.
    2021, "A deeper look at the Hessian eigenspectrum of deep neural networks").
    Raises InputError when the restriction is empty (no normal direction in that layer).
    """
    from ._spectrum import normal_spectrum

    mask = layer_mask(params, layers) if isinstance(layers, (str, list, tuple)) else layers
    return normal_spectrum(loss_fn, params, BlockRestriction(mask, manifold), k, **kwargs)


def layer_spectra(loss_fn, params: PyTree, manifold=None, *, k: int = 5, layers=None,
                  **kwargs) -> dict:
    """``{layer: Spectrum}`` of :func:`block_spectrum` for every block of :func:`layer_names`
    (or the given ``layers``). Blocks with no normal direction are left out."""
    out = {}
    for name in (layer_names(params) if layers is None else layers):
        restriction = BlockRestriction(layer_mask(params, name), manifold)
        if restriction.normal_dim == 0:
            continue
        from ._spectrum import normal_spectrum

        out[name] = normal_spectrum(loss_fn, params, restriction, k, **kwargs)
    return out


__all__ = ["principal_angles", "layer_mask", "layer_names", "BlockRestriction", "block_spectrum",
           "layer_spectra"]

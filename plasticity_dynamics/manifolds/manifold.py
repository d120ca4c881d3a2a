"""``Manifold``: an affine LoP manifold seen through its orthogonal projectors, on pytrees.

Two kinds (PAPER.md 1.3, 1.4):

- **cloned** (:func:`cloned`): the leaf M_D(w) = w + M_BC of the duplicate-manifold family for
  a unit :class:`~.partition.Partition`. The tangent space M_BC is the set of parameter trees
  that are constant on every inter-block cell (for each leaf: every combination of non-unit
  indices, e.g. kernel taps, and one block per unit axis). Its orthogonal projector P_T
  replaces each cell by its mean (block averaging, applied axis by axis; the averaging
  operators of different axes commute, so the product is the projector onto the tensor
  product); the normal projector is P_N = I - P_T. dim T = number of cells.
- **frozen** (:func:`frozen`): M_F = {theta : the frozen coordinates equal the reference}. The
  normal space is spanned by the frozen coordinates (incoming weights, bias and pre-activation
  norm parameters of each frozen unit; for a dead unit, h = 0, also its outgoing weights):
  P_N = mask, P_T = 1 - mask.

Every method is pure, jit-able and usable inside ``lax`` loops; ``Manifold`` is a registered
pytree (arrays are children, layout metadata is static), so it can also be passed *into*
``jax.jit``. Pytrees given to the methods must have the structure of the reference tree
(a params tree, or a variables dict if the manifold was built from one).
Cost: one block averaging per unit axis of each leaf (see :mod:`.blocks`: O(size) for
expansion partitions, O(size * units) for small arbitrary groups), i.e. about one pass over
the parameters; methods are jitted internally (one compile per manifold layout). Failure
modes: InputError for a pytree of another structure. Reference: arXiv 2510.00304,
Theorem 2.1, Appendix A.3 (PAPER.md 1.3-1.4).
"""

from __future__ import annotations

import json
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError, check_choice
from .blocks import AxisMeta, AxisOp, block_mean, partition_axis
from .layouts import unit_partition
from .partition import Partition, collection_paths


class _Static:
    """Hashable wrapper of JSON-like metadata (compared through its JSON text)."""

    __slots__ = ("value", "_key")

    def __init__(self, value):
        self.value = value
        self._key = json.dumps(value, sort_keys=True, default=str)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Static) and other._key == self._key


def tree_norm(tree):
    """Euclidean norm of all leaves of a pytree together (at least float32 accumulation)."""
    leaves = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
    if not leaves:
        return jnp.float32(0.0)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32))))
                        for x in leaves))


class _Info:
    """The JSON ``info`` of a Manifold inside its pytree structure. It describes the manifold but
    changes no computation, so it is left out of equality and hashing: a manifold with other
    frozen units (or, with ``layout="dense"``, other clone clusters) of the same network has the
    same tree structure and reuses compiled kernels. Inside a traced function ``info`` is that
    of the first manifold traced: read it outside jit. (``normal_dim`` is a leaf, not
    metadata, so it is always the true value; see :attr:`Manifold.normal_dim`.)"""

    __slots__ = ("info",)

    def __init__(self, info):
        self.info = info

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, _Info)


@jax.tree_util.register_pytree_node_class
class Manifold:
    """Affine LoP manifold M = reference + T (see module docstring). Build with :func:`cloned`
    or :func:`frozen`; use ``project``, ``tangent``, ``normal``, ``distance``,
    ``relative_distance``, ``leakage``, ``normal_dim``, ``dim``, ``size``, ``info``."""

    def __init__(self, kind, treedef, axes, normal_dim, info, reference, ops, masks):
        self.kind = kind
        self._treedef = treedef
        self._axes = axes  # per leaf: tuple of AxisMeta (static)
        self._normal_dim = normal_dim
        self._info = info if isinstance(info, _Static) else _Static(info)
        self._reference = reference
        self._ops = ops  # per leaf: tuple of AxisOp (arrays)
        self._masks = masks

    # --- pytree protocol
    def tree_flatten(self):
        children = (self._normal_dim, self._reference, self._ops, self._masks)
        aux = (self.kind, self._treedef, self._axes, _Info(self._info))
        return children, aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        kind, treedef, axes, info = aux
        normal_dim, *rest = children
        return cls(kind, treedef, axes, normal_dim, info.info, *rest)

    # --- metadata
    @property
    def normal_dim(self):
        """Dimension of the normal space (rank of ``normal``). A Python int outside jit; inside
        a traced function (jit, vmap) the traced int32 value of *this* manifold (it is a pytree
        leaf, so a kernel compiled for one manifold never sees another one's count); for a
        manifold stacked over seeds (leading axis), the ``(seeds,)`` array."""
        d = self._normal_dim
        if isinstance(d, jax.core.Tracer) or np.ndim(d) > 0:
            return d
        return int(d)

    @property
    def info(self) -> dict:
        """JSON-serialisable description (kind, groups or frozen units with their case)."""
        return self._info.value

    @property
    def size(self) -> int:
        """Number of coordinates of the ambient space."""
        return int(sum(int(np.prod(np.shape(x))) for x in self._reference))

    @property
    def dim(self) -> int:
        """Dimension of the manifold (of its tangent space)."""
        return self.size - self.normal_dim

    @property
    def reference(self):
        """The reference point (a point of M) as a pytree."""
        return jax.tree_util.tree_unflatten(self._treedef, list(self._reference))

    def __repr__(self):
        return (f"Manifold({self.kind}, dim={self.dim}, normal_dim={self.normal_dim}, "
                f"size={self.size})")

    # --- projectors
    def _leaves(self, tree, what):
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        if treedef != self._treedef:
            raise InputError(f"{what} has tree structure {treedef}; expected the structure of "
                             f"the manifold's reference ({self._treedef})")
        return leaves

    def _tangent_leaves(self, leaves):
        out = []
        for x, axes, ops, mask in zip(leaves, self._axes, self._ops, self._masks):
            y = jnp.asarray(x)
            for meta, op in zip(axes, ops):
                y = block_mean(y, meta, op)
            if mask is not None:
                y = jnp.where(mask, jnp.zeros_like(y), y)
            out.append(y)
        return out

    def tangent(self, v):
        """P_T v: orthogonal projection of the pytree ``v`` onto the tangent space."""
        self._leaves(v, "v")
        return _jitted("tangent")(self, v)

    def normal(self, v):
        """P_N v = v - P_T v: orthogonal projection onto the normal space."""
        self._leaves(v, "v")
        return _jitted("normal")(self, v)

    def project(self, params):
        """The point of M nearest to ``params``: reference + P_T(params - reference)."""
        self._leaves(params, "params")
        return _jitted("project")(self, params)

    def offset(self, params):
        """P_N(params - reference): the displacement from M to ``params`` (normal part)."""
        self._leaves(params, "params")
        return _jitted("offset")(self, params)

    def distance(self, params):
        """Scalar ``||params - project(params)||`` (Euclidean, all leaves together)."""
        self._leaves(params, "params")
        return _jitted("distance")(self, params)

    def relative_distance(self, params):
        """``distance(params) / ||params||`` (0 for a zero tree)."""
        self._leaves(params, "params")
        return _jitted("relative_distance")(self, params)

    def leakage(self, grad):
        """``||P_N grad|| / ||grad||``: 0 when the gradient is tangent (an LoP manifold),
        1 when it is normal; 0 for a zero gradient."""
        self._leaves(grad, "grad")
        return _jitted("leakage")(self, grad)

    # unjitted implementations (called through _jitted, so eager use compiles once)
    def _tangent(self, v):
        return jax.tree_util.tree_unflatten(self._treedef,
                                            self._tangent_leaves(self._leaves(v, "v")))

    def _normal(self, v):
        leaves = self._leaves(v, "v")
        t = self._tangent_leaves(leaves)
        return jax.tree_util.tree_unflatten(
            self._treedef, [jnp.asarray(x) - y for x, y in zip(leaves, t)])

    def _project(self, params):
        leaves = self._leaves(params, "params")
        d = [jnp.asarray(x) - r for x, r in zip(leaves, self._reference)]
        t = self._tangent_leaves(d)
        return jax.tree_util.tree_unflatten(self._treedef,
                                            [r + y for r, y in zip(self._reference, t)])

    def _offset(self, params):
        leaves = self._leaves(params, "params")
        d = [jnp.asarray(x) - r for x, r in zip(leaves, self._reference)]
        t = self._tangent_leaves(d)
        return jax.tree_util.tree_unflatten(self._treedef, [a - b for a, b in zip(d, t)])

    def _distance(self, params):
        return tree_norm(self._offset(params))

    def _relative_distance(self, params):
        n = tree_norm(params)
        return jnp.where(n > 0, self._distance(params) / jnp.where(n > 0, n, 1.0), 0.0)

    def _leakage(self, grad):
        n = tree_norm(grad)
        return jnp.where(n > 0, tree_norm(self._normal(grad)) / jnp.where(n > 0, n, 1.0), 0.0)

    def at(self, params) -> "Manifold":
        """The parallel manifold (same tangent space) through ``params``."""
        leaves = self._leaves(params, "params")
        return Manifold(self.kind, self._treedef, self._axes, self._normal_dim, self._info,
                        [jnp.asarray(x) for x in leaves], self._ops, self._masks)


_JITTED = {}


def _jitted(name):
    """jax.jit of Manifold._<name>(manifold, tree), shared by all manifolds (the Manifold is a
    pytree argument, so one compile per layout; inside an outer jit it is simply inlined)."""
    if name not in _JITTED:
        _JITTED[name] = jax.jit(getattr(Manifold, "_" + name))
    return _JITTED[name]


# ------------------------------------------------------------------------------------------


LAYOUTS = ("auto", "dense")


def cloned(partition: Partition, reference_params, *, layout: str = "auto") -> Manifold:
    """The cloning manifold M_D(w) = w + M_BC of ``partition`` through ``reference_params``.

    reference_params: a params tree of the partitioned network, or its variables dict (then
    the manifold acts on variables; running statistics get the same block structure).
    The reference is any point; the manifold is an LoP manifold (gradients tangent) when the
    reference lies in M_RE and M_CE (see :func:`in_row_equitable`). Groups whose blocks are all
    singletons add no constraint. normal_dim = size - number of inter-block cells.
    layout: ``auto`` picks the cheapest block averaging per axis and skips all-singleton groups
    (the pytree structure depends on the clusters); ``dense`` uses the (units, units) averaging
    matrix on every unit axis of every group, singleton groups included (identity), so every
    partition of one network gives the same pytree structure: one compiled kernel for all of
    them (``analyze`` along a trajectory whose clone clusters change). Costs O(size * units)
    per projection instead of O(size).
    Raises InputError when a leaf is not described by the partition or for a bad layout.
    """
    check_choice("layout", layout, LAYOUTS)
    if not isinstance(partition, Partition):
        raise InputError(f"partition={type(partition).__name__} must be a Partition "
                         "(see unit_partition / expand)")
    paths = collection_paths(reference_params)
    treedef = jax.tree_util.tree_structure(reference_params)
    axes, ops, ref, normal_dim = [], [], [], 0
    for path, leaf in paths:
        shape = np.shape(leaf)
        la, lo, cells = [], [], int(np.prod(shape))
        for spec in partition.specs(path):
            if layout == "dense":
                meta, op = _dense_axis(partition, spec, shape[spec.axis])
            elif partition.is_trivial(spec.group):
                continue
            else:
                meta, op = partition_axis(partition, spec, shape[spec.axis])
            la.append(meta)
            lo.append(op)
            cells = cells // shape[spec.axis] * meta.outer * partition.num_blocks(spec.group)
        normal_dim += int(np.prod(shape)) - cells
        axes.append(tuple(la))
        ops.append(tuple(lo))
        ref.append(jnp.asarray(leaf))
    info = {"kind": "cloned", "family": partition.family,
            "groups": {g: {"units": partition.units(g), "blocks": partition.num_blocks(g)}
                       for g in partition.groups if not partition.is_trivial(g)}}
    return Manifold("cloned", treedef, tuple(axes), np.int32(normal_dim), info, ref, ops,
                    [None] * len(ref))


def _dense_axis(partition, spec, size: int) -> tuple:
    """(AxisMeta, AxisOp) with the (units, units) averaging matrix, whatever the blocks."""
    partition.axis_ids(spec, size)  # validates the length
    ids = np.asarray(partition.groups[spec.group], np.int64)
    same = (ids[:, None] == ids[None, :]).astype(np.float32)
    return (AxisMeta(spec.axis, size // ids.size, ids.size, "dense", 0),
            AxisOp(matrix=jnp.asarray(same / same.sum(axis=1, keepdims=True))))


def _unit_indices(name, sel, units) -> np.ndarray:
    sel = np.asarray(sel)
    if sel.dtype == bool:
        if sel.shape != (units,):
            raise InputError(f"units[{name!r}] mask has shape {sel.shape}; expected ({units},)")
        return np.flatnonzero(sel)
    sel = sel.reshape(-1)
    if sel.size and (not np.issubdtype(sel.dtype, np.integer) or sel.min() < 0
                     or sel.max() >= units):
        raise InputError(f"units[{name!r}]={sel.tolist()} must be a ({units},) bool mask or "
                         f"unit indices in [0, {units})")
    return np.unique(sel.astype(np.int64))


def frozen(units: Mapping, params, partition: Partition | None = None, *,
           dead: Mapping | None = None) -> Manifold:
    """The frozen-unit manifold M_F through ``params``.

    units: {layer name: (units,) bool mask or unit indices} of frozen units, f'(z) = 0 on the
        data (layer names as in ``partition.layers``: the monitored layers with an activation,
        plus e.g. resnet ``layer{s}_block{b}/inner``).
    dead: optional {layer: mask or indices}, units with h = 0 as well (a dead ReLU); their
        outgoing weights are frozen too. Units in ``dead`` are added to ``units``.
    partition: the network's :class:`Partition` (default: :func:`unit_partition` of the mlp or
        cnn zoo model rebuilt from the parameter shapes, norm before the activation).
    Normal space: the frozen coordinates (incoming kernel entries, bias and the norm scale and
    bias feeding the activation; plus outgoing kernel entries for dead units). ``info`` lists
    every unit with its case ("saturated": incoming frozen, or "dead": incoming and outgoing).
    """
    if partition is None:
        partition = unit_partition(None, params)
    dead = dict(dead or {})
    paths = collection_paths(params)
    index = {p: k for k, (p, _) in enumerate(paths)}
    masks = [np.zeros(np.shape(leaf), bool) for _, leaf in paths]
    record = {}
    for layer in sorted(set(units) | set(dead)):
        if layer not in partition.layers:
            raise InputError(f"units key {layer!r} is not one of: {', '.join(partition.layers)}")
        lu = partition.layers[layer]
        if not lu.activation:
            raise InputError(f"layer {layer!r} has no activation function, so it has no frozen "
                             "units; pick a layer with one")
        n = partition.units(lu.group)
        idx_dead = _unit_indices(layer, dead.get(layer, []), n)
        idx = np.union1d(_unit_indices(layer, units.get(layer, []), n), idx_dead)
        for coords, sel in ((lu.incoming, idx), (lu.outgoing, idx_dead)):
            for path, axis in coords:
                if path not in index or not sel.size:
                    continue
                m = masks[index[path]]
                on = np.isin(np.arange(m.shape[axis]) % n, sel)
                shape = [1] * m.ndim
                shape[axis] = -1
                masks[index[path]] = m | on.reshape(shape)
        record[layer] = [{"unit": int(u), "case": "dead" if u in idx_dead else "saturated",
                          "outgoing_frozen": bool(u in idx_dead and lu.outgoing)} for u in idx]
    treedef = jax.tree_util.tree_structure(params)
    normal_dim = int(sum(m.sum() for m in masks))
    info = {"kind": "frozen", "family": partition.family, "units": record}
    return Manifold("frozen", treedef, tuple(() for _ in paths), np.int32(normal_dim), info,
                    [jnp.asarray(leaf) for _, leaf in paths], [()] * len(paths),
                    [jnp.asarray(m) for m in masks])


__all__ = ["Manifold", "cloned", "frozen", "tree_norm"]

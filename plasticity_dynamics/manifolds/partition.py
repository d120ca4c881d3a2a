"""Unit partitions: which units are clones of which, and which tensor entries each unit owns.

A network's units come in *groups*: the units of one dense layer, the channels of one conv
layer, the features of a residual stream, the query/key/value features of one attention layer.
Units of a group that is shared by several layers (a ResNet stage's residual stream, the ViT
embedding stream) are the same nodes as far as cloning goes: identity shortcuts force one
partition for all of them. A :class:`Partition` holds, for every group, a block id per unit
(canonical: blocks numbered by first occurrence, so block k of an E-fold expansion is base unit
k), and for every leaf of the variables (``params`` and ``batch_stats``) which axes are unit
axes of which group, with their role:

- ``"in"``: the layer sums over this axis (the fan-in axis of a kernel): clones of an input
  unit share the weight W / E after expansion;
- ``"out"``: one entry per unit (output axis of a kernel, biases, norm scales and running
  statistics, CLS token, positional embedding): duplicated on expansion.

An axis of size ``outer * units`` (the NHWC flatten conv -> dense: position-major, channel
fastest) has unit ``i % units`` at position ``i // units``. Group names: mlp ``hidden_i``; cnn
``conv_i``, ``fc_j``; resnet18 ``stage{s}`` (stem and block outputs of stage s) and
``layer{s}_block{b}/inner`` (conv1 output channels); vit ``embed`` (residual stream, CLS token,
positional embedding), ``block_{i}/attn`` (query, key, value features and the proj input; head
h = features [h*hd, (h+1)*hd)) and ``block_{i}_mlp``.

``layers`` maps every layer whose units can be frozen or monitored to a :class:`LayerUnits`:
its group, whether it has an activation function, and the (leaf, axis) pairs of its incoming
parameters (kernel columns, bias, norm parameters feeding the activation) and of its outgoing
weights (those that see h = 0 of a dead unit; empty when a norm follows the activation).

Build with :func:`~.layouts.unit_partition` (singleton blocks, or ``blocks=``);
:func:`~.expand.expand` returns the E-fold interleaved partition of the wide network.
Reference: PAPER.md 1.4, 1.5, 5.4.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple

import jax
import numpy as np

from ..errors import InputError

Path = tuple  # tuple of str keys, collection first: ("params", "dense_0", "kernel")
FAMILIES = ("mlp", "cnn", "resnet18", "vit")
ROLES = ("in", "out")


class AxisSpec(NamedTuple):
    """A unit axis of one leaf: ``axis`` index, ``group`` name, ``role`` "in" or "out"."""

    axis: int
    group: str
    role: str


class LayerUnits(NamedTuple):
    """Units of one layer: their group, whether they pass through an activation function,
    whether the model monitors them (``Output.activations`` key), and the (leaf path, axis)
    pairs of their incoming parameters and of their outgoing weights."""

    group: str
    activation: bool
    monitored: bool
    incoming: tuple
    outgoing: tuple


def leaf_paths(tree) -> list:
    """[(path tuple of str, leaf)] in ``jax.tree_util`` flattening order."""
    out = []
    for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out.append((tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                          for k in kp), leaf))
    return out


def is_variables(tree) -> bool:
    """True when ``tree`` is a variables dict ({"params": ..., "batch_stats": ...})."""
    return (isinstance(tree, Mapping) and "params" in tree
            and all(k in ("params", "batch_stats") for k in tree))


def collection_paths(tree) -> list:
    """Like :func:`leaf_paths` but every path starts with its collection ("params" for a bare
    params tree)."""
    pre = () if is_variables(tree) else ("params",)
    return [(pre + p, leaf) for p, leaf in leaf_paths(tree)]


def canonical(ids) -> np.ndarray:
    """Relabel block ids 0..K-1 in order of first occurrence (int32)."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise InputError(f"block ids have shape {ids.shape}; expected (units,)")
    _, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inv].astype(np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class Partition:
    """Unit partition of one network (see module docstring). Build with :func:`unit_partition`.

    family: model family; groups: group -> canonical block ids (units,); leaves: leaf path ->
    tuple of :class:`AxisSpec`; layers: layer name -> :class:`LayerUnits`; head_dims: attention
    group -> head dimension (vit, when built with the model).
    """

    family: str
    groups: Mapping[str, np.ndarray]
    leaves: Mapping[Path, tuple]
    layers: Mapping[str, LayerUnits]
    head_dims: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def units(self, group: str) -> int:
        return int(self._ids(group).size)

    def num_blocks(self, group: str) -> int:
        ids = self._ids(group)
        return int(ids.max()) + 1 if ids.size else 0

    def blocks(self, group: str) -> list:
        """Blocks of ``group`` as sorted index arrays, in block-id order."""
        ids = self._ids(group)
        return [np.flatnonzero(ids == k) for k in range(self.num_blocks(group))]

    def block_sizes(self, group: str) -> np.ndarray:
        return np.bincount(self._ids(group), minlength=self.num_blocks(group))

    def is_trivial(self, group: str | None = None) -> bool:
        """True when every block (of ``group``, or of every group) is a singleton."""
        names = self.groups if group is None else [group]
        return all(self.num_blocks(g) == self.units(g) for g in names)

    def group_of(self, layer: str) -> str:
        if layer in self.layers:
            return self.layers[layer].group
        if layer in self.groups:
            return layer
        raise InputError(f"layer={layer!r} is not one of: {', '.join(self.layers)} "
                         f"(or a group: {', '.join(self.groups)})")

    def _ids(self, group: str) -> np.ndarray:
        if group not in self.groups:
            raise InputError(f"group={group!r} is not one of: {', '.join(self.groups)}")
        return self.groups[group]

    def with_blocks(self, blocks: Mapping) -> "Partition":
        """A copy with the block ids of some groups (or of the group of a layer) replaced.
        ``blocks``: name -> (units,) integer labels (any labels; relabelled canonically)."""
        groups = dict(self.groups)
        for name, ids in blocks.items():
            g = self.group_of(name)
            ids = np.asarray(ids)
            if ids.shape != (self.units(g),) or not np.issubdtype(ids.dtype, np.integer):
                raise InputError(f"blocks[{name!r}] has shape {ids.shape} and dtype {ids.dtype}; "
                                 f"expected ({self.units(g)},) integers")
            groups[g] = canonical(ids)
        return dataclasses.replace(self, groups=groups)

    def axis_ids(self, spec: AxisSpec, size: int):
        """(ids (size,) int32, num_segments) of one unit axis of length ``size`` (a multiple
        of the group's units): segment = position * num_blocks + block."""
        ids = self._ids(spec.group)
        u, k = ids.size, self.num_blocks(spec.group)
        if size % u:
            raise InputError(f"axis of length {size} does not hold whole copies of group "
                             f"{spec.group!r} ({u} units)")
        i = np.arange(size)
        return ((i // u) * k + ids[i % u]).astype(np.int32), (size // u) * k

    def specs(self, path: Path) -> tuple:
        """The :class:`AxisSpec` tuple of leaf ``path``; InputError for an unknown leaf."""
        if path not in self.leaves:
            raise InputError(f"leaf {'/'.join(path)} is not in the {self.family} partition "
                             "(params tree of another model?)")
        return self.leaves[path]

    def summary(self) -> dict:
        """JSON-serialisable description: per group units, blocks and the non-singleton blocks."""
        out = {}
        for g in self.groups:
            out[g] = {"units": self.units(g), "blocks": self.num_blocks(g),
                      "clusters": [b.tolist() for b in self.blocks(g) if b.size > 1]}
        return {"family": self.family, "groups": out}

    def __repr__(self):
        nontrivial = [g for g in self.groups if not self.is_trivial(g)]
        return (f"Partition({self.family}, {len(self.groups)} groups, {len(self.leaves)} leaves, "
                f"cloned groups: {nontrivial})")

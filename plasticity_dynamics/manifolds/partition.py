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

Build with :func:`unit_partition` (singleton blocks, or ``blocks=``); :func:`expand` returns
the E-fold interleaved partition of the wide network. Reference: PAPER.md 1.4, 1.5, 5.4.
"""

from __future__ import annotations

import dataclasses
import re
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
    group -> head dimension (vit, when known); norm_after_activation: model option.
    """

    family: str
    groups: Mapping[str, np.ndarray]
    leaves: Mapping[Path, tuple]
    layers: Mapping[str, LayerUnits]
    head_dims: Mapping[str, int] = dataclasses.field(default_factory=dict)
    norm: str = "none"

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


# ------------------------------------------------------------------------------------------
# Family layouts: module path -> (in group, out group), groups, layers.


def _num(prefix: str, names) -> int:
    idx = [int(m.group(1)) for n in names if (m := re.fullmatch(prefix + r"(\d+)", n))]
    return max(idx) + 1 if idx else 0


def _mods_mlp(params, opts):
    n = _num("dense_", params)
    mods, layers = {}, {}
    for i in range(n):
        g = f"hidden_{i}"
        mods[(f"dense_{i}",)] = (f"hidden_{i - 1}" if i else None, g)
        mods[(f"norm_{i}",)] = (None, g)
        nxt = f"dense_{i + 1}" if i + 1 < n else "out"
        layers[g] = _layer(params, opts, g, (f"dense_{i}",), (f"norm_{i}",), [(nxt,)], True)
    mods[("out",)] = (f"hidden_{n - 1}" if n else None, None)
    return mods, layers


def _mods_cnn(params, opts):
    nc, nf = _num("conv_", params), _num("fc_", params)
    mods, layers = {}, {}
    prev = None
    for i in range(nc):
        g = f"conv_{i}"
        mods[(g,)] = (prev, g)
        mods[(f"norm_{i}",)] = (None, g)
        nxt = f"conv_{i + 1}" if i + 1 < nc else ("fc_0" if nf else "out")
        layers[g] = _layer(params, opts, g, (g,), (f"norm_{i}",), [(nxt,)], True)
        prev = g
    for j in range(nf):
        g = f"fc_{j}"
        mods[(g,)] = (prev, g)
        nxt = f"fc_{j + 1}" if j + 1 < nf else "out"
        layers[g] = _layer(params, opts, g, (g,), None, [(nxt,)], False)
        prev = g
    mods[("out",)] = (prev, None)
    return mods, layers


def _mods_resnet(params, opts):
    mods, layers = {}, {}
    mods[("stem_conv",)] = (None, "stage1")
    mods[("stem_norm",)] = (None, "stage1")
    blocks = sorted((int(m.group(1)), int(m.group(2)), n) for n in params
                    if (m := re.fullmatch(r"layer(\d+)_block(\d+)", n)))
    first = [(blocks[0][2], "conv1")] if blocks else [("out",)]
    if blocks and "shortcut_conv" in params[blocks[0][2]]:
        first.append((blocks[0][2], "shortcut_conv"))
    layers["stem"] = _layer(params, opts, "stage1", ("stem_conv",), ("stem_norm",), first, True)
    prev = "stage1"
    for k, (s, b, name) in enumerate(blocks):
        stage, inner = f"stage{s}", f"{name}/inner"
        mods[(name, "conv1")] = (prev, inner)
        mods[(name, "norm1")] = (None, inner)
        mods[(name, "conv2")] = (inner, stage)
        mods[(name, "norm2")] = (None, stage)
        mods[(name, "shortcut_conv")] = (prev, stage)
        mods[(name, "shortcut_norm")] = (None, stage)
        layers[inner] = _layer(params, opts, inner, (name, "conv1"), (name, "norm1"),
                               [(name, "conv2")], True, monitored=False)
        if k + 1 < len(blocks):
            nxt = blocks[k + 1][2]
            outgoing = [(nxt, "conv1"), (nxt, "shortcut_conv")]
        else:
            outgoing = [("out",)]
        layer = _layer(params, opts, stage, (name, "conv2"), (name, "norm2"), outgoing, True)
        extra = _layer(params, opts, stage, (name, "shortcut_conv"), (name, "shortcut_norm"),
                       [], True)
        layers[name] = layer._replace(incoming=layer.incoming + extra.incoming)
        prev = stage
    mods[("out",)] = (prev, None)
    return mods, layers


def _mods_vit(params, opts):
    layers = {}
    mods = {("patch_embed",): (None, "embed"), ("final_norm",): (None, "embed"),
            ("out",): ("embed", None)}
    for i in range(_num("block_", params)):
        b, attn, mlp = f"block_{i}", f"block_{i}/attn", f"block_{i}_mlp"
        mods[(b, "norm1")] = mods[(b, "norm2")] = (None, "embed")
        for name in ("query", "key", "value"):
            mods[(b, "attn", name)] = ("embed", attn)
        mods[(b, "attn", "proj")] = (attn, "embed")
        mods[(b, "mlp_fc1")] = ("embed", mlp)
        mods[(b, "mlp_fc2")] = (mlp, "embed")
        layers[mlp] = _layer(params, opts, mlp, (b, "mlp_fc1"), None, [(b, "mlp_fc2")], False)
        layers[b] = LayerUnits("embed", False, True, (), ())
    return mods, layers


_MODS = {"mlp": _mods_mlp, "cnn": _mods_cnn, "resnet18": _mods_resnet, "vit": _mods_vit}


def _get(params, mod):
    node = params
    for k in mod:
        if not isinstance(node, Mapping) or k not in node:
            return None
        node = node[k]
    return node


def _layer(params, opts, group, linear, norm, consumers, has_norm, monitored=True):
    """LayerUnits for units produced by module ``linear`` (kernel out axis, bias) and, when the
    norm sits before the activation, by ``norm`` (scale, bias). Outgoing = the kernels' in axes
    of ``consumers``, only when no norm sits between the activation and the consumer (a norm
    after the activation maps h = 0 to its bias, so the consumer's weights still learn)."""
    norm_after = bool(opts.get("norm_after_activation", False))
    norm_mod = _get(params, norm) if (norm is not None and has_norm) else None
    norm_follows = norm_after and has_norm and (opts.get("norm", "none") != "none"
                                                or norm_mod is not None)
    inc = []
    mod = _get(params, linear)
    if mod is not None:
        inc.append((("params",) + linear + ("kernel",), mod["kernel"].ndim - 1))
        if "bias" in mod:
            inc.append((("params",) + linear + ("bias",), 0))
    if norm_mod is not None and not norm_after:
        inc += [(("params",) + norm + (leaf,), 0) for leaf in sorted(norm_mod)]
    out = []
    if not norm_follows:
        for c in consumers:
            cm = _get(params, c)
            if cm is not None:
                out.append((("params",) + c + ("kernel",), cm["kernel"].ndim - 2))
    return LayerUnits(group, True, monitored, tuple(inc), tuple(out))


def infer_family(variables) -> str:
    params = variables["params"] if is_variables(variables) else variables
    if "patch_embed" in params:
        return "vit"
    if "stem_conv" in params:
        return "resnet18"
    if "conv_0" in params:
        return "cnn"
    if "dense_0" in params or "out" in params:
        return "mlp"
    raise InputError(f"cannot tell the model family from params keys {sorted(params)[:6]}; "
                     "pass the model")


def unit_partition(model, variables, blocks: Mapping | None = None) -> Partition:
    """The unit partition of a network of the model zoo (singleton blocks unless ``blocks``).

    model: a ``pdx.models.Model`` (or None: the family is inferred from the parameter names and
        the defaults norm_after_activation=False, unknown head size are assumed).
    variables: the variables dict or a bare params tree (paths then get the "params" prefix).
    blocks: optional {group or layer name: (units,) block labels}.
    Cost: one pass over the leaves (host-side NumPy). Raises InputError on a leaf that does
    not fit the family's layout.
    """
    family = infer_family(variables) if model is None else model.name
    if family not in _MODS:
        raise InputError(f"model family {family!r} is not one of: {', '.join(FAMILIES)}")
    opts = {} if model is None else dict(model.options)
    params = variables["params"] if is_variables(variables) else variables
    mods, layers = _MODS[family](params, opts)
    leaves, units = {}, {}
    for path, leaf in collection_paths(variables):
        leaves[path] = _leaf_specs(family, mods, path, np.shape(leaf))
        for spec in leaves[path]:
            n = np.shape(leaf)[spec.axis]
            if spec.role == "out":  # out axes hold exactly one entry per unit
                if units.setdefault(spec.group, n) != n:
                    raise InputError(f"leaf {'/'.join(path)} gives group {spec.group!r} {n} "
                                     f"units, another leaf {units[spec.group]}")
    missing = {s.group for specs in leaves.values() for s in specs} - set(units)
    if missing:
        raise InputError(f"groups {sorted(missing)} have no output axis in the variables")
    groups = {g: np.arange(n, dtype=np.int32) for g, n in units.items()}
    head_dims = {}
    if family == "vit" and model is not None:
        hd = opts["dim"] // opts["heads"]
        head_dims = {g: hd for g in groups if g.endswith("/attn")}
    part = Partition(family, groups, leaves, layers, head_dims, opts.get("norm", "none"))
    for path, specs in leaves.items():
        for spec in specs:  # validates in-axis lengths (outer * units)
            part.axis_ids(spec, _shape_of(variables, path)[spec.axis])
    return part if blocks is None else part.with_blocks(blocks)


def _shape_of(variables, path):
    node = variables if is_variables(variables) else {"params": variables}
    for k in path:
        node = node[k]
    return np.shape(node)


def _leaf_specs(family, mods, path, shape) -> tuple:
    name, mod = path[-1], path[1:-1]
    if family == "vit" and path[1:] in (("cls_token",), ("pos_embed",)):
        return (AxisSpec(len(shape) - 1, "embed", "out"),)
    if mod not in mods:
        raise InputError(f"leaf {'/'.join(path)} is not part of the {family} layout")
    gin, gout = mods[mod]
    if name == "kernel":
        specs = []
        if gin is not None:
            specs.append(AxisSpec(len(shape) - 2, gin, "in"))
        if gout is not None:
            specs.append(AxisSpec(len(shape) - 1, gout, "out"))
        return tuple(specs)
    if name in ("bias", "scale", "mean", "var") and len(shape) == 1:
        return () if gout is None else (AxisSpec(0, gout, "out"),)
    raise InputError(f"leaf {'/'.join(path)} with shape {shape} is not part of the {family} layout")

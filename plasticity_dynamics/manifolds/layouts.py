"""Unit layouts of the model zoo: which groups every leaf and every layer belongs to.

For each family a walker maps module paths to (fan-in group, output group) and lists the
layers with their incoming / outgoing parameters (see :mod:`.partition` for the vocabulary).
Everything is derived from the parameter names of the model contract (and, when the model is
given, its options: norm placement, head size). :func:`unit_partition` is the entry point.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from ..errors import InputError
from .partition import (FAMILIES, AxisSpec, LayerUnits, Partition, collection_paths,
                        is_variables)


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
        the defaults norm_after_activation=False, unknown head size are assumed), or a wrapped
        model with a ``layout`` (``pdx.models.from_function``): its inferred or declared
        :class:`pdx.models.Layout` is used.
    variables: the variables dict or a bare params tree (paths then get the "params" prefix).
    blocks: optional {group or layer name: (units,) block labels}.
    Cost: one pass over the leaves (host-side NumPy). Raises InputError on a leaf that does
    not fit the family's layout.
    """
    layout = getattr(model, "layout", None)
    if layout is not None:  # a wrapped model (pdx.models.from_function): inferred or declared
        return _from_layout(model.name, layout, variables, blocks)
    family = infer_family(variables) if model is None else model.name
    if family not in _MODS:
        raise InputError(f"model family {family!r} is not one of: {', '.join(FAMILIES)}")
    opts = {} if model is None else dict(model.options)
    params = variables["params"] if is_variables(variables) else variables
    mods, layers = _MODS[family](params, opts)
    leaves = {path: _leaf_specs(family, mods, path, np.shape(leaf))
              for path, leaf in collection_paths(variables)}
    head_dims = {}
    if family == "vit" and model is not None:
        hd = opts["dim"] // opts["heads"]
        head_dims = {g: hd for s in leaves.values() for _, g, _ in s if g.endswith("/attn")}
    return _assemble(family, leaves, layers, head_dims, variables, blocks)


def _from_layout(name, layout, variables, blocks) -> Partition:
    """Partition of a model with a :class:`pdx.models.Layout` (inferred or declared)."""
    leaves = {}
    for path, _ in collection_paths(variables):
        if path not in layout.leaves:
            raise InputError(f"leaf {'/'.join(path)} is not in the layout of model {name!r} "
                             "(variables of another model?)")
        leaves[path] = tuple(AxisSpec(*spec) for spec in layout.leaves[path])
    layers = {k: LayerUnits(*spec) for k, spec in layout.layers.items()}
    return _assemble(name, leaves, layers, dict(layout.head_dims), variables, blocks)


def _assemble(family, leaves, layers, head_dims, variables, blocks) -> Partition:
    """Group sizes from the "out" axes, checked for consistency; then the Partition."""
    units, shapes = {}, {}
    for path, leaf in collection_paths(variables):
        shapes[path] = np.shape(leaf)
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
    part = Partition(family, groups, leaves, layers, head_dims)
    for path, specs in leaves.items():
        for spec in specs:  # validates in-axis lengths (outer * units)
            part.axis_ids(spec, shapes[path][spec.axis])
    return part if blocks is None else part.with_blocks(blocks)


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
    raise InputError(f"leaf {'/'.join(path)} with shape {shape} is not part of the {family} "
                     "layout")


__all__ = ["unit_partition", "infer_family"]

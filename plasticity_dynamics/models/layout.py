"""The declared unit layout of a model: which parameter axes are unit axes of which group.

A :class:`Layout` is the small, hand-writable structure that layout inference
(:mod:`.infer`) produces and that :func:`pdx.models.from_function` accepts as ``layout=`` when
inference cannot prove something (attention heads split another way, control flow, ...)::

    Layout(
        leaves={("params", "w1"): ((1, "h1", "out"),),               # w1 (D_in, 32): out axis 1
                ("params", "b1"): ((0, "h1", "out"),),
                ("params", "w2"): ((0, "h1", "in"),)},                # w2 (32, K): fan-in axis 0
        layers={"h1": LayerSpec("h1", True, True,
                                incoming=((("params", "w1"), 1), (("params", "b1"), 0)),
                                outgoing=((("params", "w2"), 0),))},
        kinds={"h1": "dense"})

- ``leaves``: leaf path (collection first: "params" or "batch_stats", then the keys as
  :func:`pdx.manifolds.partition.leaf_paths` prints them) -> tuple of ``(axis, group, role)``;
  role "out" = one entry per unit (kernel output axis, bias, norm scale/offset, running
  statistics), "in" = the fan-in axis a layer sums over (its length may be ``outer * units``
  for an NHWC flatten, unit fastest). Leaves without unit axes map to ``()``.
- ``layers``: monitored layer name -> :class:`LayerSpec` (its group, whether it has an
  activation function, whether it is monitored, the (leaf path, axis) pairs of its incoming
  parameters and of its outgoing weights (those that see h = 0 of a dead unit)).
- ``kinds``: monitored layer name -> "dense" (B, D) | "conv" (B, H, W, C) | "tokens" (B, T, D).
- ``head_dims``: attention group -> head dimension (features of head h are
  [h*hd, (h+1)*hd)); empty for models without attention.

This is exactly the information of a :class:`pdx.manifolds.Partition` with singleton blocks;
``pdx.manifolds.unit_partition(model, variables)`` turns it into one.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import InputError

ROLES = ("in", "out")
KINDS = ("dense", "conv", "tokens")


class LayerSpec(NamedTuple):
    """One layer's units: same fields as :class:`pdx.manifolds.LayerUnits`."""

    group: str
    activation: bool
    monitored: bool
    incoming: tuple
    outgoing: tuple


class Layout(NamedTuple):
    """Declared or inferred unit layout (see the module docstring)."""

    leaves: dict
    layers: dict
    kinds: dict
    head_dims: dict = {}


def check_layout(layout, paths) -> Layout:
    """Validate a declared layout against the model's leaf paths; return it with tuple specs.

    paths: {leaf path: shape}. Raises InputError (one line) on a missing or unknown leaf, an
    axis out of range, a bad role, a layer whose group is unknown or a bad kind.
    """
    if not isinstance(layout, Layout):
        raise InputError(f"layout={type(layout).__name__} must be a pdx.models.Layout")
    unknown = [p for p in layout.leaves if p not in paths]
    if unknown:
        raise InputError(f"layout leaf {'/'.join(unknown[0])} is not a leaf of the variables "
                         f"(leaves: {', '.join('/'.join(p) for p in list(paths)[:6])}, ...)")
    leaves, groups = {}, set()
    for path, shape in paths.items():
        specs = tuple(tuple(s) for s in layout.leaves.get(path, ()))
        for spec in specs:
            if len(spec) != 3:
                raise InputError(f"layout.leaves[{'/'.join(path)}] entry {spec!r} must be "
                                 "(axis, group, role)")
            axis, group, role = spec
            if not isinstance(axis, int) or not 0 <= axis < len(shape):
                raise InputError(f"layout.leaves[{'/'.join(path)}] axis={axis!r} is not an "
                                 f"axis of a leaf of shape {tuple(shape)}")
            if role not in ROLES:
                raise InputError(f"layout.leaves[{'/'.join(path)}] role={role!r} is not one "
                                 f"of: {', '.join(ROLES)}")
            groups.add(group)
        leaves[path] = specs
    for name, spec in layout.layers.items():
        if not isinstance(spec, LayerSpec) or spec.group not in groups:
            raise InputError(f"layout.layers[{name!r}] must be a LayerSpec of a group named "
                             f"in layout.leaves (groups: {', '.join(sorted(groups))})")
    for name, kind in layout.kinds.items():
        if kind not in KINDS:
            raise InputError(f"layout.kinds[{name!r}]={kind!r} is not one of: "
                             f"{', '.join(KINDS)}")
    return layout._replace(leaves=leaves)


__all__ = ["Layout", "LayerSpec", "check_layout", "KINDS", "ROLES"]

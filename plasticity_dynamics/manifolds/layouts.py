"""Unit partitions of any model, zoo or wrapped, from one path: its :class:`pdx.models.Layout`.

A wrapped model (``pdx.models.from_function``) carries its inferred or declared layout; a zoo
model's layout is inferred the same way from the jaxpr of ``model.apply`` and named the zoo's
way (:func:`pdx.models.zoo_layout.zoo_layout`, cached per model and variable shapes). There are
no hand-written walkers (issue 17): the frozen oracle in tests/manifolds/data/zoo_layouts.json
holds what they produced. :func:`unit_partition` is the entry point.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import InputError
from .partition import AxisSpec, LayerUnits, Partition, collection_paths


def unit_partition(model, variables, blocks: Mapping | None = None) -> Partition:
    """The unit partition of a network (singleton blocks unless ``blocks``).

    model: a ``pdx.models.Model`` of the zoo (its layout is inferred from the jaxpr of
        ``model.apply`` and named the zoo's way), a wrapped model with a ``layout``
        (``pdx.models.from_function``: its inferred or declared :class:`pdx.models.Layout`),
        or None: then ``variables`` must be mlp or cnn parameters and the model is rebuilt from
        their shapes (:func:`pdx.models.zoo_layout.model_from_params`; norm before the
        activation).
    variables: the variables dict or a bare params tree (paths then get the "params" prefix).
    blocks: optional {group or layer name: (units,) block labels}.
    Cost: one trace of the forward pass per (model, variable shapes), cached; then one pass
    over the leaves (host-side NumPy). Raises InputError on a leaf that does not fit the layout.
    """
    from ..models.zoo_layout import model_from_params, zoo_layout  # models sit below manifolds

    if model is None:
        model = model_from_params(variables)
    layout = getattr(model, "layout", None)
    if layout is None:
        layout = zoo_layout(model, variables)
    return _from_layout(model.name, layout, variables, blocks)


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


__all__ = ["unit_partition"]

"""Function-preserving expansion by cloning units (PAPER.md 1.5, 5.4).

``expand(model, variables, factor)`` builds a network ``factor`` (= E) times as wide whose
every unit, channel and feature is E identical clones of a base unit, and whose outputs equal
the base network's (float32 rounding) in eval and train mode (batch norm: clones have equal
batch statistics; dropout must be 0 for train-mode equality, masks are independent):

- layout: clone c of base unit k sits at index k*E + c (interleaved), for every group;
- fan-in ("in") axes: W_wide[k*E + c, :] = W_base[k, :] / E, so the E clones of an input sum to
  the base input; the network input (pixels) and output (logits) are not expanded;
- "out" axes: duplicated (kernels' output axes, biases, norm scale/bias, running mean/var,
  CLS token, positional embedding), no scaling;
- conv -> dense: the NHWC flatten (channel fastest) makes wide input index
  position * (E C) + k E + c, i.e. the interleaved clones of channel k at each position are
  adjacent, which is the clone-aware flatten; the fc kernel is expanded per position;
- norms: batch norm is per channel; layer norm / GroupNorm(1) over a duplicated vector has the
  same mean and variance; both are exact;
- vit attention: **head duplication**. The wide model has dim*E features and heads*E heads of
  the same head_dim hd; wide head h*E + c is a copy of base head h (query/key/value feature
  (h*E + c)*hd + d <- base h*hd + d; proj input likewise with 1/E). Every wide head computes
  exactly the base head's logits q.k/sqrt(hd) and weights, so the network is exactly
  function-preserving. The authors' alternative (same number of heads, head_dim*E) puts the
  E clones of a feature inside one head, so q.k grows by E while the scale shrinks only by
  sqrt(E): logits are sqrt(E) times the base logits and the function changes (PAPER.md 1.5).

``expand_opt_state`` expands an optax state whose leaves mirror params (Adam mu/nu, momentum
traces, RMSProp nu) so that it is block-constant (hence the wide trajectory stays on the
cloning manifold). A fresh state is just ``optimizer.init(wide_params)``.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError, check_positive
from .layouts import unit_partition
from .partition import Partition, collection_paths

MODES = ("param", "grad", "grad2", "tile")


def source_map(units: int, factor: int, head_dim: int | None = None) -> np.ndarray:
    """(units * factor,) base unit of each wide unit: interleaved j // E, or for attention
    features of heads of size ``head_dim``: wide (h*E + c)*hd + d <- base h*hd + d."""
    j = np.arange(units * factor)
    if head_dim is None:
        return (j // factor).astype(np.int32)
    return ((j // head_dim) // factor * head_dim + j % head_dim).astype(np.int32)


def expand_leaf(x, specs, sources: Mapping, factors: Mapping, mode: str = "param"):
    """Expand one leaf along its unit axes (host-side NumPy gather; returns a jnp array).

    specs: its AxisSpec tuple; sources: group -> (wide units,) base index; factors: group -> E.
    mode: "param" (divide fan-in axes by E), "grad" (divide by E of the output axis: the
    gradient of the wide net at the expanded point), "grad2" (its square), "tile" (no scaling).
    """
    x = np.asarray(x)
    out_factor = 1
    for spec in specs:
        src = sources[spec.group]
        e = factors[spec.group]
        u = src.size // e
        n = x.shape[spec.axis]
        if n % u:
            raise InputError(f"axis of length {n} does not hold whole copies of group "
                             f"{spec.group!r} ({u} base units)")
        i = np.arange((n // u) * src.size)
        idx = (i // src.size) * u + src[i % src.size]
        x = np.take(x, idx, axis=spec.axis)
        if mode == "param" and spec.role == "in":
            x = x / e
        if spec.role == "out":
            out_factor = e
    if mode == "grad":
        x = x / out_factor
    elif mode == "grad2":
        x = x / out_factor ** 2
    return jnp.asarray(x)


def wide_options(model, factor: int) -> dict:
    """Options of the E-times wider model of the same family."""
    o = dict(model.options)
    e = factor
    if model.name == "mlp":
        o["widths"] = tuple(w * e for w in o["widths"])
    elif model.name == "cnn":
        o["channels"] = tuple(c * e for c in o["channels"])
        o["fc_widths"] = tuple(w * e for w in o["fc_widths"])
    elif model.name == "resnet18":
        o["base_channels"] = o["base_channels"] * e
    elif model.name == "vit":
        hidden = int(o["dim"] * o["mlp_ratio"])
        o["dim"], o["heads"] = o["dim"] * e, o["heads"] * e
        ratio = hidden * e / o["dim"]
        if int(o["dim"] * ratio) != hidden * e:  # guard against float rounding in int()
            ratio = (hidden * e + 0.5) / o["dim"]
        o["mlp_ratio"] = ratio
    else:
        raise InputError(f"model family {model.name!r} is not one of: mlp, cnn, resnet18, vit")
    return o


def expand(model, variables, factor: int):
    """Function-preserving E-fold expansion: (wide_model, wide_variables, partition).

    model: a ``pdx.models.Model`` or a wrapped model (``pdx.models.from_function``: the same
    function is wrapped around the wide parameters, so it must read its sizes from them);
    variables: its variables dict (params, batch_stats); factor: integer E >= 1. The returned :class:`Partition` of the wide network has the E
    clones of each base unit as one block (block id = base unit index). Every family of the
    model zoo; see the module docstring for the rules and the vit head duplication.
    Cost: one gather per leaf. Raises InputError for a bad factor or foreign variables.
    """
    from ..models import create  # models sit below manifolds

    check_positive("factor", factor, integer=True)
    base = unit_partition(model, variables)
    sources = {g: source_map(base.units(g), factor, base.head_dims.get(g)) for g in base.groups}
    factors = {g: factor for g in base.groups}
    leaves = [expand_leaf(x, base.specs(path), sources, factors, "param")
              for path, x in collection_paths(variables)]
    wide = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(variables), leaves)
    wide = dict(wide)
    if getattr(model, "layout", None) is not None:  # wrapped model: same function, wide params
        wide_model = model.with_params(wide["params"], wide.get("batch_stats"))
    else:
        wide_model = create(model.name, **wide_options(model, factor))
    partition = unit_partition(wide_model, wide, blocks=sources)
    return wide_model, wide, partition


def _param_paths(partition):
    return {p for p in partition.leaves if p[0] == "params"}


def expand_opt_state(opt_state, partition: Partition, *, scale: bool = True):
    """Expand a base optimiser state to the wide network of ``partition`` (from :func:`expand`).

    Every sub-tree of ``opt_state`` that mirrors the params tree (same leaf paths) is expanded
    like a gradient: with ``scale=True`` first moments (mu, trace, ...) are divided by E of the
    leaf's output axis and fields named ``nu`` by E^2 -- exactly the expansion of the base
    gradients, which are E times the wide network's at the expanded point (clones' backward
    signals are delta_base / E) -- so Adam's mu / sqrt(nu) is unchanged. ``scale=False`` tiles
    without scaling. Either way the state is block-constant, so SGD-momentum, RMSProp and Adam
    stay on the cloning manifold. Other leaves (step counts) are copied.
    """
    if not isinstance(partition, Partition):
        raise InputError(f"partition={type(partition).__name__} must be the Partition from expand")
    sources, factors = {}, {}
    for g in partition.groups:
        k = partition.num_blocks(g)
        e = partition.units(g) // max(k, 1)
        if e * k != partition.units(g) or np.any(partition.block_sizes(g) != e):
            raise InputError(f"group {g!r} is not an even expansion (block sizes "
                             f"{sorted(set(partition.block_sizes(g).tolist()))})")
        sources[g], factors[g] = partition.groups[g], e
    want = _param_paths(partition)

    def mirrors(node):
        return isinstance(node, Mapping) and {p for p, _ in collection_paths(node)} == want

    def walk(node, field):
        if mirrors(node):
            mode = ("grad2" if field == "nu" else "grad") if scale else "tile"
            leaves = [expand_leaf(x, partition.specs(p), sources, factors, mode)
                      for p, x in collection_paths(node)]
            return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(node), leaves)
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*[walk(getattr(node, f), f) for f in node._fields])
        if isinstance(node, (tuple, list)):
            return type(node)(walk(c, field) for c in node)
        if isinstance(node, Mapping):
            return {k: walk(v, field) for k, v in node.items()}
        return node

    return walk(opt_state, None)


__all__ = ["expand", "expand_opt_state", "expand_leaf", "source_map", "wide_options", "MODES"]

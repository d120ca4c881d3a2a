"""Unit surgery shared by the interventions: which layers have replaceable units, how to
re-draw a unit's incoming weights, zero its outgoing weights, and clear optimiser state.

Supported parameter layouts (the model contract's names):
- mlp: ``dense_0 .. dense_{L-1}`` then ``out``; unit i of ``dense_l`` is column i of its
  kernel (in, out) and bias i; its outgoing weights are row i of the next kernel.
  Monitored activation key ``hidden_l``; optional ``norm_l`` {"scale", "bias"}.
- cnn: ``conv_0 ..`` (kernel (3, 3, cin, cout)), then ``fc_0 ..``, then ``out``. A conv
  unit is an output channel; its outgoing weights are ``next[:, :, i, :]`` for a conv and,
  after the NHWC flatten (channel fastest), the rows r of the first dense kernel with
  r % C == i. Activation keys ``conv_i`` / ``fc_j``.
Anything else (ResNet, ViT) raises InputError.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..errors import InputError


class UnitLayer(NamedTuple):
    """A layer of replaceable units: incoming params key, activation key, outgoing params key and kind."""

    name: str
    act_key: str
    next_name: str
    next_kind: str  # "dense" | "conv" | "flatten"
    norm_name: str | None


def _chain(params, prefix):
    n = 0
    while f"{prefix}_{n}" in params:
        n += 1
    extra = [k for k in params if re.fullmatch(rf"{prefix}_\d+", k) and int(k.split("_")[-1]) >= n]
    if extra:
        raise InputError(f"params have {extra[0]!r} but not {prefix}_{n}: layers must be numbered from 0")
    return [f"{prefix}_{i}" for i in range(n)]


def unit_layers(params) -> list[UnitLayer]:
    """The replaceable-unit layers of an mlp or cnn ``params`` dict, input side first."""
    if "out" not in params:
        raise InputError(f"params have no 'out' layer (keys: {', '.join(sorted(params))}); "
                         "unit interventions support mlp (dense_i/out) and cnn (conv_i/fc_j/out) params")
    dense = _chain(params, "dense")
    if dense:
        names = dense + ["out"]
        return [UnitLayer(n, f"hidden_{i}", names[i + 1], "dense", f"norm_{i}" if f"norm_{i}" in params else None)
                for i, n in enumerate(dense)]
    convs, fcs = _chain(params, "conv"), _chain(params, "fc")
    if not convs and not fcs:
        raise InputError(f"params with keys {', '.join(sorted(params))} are not mlp (dense_i/out) or "
                         "cnn (conv_i/fc_j/out) params")
    layers = []
    after_conv = (fcs + ["out"])[0]
    for i, n in enumerate(convs):
        nxt, kind = (convs[i + 1], "conv") if i + 1 < len(convs) else (after_conv, "flatten")
        layers.append(UnitLayer(n, n, nxt, kind, f"norm_{i}" if f"norm_{i}" in params else None))
    chain = fcs + ["out"]
    for j, n in enumerate(fcs):
        layers.append(UnitLayer(n, n, chain[j + 1], "dense", None))
    return layers


def unit_count(params, layer: UnitLayer) -> int:
    return int(params[layer.name]["kernel"].shape[-1])


def outgoing_mask(mask, next_kernel, kind: str):
    """Broadcast a (D,) unit mask to the outgoing weights in ``next_kernel``."""
    if kind == "dense":
        return mask[:, None]
    if kind == "conv":
        return mask[None, None, :, None]
    reps = next_kernel.shape[0] // mask.shape[0]
    return jnp.tile(mask, reps)[:, None]


def outgoing_sum(values, next_kernel, kind: str):
    """sum over the outgoing weights of each unit i, times values[i]: (out_features,)."""
    w = next_kernel * outgoing_mask(values, next_kernel, kind)
    return w.sum(axis=tuple(range(w.ndim - 1)))


def outgoing_abs_sum(next_kernel, kind: str, d: int):
    """(D,) sum of |outgoing weights| per unit."""
    a = jnp.abs(next_kernel)
    if kind == "dense":
        return a.sum(axis=1)
    if kind == "conv":
        return a.sum(axis=(0, 1, 3))
    return a.sum(axis=1).reshape(-1, d).sum(axis=0)


def activations_2d(h):
    """(B, ..., D) -> (N, D): conv maps are flattened over batch and space."""
    return h.reshape(-1, h.shape[-1])


def torch_default_like(params, key):
    """A fresh draw of PyTorch's default init with the structure of ``params``.

    Dicts with a "kernel": kernel and bias U(+-1/sqrt(fan_in)), fan_in = prod(kernel.shape[:-1]);
    dicts with "scale" (norm layers): scale 1, bias 0; other arrays: N(0, 0.02^2)
    (ViT tokens). Pure; cost: one uniform draw per parameter.
    """
    leaves = jax.tree_util.tree_leaves(params)
    counter = iter(range(len(leaves) + 1))

    def walk(node):
        if isinstance(node, dict):
            if "kernel" in node:
                fan_in = math.prod(node["kernel"].shape[:-1])
                bound = 1.0 / math.sqrt(fan_in)
                return {k: (jax.random.uniform(jax.random.fold_in(key, next(counter)), v.shape, v.dtype, -bound, bound)
                            if k in ("kernel", "bias") else walk(v)) for k, v in node.items()}
            if "scale" in node:
                return {k: (jnp.ones_like(v) if k == "scale" else jnp.zeros_like(v) if k == "bias" else walk(v))
                        for k, v in node.items()}
            return {k: walk(v) for k, v in node.items()}
        return 0.02 * jax.random.normal(jax.random.fold_in(key, next(counter)), node.shape, node.dtype)

    return walk(params)


def fresh_params(params, key, init_fn=None):
    """``init_fn(key)`` if given (the params, or the model's whole variables dict, of a fresh
    init: the family's own law, e.g. ``lambda k: model.init(k, x)``), else
    :func:`torch_default_like`."""
    if init_fn is None:
        return torch_default_like(params, key)
    new = init_fn(key)
    if isinstance(new, dict) and "params" in new and "params" not in params:
        new = new["params"]
    if jax.tree_util.tree_structure(new) != jax.tree_util.tree_structure(params):
        raise InputError("init_fn(key) must return a pytree with the structure of params")
    return new


def fresh_stats(stats):
    """Running statistics as a fresh init has them: every "mean" 0, every "var" 1."""
    def walk(node):
        if isinstance(node, dict):
            return {k: (jnp.zeros_like(v) if k == "mean" else jnp.ones_like(v) if k == "var" else walk(v))
                    for k, v in node.items()}
        return node

    return walk(stats)


def fresh_variables(variables, key, init_fn=None):
    """A fresh draw of every collection of ``variables`` (a dict with "params" and optionally
    "batch_stats"): params by :func:`fresh_params`, statistics from ``init_fn``'s variables when
    it returns them, else by :func:`fresh_stats`."""
    if init_fn is None:
        new = {"params": torch_default_like(variables["params"], key)}
    else:
        new = init_fn(key)
        new = new if isinstance(new, dict) and "params" in new else {"params": new}
    out = {**variables, "params": fresh_params(variables["params"], key, lambda _k: new["params"])}
    if "batch_stats" in variables:
        out["batch_stats"] = new.get("batch_stats", fresh_stats(variables["batch_stats"]))
    return out


def as_variables(x) -> tuple[dict, bool]:
    """(variables dict, whether ``x`` already was one): interventions accept the model's whole
    variables ("params" and "batch_stats") or, for older callers, the params alone."""
    if isinstance(x, dict) and "params" in x:
        return x, True
    return {"params": x}, False


def mask_opt_state(opt_state, params, keep):
    """Multiply every params-shaped sub-tree of ``opt_state`` (Adam moments, momentum
    buffers, ...) by the 0/1 masks ``keep`` (params-shaped); counts and keys untouched."""
    treedef = jax.tree_util.tree_structure(params)

    def is_param_tree(x):
        return jax.tree_util.tree_structure(x) == treedef if isinstance(x, dict) else False

    def fix(x):
        if is_param_tree(x):
            return jax.tree_util.tree_map(lambda a, m: jnp.where(m, a, jnp.zeros_like(a)), x, keep)
        return x

    return jax.tree_util.tree_map(fix, opt_state, is_leaf=is_param_tree)


def replace_units(variables, keep, layer: UnitLayer, replace, fresh_kernel, fresh_bias, add_to_next_bias=None):
    """Re-draw incoming weights of the units in ``replace`` (D,) bool, zero their outgoing
    weights, optionally add ``add_to_next_bias`` (next layer's out-features) to the next
    bias, reset a norm layer's scale/bias of those units to 1/0 and its running statistics
    (``variables["batch_stats"]``, when present) to mean 0 / var 1, as a fresh unit has them.
    ``variables``: the model's variables dict ("params", optionally "batch_stats").
    ``keep``: params-shaped bool masks, cleared where entries were replaced (for the
    optimiser state). Returns (variables, keep)."""
    stats = variables.get("batch_stats")
    if layer.norm_name is not None and stats is not None and layer.norm_name in stats:
        st = stats[layer.norm_name]
        st = {k: (jnp.where(replace, 0.0 if k == "mean" else 1.0, v).astype(v.dtype) if k in ("mean", "var") else v)
              for k, v in st.items()}
        variables = {**variables, "batch_stats": {**stats, layer.norm_name: st}}
    params = variables["params"]
    p_in, p_next = dict(params[layer.name]), dict(params[layer.next_name])
    k_in, k_next = dict(keep[layer.name]), dict(keep[layer.next_name])
    p_in["kernel"] = jnp.where(replace, fresh_kernel, p_in["kernel"])
    k_in["kernel"] = k_in["kernel"] & ~jnp.broadcast_to(replace, k_in["kernel"].shape)
    if "bias" in p_in:
        p_in["bias"] = jnp.where(replace, fresh_bias, p_in["bias"])
        k_in["bias"] = k_in["bias"] & ~replace
    if add_to_next_bias is not None and "bias" in p_next:
        p_next["bias"] = p_next["bias"] + add_to_next_bias
    out_m = outgoing_mask(replace, p_next["kernel"], layer.next_kind)
    p_next["kernel"] = jnp.where(out_m, 0.0, p_next["kernel"]).astype(params[layer.next_name]["kernel"].dtype)
    k_next["kernel"] = k_next["kernel"] & ~jnp.broadcast_to(out_m, k_next["kernel"].shape)
    params = {**params, layer.name: p_in, layer.next_name: p_next}
    keep = {**keep, layer.name: k_in, layer.next_name: k_next}
    if layer.norm_name is not None:
        p_norm, k_norm = dict(params[layer.norm_name]), dict(keep[layer.norm_name])
        for k, v in (("scale", 1.0), ("bias", 0.0)):
            if k in p_norm:
                p_norm[k] = jnp.where(replace, v, p_norm[k]).astype(p_norm[k].dtype)
                k_norm[k] = k_norm[k] & ~replace
        params = {**params, layer.norm_name: p_norm}
        keep = {**keep, layer.norm_name: k_norm}
    return {**variables, "params": params}, keep


def all_true(params):
    return jax.tree_util.tree_map(lambda a: jnp.ones(a.shape, bool), params)

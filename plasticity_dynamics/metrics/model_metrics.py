"""Every unit diagnostic for every monitored layer of a model, from one forward and one backward.

:func:`make_unit_metrics_fn` configures once and returns a jitted pure function
``f(variables, x, y, class_mask=None, *, rng=None, init_params=None, prev_params=None)`` that
returns ``{metric name: {layer: float32 scalar}}`` (names in :mod:`.names`). It runs the model
once with zero probes on the monitored activations and differentiates the loss with respect to
(params, probes) in one reverse pass, which gives dL/dparams and dL/dh for every layer. The
structure of the output depends only on the model, the options and which optional arguments are
given, so the training engine can ``jax.vmap`` it over seeds and call it at every record without
retracing. :func:`unit_metrics` is the convenience form (cached per model and options; returns
Python floats). :func:`metrics_from_arrays` computes the layer metrics from given arrays.

Cost: one forward + one backward pass; per layer O(S x D) elementwise work (S = samples after
flattening), two O(S x D^2) Gram matrices + two eigendecompositions of size min(S, D) for every
rank and both similarity matrices (:func:`~.ranks.layer_factors`), and O(D^2) per cluster
label-propagation round. Layers are taken through the model contract only (``model.apply``,
``model.layer_kinds``, ``model.activation``).

Failure modes: InputError for unknown options, bad loss names, mismatched shapes, partitions for
layers the model does not monitor; a model whose ``apply`` ignores ``probes`` gives zero
backward signals (every unit then counts as saturated).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError, check_choice
from ..losses import masked_loss
from .clone_r2 import _check_partition, clone_r2, clone_r2_std_ratio
from .layout import LAYER_KINDS, flatten_units
from .names import MetricOptions, metric_name, partition_map
from .ranks import _subsample, apply_cutoff, layer_factors, participation_of_gram, rows_used, spectrum_ranks
from .signals import accuracy, masked_accuracy, param_abs_mean, param_distance, param_norms
from .similarity import clusters_above, cosine_from_gram, upper_any_above
from .units import (
    dead_units,
    dormant_units,
    frozen_units,
    linearised_units,
    low_activity_units,
    never_active_units,
    saturated_units,
)

LOSSES = ("xent", "mse")
#: Layers of one shape are vmapped in batches of at most this many activation entries in all
#: (a sequential loop over small layers costs ~1.5x on CPU; vmapping big conv maps all at once
#: would multiply the peak memory by the number of layers).
_STACK_ELEMENTS = 1 << 22
_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(MetricOptions))


def make_options(**thresholds) -> MetricOptions:
    """MetricOptions from keyword thresholds; InputError naming an unknown option."""
    for key in thresholds:
        if key not in _OPTION_NAMES:
            raise InputError(f"metric option {key!r} is not one of: {', '.join(_OPTION_NAMES)}")
    return MetricOptions(**thresholds)


def _kind_of(layer, a, layer_kinds):
    kind = (layer_kinds or {}).get(layer)
    if kind is None:
        kind = {2: "dense", 3: "tokens", 4: "conv"}.get(jnp.ndim(a))
        if kind is None:
            raise InputError(f"layer {layer!r} has shape {tuple(jnp.shape(a))} and no layer kind")
    check_choice(f"layer_kinds[{layer!r}]", kind, LAYER_KINDS)
    return kind


def _fraction(mask):
    return jnp.mean(mask.astype(jnp.float32))


def _layer_metrics(h, g, z, ha, hp, activation, o: MetricOptions, partition) -> dict:
    """Every metric of one layer. ``h`` (N, D) activations (positions as samples, or pooled per
    example with ``pool=True``); ``ha`` every example x position (Dohare's low-activity rule;
    None: ``h``); ``hp`` the per-image pooled activations of a conv/token layer (None for dense). One
    :func:`~.ranks.layer_factors` call serves everything: the singular values, G = h^T h (cosine
    duplicates, clusters) and the Gram matrix of the column-centred h (Pearson duplicates,
    stable rank); with row sampling the ranks get their own factors of the sampled rows."""
    out = {
        metric_name("dead_frac", o.dead_eps, o.dead_frac): _fraction(dead_units(h, o.dead_eps, o.dead_frac)),
        "never_active_frac": _fraction(never_active_units(h)),
    }
    out[metric_name("low_activity_frac", o.low_activity_frac)] = _fraction(
        low_activity_units(h if ha is None else ha, o.low_activity_frac))
    if hp is not None:
        out[metric_name("low_activity_frac_per_image", o.low_activity_frac)] = _fraction(
            low_activity_units(hp, o.low_activity_frac))
    for t in o.dormant_taus:
        out[metric_name("dormant_frac", t)] = _fraction(dormant_units(h, t))
    if g is not None:
        out[metric_name("saturated_frac", o.sat_tau, o.sat_frac)] = _fraction(saturated_units(h, g, o.sat_tau, o.sat_frac))
    if z is not None:
        out[metric_name("linearised_frac", o.linear_frac)] = _fraction(linearised_units(z, o.linear_frac))
        if activation is not None:
            out[metric_name("frozen_frac", o.frozen_eps, o.frozen_frac)] = _fraction(
                frozen_units(z, activation, o.frozen_eps, o.frozen_frac)
            )
    n, d = h.shape
    f = layer_factors(h)  # one factorisation serves the similarities and (all rows) the ranks
    cos = cosine_from_gram(f.gram)
    pear = cosine_from_gram(f.gram_centred)
    for t in o.duplicate_thresholds:
        out[metric_name("duplicate_frac", t)] = _fraction(upper_any_above(cos, t))
        out[metric_name("duplicate_frac_pearson", t)] = _fraction(upper_any_above(pear, t))
    c = o.cluster_threshold
    cl = clusters_above(cos, c)  # = clone_clusters(h, c)
    out[metric_name("clone_cluster_frac", c)] = _fraction(cl.in_cluster)
    out[metric_name("clone_clusters", c)] = cl.num_clusters.astype(jnp.float32)
    out[metric_name("largest_clone_cluster", c)] = cl.largest.astype(jnp.float32)
    rows = rows_used(n, o.max_rows)
    if rows == n:  # every row: the layer's factors serve the ranks too
        shape, tag = h.shape, None
    else:  # sampled rows: their own factors
        sub = _subsample(h, o.max_rows, o.rank_seed)
        f = layer_factors(sub)
        shape, tag = sub.shape, rows
    sig, floor = f.sigma, f.floor
    stable = participation_of_gram(f.gram_centred)
    ranks = spectrum_ranks(apply_cutoff(sig, floor, shape, "resolution"), o.rank_frac,
                           hard=apply_cutoff(sig, floor, shape, "matrix_rank"))
    out[metric_name("effective_rank", rows=tag)] = ranks["effective_rank"]
    out[metric_name("renyi2_rank", rows=tag)] = ranks["renyi2_rank"]
    out[metric_name("stable_rank", rows=tag)] = stable
    out[metric_name("srank", o.rank_frac, rows=tag)] = ranks["srank"]
    out[metric_name("approx_rank", o.rank_frac, rows=tag)] = ranks["approximate_rank"]
    out[metric_name("hard_rank", rows=tag)] = ranks["hard_rank"]
    if partition is not None:
        out["clone_r2_fwd"] = clone_r2(h, partition)
        out["clone_r2_std_fwd"] = clone_r2_std_ratio(h, partition)
        if g is not None:
            out["clone_r2_bwd"] = clone_r2(g, partition)
            out["clone_r2_std_bwd"] = clone_r2_std_ratio(g, partition)
    return out


def metrics_from_arrays(activations, grads=None, preactivations=None, layer_kinds=None, *,
                        activation=None, options: MetricOptions | None = None) -> dict:
    """Layer metrics from arrays: {metric name: {layer: float32 scalar}}. Jit-able.

    activations: {layer: array} as in ``Output.activations``; grads: same keys, dL/dh (or None);
    preactivations: {layer: z} for the layers that have one (or None); layer_kinds: {layer:
    "dense"|"conv"|"tokens"} (inferred from the rank when missing); activation: the activation's
    name or callable, for frozen units (skipped when None).
    """
    o = options or MetricOptions()
    grads = grads or {}
    preactivations = preactivations or {}
    partitions = dict(o.partitions or {})  # a Partition is already a {layer: ids} map (MetricOptions)
    for layer in partitions:
        if layer not in activations:
            raise InputError(f"partitions has layer {layer!r}; monitored layers are: {', '.join(sorted(activations))}")
    groups: dict = {}
    for layer in sorted(activations):
        a = activations[layer]
        kind = _kind_of(layer, a, layer_kinds)
        h = flatten_units(a, kind, pool=o.pool)
        hp = None if kind == "dense" else flatten_units(a, kind, pool=True)
        ha = flatten_units(a, kind, pool=False) if (o.pool and kind != "dense") else None
        g = None if grads.get(layer) is None else flatten_units(grads[layer], kind, pool=o.pool)
        z = None if preactivations.get(layer) is None else flatten_units(preactivations[layer], kind, pool=o.pool)
        part = partitions.get(layer)
        part = None if part is None else _check_partition(part, h.shape[1])
        args = (h, g, z, ha, hp, part)
        signature = tuple(None if x is None else (x.shape, x.dtype) for x in args)
        groups.setdefault(signature, []).append((layer, args))
    result: dict = {}
    for members in groups.values():
        if len(members) == 1:
            layer, (h, g, z, ha, hp, part) = members[0]
            per_layer = {layer: _layer_metrics(h, g, z, ha, hp, activation, o, part)}
        else:  # layers of one shape: compile the metrics once, vmapped over batches of the stack
            stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[args for _, args in members])
            batch = max(1, min(len(members), _STACK_ELEMENTS // members[0][1][0].size))
            out = jax.lax.map(lambda t: _layer_metrics(*t[:5], activation, o, t[5]), stacked, batch_size=batch)
            per_layer = {layer: {k: v[i] for k, v in out.items()} for i, (layer, _) in enumerate(members)}
        for layer, values in per_layer.items():
            for name, value in values.items():
                result.setdefault(name, {})[layer] = jnp.asarray(value, jnp.float32)
    return {name: dict(sorted(per.items())) for name, per in result.items()}


def make_unit_metrics_fn(model, *, loss: str = "xent", train: bool = False, activation=None, jit: bool = True,
                         **thresholds):
    """Configure once; return ``f(variables, x, y, class_mask=None, *, rng=None,
    init_params=None, prev_params=None) -> {metric name: {layer: float32 scalar}}``.

    model: follows the model contract (``apply(variables, x, train=, rng=, probes=)`` returning
    logits, activations, preactivations; ``layer_kinds``; ``activation``). loss: "xent" (masked
    cross-entropy over ``class_mask``; y integer labels (B,) or target distributions (B, K)) or
    "mse" (mean squared error over the masked outputs; integer y is one-hot encoded). train:
    run the model in train mode (batch statistics, dropout with ``rng``). activation: overrides
    ``model.activation`` for frozen units (a name or an elementwise callable). thresholds: any
    field of :class:`~.names.MetricOptions`. init_params / prev_params add the "dist_init" /
    "dist_prev" metrics. The returned function is ``jax.jit``-ed unless ``jit=False``.
    """
    check_choice("loss", loss, LOSSES)
    if not isinstance(train, bool):
        raise InputError(f"train={train!r} must be True or False")
    options = make_options(**thresholds)
    act = activation if activation is not None else getattr(model, "activation", None)
    layer_kinds = dict(getattr(model, "layer_kinds", {}) or {})

    def fn(variables, x, y, class_mask=None, *, rng=None, init_params=None, prev_params=None):
        y = jnp.asarray(y)
        if class_mask is None:
            mask = None
        else:
            mask = jnp.asarray(class_mask).astype(bool)
        shapes = jax.eval_shape(lambda v, xx: model.apply(v, xx, train=train, rng=rng).activations, variables, x)
        probes = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def objective(params, probes):
            out = model.apply({**variables, "params": params}, x, train=train, rng=rng, probes=probes)
            m = jnp.ones(out.logits.shape[-1], bool) if mask is None else mask
            if m.shape != out.logits.shape[-1:]:
                raise InputError(f"class_mask has shape {tuple(m.shape)}; expected ({out.logits.shape[-1]},)")
            return masked_loss(out.logits.astype(jnp.float32), y, m, loss)[0], out

        (value, out), (gparams, gprobes) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
            variables["params"], probes
        )
        result = metrics_from_arrays(
            out.activations, gprobes, out.preactivations, layer_kinds, activation=act, options=options
        )
        params = variables["params"]
        result["weight_norm"] = param_norms(params)
        result["weight_abs_mean"] = param_abs_mean(params)
        result["grad_norm"] = param_norms(gparams)
        if init_params is not None:
            result["dist_init"] = param_distance(params, init_params)
        if prev_params is not None:
            result["dist_prev"] = param_distance(params, prev_params)
        labels = y if y.ndim == 1 else jnp.argmax(y, axis=-1)
        full = jnp.ones(out.logits.shape[-1], bool) if mask is None else mask
        result["loss"] = {"output": value}
        result["accuracy"] = {"output": accuracy(out.logits, labels)}
        result["masked_accuracy"] = {"output": masked_accuracy(out.logits, labels, full)}
        return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), result)

    return jax.jit(fn) if jit else fn


_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 16


def _cache_key(model, loss, train, activation, thresholds):
    items = []
    for k in sorted(thresholds):
        v = thresholds[k]
        if k == "partitions" and v is not None:
            v = partition_map(v)
            v = tuple((layer, np.asarray(p).tobytes(), np.asarray(p).shape) for layer, p in sorted(v.items()))
        elif isinstance(v, list):
            v = tuple(v)
        items.append((k, v))
    try:  # contract Models hash by (name, options): equal models share one compiled function
        hash(model)
        mkey = ("model", model)
    except TypeError:
        mkey = ("id", id(model))
    return (mkey, loss, train, id(activation) if callable(activation) else activation, tuple(items))


def unit_metrics(model, variables, batch, *, loss: str = "xent", class_mask=None, train: bool = False,
                 rng=None, init_params=None, prev_params=None, activation=None, **thresholds) -> dict:
    """{metric name: {layer: float}} for every monitored layer; batch = (x, y).

    Same options as :func:`make_unit_metrics_fn`; the jitted function is cached per model and
    options (16 entries), so repeated calls with the same batch shape compile once.
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise InputError("batch must be a pair (x, y)")
    key = _cache_key(model, loss, train, activation, thresholds)
    hit = _CACHE.get(key)
    if hit is None or (key[0][0] == "id" and hit[0] is not model):
        hit = (model, make_unit_metrics_fn(model, loss=loss, train=train, activation=activation, **thresholds))
        _CACHE[key] = hit
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    x, y = batch
    from .layout import check_finite

    check_finite("batch x", x)
    result = hit[1](variables, x, y, class_mask, rng=rng, init_params=init_params, prev_params=prev_params)
    return {name: {layer: float(v) for layer, v in per.items()} for name, per in jax.device_get(result).items()}

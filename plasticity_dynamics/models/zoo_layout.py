"""The unit layout of a zoo model: inferred from its jaxpr like any model's, named the zoo's way.

There is one path for every model (issue 17): :func:`~.infer.infer_layout` on the jaxpr of
``model.apply``. For a zoo model the trace returns the logits *and* the model's own monitored
activations (``Output.activations``), so every inferred layer whose activation the model
reports takes the reported name (mlp ``hidden_i``, cnn ``conv_i`` / ``fc_j``, resnet18 ``stem``
and ``layer{s}_block{b}``, vit ``block_{i}_mlp``), a reported value without an activation
function (vit ``block_{i}``, the residual stream) becomes a monitored layer without activation,
and the layers the model does not report are unmonitored. What remains is naming, per family
(:data:`GROUP_NAMES`, :data:`UNMONITORED_NAMES`; the public names of PAPER.md / the partition
docstring): a group is named after its first layer (regex table applied), else after its
inferred name (regex table applied).

- ``zoo_layout(model, variables)``: the :class:`~.layout.Layout`; cached per (model, variable
  shapes), so ``detect`` / ``expand`` / ``frozen`` in loops trace once (a trace of the forward
  pass, no compile: ~0.1-1 s for the tiny presets on a loaded CPU).
- ``model_from_params(variables)``: the mlp or cnn zoo model whose parameters these are (sizes
  from the shapes; norm placement before the activation, relu), for callers that pass a bare
  params tree without the model (``pdx.manifolds.frozen(units, params)``).

A zoo model with ``activation="linear"`` is traced with relu (the layout of its units is the
same; an identity has no activation site to find), so its hidden layers keep
``activation=True`` as the zoo declares them.
Reference: issue 17; PAPER.md 1.4 (units), 5.4 (expansion).
"""

from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from .infer import infer_layout
from .jaxpr_program import trace
from .layout import LayerSpec, Layout

# family -> ((regex on a group's first layer name, or its inferred name), zoo group name)
GROUP_NAMES = {
    "mlp": (),
    "cnn": (),
    "resnet18": (("stem", "stage1"), (r"layer(\d+)_block\d+", r"stage\1")),
    "vit": ((r"block_\d+", "embed"), (r"(block_\d+/attn)/\w+", r"\1")),
}
# family -> ((regex on an unmonitored layer's inferred name, zoo layer name))
UNMONITORED_NAMES = {
    "mlp": (), "cnn": (), "vit": (),
    "resnet18": ((r"(layer\d+_block\d+)/conv1", r"\1/inner"),),
}


def _rename(table, name):
    for pattern, repl in table:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, repl, name)
    return name


def _is_variables(tree) -> bool:
    return isinstance(tree, dict) and "params" in tree and set(tree) <= {"params", "batch_stats"}


def _kernel(params, name):
    mod = params.get(name)
    if not isinstance(mod, dict) or "kernel" not in mod:
        return None
    return np.shape(mod["kernel"])


def _count(params, prefix):
    n = 0
    while f"{prefix}{n}" in params:
        n += 1
    return n


def example_input(model, params):
    """A (2, ...) float32 input that fits ``params`` of zoo model ``model`` (sizes from the
    parameter shapes: mlp input width; cnn image side from the first dense layer's fan-in after
    the 2x2 poolings, square; resnet18 16 x 16; vit side from the positional embedding and
    patch size, square)."""
    fam = model.name
    try:
        if fam == "mlp":
            first = _kernel(params, "dense_0") or _kernel(params, "out")
            return jax.ShapeDtypeStruct((2, first[0]), jnp.float32)
        if fam == "cnn":
            n = _count(params, "conv_")
            cin, clast = _kernel(params, "conv_0")[2], _kernel(params, f"conv_{n - 1}")[3]
            rows = (_kernel(params, "fc_0") or _kernel(params, "out"))[0]
            side = math.isqrt(rows // clast) * 2 ** n
            return jax.ShapeDtypeStruct((2, side, side, cin), jnp.float32)
        if fam == "resnet18":
            return jax.ShapeDtypeStruct((2, 16, 16, _kernel(params, "stem_conv")[2]), jnp.float32)
        if fam == "vit":
            p = model.options["patch_size"]
            side = math.isqrt(np.shape(params["pos_embed"])[1] - 1) * p
            cin = _kernel(params, "patch_embed")[0] // (p * p)
            return jax.ShapeDtypeStruct((2, side, side, cin), jnp.float32)
    except (KeyError, TypeError, IndexError, ValueError):
        pass
    raise InputError(f"params with keys {sorted(params)[:6]} are not parameters of a "
                     f"{fam} model of the zoo")


def model_from_params(variables):
    """The mlp or cnn zoo model whose parameters (or variables) these are: family from the
    names (``dense_i``/``out``: mlp; ``conv_i``/``fc_j``/``out``: cnn), sizes from the shapes,
    norm "batch" with running statistics, "layer" with norm parameters only, else "none";
    norm before the activation; relu. Raises InputError for other trees (pass the model)."""
    from .registry import create  # registry imports the families; keep this module below

    params = variables["params"] if _is_variables(variables) else variables
    if not isinstance(params, dict) or "out" not in params:
        keys = sorted(params)[:6] if isinstance(params, dict) else type(params).__name__
        raise InputError(f"cannot tell the model from params keys {keys}; pass the model "
                         "(only mlp and cnn params are recognised without it)")
    stats = variables.get("batch_stats") if _is_variables(variables) else None
    has_norm = "norm_0" in params
    norm = "batch" if stats else ("layer" if has_norm else "none")
    common = dict(num_outputs=_kernel(params, "out")[-1], norm=norm, norm_affine=has_norm or
                  norm == "none", activation="relu", dropout=0.0)
    if "conv_0" in params:
        channels = tuple(_kernel(params, f"conv_{i}")[-1] for i in range(_count(params, "conv_")))
        fc = tuple(_kernel(params, f"fc_{j}")[-1] for j in range(_count(params, "fc_")))
        return create("cnn", channels=channels, fc_widths=fc, **common)
    n = _count(params, "dense_")
    if n == 0 or len(params) - n - 1 - (n if has_norm else 0) != 0:
        raise InputError(f"cannot tell the model from params keys {sorted(params)[:6]}; pass "
                         "the model (only mlp and cnn params are recognised without it)")
    widths = tuple(_kernel(params, f"dense_{i}")[-1] for i in range(n))
    return create("mlp", widths=widths, **common)


def zoo_layout(model, variables) -> Layout:
    """The unit :class:`~.layout.Layout` of zoo ``model`` around ``variables`` (a variables
    dict, or a bare params tree: running statistics, when the model has them, are then taken
    from its init shapes). Cost: one trace of ``model.apply`` per (model, variable shapes),
    cached; raises InputError when the parameters do not fit the model."""
    variables = dict(variables) if _is_variables(variables) else {"params": variables}
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    shapes = tuple((tuple(np.shape(v)), str(jnp.result_type(v))) for v in leaves)
    return _cached(model, treedef, shapes)


@functools.lru_cache(maxsize=128)
def _cached(model, treedef, shapes) -> Layout:
    from .registry import create

    structs = [jax.ShapeDtypeStruct(s, d) for s, d in shapes]
    variables = jax.tree_util.tree_unflatten(treedef, structs)
    params = variables["params"]
    x = example_input(model, params)
    run = model
    if model.activation == "linear":
        run = create(model.name, **{**model.options, "activation": "relu"})
    full = variables
    if "batch_stats" not in variables:
        init = jax.eval_shape(lambda: run.init(jax.random.PRNGKey(0), x))
        if "batch_stats" in init:
            full = {"params": params, "batch_stats": init["batch_stats"]}
    names = list(model.layer_kinds)
    ftree = jax.tree_util.tree_structure(full)

    def fn(lv, xx):
        out = run.apply(jax.tree_util.tree_unflatten(ftree, lv), xx)
        return (out.logits, *[out.activations[k] for k in names])

    flat = jax.tree_util.tree_leaves(full)
    try:
        prog = trace(fn, flat, x)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a foreign tree fails inside flax in many ways
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"variables do not fit model {model.name!r}: {first}") from None
    paths = [_path(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(full)[0]]
    layout, _, _ = infer_layout(prog, paths + [("x",)], len(flat),
                                points={k: i + 1 for i, k in enumerate(names)})
    return _named(model.name, layout, set(_path(kp) for kp, _ in
                                          jax.tree_util.tree_flatten_with_path(variables)[0]))


def _path(kp):
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in kp)


def _named(family, layout: Layout, keep) -> Layout:
    """Rename groups and unmonitored layers the zoo's way; keep only the leaves in ``keep``."""
    layers = {(n if s.monitored else _rename(UNMONITORED_NAMES[family], n)): s
              for n, s in layout.layers.items()}
    first = {}
    for n, s in layers.items():
        first.setdefault(s.group, n)
    groups = {s[1] for specs in layout.leaves.values() for s in specs}
    names = {g: _rename(GROUP_NAMES[family], first.get(g, g)) for g in groups}
    if len(set(names.values())) != len(names):
        raise InputError(f"the {family} naming table gives two groups one name: "
                         f"{sorted(names.items())}")
    leaves = {p: tuple((a, names[g], r) for a, g, r in specs)
              for p, specs in layout.leaves.items() if p in keep}
    layers = {n: LayerSpec(names[s.group], s.activation, s.monitored,
                           tuple(i for i in s.incoming if i[0] in keep),
                           tuple(o for o in s.outgoing if o[0] in keep))
              for n, s in layers.items()}
    head_dims = {names[g]: d for g, d in layout.head_dims.items()}
    return Layout(leaves, layers, dict(layout.kinds), head_dims)


__all__ = ["GROUP_NAMES", "UNMONITORED_NAMES", "example_input", "model_from_params",
           "zoo_layout"]

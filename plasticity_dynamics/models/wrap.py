"""Any JAX model behind the zoo's contract: ``from_function``, ``from_flax``, ``from_nnx``,
``from_equinox``.

::

    model = pdx.models.from_function(apply_fn, params, example_x)   # apply_fn(params, x)
    variables = model.init(key, x)            # {"params": params} (the given parameters)
    out = model.apply(variables, x, probes=...)   # Output(logits, variables, acts, preacts)
    model.layout                              # the inferred pdx.models.Layout
    pdx.manifolds.unit_partition(model, variables)

The unit layout is inferred from the jaxpr of ``apply_fn`` (see :mod:`.infer`) or declared
with ``layout=``; the activations and pre-activations of every inferred layer are read off the
same jaxpr, re-evaluated primitive by primitive, so the user's code is not touched. With
``state`` (e.g. Flax batch statistics), ``apply_fn`` takes ``{"params": params,
"batch_stats": state}`` and the model runs in inference mode (``train=True`` is accepted and
ignored: Output.variables are the input variables). Layer names: the module path of the
layer's last incoming kernel ("dense_0", "layers/1"), else its group; kinds by rank (dense
(B, D), tokens (B, T, D), conv (B, H, W, C)). ``activation``: the name in ACTIVATIONS that the
layers' element-wise chain matches on a grid (else a callable evaluating the first layer's).
Reference: issue 17; PAPER.md 1.4 (units), 5.4 (expansion).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from .activations import ACTIVATIONS, activation_fn
from .contract import Output
from .infer import infer_layout
from .jaxpr_program import evaluate, evaluate_ids, trace
from .layout import Layout, check_layout


def _leaf_paths(tree):
    out = []
    for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out.append((tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                          for k in kp), leaf))
    return out


def as_dict(tree):
    """(nested dict of the leaves keyed by their path strings, rebuild) for any pytree; rebuild
    maps such a dict (also a wider one of the same paths) back to the original structure. The
    toolkit keeps params as dicts of layers (metrics report per top-level key)."""
    paths = [p for p, _ in _leaf_paths(tree)]
    treedef = jax.tree_util.tree_structure(tree)
    out = {}
    for path, leaf in _leaf_paths(tree):
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf

    def rebuild(d):
        leaves = []
        for path in paths:
            node = d
            for key in path:
                node = node[key]
            leaves.append(node)
        return jax.tree_util.tree_unflatten(treedef, leaves)

    return out, rebuild


def _variables(params, state):
    return {"params": params} if state is None else {"params": params, "batch_stats": state}


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionModel:
    """A wrapped JAX function with the zoo's ``Model`` contract (build with
    :func:`from_function`). Hashes by identity, so it can be a static jit argument."""

    name: str
    apply_fn: Callable
    uses_variables: bool
    layout: Layout
    layer_kinds: dict
    activation: Any
    variables: dict
    declared: bool = False
    options: dict = dataclasses.field(default_factory=dict)
    module: Any = None

    def init(self, key=None, x=None):
        """The wrapped variables ``{"params": ...}`` (+ "batch_stats"): the model is wrapped
        around existing parameters, so ``key`` is unused (every seed starts there). ``x``, when
        given, is checked to fit (one trace per input shape; InputError if it does not)."""
        if x is not None:
            self.program(dict(self.variables), x)
        return dict(self.variables)

    def with_params(self, params, state=None) -> "FunctionModel":
        """The same function around other parameters (e.g. an expanded, wider tree): the
        layout is inferred again (or the declared one must still fit)."""
        x = self._example
        return from_function(self.apply_fn, params, x, state=state,
                             layout=self.layout if self.declared else None, name=self.name,
                             _uses_variables=self.uses_variables)

    @property
    def _example(self):
        return self.__dict__["_example_x"]

    def _call(self, variables, x):
        arg = variables if self.uses_variables else variables["params"]
        out = self.apply_fn(arg, x)
        return out[0] if isinstance(out, (tuple, list)) else out

    def program(self, variables, x):
        """(program, sites) for inputs shaped like ``x`` (cached per shape)."""
        leaves, treedef = jax.tree_util.tree_flatten(variables)
        key = (treedef, tuple((np.shape(v), jnp.result_type(v)) for v in leaves),
               tuple(np.shape(x)), jnp.result_type(x))
        cache = self.__dict__["_programs"]
        if key not in cache:
            fn = lambda lv, xx: self._call(jax.tree_util.tree_unflatten(treedef, lv), xx)  # noqa
            structs = [jax.ShapeDtypeStruct(np.shape(v), jnp.result_type(v)) for v in leaves]
            try:
                prog = trace(fn, structs, jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)))
            except Exception as exc:  # noqa: BLE001 - user code fails in many ways on a bad shape
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise InputError(f"x.shape={tuple(np.shape(x))} does not fit model "
                                 f"{self.name!r}: {first}") from None
            paths = [p for p, _ in _leaf_paths(variables)] + [("x",)]
            layout, sites, _ = infer_layout(prog, paths, len(leaves))
            if not self.declared and list(layout.layers) != list(self.layer_kinds):
                raise InputError(f"x.shape={tuple(np.shape(x))} gives layers "
                                 f"{list(layout.layers)}; the model was wrapped with "
                                 f"{list(self.layer_kinds)}")
            cache[key] = (prog, sites if not self.declared else {})
        return cache[key]

    def apply(self, variables, x, *, train: bool = False, rng=None, probes=None) -> Output:
        """Run the function on ``x``; see ``pdx.models.Model.apply``. ``train`` and ``rng``
        are accepted for the contract and ignored (a pure function has no train mode).
        probes: {layer: array shaped like that activation}, added where it is recorded."""
        if probes is not None:
            unknown = [k for k in probes if k not in self.layer_kinds]
            if unknown:
                raise InputError(f"probes key {unknown[0]!r} is not one of: "
                                 f"{', '.join(self.layer_kinds)}")
        variables = dict(variables)
        prog, sites = self.program(variables, x)
        if probes:
            for name, p in probes.items():
                want = prog.avals[sites[name][1]][0]
                if tuple(np.shape(p)) != tuple(want):
                    raise InputError(f"probes[{name!r}].shape={tuple(np.shape(p))} must equal "
                                     f"the activation shape {tuple(want)}")
        logits, acts, pre = _jitted(self)(variables, x, probes)
        order = list(self.layer_kinds)
        return Output(logits, variables, {k: acts[k] for k in order if k in acts},
                      {k: pre[k] for k in order if k in pre})


@functools.lru_cache(maxsize=64)
def _jitted(model: FunctionModel):
    def run(variables, x, probes):
        prog, sites = model.program(variables, x)
        leaves = jax.tree_util.tree_leaves(variables)
        outs, acts, pre = evaluate(prog, leaves, x, sites, probes)
        return outs[0], acts, pre

    return jax.jit(run)


_GRID = 2048


@functools.lru_cache(maxsize=1)
def _candidates():
    """Every non-linear activation of ACTIVATIONS on the grid [-4, 4] (_GRID points), float64."""
    base = np.linspace(-4.0, 4.0, _GRID, dtype=np.float32)
    return base, {n: np.asarray(activation_fn(n)(base), np.float64) for n in ACTIVATIONS
                  if n != "linear"}


def _name_activation(prog, leaves, x, sites):
    """Name in ACTIVATIONS matched by every layer's element-wise chain on a grid, else None.
    Each chain runs alone, eagerly, with z replaced by the grid repeated (the primitives'
    eager executables are cached by JAX, so a second wrap costs little)."""
    base, refs = _candidates()
    known = dict(zip(prog.invars, [*leaves, x]))
    names = None
    for z, h in sites.values():
        shape, dtype = prog.avals[z]
        grid = np.resize(base, shape).astype(dtype)
        got = np.asarray(evaluate_ids(prog, {**known, z: grid}, [h])[0], np.float64)
        got = got.reshape(-1)[:_GRID]
        match = {n for n, ref in refs.items()
                 if np.allclose(got, ref[:got.size], rtol=1e-5, atol=1e-5)}
        names = match if names is None else names & match
    if not names:
        return None
    return sorted(names)[0]


def _region_callable(prog, leaves, x, layer, site):
    """Element-wise activation of one layer as a callable on any shape (chunks of the traced
    shape through ``lax.map``)."""
    z, h = site
    shape, dtype = prog.avals[z]
    size = int(np.prod(shape))

    def one(chunk):
        return evaluate_ids(prog, {**dict(zip(prog.invars, [*leaves, x])), z: chunk}, [h])[0]

    def fn(a):
        a = jnp.asarray(a, dtype)
        flat = a.reshape(-1)
        n = -(-flat.size // size)
        padded = jnp.pad(flat, (0, n * size - flat.size)).reshape((n,) + tuple(shape))
        return jax.lax.map(one, padded).reshape(-1)[:flat.size].reshape(a.shape)

    return fn


def from_function(apply_fn: Callable, params, example_x, *, state=None,
                  layout: Layout | None = None, name: str | None = None,
                  _uses_variables: bool | None = None) -> FunctionModel:
    """Wrap any pure JAX network ``apply_fn(params, x) -> logits`` as a model of the zoo's
    contract, with its unit layout inferred from the jaxpr.

    params: the parameter pytree (dicts, Flax/Equinox/NNX pytrees: any tree of arrays); a
        tree that is not a dict is held as a nested dict keyed by its path strings
        (``model.init()["params"]``; see :func:`as_dict`), rebuilt before ``apply_fn``;
    example_x: an input batch (B, ...) (values unused, shapes define the trace);
    state: optional running statistics; then ``apply_fn({"params": params, "batch_stats":
        state}, x)`` is called (Flax Linen variables);
    layout: a declared :class:`~.layout.Layout` (skips inference; no activation probes then
        unless inference also finds them); name: model name (default ``apply_fn.__name__``).
    Cost: one trace (``jax.make_jaxpr``) and one linear pass over the equations, plus one
    eager forward per layer to name the activation function.
    Raises InputError (one line) naming the primitive and parameter path where inference
    cannot prove a layout, and for a declared layout that does not fit the parameters.
    """
    if not callable(apply_fn):
        raise InputError(f"apply_fn={apply_fn!r} must be callable: apply_fn(params, x)")
    if np.ndim(example_x) < 1:
        raise InputError(f"example_x has shape {np.shape(example_x)}; need a batch (B, ...)")
    uses_vars = (state is not None) if _uses_variables is None else _uses_variables
    if not isinstance(params, Mapping):  # Equinox modules, lists, tuples: params become dicts
        params, rebuild = as_dict(params)
        user_fn = apply_fn
        if uses_vars:
            def apply_fn(v, x):
                return user_fn({**v, "params": rebuild(v["params"])}, x)
        else:
            def apply_fn(p, x):
                return user_fn(rebuild(p), x)
        apply_fn.__name__ = getattr(user_fn, "__name__", "custom")
    variables = _variables(params, state)
    leaves = jax.tree_util.tree_leaves(variables)
    if not leaves:
        raise InputError("params holds no arrays; pass the network's parameter pytree")
    example_x = jnp.asarray(example_x)
    name = name or getattr(apply_fn, "__name__", "custom")
    model = FunctionModel(name, apply_fn, uses_vars, Layout({}, {}, {}), {}, None, variables,
                          declared=layout is not None)
    model.__dict__["_example_x"] = example_x
    model.__dict__["_programs"] = {}
    treedef = jax.tree_util.tree_structure(variables)
    fn = lambda lv, xx: model._call(jax.tree_util.tree_unflatten(treedef, lv), xx)  # noqa
    prog = trace(fn, leaves, example_x)
    paths = [p for p, _ in _leaf_paths(variables)] + [("x",)]
    shapes = {p: np.shape(v) for p, v in _leaf_paths(variables)}
    if layout is None:
        inferred, sites, _ = infer_layout(prog, paths, len(leaves))
    else:
        inferred, sites = check_layout(layout, shapes), {}
    act = None
    if sites:
        act = _name_activation(prog, leaves, example_x, sites)
        if act is None:
            first = next(iter(sites))
            act = _region_callable(prog, leaves, example_x, first, sites[first])
    for attr, val in (("layout", inferred), ("layer_kinds", dict(inferred.kinds)),
                      ("activation", act)):
        object.__setattr__(model, attr, val)
    model.__dict__["_programs"][_key(variables, example_x)] = (prog, sites)
    return model


def _key(variables, x):
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    return (treedef, tuple((np.shape(v), jnp.result_type(v)) for v in leaves),
            tuple(np.shape(x)), jnp.result_type(x))


# ------------------------------------------------------------------------- frameworks


def from_flax(module, variables, example_x, **kw) -> FunctionModel:
    """Wrap a Flax Linen ``module`` with its ``variables`` ({"params", optional
    "batch_stats"}); the module is applied in inference mode (``module.apply(variables, x)``;
    pass ``apply_kwargs={"train": False}``-style settings by wrapping a lambda in
    :func:`from_function` instead)."""
    variables = dict(variables)
    extra = set(variables) - {"params", "batch_stats"}
    if "params" not in variables or extra:
        raise InputError(f"variables keys {sorted(variables)} must be 'params' and optionally "
                         "'batch_stats'")
    state = variables.get("batch_stats")
    if state is None:
        fn = lambda p, x: module.apply({"params": p}, x)  # noqa: E731
    else:
        fn = module.apply
    return from_function(fn, variables["params"], example_x, state=state,
                         name=kw.pop("name", type(module).__name__), **kw)


def from_nnx(module, example_x, **kw) -> FunctionModel:
    """Wrap a Flax NNX module: its ``nnx.Param`` state becomes the params (a pure dict);
    other state (e.g. BatchNorm statistics) is kept fixed inside the function."""
    from flax import nnx

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    pure = nnx.to_pure_dict(params)

    def fn(p, x):
        st = jax.tree.map(lambda a: a, params)
        nnx.replace_by_pure_dict(st, p)
        return nnx.merge(graphdef, st, rest)(x)

    return from_function(fn, pure, example_x, name=kw.pop("name", type(module).__name__), **kw)


def from_equinox(module, example_x, **kw) -> FunctionModel:
    """Wrap an Equinox module acting on one example (``module(x_i)``); it is vmapped over the
    batch. Its inexact arrays are the params (an Equinox pytree)."""
    try:
        import equinox as eqx
    except ImportError as err:  # pragma: no cover - dev extra
        raise InputError("from_equinox needs equinox: pip install equinox (the 'dev' extra)") \
            from err
    params, static = eqx.partition(module, eqx.is_inexact_array)

    def fn(p, x):
        return jax.vmap(eqx.combine(p, static))(x)

    return from_function(fn, params, example_x, name=kw.pop("name", type(module).__name__), **kw)


__all__ = ["FunctionModel", "as_dict", "from_equinox", "from_flax", "from_function", "from_nnx"]

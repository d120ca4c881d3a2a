"""Interventions: small pure functions with explicit state, run after every optimiser step.

    iv = make_intervention(name, **opts)
    s = iv.init(params, key)
    params, opt_state, s = iv.apply(params, opt_state, s, activations, step, key, task_start=False)
    params, opt_state, s = iv.on_task_start(params, opt_state, s, key)

``params`` is the model's variables dict ("params", and "batch_stats" where the model keeps
running statistics; re-drawn units then also get fresh statistics) or, for older callers, the
"params" collection alone (the same form comes back); ``opt_state`` the optax state built on
the params,
``activations`` the dict of monitored activations of the training batch (model
contract keys, "hidden_{i}" for MLPs; only cbp and redo read it), ``step`` the
index of the optimiser step just taken (global, 0-based; may be traced), ``key``
a fresh PRNG key. All functions are jit / vmap / scan safe. Task-boundary
actions (head_reset, full_reset, shrink_perturb with ``at_task_start``) happen in
``on_task_start``, or inside ``apply`` when the engine passes ``task_start=True``
(a Python or traced bool; after the step's own action).

- none: identity.
- shrink_perturb (Ash & Adams 2020): theta <- shrink * theta + sigma * theta_fresh, with
  theta_fresh a new draw of the init distribution, after every ``every``-th step
  ((step + 1) % every == 0) or only at task starts (``at_task_start=True``).
  Defaults shrink 0.9999, sigma 1e-4, every 1 are this toolkit's choice, not the paper's.
- cbp: continual backprop, see :mod:`.cbp`.
- redo (Sokar et al. 2023): every ``every`` steps, units with score
  s_i = mean|h_i| / (mean_j s_j + 1e-9) <= tau on the training batch are recycled:
  incoming weights and bias re-drawn from the init distribution, outgoing weights 0,
  their optimiser-state entries zeroed (default tau 0.1, every 1000).
- head_reset: zero the output layer ("out" kernel and bias) at task starts (PAPER.md 5.3);
  optimiser state kept unless ``reset_opt_state``.
- full_reset: re-initialise every parameter (and running statistic) at task starts; the
  optimiser state is re-created with ``optimizer.init`` when ``optimizer`` is given (moments
  and step count restart, noise keys continue), else its params-shaped buffers are zeroed
  (counts kept).
The init distribution is ``init_fn(key)`` when given (the model's own init, e.g. ``lambda k:
model.init(k, x)``: ResNet-18 Kaiming-normal fan-out, ViT truncated normal 0.02, ...), else
PyTorch's default init by shape (units.torch_default_like). ``make_intervention(name,
context={"init_fn": ..., "optimizer": ...})`` hands these to the interventions that take them;
the training engine always does, with the model's init and the run's optimiser.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ..errors import InputError, check_choice, check_positive, check_range
from .cbp import cbp as _cbp
from .cbp import cbp_fns
from .optimizers import reset_state
from .units import (activations_2d, all_true, as_variables, fresh_params, fresh_variables, mask_opt_state, replace_units,
                    unit_layers)

INTERVENTIONS: dict[str, str] = {
    "none": "no intervention",
    "shrink_perturb": "theta <- shrink*theta + sigma*fresh init, every K steps or at task starts (Ash & Adams 2020)",
    "cbp": "continual backprop: replace mature low-utility units at a fixed rate (Dohare et al. 2024)",
    "redo": "recycle tau-dormant units every K steps: re-init incoming, zero outgoing (Sokar et al. 2023)",
    "head_reset": "zero the output layer at every task start",
    "full_reset": "re-initialise all parameters (and the optimiser state) at every task start",
}


class Intervention(NamedTuple):
    """An intervention: pure ``init``, ``apply`` and ``on_task_start`` plus its resolved options."""

    name: str
    init: Callable
    apply: Callable
    on_task_start: Callable
    options: dict


def _identity(params, opt_state, state, key):
    return params, opt_state, state


def _build(name, init, step_fn, start_fn, options) -> Intervention:
    """Wrap variables-level ``step_fn`` / ``start_fn`` so that callers may pass variables or params."""

    def apply(params, opt_state, state, activations, step, key, task_start=False):
        variables, whole = as_variables(params)
        variables, opt_state, state = step_fn(variables, opt_state, state, activations, step, key)
        if task_start is not False and start_fn is not _identity:
            k = jax.random.fold_in(key, 0x7A5C)
            if task_start is True:
                variables, opt_state, state = start_fn(variables, opt_state, state, k)
            else:
                variables, opt_state, state = jax.lax.cond(jnp.asarray(task_start), start_fn, _identity,
                                                           variables, opt_state, state, k)
        return (variables if whole else variables["params"]), opt_state, state

    def on_task_start(params, opt_state, state, key):
        variables, whole = as_variables(params)
        variables, opt_state, state = start_fn(variables, opt_state, state, key)
        return (variables if whole else variables["params"]), opt_state, state

    def init_state(params, key):
        return init(as_variables(params)[0]["params"], key)

    return Intervention(name, init_state, apply, on_task_start, options)


def _no_state(params, key):
    return {}


def _no_step(params, opt_state, state, activations, step, key):
    return params, opt_state, state


def _every(step, every):
    return (jnp.asarray(step, jnp.int32) + 1) % every == 0


def none() -> Intervention:
    return _build("none", _no_state, _no_step, _identity, {})


def shrink_perturb(shrink: float = 0.9999, sigma: float = 1e-4, every: int = 1, at_task_start: bool = False,
                   init_fn: Callable | None = None) -> Intervention:
    check_range("shrink", shrink, 0.0, 1.0, high_inclusive=True)
    check_positive("sigma", sigma, allow_zero=True)
    check_positive("every", every, integer=True)
    return _shrink_perturb(shrink, sigma, every, at_task_start, init_fn)


def _shrink_perturb(shrink, sigma, every, at_task_start, init_fn=None) -> Intervention:
    """:func:`shrink_perturb` unchecked: ``shrink`` and ``sigma`` may be traced scalars."""

    def sp(variables, opt_state, state, key):
        params = variables["params"]
        fresh = fresh_params(params, key, init_fn)
        params = jax.tree_util.tree_map(lambda p, f: (shrink * p + sigma * f).astype(p.dtype), params, fresh)
        return {**variables, "params": params}, opt_state, state

    def step_fn(variables, opt_state, state, activations, step, key):
        if at_task_start:
            return variables, opt_state, state
        return jax.lax.cond(_every(step, every), sp, _identity, variables, opt_state, state, key)

    opts = dict(shrink=shrink, sigma=sigma, every=every, at_task_start=at_task_start)
    return _build("shrink_perturb", _no_state, step_fn, sp if at_task_start else _identity, opts)


def cbp(**opts) -> Intervention:
    init, step_fn = _cbp(**opts)
    resolved = {k: v.default for k, v in inspect.signature(_cbp).parameters.items()}
    resolved.update(opts)
    return _build("cbp", init, step_fn, _identity, resolved)


def _cbp_unchecked(**opts) -> Intervention:
    """:func:`cbp` unchecked (``opts`` resolved, as ``cbp(...).options``): ``replacement_rate``
    and ``decay`` may be traced scalars."""
    init, step_fn = cbp_fns(**opts)
    return _build("cbp", init, step_fn, _identity, dict(opts))


def redo(tau: float = 0.1, every: int = 1000, reset_opt_state: bool = True,
         init_fn: Callable | None = None) -> Intervention:
    check_positive("tau", tau, allow_zero=True)
    check_positive("every", every, integer=True)
    return _redo(tau, every, reset_opt_state, init_fn)


def _redo(tau, every, reset_opt_state, init_fn=None) -> Intervention:
    """:func:`redo` unchecked: ``tau`` may be a traced scalar."""

    def init(params, key):
        return {layer.name: {"recycled": jnp.zeros([], jnp.int32)} for layer in unit_layers(params)}

    def recycle(variables, opt_state, state, activations, key):
        params = variables["params"]
        fresh = fresh_params(params, key, init_fn)
        keep = all_true(params)
        new_state = {}
        for layer in unit_layers(params):
            if layer.act_key not in activations:
                raise InputError(f"intervention 'redo' needs activation {layer.act_key!r}; got {', '.join(activations)}")
            s = jnp.abs(activations_2d(activations[layer.act_key]).astype(jnp.float32)).mean(axis=0)
            dormant = s / (s.mean() + 1e-9) <= tau
            f = fresh[layer.name]
            variables, keep = replace_units(variables, keep, layer, dormant, f["kernel"], f.get("bias", 0.0))
            new_state[layer.name] = {"recycled": state[layer.name]["recycled"] + dormant.sum().astype(jnp.int32)}
        if reset_opt_state:
            opt_state = mask_opt_state(opt_state, variables["params"], keep)
        return variables, opt_state, new_state

    def step_fn(variables, opt_state, state, activations, step, key):
        if activations is None:
            raise InputError("intervention 'redo' needs the training batch activations")
        return jax.lax.cond(_every(step, every), recycle, lambda p, o, s, a, k: (p, o, s),
                            variables, opt_state, state, activations, key)

    return _build("redo", init, step_fn, _identity, dict(tau=tau, every=every, reset_opt_state=reset_opt_state))


def head_reset(reset_opt_state: bool = False) -> Intervention:
    def start(variables, opt_state, state, key):
        params = variables["params"]
        if "out" not in params:
            raise InputError(f"intervention 'head_reset' needs an 'out' layer; params have {', '.join(params)}")
        params = {**params, "out": jax.tree_util.tree_map(jnp.zeros_like, params["out"])}
        if reset_opt_state:
            keep = all_true(params)
            keep = {**keep, "out": jax.tree_util.tree_map(jnp.zeros_like, keep["out"])}
            opt_state = mask_opt_state(opt_state, params, keep)
        return {**variables, "params": params}, opt_state, state

    return _build("head_reset", _no_state, _no_step, start, dict(reset_opt_state=reset_opt_state))


def full_reset(init_fn: Callable | None = None, optimizer: Any = None) -> Intervention:
    def start(variables, opt_state, state, key):
        variables = fresh_variables(variables, key, init_fn)
        params = variables["params"]
        if optimizer is not None:
            opt_state = reset_state(optimizer, params, opt_state)
        else:
            opt_state = mask_opt_state(opt_state, params, jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, bool),
                                                                                 params))
        return variables, opt_state, state

    return _build("full_reset", _no_state, _no_step, start, {})


_CONSTRUCTORS = {"none": none, "shrink_perturb": shrink_perturb, "cbp": cbp, "redo": redo,
                 "head_reset": head_reset, "full_reset": full_reset}


def make_intervention(name: str, *, context: dict | None = None, **opts) -> Intervention:
    """Build intervention ``name`` (see :data:`INTERVENTIONS`); unknown options raise InputError.

    ``context``: what the caller knows about the run, handed to the interventions that take it
    and ignored by the others: ``init_fn`` (the model's own init, ``key -> variables``) and
    ``optimizer`` (the run's optax transformation, so ``full_reset`` re-creates its state).
    """
    check_choice("intervention.name", name, INTERVENTIONS)
    ctor = _CONSTRUCTORS[name]
    allowed = list(inspect.signature(_cbp if name == "cbp" else ctor).parameters)
    for k in opts:
        if k not in allowed:
            user = [a for a in allowed if a not in ("init_fn", "optimizer")]
            raise InputError(f"option {k!r} is not accepted by intervention {name!r}; allowed: "
                             f"{', '.join(user) or 'none'}")
    taken = set(inspect.signature(ctor).parameters)
    opts.update({k: v for k, v in (context or {}).items() if k in taken and k not in opts})
    return ctor(**opts)


#: The intervention options that keep shapes and control flow, so that the vmapped lanes of one
#: program may differ in them (:func:`lane_intervention`): name -> option names.
LANE_OPTIONS: dict[str, tuple[str, ...]] = {"cbp": ("replacement_rate", "decay"),
                                            "shrink_perturb": ("shrink", "sigma"), "redo": ("tau",)}
_UNCHECKED = {"cbp": _cbp_unchecked, "shrink_perturb": _shrink_perturb, "redo": _redo}


def lane_options(iv: Intervention) -> dict[str, float]:
    """The values of ``iv``'s lane options (:data:`LANE_OPTIONS`, defaults resolved) as floats.
    CBP's ``replacement_rate`` is not one with ``min_one_per_step`` (it then fixes a unit count)."""
    names = LANE_OPTIONS.get(iv.name, ())
    if iv.name == "cbp" and iv.options.get("min_one_per_step"):
        names = tuple(n for n in names if n != "replacement_rate")
    return {n: float(iv.options[n]) for n in names}


def lane_intervention(iv: Intervention, values: dict, context: dict | None = None) -> Intervention:
    """``iv`` with its lane options (keys of :func:`lane_options`) set to ``values``, which may be
    traced scalars (one per vmapped lane of one program); the other options stay. ``context`` as
    for :func:`make_intervention`. Values are not checked here (the config was). Cost: none (the
    functions are rebuilt at trace time)."""
    if not values:
        return iv
    ctor = _UNCHECKED[iv.name]
    opts = {**iv.options, **values}
    taken = set(inspect.signature(ctor).parameters)
    opts.update({k: v for k, v in (context or {}).items() if k in taken})
    return ctor(**opts)

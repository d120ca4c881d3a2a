"""Replay of a run's own training steps: the engine's step as a pure ``step_fn(state, t)``.

A checkpoint at step ``s`` holds the state *before* global step ``s``. The run then took, for
``t = s, s+1, ...``, the engine's step on its own minibatch of step t (the stream's sample of
the task's data, keyed by ``(seed, task)`` and the task-local step), its own dropout and
intervention keys (``fold_in(seed, t)``), its lane optimiser, the intervention, and at the
first step of a task the task-start actions (head zeroing, optimiser reset, the
intervention's own). :func:`run_step_fn` returns exactly that map (built from
:func:`~plasticity_dynamics.training.engine.make_engine_step` and
:func:`~plasticity_dynamics.training.engine.make_task_start_fn`, the functions the engine's
chunk program runs), so that ``loop.run_steps`` of it from checkpoint ``s`` reproduces the
run's next checkpoint (float32 rounding aside: the engine vmaps over seeds, and a
convolutional model on XLA:CPU trains in straight-line blocks, ``engine.straight_line``) and
``pdx.curvature.normal_lyapunov`` linearises the real trajectory (same batches, same keys).

State form (what ``step_fn`` maps): ``{"params", "variables", "opt_state", "iv_state"}`` with
the params on top (the form ``normal_lyapunov`` perturbs) and the model's other collections
(batch statistics) under ``"variables"``; :func:`step_state` / :func:`engine_state` convert.

A window lies within one task (the task's data are one array set); a window that crosses a
task end is an InputError (:func:`task_window` clips instead). Interventions whose step is not
differentiable in the state (``cbp``, ``redo``: which units are re-drawn depends on the state
discontinuously; ``full_reset`` over a task start: the state is replaced) are an InputError:
a tangent propagator through them is not the derivative of the run.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ..errors import InputError

#: Interventions whose step map cannot be linearised (state-dependent re-draws).
NOT_LINEARISABLE = {"cbp": "re-draws units chosen by a state-dependent utility ranking",
                    "redo": "re-draws units chosen by a state-dependent dormancy threshold"}


class TaskWindow(NamedTuple):
    """Global steps ``start .. start + steps - 1`` of task ``task`` (first global step ``first``)."""

    start: int
    steps: int
    task: int
    first: int


def task_window(c, start: int, steps: int, *, clip: bool = False) -> TaskWindow:
    """The window of ``steps`` run steps from global step ``start`` (a checkpoint's step).

    ``clip``: shorten it to the end of ``start``'s task (else a window past the task end is an
    InputError). InputError when ``start`` is at or past the run's last step (no run steps
    follow) or ``steps < 1``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps={steps!r} must be an integer >= 1")
    total = sum(n for _, _, n in c.schedule)
    if not 0 <= int(start) < total:
        raise InputError(f"start={start!r}: the run has steps 0..{total - 1}; no run step follows step {start}")
    for task, first, n in c.schedule:
        if first <= start < first + n:
            end = first + n
            if start + steps > end:
                if not clip:
                    raise InputError(f"window {start}..{start + steps - 1} crosses the end of task {task} (step "
                                     f"{end}); a replay window lies within one task (at most {end - start} steps here)")
                steps = end - start
            return TaskWindow(int(start), int(steps), int(task), int(first))
    raise AssertionError("unreachable: the schedule covers 0..total-1")  # pragma: no cover


def check_linearisable(c, window: TaskWindow) -> None:
    """InputError when the run's intervention makes the window's step map non-differentiable."""
    name = c.intervention.name
    if name in NOT_LINEARISABLE:
        last = window.start + window.steps - 1
        if last >= int(c.config.intervention.start_step):
            raise InputError(f"intervention.name={name!r} {NOT_LINEARISABLE[name]}: the step is not differentiable "
                             "in the state, so it has no tangent propagator; replay a run with intervention none, "
                             "shrink_perturb or head_reset (or a window before intervention.start_step)")
    if name == "full_reset" and window.start == window.first:
        raise InputError(f"intervention.name='full_reset' re-initialises the state at the start of task "
                         f"{window.task} (step {window.first}): the propagator over it is zero; start the window "
                         "after the task's first step")


def step_state(engine_state: dict) -> dict:
    """Engine state ``{"variables", "opt_state", "iv_state"}`` -> step state (params on top)."""
    variables = engine_state["variables"]
    return {"params": variables["params"], "variables": {k: v for k, v in variables.items() if k != "params"},
            "opt_state": engine_state["opt_state"], "iv_state": engine_state["iv_state"]}


def engine_state(state: dict) -> dict:
    """Step state -> engine state (inverse of :func:`step_state`)."""
    return {"variables": {**state["variables"], "params": state["params"]}, "opt_state": state["opt_state"],
            "iv_state": state["iv_state"]}


def replay_context(c, seed: int, task: int, *, hypers: dict | None = None) -> dict:
    """What step t of seed ``seed`` in task ``task`` reads besides the state, as arrays (traced
    arguments, so one compiled step serves every seed and task of equal data shapes):
    ``{"seed", "task", "task_first", "data", "hypers"}``. ``hypers``: the lane's values
    (default :func:`~plasticity_dynamics.training.engine.lane_values` of the config, the
    values ``train`` passes)."""
    from .engine import lane_values

    first = {t: f for t, f, _ in c.schedule}
    if task not in first:
        raise InputError(f"task={task!r}: the run has tasks 0..{len(c.schedule) - 1}")
    values = lane_values(c.config) if hypers is None else hypers
    return {"seed": jnp.int32(seed), "task": jnp.int32(task), "task_first": jnp.int32(first[task]),
            "data": jax.tree_util.tree_map(jnp.asarray, c.stream.task_data(task)),
            "hypers": {k: jnp.float32(v) for k, v in values.items()}}


def replay_step(c) -> Callable[[dict, Any, dict], dict]:
    """The generic replay step ``step(state, t, ctx) -> state`` (``ctx`` from
    :func:`replay_context`): the task-start actions when ``t`` is the task's first step, then
    the engine's step. State in the :func:`step_state` form. Pure, jit/vmap/scan-safe; no
    window or intervention checks (:func:`run_step_fn` does them).
    Cost: one training step (plus the task start, under a ``lax.cond``).
    """
    from .engine import lane_components, make_engine_step, make_task_start_fn

    engine_step = make_engine_step(c)
    task_start = make_task_start_fn(c)

    def step(state, t, ctx):
        eng = engine_state(state)
        eng = jax.lax.cond(jnp.asarray(t, jnp.int32) == ctx["task_first"],
                           lambda s: task_start(s, ctx["seed"], ctx["task"], ctx["hypers"]), lambda s: s, eng)
        opt, rates, iv = lane_components(c, ctx["hypers"])
        eng, _ = engine_step(eng, t, ctx["seed"], ctx["data"], ctx["task_first"], ctx["task"], opt, rates, iv)
        return step_state(eng)

    return step


def run_step_fn(c, seed: int, *, start: int, steps: int) -> Callable[[dict, Any], dict]:
    """The run's own training step ``step_fn(state, t) -> state`` for global steps
    ``start .. start + steps - 1`` of seed ``seed`` (``c``: ``pdx.training.build(config)`` of the
    run). State in the :func:`step_state` form; ``loop.run_steps(lambda s, t: (step_fn(s, t),
    None), step_state(checkpoint_state), steps, start=start)`` is the run's trajectory.
    InputError for a window outside one task (:func:`task_window`) or an intervention that cannot
    be linearised (:func:`check_linearisable`).
    """
    window = task_window(c, start, steps)
    check_linearisable(c, window)
    ctx = replay_context(c, seed, window.task)
    step = replay_step(c)

    def step_fn(state, t):
        return step(state, t, ctx)

    return step_fn


__all__ = ["NOT_LINEARISABLE", "TaskWindow", "check_linearisable", "engine_state", "replay_context", "replay_step",
           "run_step_fn", "step_state", "task_window"]

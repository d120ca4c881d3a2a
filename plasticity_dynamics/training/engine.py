"""The training engine: many seeds in one compiled program, recorded trajectories.

Training is the map θ_{t+1} = F(θ_t, s_t, batch_t). One *chunk* of steps between
two records is a ``lax.scan`` over that map, ``vmap``-ed over the seed axis and
jit-compiled once per run: a fixed scan length with the chunk's own length as an argument
(:func:`make_chunk_fn`), so tasks of any length and record boundaries anywhere share one
program. Convolutional models on XLA:CPU, where a convolution in a loop body runs several times
slower (``loop.py``), run each chunk instead as host-driven blocks of a few straight-line
steps (:func:`straight_line`; the block divides every chunk, so the program is still one). Compiled programs are cached per config (:func:`cached_program`): a second identical
run compiles nothing. The seed axis is sharded over every available device (a 1-D mesh named
``"seeds"``). Randomness is a pure function of
``(seed, step)`` (``fold_in``), so a run resumed from a checkpoint gives exactly
the numbers of an uninterrupted run.

Per step and seed: sample a batch from the task stream, forward in train mode
(dropout, batch statistics), masked loss, gradient, optimiser update, then the
intervention (CBP, ReDo, ...). At each task start: optional head zeroing and
optimiser reset. At each record (every ``record.every`` steps and at task ends):
mean training loss and online accuracy over the chunk, and every unit metric of
:func:`pdx.metrics.make_unit_metrics_fn` on the task's fixed metric batch.

Divergence policy: the run stops at the first chunk in which *any* seed's loss
is NaN or Inf (:class:`DivergenceError`, exit code 3); records up to the last
good chunk and every earlier checkpoint are kept. Healthy seeds are not
continued alone, because a vmapped run must keep one step counter.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..errors import DivergenceError, InputError
from .config import Config
from ..loop import block_length, run_blocks, run_steps, straight_line_preferred
from .step import masked_loss, train_step
from ..records import MetricsTable


# ---------------------------------------------------------------- components


@dataclass
class Components:
    """Everything a config builds: dataset, stream, model, optimiser, intervention."""

    config: Config
    dataset: Any
    stream: Any
    model: Any
    optimizer: optax.GradientTransformation
    intervention: Any
    metrics_fn: Callable | None
    schedule: list  # [(task, first_step, num_steps)]

    def describe(self) -> dict:
        """What was built, read off the built objects (so summary.json cannot drift from the run):
        stream, model (family and resolved options), optimiser, intervention, schedule."""
        from ..fileio import jsonable
        from ..optim import describe_optimizer

        o = self.config.optim
        iv = self.intervention
        return jsonable({
            "stream": self.stream.describe(),
            "model": {"name": self.model.name, "options": dict(self.model.options)},
            "optimizer": describe_optimizer(o.name, o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                            noise_sigma0=o.noise_sigma0, noise_decay=o.noise_decay),
            "intervention": {"name": iv.name, "options": dict(iv.options),
                             "start_step": int(self.config.intervention.start_step)},
            "reset_optimizer_each_task": bool(self.config.train.reset_optimizer_each_task),
            "schedule": [{"task": t, "first_step": f, "steps": n} for t, f, n in self.schedule],
        })


#: Stream options that the engine fills from typed config fields when they are not None
#: (the stream rejects the ones it does not read, so a value that does not apply is an error).
_TASK_FIELDS = ("classes_per_task", "num_tasks", "head_zeroing")
DEFAULT_STEPS_PER_TASK = 400


def build(config: Config) -> Components:
    """Turn a config into components; every bad value raises InputError (nothing written).

    Every option is honoured or rejected: a typed field or option that the chosen stream,
    model, optimiser or intervention does not read is an InputError naming it. The components
    are the single description of the run (:meth:`Components.describe` feeds summary.json).
    """
    from .. import data as pdata
    from .. import metrics as pmetrics
    from .. import models as pmodels
    from .. import optim as poptim
    from .. import tasks as ptasks

    config.validate()
    dataset = pdata.load(config.data.name, data_dir=config.data.data_dir)
    t = config.tasks
    stream_opts = dict(t.options)
    for key, owner in (("batch_size", "train.batch_size"), ("metric_batch_size", "tasks.metric_batch_size")):
        if key in stream_opts:
            raise InputError(f"tasks.{key}={stream_opts[key]!r}: the stream's {key} is {owner}; remove tasks.{key}")
    stream_opts["batch_size"] = config.train.batch_size
    stream_opts["metric_batch_size"] = t.metric_batch_size
    for key in _TASK_FIELDS:
        if getattr(t, key) is not None:
            stream_opts[key] = getattr(t, key)
    stream = ptasks.make_stream(t.kind, dataset, **stream_opts)

    model_opts = dict(config.model.options)
    if "num_outputs" in model_opts and model_opts["num_outputs"] != stream.num_outputs:
        raise InputError(f"model.num_outputs={model_opts['num_outputs']!r} does not match the {stream.num_outputs} "
                         f"outputs of stream {t.kind!r}; remove it (the stream sets it)")
    model_opts["num_outputs"] = stream.num_outputs
    model = pmodels.create(config.model.name, preset=config.model.preset, **model_opts)
    _check_model_fits(model, stream, config)

    o = config.optim
    optimizer = poptim.make_optimizer(o.name, o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                      noise_sigma0=o.noise_sigma0, noise_decay=o.noise_decay)
    x0 = jnp.zeros((2,) + tuple(stream.input_shape), jnp.float32)
    context = {"init_fn": lambda key: model.init(key, x0), "optimizer": optimizer}
    iv_opts = dict(config.intervention.options)
    for key in context:
        if key in iv_opts:
            raise InputError(f"intervention.{key} is supplied by the engine (the model's own init and the run's "
                             "optimiser); remove it")
    intervention = poptim.make_intervention(config.intervention.name, context=context, **iv_opts)
    metrics_fn = None
    if config.record.metrics:
        metrics_fn = pmetrics.make_unit_metrics_fn(model, loss=stream.loss, **config.record.options)

    schedule, first = [], 0
    for task in range(stream.num_tasks):
        if config.train.epochs_per_task is not None:
            n = config.train.epochs_per_task * stream.steps_per_epoch(task)
        else:
            n = config.train.steps_per_task or DEFAULT_STEPS_PER_TASK
        schedule.append((task, first, n))
        first += n
    return Components(config, dataset, stream, model, optimizer, intervention, metrics_fn, schedule)


def _check_model_fits(model, stream, config) -> None:
    x = jnp.zeros((2,) + tuple(stream.input_shape), jnp.float32)
    try:
        jax.eval_shape(lambda k: model.init(k, x), jax.random.PRNGKey(0))
    except Exception as exc:  # noqa: BLE001 - shape errors come in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"model.name={config.model.name!r} does not fit data {config.data.name!r} with input shape "
            f"{tuple(stream.input_shape)}: {first}"
        ) from None


# ------------------------------------------------------------- state & steps

#: How often each compiled body was traced (a debugging and test hook: a run must
#: trace its chunk body once per distinct chunk length, never once per record).
TRACE_COUNTS: dict[str, int] = {}


def _keys(seed, step):
    base = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    return jax.random.split(jax.random.fold_in(base, step), 3)


def init_state(c: Components, seed):
    """State of one seed: variables, optimiser state, intervention state."""
    from ..optim import reseed_noise

    k_init, k_iv, k_noise = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jnp.zeros((2,) + tuple(c.stream.input_shape), jnp.float32)
    variables = c.model.init(k_init, x)
    opt_state = reseed_noise(c.optimizer.init(variables["params"]), k_noise)  # noisy SGD: own noise per seed
    iv_state = c.intervention.init(variables["params"], k_iv)
    return {"variables": variables, "opt_state": opt_state, "iv_state": iv_state}


def lane_values(config: Config) -> dict[str, float]:
    """The values a lane carries as traced scalars, keyed by dotted config key, defaults resolved:

    - ``optim.*`` (:func:`pdx.optim.lane_hypers`): lr and weight decay, momentum unless Adam,
      noise sigma0 and decay for noisy SGD;
    - ``model.dropout`` / ``model.attention_dropout`` when that rate is > 0 (a rate of 0 skips
      the dropout draw, a different program);
    - ``intervention.<option>`` for the intervention's :func:`pdx.optim.lane_options` (CBP
      replacement rate and decay, shrink-and-perturb shrink and sigma, ReDo tau).

    Every other key changes shapes or control flow and stays in :func:`program_key`.
    Cost: resolving the model's and the intervention's options (no arrays)."""
    from ..models.contract import RATE_OPTIONS
    from ..optim import lane_hypers

    o = config.optim
    out = {f"optim.{k}": v for k, v in lane_hypers(o.name, o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                                   noise_sigma0=o.noise_sigma0, noise_decay=o.noise_decay).items()}
    model_opts = _model_options(config)
    out.update({f"model.{k}": float(model_opts[k]) for k in RATE_OPTIONS if model_opts.get(k, 0.0) > 0})
    out.update({f"intervention.{k}": v for k, v in _intervention_lanes(config).items()})
    return out


def _model_options(config: Config) -> dict:
    """The model's resolved options (family defaults <- preset <- config), or the config's own
    when the family is not in the registry (then none of them is a lane)."""
    from ..models import FAMILIES
    from ..models.registry import resolve_options

    if config.model.name not in FAMILIES:
        return {}
    try:
        return resolve_options(config.model.name, config.model.preset, **dict(config.model.options))
    except InputError:
        return {}  # build() reports it


def _intervention_lanes(config: Config) -> dict[str, float]:
    from ..optim import lane_options, make_intervention

    try:
        return lane_options(make_intervention(config.intervention.name, **dict(config.intervention.options)))
    except InputError:
        return {}  # build() reports it


def _lane_parts(hypers: dict) -> tuple[dict, dict, dict]:
    """Split lane values keyed as :func:`lane_values` into (optimiser, model rates, intervention)."""
    parts: tuple[dict, dict, dict] = ({}, {}, {})
    for key, value in hypers.items():
        section, name = key.split(".", 1)
        parts[("optim", "model", "intervention").index(section)][name] = value
    return parts


def _iv_context(c: Components) -> dict:
    x0 = jnp.zeros((2,) + tuple(c.stream.input_shape), jnp.float32)
    return {"init_fn": lambda key: c.model.init(key, x0), "optimizer": c.optimizer}


def lane_components(c: Components, hypers: dict | None):
    """(optimiser, model rates or None, intervention) of a lane whose values (keyed as
    :func:`lane_values`, possibly traced) are ``hypers``; None: the run's own components. The one
    place lane values become training components (chunk program and replay)."""
    from ..optim import lane_intervention, lane_optimizer

    if hypers is None:
        return c.optimizer, None, c.intervention
    o = c.config.optim
    use_momentum, use_weight_decay = o.name != "adam" and o.momentum > 0, o.weight_decay > 0
    o_vals, rates, iv_vals = _lane_parts(hypers)
    opt = lane_optimizer(o.name, o_vals, use_momentum=use_momentum, use_weight_decay=use_weight_decay)
    return opt, (rates or None), lane_intervention(c.intervention, iv_vals, _iv_context(c))


def make_engine_step(c: Components):
    """The engine's training step of one seed, the one definition the chunk program and
    :func:`pdx.training.run_step_fn` (replay) share:
    ``step(state, t, seed, data, task_first, task, opt) -> (state, (loss, accuracy))``.

    ``state``: ``{"variables", "opt_state", "iv_state"}``; ``t``: global step index (keys
    dropout and the intervention); ``data``: ``stream.task_data(task)``; ``task_first``: the
    task's first global step (the stream sees task-local steps); ``opt``, ``rates``, ``iv``: the
    lane's optimiser, model rates (None: the model's own) and intervention (None: the run's), as
    :func:`lane_components` gives them. Samples the batch, takes one :func:`train_step`, then
    the intervention (from ``intervention.start_step`` on). Task-start actions are not part of
    it (:func:`make_task_start_fn`). Cost: one forward and backward pass plus the intervention.
    """
    model, stream = c.model, c.stream
    iv_start = int(c.config.intervention.start_step)

    def step(state, step_idx, seed, data, task_first, task, opt, rates=None, iv=None):
        iv = c.intervention if iv is None else iv
        _, k_drop, k_iv = _keys(seed, step_idx)
        # stream contract: one key for the whole task, steps counted from the task's start
        k_data = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 3), task)
        x, y, mask = stream.sample(data, k_data, step_idx - task_first)
        variables, opt_state, loss, acc, out = train_step(model, opt, stream.loss, state["variables"],
                                                          state["opt_state"], x, y, mask, k_drop, rates=rates)
        before = (variables, opt_state, state["iv_state"])
        # interventions act on all variables: re-drawn units also get fresh norm statistics
        after = iv.apply(variables, opt_state, state["iv_state"], out.activations, step_idx, k_iv)
        if iv_start > 0:  # the intervention switches on at a given step (bit-flipping SGD -> CBP)
            on = step_idx >= iv_start
            after = jax.tree_util.tree_map(lambda a, b: jnp.where(on, a, b), after, before)
        variables, opt_state, iv_state = after
        new = {"variables": variables, "opt_state": opt_state, "iv_state": iv_state}
        return new, (loss.astype(jnp.float32), acc.astype(jnp.float32))

    return step


def make_chunk_fn(c: Components, length: int, unroll: bool = False):
    """One lane, a scan of ``length`` steps of which the first ``valid`` run:
    (state, seed, data, start, task_first, task, valid[, hypers]) -> (state, losses (length,), accs (length,)).

    ``hypers``: the lane's values (dict of scalars keyed as :func:`lane_values`, traced under
    ``vmap``), so lanes of one program may differ in learning rate, momentum, weight decay,
    noise, dropout rates and intervention rates; None uses ``c.optimizer``, ``c.model`` and
    ``c.intervention`` (the config's values as constants).
    :func:`train` always passes them, so a run of one config and a lane of a sweep run the
    same program.

    ``start`` is the global index of the chunk's first step (it keys the randomness);
    ``task_first`` the global index of the task's first step (streams see task-local steps);
    ``valid`` (<= length) the number of steps this chunk takes: the rest are skipped by a
    ``lax.cond`` whose predicate is not batched over seeds (so nothing is computed for them),
    and their losses are 0. One compiled program thus serves every chunk of a run, whatever
    the task lengths and record boundaries.

    ``unroll``: the ``length`` steps as straight-line code (``loop.run_steps(unroll=True)``),
    all of them run (``valid`` is not read): a block of :func:`straight_line` training.
    """
    step = make_engine_step(c)

    def chunk(state, seed, data, start, task_first, task, valid, hypers=None):
        TRACE_COUNTS["chunk"] = TRACE_COUNTS.get("chunk", 0) + 1  # runs at trace time only
        opt, rates, lane_iv = lane_components(c, hypers)
        state, (losses, accs) = run_steps(lambda s, t: step(s, t, seed, data, task_first, task, opt, rates, lane_iv),
                                          state, length, start=start, valid=None if unroll else valid,
                                          unroll=unroll)
        return state, losses, accs

    return chunk


def make_task_start_fn(c: Components):
    """(state, seed, task[, hypers]) -> state: head zeroing (output weights and biases, PAPER.md
    5.3) when the stream says so (``stream.head_zeroing``, the one source of that setting),
    optional optimiser reset, then the intervention's own task-start action (head/full reset,
    shrink-and-perturb at task starts). ``hypers``: the lane's values as for :func:`make_chunk_fn`
    (the intervention's rates are read from it)."""
    from ..optim import lane_intervention, reset_state

    zero_head = bool(getattr(c.stream, "head_zeroing", False))
    reset = bool(c.config.train.reset_optimizer_each_task)

    def task_start(state, seed, task, hypers=None):
        iv = c.intervention if hypers is None else lane_intervention(c.intervention, _lane_parts(hypers)[2],
                                                                     _iv_context(c))
        variables = state["variables"]
        params = variables["params"]
        if zero_head:
            if "out" not in params:
                raise InputError(f"head zeroing needs an 'out' layer; params have {', '.join(params)}")
            params = {**params, "out": jax.tree_util.tree_map(jnp.zeros_like, params["out"])}
        opt_state = reset_state(c.optimizer, params, state["opt_state"]) if reset else state["opt_state"]
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 2), task)
        variables, opt_state, iv_state = iv.on_task_start({**variables, "params": params}, opt_state,
                                                          state["iv_state"], key)
        return {**state, "variables": variables, "opt_state": opt_state, "iv_state": iv_state}

    return task_start


# -------------------------------------------------------------------- the run


@dataclass
class Run:
    """A finished (or interrupted) run: its metrics table, checkpoints and summary.

    ``table`` is the columnar :class:`MetricsTable` of every record; ``rows`` the same rows
    as tuples (a view for older code)."""

    config: Config
    run_dir: Path | None
    table: MetricsTable = field(default_factory=MetricsTable)
    checkpoints: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    components: Components | None = None
    final_state: Any = None  # host copy of the last state (leading axis = seed)
    error: str | None = None  # a lane of train_lanes that diverged: the message (records up to then kept)

    @property
    def rows(self) -> list[tuple]:
        return self.table.rows()

    def metric(self, name: str, layer: str = "") -> dict:
        """{seed: (steps array, values array)} for one metric and layer."""
        return self.table.series(name, layer)

    def load_checkpoint(self, step: int):
        """State of all seeds at ``step`` (leading axis = seed)."""
        from .rundir import load_checkpoint

        if self.run_dir is None or self.components is None:
            raise InputError("this run kept no checkpoints (no run directory)")
        template = jax.vmap(partial(init_state, self.components))(jnp.asarray(self.config.seeds))
        state, _ = load_checkpoint(self.run_dir, step, template)
        return state


#: Compiled programs of recent configs: (config key, program, length) -> jitted function, so a
#: second identical train() (or a clone_run variant with the same settings) traces and compiles
#: nothing. Bounded: the oldest entries go first.
_PROGRAMS: dict[tuple, Callable] = {}
_PROGRAMS_MAX = 16


def program_key(config: Config) -> str:
    """What a run's compiled programs depend on: the config without its seeds, record schedule
    and lane values (seed values, record steps and :func:`lane_values` are arguments, the seed
    count a shape). Only whether momentum and weight decay are non-zero stays (it decides which
    optimiser transforms are chained). Configs with equal keys can run as lanes of one program."""
    import dataclasses

    rec = dataclasses.replace(config.record, every=1, checkpoint_every=None)
    o = config.optim
    optim = dataclasses.replace(o, lr=1.0, momentum=0.5 if o.momentum > 0 else 0.0,
                                weight_decay=1.0 if o.weight_decay > 0 else 0.0, noise_sigma0=None, noise_decay=None)
    lanes = lane_values(config)
    # a lane rate stands in as "lane"; a dropout rate of 0 (no draw, another program) stays 0
    model_opts = {**config.model.options, **{k: ("lane" if f"model.{k}" in lanes else 0.0)
                                             for k, v in _model_options(config).items()
                                             if k in ("dropout", "attention_dropout")}}
    iv_opts = {**config.intervention.options,
               **{k.split(".", 1)[1]: "lane" for k in lanes if k.startswith("intervention.")}}
    model = dataclasses.replace(config.model, options=model_opts)
    iv = dataclasses.replace(config.intervention, options=iv_opts)
    return dataclasses.replace(config, seeds=(0,), record=rec, optim=optim, model=model, intervention=iv).to_toml()


def cached_program(key: tuple, make: Callable) -> Callable:
    """The program cached under ``key``, made by ``make()`` on first use."""
    if key in _PROGRAMS:
        _PROGRAMS[key] = _PROGRAMS.pop(key)  # most recent last
        return _PROGRAMS[key]
    fn = make()
    _PROGRAMS[key] = fn
    while len(_PROGRAMS) > _PROGRAMS_MAX:
        _PROGRAMS.pop(next(iter(_PROGRAMS)))
    return fn


def chunk_length(c: Components) -> int:
    """Steps scanned by the run's one chunk program: record.every, or the longest task if shorter."""
    return min(int(c.config.record.every), max(n for _, _, n in c.schedule))


def chunk_ends(first: int, n: int, every: int) -> list[int]:
    """The global steps at which the chunks of a task (steps ``first .. first + n - 1``) end: every
    multiple of ``every`` inside it, and the task's end."""
    return sorted({first + n} | set(range(first - first % every + every, first + n, every)))


def straight_line(c: Components, variables) -> int:
    """The block length of straight-line training (0: the run's chunks are scanned loops).

    Non-zero when the model holds a convolution and the backend is XLA:CPU
    (:func:`pdx.loop.straight_line_preferred`): the largest divisor, at most 4, of every chunk
    length of the schedule, so a chunk is a whole number of blocks of one compiled program.
    ``variables``: one lane's model variables (arrays or shapes). Cost: one trace of the model.
    """
    mx = np.asarray(c.stream.metric_batch(0)[0])
    x = jax.ShapeDtypeStruct((1, *mx.shape[1:]), mx.dtype)
    if not straight_line_preferred(lambda v, x_: c.model.apply(v, x_).logits, variables, x):
        return 0
    every = int(c.config.record.every)
    lengths = {b - a for _, first, n in c.schedule for a, b in zip([first] + chunk_ends(first, n, every)[:-1],
                                                                   chunk_ends(first, n, every))}
    return block_length(math.gcd(*lengths))


def seed_sharding(num_seeds: int, devices: int | None = None):
    """(NamedSharding over a 1-D mesh "seeds", device count): the largest number of the first
    ``devices`` devices (default all) that divides ``num_seeds``."""
    avail = jax.devices()[: devices or jax.device_count()]
    n = max(d for d in range(1, len(avail) + 1) if num_seeds % d == 0)
    mesh = jax.sharding.Mesh(np.array(avail[:n]), ("seeds",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds")), n


def resume_config(run_dir: str | Path, config: Config | None = None) -> Config:
    """The config stored in ``run_dir``; InputError when ``config`` is given and differs from it
    (naming the first differing key, both values and how to start a new run)."""
    from . import rundir as rd

    run_dir = rd.prepare_run_dir(run_dir, force=False, resume=True)
    stored = Config.from_toml(run_dir / "config.toml")
    if config is not None and config != stored:
        key, given, was = config.differences(stored)[0]
        raise InputError(f"--resume: {key}={given!r} differs from {was!r} in {str(run_dir / 'config.toml')!r}; "
                         f"a resumed run keeps its config: start a new run with another --out (or --force)")
    return stored


def train(config: Config | None = None, *, out: str | Path | None = None, resume: bool = False,
          force: bool = False, progress: bool = True, devices: int | None = None) -> Run:
    """Train every seed of ``config``; return the :class:`Run`.

    ``out``: run directory (None keeps everything in memory, no checkpoints).
    ``resume``: continue ``out`` from its last verified checkpoint with the config stored in
    ``out/config.toml``; ``config`` may be None or equal to it (a differing one is an
    InputError naming the key). Resume never restarts silently: when checkpoints exist but
    none fits the rebuilt state, or every one fails its checksum, it raises InputError and
    leaves every file untouched; metric rows past the resumed step are dropped only after a
    checkpoint has loaded. ``devices``: limit the seed sharding to the first N devices.
    Raises InputError for bad input before anything is written and DivergenceError when a
    loss becomes NaN/Inf (records and checkpoints up to then are kept).
    """
    from . import rundir as rd

    if out is not None and resume:
        config = resume_config(rd.prepare_run_dir(out, force=False, resume=True), config)
    elif resume:
        raise InputError("resume=True needs out=RUN_DIR")
    if config is None:
        raise InputError("train() needs a config (or resume=True with out=RUN_DIR)")
    return train_lanes([config], outs=None if out is None else [out], resume=resume, force=force, progress=progress,
                       devices=devices, stop_on_divergence=True)[0]


def train_lanes(configs: list[Config], *, outs: list | None = None, resume: bool = False, force: bool = False,
                progress: bool = True, devices: int | None = None, stop_on_divergence: bool = False) -> list[Run]:
    """Train several configs as vmapped *lanes* of one compiled program; one :class:`Run` each.

    The configs must share :func:`program_key` (they may differ in seeds and in the
    :func:`lane_values`: learning rate, momentum, weight decay, noise sigma0/decay) and their
    record schedules. Every (config, seed) pair is a lane: its seed and optimiser values are
    arguments of the chunk program, so the lanes of ``[a, b]`` compute what ``train(a)`` and
    ``train(b)`` compute, in one program (one compile, one dispatch per chunk for all lanes).
    ``outs[i]``: run directory of ``configs[i]``, a normal one (``config.toml`` rebuilds that
    config alone, so ``resume``, ``analyze`` and ``report`` work on it).
    ``resume``: every directory continues from its last checkpoint; they must agree on the step.
    Divergence: with ``stop_on_divergence`` the first NaN/Inf loss raises DivergenceError (what
    :func:`train` does); otherwise the configs whose lanes diverge stop recording (their
    ``Run.error`` says where; records and checkpoints up to then are kept) while the others go on.
    Memory: the lanes' states, batches and activations side by side (n_lanes x one run's).
    """
    from . import rundir as rd

    if not configs:
        raise InputError("train_lanes needs at least one config")
    if outs is not None and len(outs) != len(configs):
        raise InputError(f"train_lanes: {len(outs)} run directories for {len(configs)} configs")
    keys = {program_key(cfg) for cfg in configs}
    if len(keys) > 1:
        key, a, b = configs[0].differences(next(cfg for cfg in configs if program_key(cfg) != program_key(configs[0])))[0]
        raise InputError(f"train_lanes: configs differ in {key} ({a!r} vs {b!r}), which changes the program; "
                         "lanes may differ only in seeds and the lane values (optim.lr/momentum/weight_decay/"
                         "noise_sigma0/noise_decay, non-zero dropout rates, intervention rates: see lane_values)")
    if len({(cfg.record.every, cfg.record.checkpoint_every) for cfg in configs}) > 1:
        raise InputError("train_lanes: configs differ in record.every/record.checkpoint_every; lanes share one "
                         "record schedule")
    if resume and outs is None:
        raise InputError("resume=True needs run directories")
    run_dirs = None
    if outs is not None:
        run_dirs = [rd.prepare_run_dir(o, force=force, resume=resume) for o in outs]
        if len({str(Path(d).resolve()) for d in run_dirs}) != len(run_dirs):
            raise InputError("train_lanes: two configs share a run directory")
        if resume:
            configs = [resume_config(d, cfg) for d, cfg in zip(run_dirs, configs)]
    c = build(configs[0])
    parts = [c] + [_components_for(c, cfg) for cfg in configs[1:]]
    lane_cfg = [i for i, cfg in enumerate(configs) for _ in cfg.seeds]  # lane -> config index
    lane_seed = [s for cfg in configs for s in cfg.seeds]
    spans, pos = [], 0
    for cfg in configs:
        spans.append(slice(pos, pos + len(cfg.seeds)))
        pos += len(cfg.seeds)
    n_lanes = len(lane_seed)
    seeds = jnp.asarray(lane_seed, dtype=jnp.int32)
    values = [lane_values(cfg) for cfg in configs]
    hypers = {k: jnp.asarray([values[i][k] for i in lane_cfg], jnp.float32) for k in values[0]}
    sharding, n_dev = seed_sharding(n_lanes, devices)

    state = jax.vmap(partial(init_state, c))(seeds)
    tables = [MetricsTable() for _ in configs]
    start_step = 0
    checkpoints: list[list[int]] = [[] for _ in configs]
    writers = None
    if run_dirs is not None:
        if resume:
            got = [_resume(d, jax.tree_util.tree_map(lambda a, sp=sp: a[sp], state)) for d, sp in zip(run_dirs, spans)]
            steps = {g[1] for g in got}
            if len(steps) > 1:
                raise InputError(f"--resume: the lanes' run directories stopped at different checkpoints "
                                 f"({sorted(steps)}); resume them one by one")
            state = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *[g[0] for g in got])
            start_step = steps.pop()
            checkpoints = [g[2] for g in got]
            tables = [rd.read_table(d / "metrics.csv") if (d / "metrics.csv").is_file() else t
                      for d, t in zip(run_dirs, tables)]
        else:
            for d, cfg in zip(run_dirs, configs):
                if force and d.exists():
                    rd.clear_run_dir(d)
                d.mkdir(parents=True, exist_ok=True)
                rd.atomic_write_text(d / "config.toml", cfg.to_toml())
                (d / "checkpoints").mkdir(exist_ok=True)
                (d / "figures").mkdir(exist_ok=True)
        writers = [rd.MetricsWriter(d / "metrics.csv") for d in run_dirs]
    state = jax.device_put(state, sharding)
    seeds = jax.device_put(seeds, sharding)
    hypers = jax.device_put(hypers, sharding)

    # every program's outputs keep the seed sharding, so the state passed back in never
    # changes layout (which would compile a program again for the same trace)
    key = (program_key(configs[0]), n_lanes, tuple(str(d) for d in sharding.mesh.devices.flat))
    block = straight_line(c, jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype),
                                                    state["variables"]))
    length = block or chunk_length(c)
    chunk = cached_program(key + ("chunk", length, bool(block)), lambda: jax.jit(
        jax.vmap(make_chunk_fn(c, length, unroll=bool(block)), in_axes=(0, 0, None, None, None, None, None, 0)),
        donate_argnums=(0,), out_shardings=sharding))
    task_start = cached_program(key + ("task_start",), lambda: jax.jit(
        jax.vmap(make_task_start_fn(c), in_axes=(0, 0, None, 0)), out_shardings=sharding))
    metrics_fn = None
    if c.metrics_fn is not None:
        def counted_metrics(variables, x, y, mask):
            TRACE_COUNTS["metrics"] = TRACE_COUNTS.get("metrics", 0) + 1  # trace time only
            return c.metrics_fn(variables, x, y, mask)

        metrics_fn = cached_program(key + ("metrics",), lambda: jax.jit(
            jax.vmap(counted_metrics, in_axes=(0, None, None, None)), out_shardings=sharding))

    every = configs[0].record.every
    ckpt_every = configs[0].record.checkpoint_every
    total = sum(n for _, _, n in c.schedule)
    bar = progress_bar(total, progress, initial=start_step)
    t0 = time.perf_counter()
    last_good = [ck[-1] if ck else None for ck in checkpoints]
    errors: list[str | None] = [None] * len(configs)
    try:
        for task, first, n in c.schedule:
            if first + n <= start_step:
                continue
            if all(e is not None for e in errors):
                break
            data = jax.tree_util.tree_map(jnp.asarray, c.stream.task_data(task))
            mx, my, mmask = (jnp.asarray(a) for a in c.stream.metric_batch(task))
            pos = first
            for end in chunk_ends(first, n, every):
                if end <= start_step:
                    pos = end
                    continue
                if all(e is not None for e in errors):
                    break
                if pos == first:
                    state = task_start(state, seeds, jnp.int32(task), hypers)
                if block:  # straight-line blocks driven from here; (lanes, steps) losses
                    def run_block(st, t0):
                        st, l_, a_ = chunk(st, seeds, data, t0, jnp.int32(first), jnp.int32(task),
                                           jnp.int32(block), hypers)
                        return st, (l_.T, a_.T)

                    state, (losses, accs) = run_blocks(run_block, state, end - pos, block, start=pos)
                    losses, accs = losses.T, accs.T
                else:
                    state, losses, accs = chunk(state, seeds, data, jnp.int32(pos), jnp.int32(first),
                                                jnp.int32(task), jnp.int32(end - pos), hypers)
                losses = np.asarray(losses)[:, : end - pos]
                bad = ~np.isfinite(losses)
                for i, sp in enumerate(spans):
                    if errors[i] is None and bad[sp].any():
                        s_idx, i_idx = np.argwhere(bad[sp])[0]
                        where = (f"last good checkpoint: step {last_good[i]}" if last_good[i] is not None
                                 else "no checkpoint yet")
                        seed = configs[i].seeds[s_idx]
                        msg = (f"training diverged: loss is {losses[sp][s_idx, i_idx]} at step {pos + i_idx} "
                               f"for seed {seed} ({where})")
                        if stop_on_divergence:
                            raise DivergenceError(msg, step=int(pos + i_idx), seed=int(seed))
                        errors[i] = msg
                accs = np.asarray(accs)[:, : end - pos]
                live = [i for i in range(len(configs)) if errors[i] is None]
                rows = {i: [] for i in live}
                for lane, (i, seed) in enumerate(zip(lane_cfg, lane_seed)):
                    if i in rows:
                        rows[i].append((end, seed, task, "", "loss", float(losses[lane].mean())))
                        if c.stream.loss == "xent":
                            rows[i].append((end, seed, task, "", "accuracy", float(accs[lane].mean())))
                if metrics_fn is not None and live:
                    # on this task's own metric batch, before the next task's start (head zeroing)
                    values_ = jax.device_get(metrics_fn(state["variables"], mx, my, mmask))
                    for metric, per_layer in values_.items():
                        for layer, arr in per_layer.items():
                            arr = np.asarray(arr)
                            for lane, (i, seed) in enumerate(zip(lane_cfg, lane_seed)):
                                if i in rows:
                                    rows[i].append((end, seed, task, layer, metric, float(arr[lane])))
                is_ckpt = end == first + n or (ckpt_every is not None and end % ckpt_every == 0)
                host = jax.device_get(state) if (writers is not None and is_ckpt) else None
                for i in live:
                    tables[i].extend(rows[i])
                    if writers is not None:
                        writers[i].append(rows[i])  # durable before the checkpoint of the same step
                        if is_ckpt:
                            sub = jax.tree_util.tree_map(lambda a, sp=spans[i]: a[sp], host)
                            rd.save_checkpoint(run_dirs[i], end, sub, {"task": task, "seeds": list(configs[i].seeds)})
                            checkpoints[i].append(end)
                            last_good[i] = end
                bar.update(end - pos)
                pos = end
    finally:
        bar.close()
        if writers is not None:
            for w in writers:
                w.close()
    wall = time.perf_counter() - t0
    final = jax.device_get(state)
    runs = []
    for i, cfg in enumerate(configs):
        summary = _summary(cfg, parts[i], tables[i], wall, n_dev, total)
        if errors[i] is not None:
            summary["error"] = errors[i]
        if run_dirs is not None:
            rd.atomic_write_json(run_dirs[i] / "summary.json", summary)
        runs.append(Run(cfg, None if run_dirs is None else run_dirs[i], tables[i], checkpoints[i], summary, parts[i],
                        jax.tree_util.tree_map(lambda a, sp=spans[i]: a[sp], final), errors[i]))
    return runs


def _components_for(c: Components, config: Config) -> Components:
    """``c`` for another config of the same program: its own config, optimiser, model and
    intervention objects (their values differ, their structure is the same: they describe the
    run); dataset, stream, metrics and schedule are shared."""
    import dataclasses

    from .. import models as pmodels
    from ..optim import make_intervention, make_optimizer

    config.validate()
    o = config.optim
    opt = make_optimizer(o.name, o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                         noise_sigma0=o.noise_sigma0, noise_decay=o.noise_decay)
    model = pmodels.create(config.model.name, preset=config.model.preset,
                           **{**config.model.options, "num_outputs": c.stream.num_outputs})
    x0 = jnp.zeros((2,) + tuple(c.stream.input_shape), jnp.float32)
    iv = make_intervention(config.intervention.name, context={"init_fn": lambda key: model.init(key, x0),
                                                              "optimizer": opt}, **dict(config.intervention.options))
    return dataclasses.replace(c, config=config, optimizer=opt, model=model, intervention=iv)


def _resume(run_dir: Path, template):
    """(state, step, checkpoint steps kept) from the latest checkpoint that verifies and fits
    ``template``; then (and only then) metrics.csv is cut to the rows up to that step.

    Corrupt checkpoints are reported on stderr and skipped. With checkpoints present but
    none loadable, raises InputError (the first mismatch, naming the leaf; or "all corrupt")
    and touches nothing. With no checkpoint at all the run restarts from step 0.
    """
    import sys

    from . import rundir as rd

    steps = rd.list_checkpoints(run_dir)
    mismatch, corrupt = None, []
    for step in reversed(steps):
        try:
            state, _ = rd.load_checkpoint(run_dir, step, template)
        except rd.CheckpointMismatchError as exc:
            mismatch = mismatch or exc
            continue
        except rd.CorruptCheckpointError as exc:
            corrupt.append(exc)
            continue
        for exc in corrupt:
            print(f"warning: {exc}", file=sys.stderr)
        _cut_metrics(run_dir, step)
        return state, step, [s for s in steps if s <= step]
    if mismatch is not None:
        raise mismatch
    if corrupt:
        raise rd.CorruptCheckpointError(f"--resume: all {len(corrupt)} checkpoints of {str(run_dir)!r} fail their "
                                        "checksum; nothing was changed")
    print(f"note: {str(run_dir)!r} has no checkpoint yet; the run starts again from step 0", file=sys.stderr)
    _cut_metrics(run_dir, 0)
    return template, 0, []


def _cut_metrics(run_dir: Path, step: int) -> None:
    from . import rundir as rd

    path = run_dir / "metrics.csv"
    if path.is_file():
        cut = rd.metrics_cut(path, step)
        if cut is not None:
            rd.cut_metrics(path, cut)


def _summary(config: Config, c: Components, table: MetricsTable, wall, n_dev, total) -> dict:
    cols = table.columns
    last_step = int(cols["step"].max()) if len(cols["step"]) else 0
    final: dict[str, dict] = {}
    sel = (cols["step"] == last_step) & (cols["layer"] == "")
    for seed, metric, value in zip(cols["seed"][sel].tolist(), cols["metric"][sel].tolist(), cols["value"][sel].tolist()):
        final.setdefault(metric, {})[str(seed)] = value
    acc = table.select("accuracy", "")  # online accuracy, not the metric batch's
    tasks, values = cols["task"][acc], cols["value"][acc]
    by_task = {str(t): float(values[tasks == t].mean()) for t in np.unique(tasks)}
    return {
        "steps": total,
        "last_recorded_step": last_step,
        "seeds": list(config.seeds),
        "devices": n_dev,
        "backend": jax.default_backend(),
        "jax_version": jax.__version__,
        "wall_time_s": round(wall, 3),
        "final": final,
        "mean_online_accuracy_by_task": by_task,
        **c.describe(),
    }


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def progress_bar(total: int, enabled: bool, desc: str = "train", initial: int = 0, unit: str = "step"):
    """A tqdm bar on stderr, or a silent stand-in when ``enabled`` is False."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True)


def replace_config(config: Config, **sections) -> Config:
    """Small convenience for tests: ``replace_config(cfg, train=dict(steps_per_task=10))``."""
    overrides = {f"{sec}.{k}": v for sec, kv in sections.items() for k, v in kv.items()}
    return config.with_overrides(overrides)


__all__ = ["Components", "Run", "build", "chunk_ends", "init_state", "lane_values", "make_chunk_fn",
           "make_engine_step", "masked_loss", "program_key", "straight_line", "resume_config", "train", "train_lanes",
           "replace_config"]

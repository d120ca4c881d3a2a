"""The training engine: many seeds in one compiled program, recorded trajectories.

Training is the map θ_{t+1} = F(θ_t, s_t, batch_t). One *chunk* of steps between
two records is a ``lax.scan`` over that map, ``vmap``-ed over the seed axis and
jit-compiled once per chunk length; the seed axis is sharded over every available
device (a 1-D mesh named ``"seeds"``). Randomness is a pure function of
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
from .step import masked_loss, train_step


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


def build(config: Config) -> Components:
    """Turn a config into components; every bad value raises InputError (nothing written)."""
    from .. import data as pdata
    from .. import metrics as pmetrics
    from .. import models as pmodels
    from .. import optim as poptim
    from .. import tasks as ptasks

    config.validate()
    dataset = pdata.load(config.data.name, data_dir=config.data.data_dir)
    stream_opts = dict(config.tasks.options)
    stream_opts.setdefault("batch_size", config.train.batch_size)
    stream_opts.setdefault("metric_batch_size", config.tasks.metric_batch_size)
    if config.tasks.kind in ("class_split", "random_subsets"):
        stream_opts.setdefault("classes_per_task", config.tasks.classes_per_task)
    if config.tasks.num_tasks is not None and config.tasks.kind != "bitflip":
        stream_opts.setdefault("num_tasks", config.tasks.num_tasks)
    stream = ptasks.make_stream(config.tasks.kind, dataset, **stream_opts)

    model_opts = dict(config.model.options)
    model_opts.setdefault("num_outputs", stream.num_outputs)
    model = pmodels.create(config.model.name, preset=config.model.preset, **model_opts)
    _check_model_fits(model, stream, config)

    o = config.optim
    optimizer = poptim.make_optimizer(
        o.name, o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
        noise_sigma0=o.noise_sigma0 if o.name == "noisy_sgd" else None,
        noise_decay=o.noise_decay if o.name == "noisy_sgd" else None,
    )
    intervention = poptim.make_intervention(config.intervention.name, **config.intervention.options)
    metrics_fn = None
    if config.record.metrics:
        metrics_fn = pmetrics.make_unit_metrics_fn(model, loss=stream.loss, **config.record.options)

    schedule, first = [], 0
    for t in range(stream.num_tasks):
        if config.train.epochs_per_task is not None:
            n = config.train.epochs_per_task * stream.steps_per_epoch(t)
        else:
            n = config.train.steps_per_task
        schedule.append((t, first, n))
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


def make_chunk_fn(c: Components, length: int):
    """One seed, ``length`` steps: (state, seed, data, start, task_first, task) -> (state, losses (length,), accs).

    ``start`` is the global index of the chunk's first step (it keys the randomness);
    ``task_first`` the global index of the task's first step (streams see task-local steps).
    """
    model, stream, opt, iv = c.model, c.stream, c.optimizer, c.intervention
    iv_start = int(c.config.intervention.start_step)

    def step(state, i, seed, data, start, task_first, task):
        step_idx = start + i
        _, k_drop, k_iv = _keys(seed, step_idx)
        # stream contract: one key for the whole task, steps counted from the task's start
        k_data = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 3), task)
        x, y, mask = stream.sample(data, k_data, step_idx - task_first)
        variables, opt_state, loss, acc, out = train_step(model, opt, stream.loss, state["variables"],
                                                          state["opt_state"], x, y, mask, k_drop)
        params = variables["params"]
        before = (params, opt_state, state["iv_state"])
        after = iv.apply(params, opt_state, state["iv_state"], out.activations, step_idx, k_iv)
        if iv_start > 0:  # the intervention switches on at a given step (bit-flipping SGD -> CBP)
            on = step_idx >= iv_start
            after = jax.tree_util.tree_map(lambda a, b: jnp.where(on, a, b), after, before)
        params, opt_state, iv_state = after
        new_vars = {**variables, "params": params}
        return {"variables": new_vars, "opt_state": opt_state, "iv_state": iv_state}, (loss, acc)

    def chunk(state, seed, data, start, task_first, task):
        TRACE_COUNTS["chunk"] = TRACE_COUNTS.get("chunk", 0) + 1  # runs at trace time only
        body = lambda s, i: step(s, i, seed, data, start, task_first, task)  # noqa: E731
        state, (losses, accs) = jax.lax.scan(body, state, jnp.arange(length))
        return state, losses, accs

    return chunk


def make_task_start_fn(c: Components):
    """(state, seed, task) -> state: head zeroing (output weights and biases, PAPER.md 5.3),
    optional optimiser reset, then the intervention's own task-start action (head/full reset)."""
    from ..optim import reset_state

    zero_head = bool(c.config.tasks.head_zeroing) and c.stream.loss == "xent"
    reset = bool(c.config.train.reset_optimizer_each_task)

    def task_start(state, seed, task):
        variables = state["variables"]
        params = variables["params"]
        if zero_head and "out" in params:
            params = {**params, "out": jax.tree_util.tree_map(jnp.zeros_like, params["out"])}
        opt_state = reset_state(c.optimizer, params, state["opt_state"]) if reset else state["opt_state"]
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 2), task)
        params, opt_state, iv_state = c.intervention.on_task_start(params, opt_state, state["iv_state"], key)
        return {**state, "variables": {**variables, "params": params}, "opt_state": opt_state, "iv_state": iv_state}

    return task_start


# -------------------------------------------------------------------- the run


@dataclass
class Run:
    """A finished (or interrupted) run: its metrics table, checkpoints and summary."""

    config: Config
    run_dir: Path | None
    rows: list = field(default_factory=list)
    checkpoints: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    components: Components | None = None
    final_state: Any = None  # host copy of the last state (leading axis = seed)

    def metric(self, name: str, layer: str = "") -> dict:
        """{seed: (steps array, values array)} for one metric and layer."""
        out: dict[int, list] = {}
        for step, seed, _task, lay, met, val in self.rows:
            if met == name and lay == layer:
                out.setdefault(seed, []).append((step, val))
        return {s: (np.array([a for a, _ in v]), np.array([b for _, b in v])) for s, v in out.items()}

    def load_checkpoint(self, step: int):
        """State of all seeds at ``step`` (leading axis = seed)."""
        from .rundir import load_checkpoint

        if self.run_dir is None or self.components is None:
            raise InputError("this run kept no checkpoints (no run directory)")
        template = jax.vmap(partial(init_state, self.components))(jnp.asarray(self.config.seeds))
        state, _ = load_checkpoint(self.run_dir, step, template)
        return state


def seed_sharding(num_seeds: int, devices: int | None = None):
    """(NamedSharding over a 1-D mesh "seeds", device count): the largest number of the first
    ``devices`` devices (default all) that divides ``num_seeds``."""
    avail = jax.devices()[: devices or jax.device_count()]
    n = max(d for d in range(1, len(avail) + 1) if num_seeds % d == 0)
    mesh = jax.sharding.Mesh(np.array(avail[:n]), ("seeds",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds")), n


def train(config: Config, *, out: str | Path | None = None, resume: bool = False, force: bool = False,
          progress: bool = True, devices: int | None = None) -> Run:
    """Train every seed of ``config``; return the :class:`Run`.

    ``out``: run directory (None keeps everything in memory, no checkpoints).
    ``resume``: continue ``out`` from its last verified checkpoint (the config is
    read from ``out/config.toml``; the given one is ignored). ``devices``: limit
    the seed sharding to the first N devices (None: all).
    Raises InputError for bad input before anything is written and
    DivergenceError when a loss becomes NaN/Inf.
    """
    from . import rundir as rd

    run_dir = None
    if out is not None:
        run_dir = rd.prepare_run_dir(out, force=force, resume=resume)
        if resume:
            config = Config.from_toml(run_dir / "config.toml")
    c = build(config)
    seeds = jnp.asarray(config.seeds, dtype=jnp.int32)
    n_seeds = len(config.seeds)
    sharding, n_dev = seed_sharding(n_seeds, devices)

    state = jax.vmap(partial(init_state, c))(seeds)
    rows: list[tuple] = []
    start_step = 0
    checkpoints: list[int] = []
    if run_dir is not None:
        if resume:
            state, start_step, rows, checkpoints = _resume(run_dir, state, c)
        else:
            if force and run_dir.exists():
                rd.clear_run_dir(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            rd.atomic_write_text(run_dir / "config.toml", config.to_toml())
            (run_dir / "checkpoints").mkdir(exist_ok=True)
            (run_dir / "figures").mkdir(exist_ok=True)
    state = jax.device_put(state, sharding)
    seeds = jax.device_put(seeds, sharding)

    chunk_fns: dict[int, Callable] = {}

    def chunk_fn(length):
        if length not in chunk_fns:
            f = jax.vmap(make_chunk_fn(c, length), in_axes=(0, 0, None, None, None, None))
            chunk_fns[length] = jax.jit(f, donate_argnums=(0,))
        return chunk_fns[length]

    task_start = jax.jit(jax.vmap(make_task_start_fn(c), in_axes=(0, 0, None)))
    metrics_fn = None
    if c.metrics_fn is not None:
        def counted_metrics(variables, x, y, mask):
            TRACE_COUNTS["metrics"] = TRACE_COUNTS.get("metrics", 0) + 1  # trace time only
            return c.metrics_fn(variables, x, y, mask)

        metrics_fn = jax.jit(jax.vmap(counted_metrics, in_axes=(0, None, None, None)))

    every = config.record.every
    ckpt_every = config.record.checkpoint_every
    total = sum(n for _, _, n in c.schedule)
    bar = progress_bar(total, progress, initial=start_step)
    t0 = time.perf_counter()
    last_good_ckpt = checkpoints[-1] if checkpoints else None
    try:
        for task, first, n in c.schedule:
            if first + n <= start_step:
                continue
            data = jax.tree_util.tree_map(jnp.asarray, c.stream.task_data(task))
            mx, my, mmask = (jnp.asarray(a) for a in c.stream.metric_batch(task))
            bounds = sorted({first + n} | {b for b in range(first - first % every + every, first + n, every)})
            pos = first
            for end in bounds:
                if end <= start_step:
                    pos = end
                    continue
                if pos == first:
                    state = task_start(state, seeds, jnp.int32(task))
                state, losses, accs = chunk_fn(end - pos)(state, seeds, data, jnp.int32(pos), jnp.int32(first),
                                                     jnp.int32(task))
                losses = np.asarray(losses)
                bad = ~np.isfinite(losses)
                if bad.any():
                    s_idx, i_idx = np.argwhere(bad)[0]
                    _flush(run_dir, rows)
                    where = f"last good checkpoint: step {last_good_ckpt}" if last_good_ckpt is not None else "no checkpoint yet"
                    raise DivergenceError(
                        f"training diverged: loss is {losses[s_idx, i_idx]} at step {pos + i_idx} "
                        f"for seed {config.seeds[s_idx]} ({where})",
                        step=int(pos + i_idx), seed=int(config.seeds[s_idx]),
                    )
                accs = np.asarray(accs)
                for si, seed in enumerate(config.seeds):
                    rows.append((end, seed, task, "", "loss", float(losses[si].mean())))
                    if c.stream.loss == "xent":
                        rows.append((end, seed, task, "", "accuracy", float(accs[si].mean())))
                if metrics_fn is not None:
                    values = jax.device_get(metrics_fn(state["variables"], mx, my, mmask))
                    for metric, per_layer in values.items():
                        for layer, arr in per_layer.items():
                            arr = np.asarray(arr)
                            for si, seed in enumerate(config.seeds):
                                rows.append((end, seed, task, layer, metric, float(arr[si])))
                is_ckpt = end == first + n or (ckpt_every is not None and end % ckpt_every == 0)
                if run_dir is not None:
                    _flush(run_dir, rows)
                    if is_ckpt:
                        rd.save_checkpoint(run_dir, end, state, {"task": task, "seeds": list(config.seeds)})
                        checkpoints.append(end)
                        last_good_ckpt = end
                bar.update(end - pos)
                pos = end
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    summary = _summary(config, c, rows, wall, n_dev, total)
    if run_dir is not None:
        rd.atomic_write_json(run_dir / "summary.json", summary)
    return Run(config, run_dir, rows, checkpoints, summary, c, jax.device_get(state))


def _flush(run_dir, rows):
    if run_dir is not None:
        from .rundir import write_metrics

        write_metrics(run_dir / "metrics.csv", rows)


def _resume(run_dir: Path, template, c: Components):
    """Latest verified checkpoint, and the metric rows up to it. Corrupt ones are reported, skipped."""
    import sys

    from . import rundir as rd

    steps = rd.list_checkpoints(run_dir)
    for step in reversed(steps):
        try:
            state, _ = rd.load_checkpoint(run_dir, step, template)
        except rd.CorruptCheckpointError as exc:
            print(f"warning: {exc}", file=sys.stderr)
            continue
        rows = []
        if (run_dir / "metrics.csv").is_file():
            rows = [r for r in rd.read_metrics(run_dir / "metrics.csv") if r[0] <= step]
        return state, step, rows, [s for s in steps if s <= step]
    return template, 0, [], []


def _summary(config: Config, c: Components, rows, wall, n_dev, total) -> dict:
    final: dict[str, dict] = {}
    last_step = max((r[0] for r in rows), default=0)
    for step, seed, task, layer, metric, value in rows:
        if step == last_step and layer == "":
            final.setdefault(metric, {})[str(seed)] = value
    acc_by_task: dict[int, list] = {}
    for step, seed, task, layer, metric, value in rows:
        if metric == "accuracy" and layer == "":  # online accuracy, not the metric batch's
            acc_by_task.setdefault(task, []).append(value)
    return {
        "steps": total,
        "last_recorded_step": last_step,
        "seeds": list(config.seeds),
        "devices": n_dev,
        "backend": jax.default_backend(),
        "jax_version": jax.__version__,
        "wall_time_s": round(wall, 3),
        "final": final,
        "mean_online_accuracy_by_task": {str(t): float(np.mean(v)) for t, v in sorted(acc_by_task.items())},
        "stream": c.stream.describe() if hasattr(c.stream, "describe") else {},
        "schedule": [{"task": t, "first_step": f, "steps": n} for t, f, n in c.schedule],
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


__all__ = ["Components", "Run", "build", "init_state", "make_chunk_fn", "masked_loss", "train", "replace_config"]

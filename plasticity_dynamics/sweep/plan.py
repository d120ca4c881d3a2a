"""Which cells of a sweep share one compiled program, and whether their lanes fit in memory.

Cells whose configs have the same :func:`pdx.training.engine.program_key` form one *program*:
their (cell, seed) pairs are vmapped lanes of one compiled chunk
(:func:`pdx.training.train_lanes`). They may differ in the lane values
(:func:`pdx.training.engine.lane_values`): ``optim.lr``, ``optim.momentum``,
``optim.weight_decay``, ``optim.noise_sigma0``, ``optim.noise_decay`` (within one
momentum/weight-decay on-off pattern), non-zero dropout rates (``model.dropout``,
``model.attention_dropout``) and the intervention rates (``intervention.replacement_rate`` and
``intervention.decay`` of CBP, ``intervention.shrink`` / ``intervention.sigma`` of
shrink-and-perturb, ``intervention.tau`` of ReDo). Only values that change neither shapes nor
control flow are lanes; any other swept key (widths, family, norm, a dropout rate of 0 against
non-zero ones, metric thresholds, other intervention options, ...) gives separate programs,
which an executor runs. :func:`split_axes` names the axes that split the programs (the sweep
writes it to ``plan.txt`` and each cell's program to ``cells.csv``).

Memory estimate of a lane (:func:`lane_bytes`), from shapes only (``jax.eval_shape``, nothing
is computed): 3 x the lane's state (variables, optimiser and intervention state: the state,
its donated successor and the gradients) + 3 x the activations of one training batch and 3 x
those of the metric batch (forward values kept for the backward pass, their cotangents and
the pre-activations). It is a rough upper bound; the task data are shared by all lanes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from ..training.engine import build, init_state, program_key
from .spec import EXACT_MAX_LANES, SweepSpec

#: The swept keys that can keep a program (lane values, :func:`pdx.training.engine.lane_values`;
#: a dropout rate only while it stays > 0, CBP's rate only without ``min_one_per_step``).
LANE_KEYS = ("optim.lr", "optim.momentum", "optim.weight_decay", "optim.noise_sigma0", "optim.noise_decay",
             "model.dropout", "model.attention_dropout", "intervention.replacement_rate", "intervention.decay",
             "intervention.shrink", "intervention.sigma", "intervention.tau")


@dataclass
class Program:
    """Cells run as lanes of one program; ``error`` is set when the program cannot be built
    (bad input in these cells: they are recorded as failed, the others run)."""

    cells: list[int]
    lanes: int
    lane_bytes: int | None = None
    error: str | None = None


def group_cells(spec: SweepSpec) -> list[Program]:
    """Programs of the sweep in the order of their first cell (no build, no memory). With
    ``spec.exact`` a group of more than :data:`EXACT_MAX_LANES` lanes is cut into programs of at
    most that many (whole cells: a cell's seeds stay together); they share one compiled program
    when their lane counts are equal."""
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(spec.configs):
        key = (program_key(cfg), cfg.record.every, cfg.record.checkpoint_every)
        groups.setdefault(key, []).append(i)
    per = max(1, EXACT_MAX_LANES // len(spec.seeds)) if spec.exact else None
    out = []
    for cells in groups.values():
        parts = [cells] if per is None else [cells[j:j + per] for j in range(0, len(cells), per)]
        out += [Program(part, len(part) * len(spec.seeds)) for part in parts]
    return out


def split_axes(spec: SweepSpec) -> list[str]:
    """The swept keys that split the sweep into programs: an axis splits when setting one of its
    values in cell 0's config changes the program (:func:`program_key` or the record schedule).
    Empty when every cell is a lane of one program. Cost: a program key per axis value."""

    def key(cfg):
        return program_key(cfg), cfg.record.every, cfg.record.checkpoint_every

    first = spec.configs[0]
    ref = key(first)
    out = []
    for axis, values in spec.axes.items():
        for v in values:
            try:
                other = key(first.with_overrides({axis: v}))
            except InputError:
                other = None  # a value that does not combine with cell 0's: another program
            if other != ref:
                out.append(axis)
                break
    return out


def describe_plan(spec: SweepSpec, programs: list[Program]) -> list[str]:
    """Lines saying how the sweep runs: which axes split it (or that one program holds every
    cell), then one line per program (its cells and lanes)."""
    axes = split_axes(spec)
    lanes = [k for k in spec.keys if k not in axes]
    if len(programs) == 1 or not axes:
        head = (f"{'one program' if len(programs) == 1 else 'one program key'}: every cell is a lane (lane axes: "
                f"{', '.join(lanes) or 'none'}; seeds)")
    else:
        head = (f"{len(programs)} programs, split by {', '.join(axes) or 'the record schedule'} (these change shapes "
                f"or control flow); lane axes: {', '.join(lanes) or 'none'}")
    if spec.exact:
        head += f"; exact=true: at most {EXACT_MAX_LANES} lanes per program"
    body = [f"program {j}: cells {', '.join(map(str, p.cells))} ({p.lanes} lanes)" for j, p in enumerate(programs)]
    return [head, *body]


def plan(spec: SweepSpec) -> list[Program]:
    """Group the cells into programs, build one config of each (bad input marks that program's
    cells failed) and check that every program's lanes fit in memory (InputError otherwise)."""
    programs = group_cells(spec)
    limit = memory_limit(spec.max_memory_gb)
    built = 0
    for p in programs:
        try:
            c = build(spec.configs[p.cells[0]])
        except InputError as exc:
            p.error = str(exc)
            continue
        built += 1
        p.lane_bytes = lane_bytes(c)
        need = p.lane_bytes * p.lanes
        if need > limit:
            fit = max(limit // p.lane_bytes, 0)
            raise InputError(
                f"cells {_span(p.cells)} run as {p.lanes} lanes of one program and need about {_gb(need)} "
                f"({_gb(p.lane_bytes)} per lane: 3 x state + 3 x activations of a training and a metric batch), "
                f"more than the {_gb(limit)} available; at most {fit} lanes fit: fewer seeds or values per "
                "program, or set sweep.max_memory_gb")
    if built == 0:
        raise InputError(programs[0].error)  # every cell is bad: the file is
    return programs


def lane_bytes(c) -> int:
    """Estimated bytes of one lane of ``c``'s program (see the module docstring)."""
    state = jax.eval_shape(lambda: init_state(c, 0))
    state_b = _nbytes(state)
    variables = state["variables"]

    def acts(n):
        x = jax.ShapeDtypeStruct((n,) + tuple(c.stream.input_shape), jnp.float32)
        out = jax.eval_shape(lambda v, x_: c.model.apply(v, x_, train=True, rng=jax.random.PRNGKey(0)),
                             variables, x)
        return _nbytes((out.logits, out.activations, out.preactivations))

    return int(3 * state_b + 3 * acts(c.config.train.batch_size) + 3 * acts(c.config.tasks.metric_batch_size))


def memory_limit(max_memory_gb: float | None = None) -> int:
    """Bytes the lanes of one program may use: ``max_memory_gb`` when given, else 80% of the
    accelerator's memory limit, or of the host's available memory on CPU."""
    if max_memory_gb is not None:
        return int(max_memory_gb * 2**30)
    dev = jax.devices()[0]
    stats = None
    try:
        stats = dev.memory_stats()
    except Exception:  # noqa: BLE001 - CPU devices may not report
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(0.8 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    return int(0.8 * _host_available())


def _host_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _nbytes(tree) -> int:
    return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                   for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "shape")))


def _gb(n: int) -> str:
    return f"{n / 2**30:.3g} GB"


def _span(cells: list[int]) -> str:
    return f"{cells[0]}-{cells[-1]}" if len(cells) > 1 else str(cells[0])


__all__ = ["LANE_KEYS", "Program", "describe_plan", "group_cells", "lane_bytes", "memory_limit", "plan", "split_axes"]

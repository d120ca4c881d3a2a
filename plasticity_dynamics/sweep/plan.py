"""Which cells of a sweep share one compiled program, and whether their lanes fit in memory.

Cells whose configs have the same :func:`pdx.training.engine.program_key` (they differ only in
``optim.lr``, ``optim.momentum``, ``optim.weight_decay``, ``optim.noise_sigma0``,
``optim.noise_decay``, within one momentum/weight-decay on-off pattern) form one *program*:
their (cell, seed) pairs are vmapped lanes of one compiled chunk
(:func:`pdx.training.train_lanes`). Any other swept key (widths, family, norm, dropout, metric
thresholds, intervention options, ...) gives separate programs, which an executor runs.

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
from .spec import SweepSpec

#: The swept keys that keep a program (they are lane values, :func:`pdx.training.engine.lane_values`).
LANE_KEYS = ("optim.lr", "optim.momentum", "optim.weight_decay", "optim.noise_sigma0", "optim.noise_decay")


@dataclass
class Program:
    """Cells run as lanes of one program; ``error`` is set when the program cannot be built
    (bad input in these cells: they are recorded as failed, the others run)."""

    cells: list[int]
    lanes: int
    lane_bytes: int | None = None
    error: str | None = None


def group_cells(spec: SweepSpec) -> list[Program]:
    """Programs of the sweep in the order of their first cell (no build, no memory)."""
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(spec.configs):
        key = (program_key(cfg), cfg.record.every, cfg.record.checkpoint_every)
        groups.setdefault(key, []).append(i)
    return [Program(cells, len(cells) * len(spec.seeds)) for cells in groups.values()]


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


__all__ = ["LANE_KEYS", "Program", "group_cells", "lane_bytes", "memory_limit", "plan"]

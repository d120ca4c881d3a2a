"""Shared helpers of the benchmarks: timing with warm-up apart, environment facts, output.

Every benchmark module ``benchmarks/<name>.py`` has ``main(argv) -> payload`` (prints its tables,
writes its JSON) and ``render(payload) -> str`` (the Markdown tables of that JSON, used both for
printing and by ``benchmarks.run_all`` for benchmarks/README.md). Full runs write
``benchmarks/results/<name>.json``; ``--quick`` runs write ``benchmarks/results/quick/<name>.json``
(git-ignored) so that a smoke run never overwrites the measured numbers.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
QUICK_RESULTS = RESULTS / "quick"


def environment() -> dict:
    """Facts that make a number interpretable: versions, backend, device kind, CPU count."""
    import jax
    import numpy as np

    dev = jax.devices()[0]
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        load = None
    return {
        "jax": jax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "device_kind": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def environment_line(env: dict) -> str:
    """One Markdown line naming where the numbers were measured."""
    load = env.get("load_average")
    return (f"JAX {env.get('jax')}, backend {env.get('backend')} ({env.get('device_kind')}, "
            f"{env.get('device_count')} device(s)), {env.get('cpu_count')} CPUs"
            + (f", load average {load[0]:.1f} at start" if load else "")
            + f", measured {env.get('time')}.")


def block(x):
    import jax

    return jax.block_until_ready(x)


def timed(fn, *, repeats: int = 5, warmup: int = 1) -> dict:
    """Call ``fn()`` warm-up + repeats times; first call time reported apart (compile), median of the rest."""
    t0 = time.perf_counter()
    block(fn())
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        block(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return {"first_call_s": first, "median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def wall_times(fn, repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn()`` (no warm-up; ``fn`` must block on its own
    device work). On a shared, loaded machine the minimum is the better estimate of the work
    itself, so callers may report both the median and the minimum."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median_time(fn, repeats: int) -> float:
    """Median of :func:`wall_times`."""
    return statistics.median(wall_times(fn, repeats))


def timed_split(fn, *, repeats: int = 5) -> dict:
    """Like :func:`timed`, and per call the compile time inside it
    (:class:`plasticity_dynamics.runtime.CompileLog`): first_call_s, first_compile_s, median_s
    (wall), median_compile_s, median_run_s (wall minus compile, median over the repeats)."""
    from plasticity_dynamics.runtime import CompileLog

    walls, comps = [], []
    for _ in range(repeats + 1):
        with CompileLog() as clock:
            t0 = time.perf_counter()
            block(fn())
            walls.append(time.perf_counter() - t0)
        comps.append(min(clock.seconds, walls[-1]))
    rest = list(zip(walls[1:], comps[1:]))
    return {"first_call_s": walls[0], "first_compile_s": comps[0],
            "median_s": statistics.median(w for w, _ in rest),
            "median_compile_s": statistics.median(c for _, c in rest),
            "median_run_s": statistics.median(w - c for w, c in rest), "repeats": repeats}


def default_out(name: str, quick: bool) -> Path:
    """Where benchmark ``name`` writes its JSON by default (quick runs apart)."""
    return (QUICK_RESULTS if quick else RESULTS) / f"{name}.json"


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (:mod:`plasticity_dynamics.fileio`)."""
    from plasticity_dynamics.fileio import atomic_write_text

    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=float) + "\n")


def write(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` (see :func:`write_json`)."""
    return write_json(RESULTS / f"{name}.json", payload)


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain Markdown table of ``rows`` restricted to ``columns``."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if v is None:
            return ""
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)

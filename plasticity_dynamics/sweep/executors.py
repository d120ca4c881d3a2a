"""Executors: who runs a sweep's programs. ``local`` runs them one after another in this
process; ``ray`` hands each program to a Ray task (a running cluster at ``address``, or a local
Ray started for the sweep). Scheduling, retries and placement are Ray's; nothing here queues.

The unit of work is :func:`run_program` (one compiled program: its cells as vmapped lanes). It
never raises for a cell's failure: a program that cannot be built or a lane that diverges is
written to the cell's ``error.txt`` and returned as ``failed``, and the other cells go on.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Callable

from ..errors import InputError

EXECUTORS = ("local", "ray")
ERROR_FILE = "error.txt"


def cell_dir(sweep_dir: str | Path, cell: int) -> Path:
    """``SWEEP_DIR/cells/cell_0007``: a normal run directory (config.toml rebuilds that cell)."""
    return Path(sweep_dir) / "cells" / f"cell_{cell:04d}"


def cell_status(sweep_dir: str | Path, cell: int) -> tuple[str, str]:
    """("done" | "failed" | "pending", error message) read off the cell's directory: failed
    when ``error.txt`` exists, done when ``summary.json`` does, pending otherwise (never run,
    or stopped before its program finished)."""
    d = cell_dir(sweep_dir, cell)
    if (d / ERROR_FILE).is_file():
        return "failed", (d / ERROR_FILE).read_text().strip()
    if (d / "summary.json").is_file():
        return "done", ""
    return "pending", ""


def run_program(sweep_dir: str, cells: list[int], config_tomls: list[str], error: str | None = None) -> list[dict]:
    """Train ``cells`` (their configs as config.toml text) as the lanes of one program, each in
    its own run directory under ``sweep_dir``; earlier partial files of these cells are replaced.
    ``error``: the program is known to be bad input; record it for every cell and train nothing.
    Returns ``[{"cell", "status", "error"}]``. Cost: one compile, the lanes' training."""
    from ..errors import DivergenceError
    from ..fileio import atomic_write_text
    from ..training import Config, train_lanes
    from ..training import rundir as rd

    dirs = [cell_dir(sweep_dir, c) for c in cells]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        (d / ERROR_FILE).unlink(missing_ok=True)
        rd.clear_run_dir(d)

    def failed(msgs):
        for d, m in zip(dirs, msgs):
            atomic_write_text(d / ERROR_FILE, m + "\n")
        return [{"cell": c, "status": "failed", "error": m} for c, m in zip(cells, msgs)]

    if error is not None:
        return failed([error] * len(cells))
    try:
        configs = [Config.from_dict(tomllib.loads(t)) for t in config_tomls]
        runs = train_lanes(configs, outs=dirs, force=True, progress=False)
    except (InputError, DivergenceError) as exc:
        return failed([str(exc).splitlines()[0]] * len(cells))
    except Exception as exc:  # noqa: BLE001 - a cell's crash must not stop the sweep
        return failed([f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"] * len(cells))
    out = []
    for c, d, run in zip(cells, dirs, runs):
        if run.error is not None:
            atomic_write_text(d / ERROR_FILE, run.error + "\n")
            out.append({"cell": c, "status": "failed", "error": run.error})
        else:
            out.append({"cell": c, "status": "done", "error": ""})
    return out


def run_local(jobs: list[tuple], on_done: Callable[[list[dict]], None]) -> None:
    """Run each job (the arguments of :func:`run_program`) in this process, in order."""
    for args in jobs:
        on_done(run_program(*args))


def run_ray(jobs: list[tuple], on_done: Callable[[list[dict]], None], address: str | None = None) -> None:
    """One Ray task per job (1 CPU each), results handed to ``on_done`` as they finish.

    Uses the Ray session already initialised in this process, else ``ray.init(address)``
    (a running cluster, whose nodes must have this package installed), else a local Ray whose
    workers import this package from where this process does. A Ray started here is shut down
    at the end."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        if address is not None:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(runtime_env={"env_vars": worker_env()}, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1)(run_program)
        pending = [task.remote(*args) for args in jobs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                on_done(ray.get(ref))
    finally:
        if started:
            ray.shutdown()


def worker_env() -> dict[str, str]:
    """Environment of local Ray workers: this package's folder first on PYTHONPATH (so a
    worker imports the same code as the driver), and the driver's JAX/XLA settings."""
    root = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    for name in ("XLA_FLAGS", "JAX_PLATFORMS", "JAX_COMPILATION_CACHE_DIR", "PDX_NO_COMPILATION_CACHE",
                 "JAX_ENABLE_X64"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def require_ray():
    """The ``ray`` module, or InputError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray: pip install 'plasticity-dynamics[ray]'") from None
    return ray


__all__ = ["EXECUTORS", "cell_dir", "cell_status", "require_ray", "run_local", "run_program", "run_ray", "worker_env"]

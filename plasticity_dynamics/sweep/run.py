"""Run a sweep into one directory, and finish an interrupted one.

Layout::

    SWEEP_DIR/sweep.toml            the sweep file as given (resume checks it is unchanged)
    SWEEP_DIR/cells.csv             cell, one column per swept key, program, status, error
    SWEEP_DIR/plan.txt              which axes split the programs, then each program's cells
    SWEEP_DIR/cells/cell_0000/      a normal run directory per cell (config.toml, metrics.csv,
                                    checkpoints/, summary.json; error.txt when the cell failed)
    SWEEP_DIR/table.csv             cell, the swept keys, then metrics.csv's columns
    SWEEP_DIR/table.parquet         the same table, when pyarrow is installed

``cells.csv`` is rewritten (atomically) as programs finish; a cell's status is read off its
directory (:func:`~.executors.cell_status`), so a sweep killed at any point resumes from what is
on disk: ``resume=True`` runs only the cells that are pending (never finished) and keeps the
done and failed ones.
"""

from __future__ import annotations

import csv
import io
import time
import tomllib
from pathlib import Path

from ..errors import InputError
from ..fileio import atomic_write_bytes, atomic_write_text
from .executors import EXECUTORS, cell_dir, cell_status, require_ray, run_local, run_ray
from .plan import describe_plan, plan
from .spec import SweepSpec, format_value, load_sweep, parse_sweep


def run_sweep(path: str | Path, *, out: str | Path | None = None, executor: str = "local",
              address: str | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Run the sweep file ``path`` into ``out`` (default ``runs/sweep-<time>``); returns
    ``{"out", "cells": [{"cell", swept keys..., "status", "error"}], "programs", "wall_time_s"}``.

    Every check happens before anything is written (InputError: bad file, bad ``executor``
    or ``address``, Ray missing, lanes that do not fit in memory, ``out`` not empty without
    ``resume``, or a resumed ``out`` whose sweep.toml differs). Failing cells are recorded and
    do not stop the others. Cost: one compile and one training per program.
    """
    if executor not in EXECUTORS:
        raise InputError(f"--executor {executor!r} is not one of: {', '.join(EXECUTORS)}")
    if address is not None and executor != "ray":
        raise InputError("--address applies to --executor ray only")
    path = Path(path)
    spec = load_sweep(path)
    text = path.read_text()
    out = Path(out) if out is not None else Path("runs") / time.strftime("sweep-%Y%m%d-%H%M%S")
    if resume:
        stored = out / "sweep.toml"
        if not stored.is_file():
            raise InputError(f"--resume: {str(out)!r} is not a sweep directory (no sweep.toml)")
        if parse_sweep(tomllib.loads(stored.read_text())).configs != spec.configs:
            raise InputError(f"--resume: {str(path)!r} differs from {str(stored)!r}; a resumed sweep keeps its file: "
                             "start a new one with another --out")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {str(out)!r} exists and is not an empty folder; use --resume to finish it or "
                         "another --out")
    programs = plan(spec)
    if executor == "ray":
        require_ray()

    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        atomic_write_text(out / "sweep.toml", text)
    lines = describe_plan(spec, programs)
    atomic_write_text(out / "plan.txt", "\n".join(lines) + "\n")
    program_of = {i: j for j, p in enumerate(programs) for i in p.cells}
    statuses = {i: cell_status(out, i) for i in range(len(spec.cells))}
    write_cells(out, spec, statuses, program_of)
    jobs = []
    for p in programs:
        todo = [i for i in p.cells if statuses[i][0] == "pending"]
        if todo:
            jobs.append((str(out), todo, [spec.configs[i].to_toml() for i in todo], p.error))
    from ..training.engine import progress_bar

    total = sum(len(j[1]) for j in jobs)
    bar = progress_bar(total, progress and total > 0, desc="sweep", unit="cell")

    def on_done(results):
        for r in results:
            statuses[r["cell"]] = (r["status"], r["error"])
        write_cells(out, spec, statuses, program_of)
        bar.update(len(results))

    t0 = time.perf_counter()
    try:
        if executor == "ray":
            run_ray(jobs, on_done, address)
        else:
            run_local(jobs, on_done)
    finally:
        bar.close()
    write_table(out, spec, statuses)
    cells = [{"cell": i, **spec.cells[i], "status": statuses[i][0], "error": statuses[i][1]}
             for i in range(len(spec.cells))]
    return {"out": str(out), "cells": cells, "programs": len(programs), "plan": lines, "ran": total,
            "wall_time_s": time.perf_counter() - t0}


def sweep_runs(spec: SweepSpec, *, progress: bool = True) -> list:
    """Train every cell of ``spec`` in memory (no sweep directory), program by program as
    :func:`run_sweep` groups them (lane cells in one :func:`pdx.training.train_lanes` call);
    returns one :class:`pdx.training.Run` per cell, in cell order. Errors are raised (bad
    input, and divergence as :func:`pdx.training.train` raises it): for callers that need
    every cell, such as the figure reproductions."""
    from ..training import train_lanes
    from ..training.engine import progress_bar
    from .plan import group_cells

    runs: dict[int, object] = {}
    programs = group_cells(spec)
    bar = progress_bar(len(spec.cells), progress and len(programs) > 1, desc="sweep", unit="cell")
    try:
        for p in programs:
            got = train_lanes([spec.configs[i] for i in p.cells], progress=progress and len(programs) == 1,
                              stop_on_divergence=True)
            runs.update(zip(p.cells, got))
            bar.update(len(p.cells))
    finally:
        bar.close()
    return [runs[i] for i in range(len(spec.cells))]


def write_cells(out: Path, spec: SweepSpec, statuses: dict, program_of: dict) -> None:
    """``cells.csv``: cell, one column per swept key, program (index of the compiled program the
    cell is a lane of, as in ``plan.txt``), status, error (atomic rewrite)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["cell", *spec.keys, "program", "status", "error"])
    for i, values in enumerate(spec.cells):
        w.writerow([i, *(format_value(values[k]) for k in spec.keys), program_of[i], *statuses[i]])
    atomic_write_text(out / "cells.csv", buf.getvalue())


def table_columns(out: Path, spec: SweepSpec, statuses: dict) -> dict[str, list]:
    """The tidy table as columns: cell, the swept keys, then step, seed, task, layer, metric,
    value of every cell's metrics.csv (failed cells keep their rows up to the failure)."""
    from ..records import COLUMNS
    from ..training import read_table

    cols: dict[str, list] = {"cell": [], **{k: [] for k in spec.keys}, **{c: [] for c in COLUMNS}}
    for i, values in enumerate(spec.cells):
        f = cell_dir(out, i) / "metrics.csv"
        if statuses[i][0] == "pending" or not f.is_file():
            continue
        t = read_table(f).columns
        n = len(t["step"])
        cols["cell"] += [i] * n
        for k in spec.keys:
            v = values[k]
            cols[k] += [format_value(v) if isinstance(v, (list, tuple)) else v] * n
        for c in COLUMNS:
            cols[c] += t[c].tolist()
    return cols


def write_table(out: Path, spec: SweepSpec, statuses: dict) -> list[Path]:
    """Write ``table.csv`` (and ``table.parquet`` when pyarrow is installed); returns the paths."""
    cols = table_columns(out, spec, statuses)
    names = list(cols)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    for row in zip(*(cols[n] for n in names)):
        w.writerow([repr(v) if isinstance(v, float) else format_value(v) for v in row])
    atomic_write_text(out / "table.csv", buf.getvalue())
    written = [out / "table.csv"]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    sink = io.BytesIO()
    pq.write_table(pa.table({n: _arrow_column(pa, cols[n]) for n in names}), sink)
    atomic_write_bytes(out / "table.parquet", sink.getvalue())
    return written + [out / "table.parquet"]


def _arrow_column(pa, values: list):
    kinds = {type(v) for v in values}
    if kinds <= {int} or kinds <= {float} or kinds <= {bool} or kinds <= {str} or not values:
        return pa.array(values)
    if kinds <= {int, float}:
        return pa.array([float(v) for v in values])
    return pa.array([format_value(v) for v in values])


__all__ = ["run_sweep", "sweep_runs", "table_columns", "write_cells", "write_table"]

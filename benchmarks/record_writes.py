"""Cost of one record's write to metrics.csv as a run grows: append-only against full rewrite.

    python -m benchmarks.record_writes [--quick] [--records N] [--rows R] [--out PATH]

A record is R tidy rows (default 400: 2 seeds x 4 layers x 50 metric values); the run writes
N records (default 5,000). The append-only :class:`MetricsWriter` (the engine's) appends each
record's rows and fsyncs, so a record costs the same at the end of the run as at its start: the
benchmark prints the ratio of the median write time of the last 100 records to the first 100
(target <= 2). The baseline, measured in the same run, is the old way: rewriting the whole
table atomically (temp file + fsync + rename) at every record; it is run for the first
``N // 20`` records only (its total cost grows as records squared) and its ratio is printed the
same way, with the bytes each way would write over the whole run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from .common import default_out, environment, table, write_json


def _record(step: int, rows: int) -> list[tuple]:
    return [(step, i % 2, step // 1000, f"hidden_{i % 4}", f"metric_{i % 50}", 0.1234567 + i * 1e-3)
            for i in range(rows)]


def _time_each(n: int, rows: int, write) -> list[float]:
    times = []
    for r in range(n):
        rec = _record((r + 1) * 10, rows)
        t0 = time.perf_counter()
        write(rec)
        times.append(time.perf_counter() - t0)
    return times


def _ratio(times: list[float], k: int = 100) -> float:
    k = max(1, min(k, len(times) // 4))
    return statistics.median(times[-k:]) / statistics.median(times[:k])


def run(records: int, rows: int) -> dict:
    from plasticity_dynamics.training.rundir import MetricsWriter, format_rows, write_metrics

    row_bytes = len(format_rows(_record(10, rows)).encode()) / rows
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metrics.csv"
        with MetricsWriter(path) as w:
            append = _time_each(records, rows, w.append)
        size = path.stat().st_size
        base_n = max(20, records // 20)
        everything: list[tuple] = []

        def rewrite(rec):
            everything.extend(rec)
            write_metrics(Path(tmp) / "rewrite.csv", everything)

        rewrite_times = _time_each(base_n, rows, rewrite)
    return {
        "records": records, "rows_per_record": rows, "file_bytes": size,
        "append": {"first_ms": 1e3 * statistics.median(append[:100]), "last_ms": 1e3 * statistics.median(append[-100:]),
                   "ratio_last_first": _ratio(append), "total_s": sum(append),
                   "bytes_written": size},
        "rewrite": {"records_run": base_n, "first_ms": 1e3 * statistics.median(rewrite_times[:max(1, base_n // 4)]),
                    "last_ms": 1e3 * statistics.median(rewrite_times[-max(1, base_n // 4):]),
                    "ratio_last_first": _ratio(rewrite_times), "total_s": sum(rewrite_times),
                    "bytes_written_full_run": int(row_bytes * rows * records * (records + 1) / 2)},
    }


def render(payload: dict) -> str:
    r = payload["result"]
    a, w = r["append"], r["rewrite"]
    lines = [f"{r['records']} records of {r['rows_per_record']} rows (metrics.csv {r['file_bytes'] / 1e6:.1f} MB at "
             "the end); a record's write time, median of the first and of the last 100 records:", "",
             table([{"writer": "append + fsync (engine)", "records": r["records"], "first record (ms)": a["first_ms"],
                     "last record (ms)": a["last_ms"], "last / first": a["ratio_last_first"],
                     "bytes over the run": f"{a['bytes_written'] / 1e6:.1f} MB"},
                    {"writer": "rewrite whole table (old; baseline)", "records": w["records_run"],
                     "first record (ms)": w["first_ms"], "last record (ms)": w["last_ms"],
                     "last / first": w["ratio_last_first"],
                     "bytes over the run": f"{w['bytes_written_full_run'] / 1e9:.1f} GB (extrapolated)"}],
                   ["writer", "records", "first record (ms)", "last record (ms)", "last / first", "bytes over the run"]),
             "", f"Target: append last/first <= 2 — {'met' if a['ratio_last_first'] <= 2 else 'NOT met'}."]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.record_writes", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="400 records of 50 rows")
    ap.add_argument("--records", type=int, default=None, help="records to write (default 5000)")
    ap.add_argument("--rows", type=int, default=None, help="rows per record (default 400)")
    ap.add_argument("--out", default=None, help="JSON output path")
    args = ap.parse_args(argv)
    records = args.records or (400 if args.quick else 5000)
    rows = args.rows or (50 if args.quick else 400)
    payload = {"benchmark": "record_writes", "quick": args.quick, "environment": environment(),
               "result": run(records, rows)}
    print(render(payload))
    write_json(args.out or default_out("record_writes", args.quick), payload)
    return payload


if __name__ == "__main__":
    main()

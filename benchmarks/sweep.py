"""Sweeps: a 4 x 4 lr x sigma0 noisy-SGD grid with 2 seeds as 32 vmapped lanes of one program,
against the same 16 cells run one after another with ``train()`` (2 seeds each), in one process.

Both sides train the small MLP (``model.preset = "small"``, 3 x 64 units, batch norm, dropout)
on mnist1d class splits with the same configs, in memory (no run directories), unit metrics off
(training throughput). The first call of each side includes tracing and XLA compilation (the
sequential runs share one program: lanes values are arguments, so all 16 configs have one
program key); the median over repeats is the warm time. Goal: the vmapped grid >= 4x faster
than the sequential runs on 2 CPU cores.

    python -m benchmarks.sweep [--quick] [--out PATH]

Writes benchmarks/results/sweep.json (quick: benchmarks/results/quick/sweep.json);
``render(payload)`` gives the Markdown table.
"""

from __future__ import annotations

import argparse
import time

from .common import default_out, environment, environment_line, table, write_json

LRS = (0.01, 0.02, 0.05, 0.1)
SIGMAS = (0.0, 0.01, 0.05, 0.1)


def configs(steps: int):
    from plasticity_dynamics.sweep import parse_sweep

    spec = parse_sweep({"sweep": {"mode": "grid", "seeds": [0, 1],
                                  "axes": {"optim.lr": list(LRS), "optim.noise_sigma0": list(SIGMAS)}},
                        "base": {"optim": {"name": "noisy_sgd"}, "model": {"preset": "small"},
                                 "tasks": {"num_tasks": 2}, "train": {"steps_per_task": steps, "batch_size": 32},
                                 "record": {"every": 50, "metrics": False}}})
    return list(spec.configs)


def measure(steps: int, repeats: int) -> list[dict]:
    from plasticity_dynamics.training import engine, train, train_lanes

    cfgs = configs(steps)
    engine._PROGRAMS.clear()

    def grid():
        return train_lanes(cfgs, progress=False)

    def sequential():
        return [train(cfg, progress=False) for cfg in cfgs]

    rows = []
    for name, fn in (("vmapped grid (32 lanes, 1 program)", grid), ("16 sequential train() runs (2 seeds each)",
                                                                  sequential)):
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        warm = sorted(times[1:])
        rows.append({"side": name, "first_call_s": times[0], "median_s": warm[len(warm) // 2], "min_s": warm[0]})
    rows.append({"side": "speed-up (sequential / vmapped)",
                 "first_call_s": rows[1]["first_call_s"] / rows[0]["first_call_s"],
                 "median_s": rows[1]["median_s"] / rows[0]["median_s"], "min_s": rows[1]["min_s"] / rows[0]["min_s"]})
    return rows


def render(payload: dict) -> str:
    steps = payload["steps_per_task"]
    return (f"4 x 4 lr x sigma0 noisy-SGD grid, 2 seeds, small MLP, 2 tasks x {steps} steps, batch 32, metrics "
            f"off. Times in seconds; the last row is the ratio.\n\n"
            + table(payload["rows"], ["side", "first_call_s", "median_s", "min_s"]))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short runs, one repeat (smoke test)")
    p.add_argument("--out", type=lambda s: __import__("pathlib").Path(s))
    args = p.parse_args(argv)
    from plasticity_dynamics.runtime import configure_jax

    configure_jax()
    steps, repeats = (20, 1) if args.quick else (200, 2)
    payload = {"benchmark": "sweep", "environment": environment(), "quick": args.quick, "steps_per_task": steps,
               "rows": measure(steps, repeats)}
    print(render(payload))
    print("\n" + environment_line(payload["environment"]))
    path = write_json(args.out or default_out("sweep", args.quick), payload)
    print(f"\nwritten: {path}")
    return payload


if __name__ == "__main__":
    main()

"""The ``plasticity-dynamics`` command line: a thin shell over training and experiments.

Exit codes: 0 done; 2 bad input (one line on stderr, no traceback, nothing
written); 3 training diverged (the message names the step and seed; earlier
checkpoints are kept). ``sweep`` exits 0 when every cell has run: cells that failed (divergence,
a config that cannot be built) are recorded in cells.csv and named on stderr, and do not stop
the others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import DivergenceError, InputError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise InputError(f"{self.prog}: {message}")


def _cmd_train(args) -> int:
    from .plotting.run import plot_run
    from .training import Config, parse_override, resume_config, train

    overrides = dict(parse_override(s) for s in args.set)
    if args.resume:
        if not args.out:
            raise InputError("--resume needs --out RUN_DIR")
        if args.force:
            raise InputError("--resume and --force exclude each other: --force starts the run again from scratch")
        # CONFIG and --set may restate the stored config; a differing value is refused (exit 2)
        base = Config.from_toml(args.config) if args.config else resume_config(args.out)
        cfg = base.with_overrides(overrides)
    else:
        cfg = (Config.from_toml(args.config) if args.config else Config()).with_overrides(overrides)
    out = args.out or _default_out()
    run = train(cfg, out=out, resume=args.resume, force=args.force, progress=not args.quiet)
    figs = plot_run(run.table, Path(out) / "figures")
    print(f"run directory: {out}")
    for f in figs:
        if f.suffix == ".png":
            print(f"figure: {f}")
    final = run.summary.get("final", {})
    for name in ("loss", "accuracy"):
        if name in final:
            vals = list(final[name].values())
            print(f"final {name}: " + ", ".join(f"{v:.4f}" for v in vals) + " (per seed)")
    return 0


def _default_out() -> str:
    import time

    return str(Path("runs") / time.strftime("train-%Y%m%d-%H%M%S"))


def _cmd_analyze(args) -> int:
    from .experiments.analyze import analyze

    payload = analyze(args.run_dir, args.steps, k=args.k, progress=not args.quiet, ntk=args.ntk,
                      layers=args.layers, track=args.track, lyapunov=args.lyapunov, churn=args.churn)
    run_dir = Path(args.run_dir)
    for entry in payload["checkpoints"]:
        for s in entry["seeds"]:
            parts = [f"{name}: dim {m['normal_dim']}, {m['verdict']}, λ ∈ [{m['lambda_min']:.3g}, {m['lambda_max']:.3g}], "
                     f"leakage {m['leakage']:.2g}" for name, m in s["manifolds"].items()]
            print(f"step {entry['step']} seed {s['seed']}: " + ("; ".join(parts) if parts else "no LoP manifold found"))
    print(f"manifolds: {run_dir / 'manifolds.json'}")
    print(f"figure: {run_dir / 'figures' / 'manifolds_curvature.png'}")
    if args.ntk or args.track or args.lyapunov or args.churn:
        print(f"figure: {run_dir / 'figures' / 'manifolds_dynamics.png'}")
    return 0


def _cmd_report(args) -> int:
    from .plotting.run import plot_run
    from .training import read_table

    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.csv").is_file():
        raise InputError(f"RUN_DIR {str(run_dir)!r} is not a run directory (no metrics.csv)")
    for f in plot_run(read_table(run_dir / "metrics.csv"), run_dir / "figures"):
        print(f"figure: {f}")
    return 0


def _cmd_reproduce(args) -> int:
    from .experiments import figures, reproduce

    if args.name == "list":
        for name, fig in figures().items():
            print(f"{name:20s} {fig.paper:26s} {fig.description}")
        return 0
    res = reproduce(args.name, scale=args.scale, out=args.out, data_dir=args.data_dir, force=args.force,
                    progress=not args.quiet)
    out = Path(res["out"])
    print(f"{args.name} ({res['paper']}) at scale {args.scale}: {res['wall_time_s']:.1f} s")
    for f in sorted((out / "figures").glob("*.png")):
        print(f"figure: {f}")
    print(f"results: {out / 'results.json'}")
    print(f"summary: {out / 'summary.md'}")
    failed = [c for c in res["checks"] if not c[2]]
    for claim, measured, _ in failed:
        print(f"trend not reproduced: {claim} ({measured})")
    return 0


def _cmd_sweep(args) -> int:
    from .sweep import run_sweep

    res = run_sweep(args.sweep_file, out=args.out, executor=args.executor, address=args.address,
                    resume=args.resume, progress=not args.quiet)
    out = Path(res["out"])
    done = [c for c in res["cells"] if c["status"] == "done"]
    failed = [c for c in res["cells"] if c["status"] == "failed"]
    print(f"sweep directory: {out} ({len(res['cells'])} cells in {res['programs']} programs; "
          f"ran {res['ran']} in {res['wall_time_s']:.1f} s)")
    print(f"plan: {res['plan'][0]} ({out / 'plan.txt'})")
    print(f"cells: {out / 'cells.csv'} ({len(done)} done, {len(failed)} failed)")
    print(f"table: {out / 'table.csv'}" + (f" and {out / 'table.parquet'}" if (out / "table.parquet").is_file() else ""))
    for c in failed:
        print(f"cell {c['cell']} failed: {c['error']}", file=sys.stderr)
    return 0


def _cmd_list(args) -> int:
    what = args.what
    if what == "presets":
        from .models import PRESETS

        for family, presets in PRESETS.items():
            for name, opts in presets.items():
                print(f"{family:10s} {name:8s} {opts}")
    elif what == "datasets":
        from .data import DATASETS

        for name, desc in DATASETS.items():
            print(f"{name:14s} {desc}")
    elif what == "metrics":
        from .metrics import describe_metrics

        print(describe_metrics())
    elif what == "figures":
        from .experiments import figures

        for name, fig in figures().items():
            print(f"{name:20s} {fig.paper:26s} {fig.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="plasticity-dynamics", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a continual-learning run (many seeds at once)")
    t.add_argument("config", nargs="?", help="TOML config file (defaults: small MLP on mnist1d, 5 two-class tasks)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=0.01 --set model.widths=[64,64]")
    t.add_argument("--out", help="run directory (default runs/train-<time>)")
    t.add_argument("--resume", action="store_true",
                   help="continue --out from its last verified checkpoint with its stored config.toml (CONFIG and "
                        "--set may only restate it); exit 2, nothing touched, when no checkpoint fits")
    t.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    a = sub.add_parser("analyze", help="detect LoP manifolds and their normal curvature at a run's checkpoints")
    a.add_argument("run_dir")
    a.add_argument("--steps", default="all", help="all | last | comma-separated checkpoint steps")
    a.add_argument("--k", type=int, default=3, help="eigenpairs at each end of the normal spectrum")
    a.add_argument("--ntk", action="store_true",
                   help="eNTK J J^T of the logits on the metric batch (effective rank, condition number) and "
                        "the normal eNTK J P_N J^T of each manifold")
    a.add_argument("--layers", action="store_true", help="normal spectrum restricted to each layer's parameters")
    a.add_argument("--track", action="store_true",
                   help="principal angles between the k lowest / k highest normal eigenvectors of successive "
                        "selected checkpoints")
    a.add_argument("--lyapunov", type=int, default=0, metavar="W",
                   help="finite-time Lyapunov exponents of the normal dynamics over the W run steps after each "
                        "checkpoint, replaying the run's own minibatches and keys (clipped to the task; 0: off)")
    a.add_argument("--churn", action="store_true",
                   help="churn mean|f_after - f_before| (C-CHAIN) on the task's held-out test batch: of the run's next "
                        "update and since the previous selected checkpoint")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=_cmd_analyze)

    r = sub.add_parser("report", help="redraw the figures of a run directory")
    r.add_argument("run_dir")
    r.set_defaults(func=_cmd_report)

    rp = sub.add_parser("reproduce", help="reproduce a paper figure ('reproduce list' names them)")
    rp.add_argument("name", help="figure name, or 'list'")
    rp.add_argument("--scale", default="small", help="smoke | small (default, CPU minutes) | medium (long horizons, "
                    "<= 30 CPU min; continual, normalisation, unit-fate, cloning-families) | paper (GPU, real data)")
    rp.add_argument("--data-dir", help="folder with MNIST/CIFAR/Tiny ImageNet files (paper scale)")
    rp.add_argument("--out", help="output folder (default runs/reproduce-NAME-SCALE)")
    rp.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    rp.add_argument("--quiet", action="store_true", help="no progress bars")
    rp.set_defaults(func=_cmd_reproduce)

    sw = sub.add_parser("sweep", help="run a grid of configs from a sweep file (vmapped lanes, local or Ray executor)",
                        description="Run the cells of SWEEP.toml ([sweep] mode/seeds, [sweep.axes] dotted keys -> "
                                    "value lists, [base] config keys). Cells that differ only in optim.lr, momentum, "
                                    "weight_decay, noise_sigma0 or noise_decay run as vmapped lanes of one compiled "
                                    "program; other axes give separate programs for the executor. Failing cells are "
                                    "recorded in cells.csv (status, error) and do not stop the others.")
    sw.add_argument("sweep_file", metavar="SWEEP.toml")
    sw.add_argument("--executor", default="local", help="local (default: programs one after another in this "
                    "process) | ray (one Ray task per program; needs pip install 'plasticity-dynamics[ray]')")
    sw.add_argument("--address", help="Ray cluster address (ray executor only; default: start a local Ray)")
    sw.add_argument("--out", help="sweep directory (default runs/sweep-<time>)")
    sw.add_argument("--resume", action="store_true", help="finish --out: run only the cells that did not complete "
                    "(the sweep file must be unchanged)")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.set_defaults(func=_cmd_sweep)

    li = sub.add_parser("list", help="list presets, figures, datasets or metrics")
    li.add_argument("what", nargs="?", default="presets", choices=["presets", "figures", "datasets", "metrics"])
    li.set_defaults(func=_cmd_list)
    return p


from .runtime import XLA_CPU_FLAG, configure_jax  # noqa: E402,F401  (re-exported for older imports)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        configure_jax()
        args = parser.parse_args(argv)
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DivergenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

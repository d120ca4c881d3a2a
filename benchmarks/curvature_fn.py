"""Compile-once curvature: analyze before/after, ResNet-18 normal spectrum, vmapped seeds.

Run ``python -m benchmarks.curvature_fn [--quick] [--only SECTIONS] [--out PATH]``; ``main(argv)``
is callable from a test. Sections (``--only analyze,resnet,seeds,crossover``):

1. ``analyze``: wall time and backend-compile count (``jax.monitoring`` events) of
   ``experiments.analyze`` on a 20-checkpoint, 4-seed continual MLP run whose frozen sets
   change at every checkpoint (dead units planted: 1-4 per seed and checkpoint, other units
   each time), against the baseline kept here only for comparison: the pre-vmap structure (a
   Python loop over checkpoints and seeds, one ``normal_spectrum`` call per manifold with the
   old ``auto`` rule, dense whenever normal_dim <= 1500).
2. ``resnet``: ResNet-18 (paper preset, 11.2M parameters), batch 32, k = 3, 4 frozen units:
   one ``normal_spectrum_fn`` call (Lanczos, ``--resnet-iters`` steps), compile time apart
   (sum of jax.monitoring compile events), peak host memory (ru_maxrss of a fresh process),
   gradient and HVP time, and the spectrum's time over (HVPs used x HVP time). Goal: < 120 s
   in all on 2 cores, <= 3x its HVPs alone. Runs in a subprocess (clean memory peak). On CPU
   the kernel is the unrolled Lanczos (``loop="auto"``): XLA:CPU runs convolution gradients
   inside a loop body about 20x slower than at top level (jax-ml/jax#12868; measured on the
   paper CNN: 20.5 s per HVP in a ``fori_loop`` against 0.38 s unrolled), which is why the
   looped kernel did not finish in 900 s.
3. ``seeds``: 4 seeds of a 7k-parameter MLP: ``jit(vmap(normal_spectrum_fn(...)))`` against a
   Python loop over the same function (warm medians), and their eigenvalues' agreement.
4. ``crossover``: dense (padded bucket) against Lanczos, warm, for normal_dim 8 ... 256: where
   ``auto``'s DENSE_MAX_NORMAL_DIM comes from.

``--quick`` shrinks every section (4 checkpoints, ResNet-18 small preset, fewer sizes).
Writes benchmarks/results/curvature_fn.json (quick: results/quick/).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import default_out, environment, environment_line, table, timed, write_json
from plasticity_dynamics.losses import masked_loss
from plasticity_dynamics.runtime import CompileLog

# ------------------------------------------------------------------------------------------ 1


def _make_run(out: Path, checkpoints: int, seeds: int) -> Path:
    from plasticity_dynamics.manifolds import detect
    from plasticity_dynamics.training import Config, list_checkpoints, load_checkpoint, save_checkpoint, train
    from plasticity_dynamics.training.engine import init_state

    cfg = Config().with_overrides({
        "model.preset": "tiny", "model.norm": "none", "model.dropout": 0.0, "tasks.num_tasks": 2,
        "tasks.classes_per_task": 5, "tasks.metric_batch_size": 50,
        "train.steps_per_task": checkpoints, "train.batch_size": 16, "record.every": 1,
        "record.checkpoint_every": 2, "seeds": seeds, "record.metrics": False})
    run = train(cfg, out=out, progress=False)
    template = jax.vmap(lambda s: init_state(run.components, s))(jnp.arange(seeds))
    steps = list_checkpoints(out)
    x, y, _ = run.components.stream.metric_batch(0)
    rng = np.random.default_rng(0)
    for j, step in enumerate(steps):
        state, meta = load_checkpoint(out, step, template)
        state = jax.tree_util.tree_map(np.array, state)
        bias = state["variables"]["params"]["dense_1"]["bias"]
        for s in range(seeds):
            one = jax.tree_util.tree_map(lambda a: jnp.asarray(a[s]), state["variables"])
            dead = set(detect(run.components.model, one, (x, y)).frozen_units.get("hidden_1", []))
            live = [u for u in range(bias.shape[1]) if u not in dead]
            bias[s, rng.choice(live, size=1 + (j + s) % 4, replace=False)] = -1e4
        save_checkpoint(out, step, state, meta)
    return out


def _baseline_analyze(run_dir: Path, k: int) -> int:
    """The pre-vmap analyze loop (baseline only): per checkpoint, per seed, per manifold one
    one-shot normal_spectrum with the old auto rule. Returns the number of spectra."""
    from plasticity_dynamics.curvature import normal_spectrum
    from plasticity_dynamics.manifolds import detect
    from plasticity_dynamics.training import Config, build, list_checkpoints, load_checkpoint
    from plasticity_dynamics.training.engine import init_state

    config = Config.from_toml(run_dir / "config.toml")
    c = build(config)
    template = jax.vmap(lambda s: init_state(c, s))(jnp.asarray(config.seeds))

    def loss_fn(params, rest, x, y, mask):
        return masked_loss(c.model.apply({**rest, "params": params}, x, train=True).logits, y, mask,
                           c.stream.loss)[0]

    grad_fn = jax.jit(jax.grad(loss_fn))
    count = 0
    for step in list_checkpoints(run_dir):
        state, meta = load_checkpoint(run_dir, step, template)
        x, y, mask = (jnp.asarray(a) for a in c.stream.metric_batch(int(meta.get("task", 0))))
        for i in range(len(config.seeds)):
            variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a[i]), state["variables"])
            params = variables["params"]
            rest = {k_: v for k_, v in variables.items() if k_ != "params"}
            det = detect(c.model, variables, (x, y))
            g = grad_fn(params, rest, x, y, mask)
            for man in (det.frozen, det.cloned):
                if man.normal_dim == 0:
                    continue
                method = "dense" if man.normal_dim <= 1500 else "lanczos"
                spec = normal_spectrum(loss_fn, params, man, k=k, method=method, args=(rest, x, y, mask))
                float(man.leakage(g)), float(spec.eigenvalues[0])
                count += 1
    return count


def section_analyze(quick: bool) -> dict:
    from plasticity_dynamics.experiments.analyze import analyze

    checkpoints, seeds, k = (4, 2, 3) if quick else (20, 4, 3)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = _make_run(Path(tmp) / "run", checkpoints, seeds)
        with CompileLog() as before, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            spectra = _baseline_analyze(run_dir, k)
            base_s = time.perf_counter() - t0
        with CompileLog() as after:
            t0 = time.perf_counter()
            payload = analyze(run_dir, "all", k=k, progress=False)
            new_s = time.perf_counter() - t0
    dims = sorted({m["normal_dim"] for c in payload["checkpoints"] for s in c["seeds"]
                   for m in s["manifolds"].values()})
    return {"checkpoints": len(payload["checkpoints"]), "seeds": seeds, "k": k, "spectra": spectra,
            "distinct_normal_dims": len(dims),
            "baseline_s": base_s, "baseline_compiles": before.count(),
            "baseline_spectrum_compiles": sum("normal_spectrum_kernel" in n for n in before.names),
            "vmapped_s": new_s, "vmapped_compiles": after.count(),
            "vmapped_spectrum_compiles": sum("analyze_normal_spectra" in n for n in after.names),
            "speedup": base_s / new_s}


# ------------------------------------------------------------------------------------------ 2


def section_resnet(quick: bool, iters: int) -> dict:
    """Runs :func:`_resnet` in a fresh process (its ru_maxrss is the section's memory peak)."""
    cmd = [sys.executable, "-m", "benchmarks.curvature_fn", "--resnet-child",
           "--resnet-iters", str(iters)] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        errs = [line for line in proc.stderr.strip().splitlines() if "Error" in line]
        return {"error": errs[-1] if errs else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _resnet(quick: bool, iters: int, batch: int = 32, k: int = 3, preset: str | None = None,
            loop: str = "auto") -> dict:
    from jax.flatten_util import ravel_pytree

    import plasticity_dynamics as pdx

    preset = preset or ("small" if quick else "paper")
    model = pdx.models.create("resnet18", preset=preset, dropout=0.0)  # deterministic loss
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch))
    variables = model.init(jax.random.PRNGKey(0), x[:2])
    params = variables["params"]
    rest = {k_: v for k_, v in variables.items() if k_ != "params"}

    def loss(p, rest, x, y):
        logits = model.apply({**rest, "params": p}, x, train=True).logits
        return masked_loss(logits, y)[0]

    part = pdx.manifolds.unit_partition(model, variables)
    layer = next(name for name, lu in part.layers.items() if lu.activation)
    man = pdx.manifolds.frozen({layer: [0, 1, 2, 3]}, params, part)
    n = int(ravel_pytree(params)[0].size)
    grad = jax.jit(jax.grad(loss))
    hvp = jax.jit(lambda p, v, rest, x, y: pdx.curvature.hvp(lambda q: loss(q, rest, x, y), p, v))
    tg = timed(lambda: grad(params, rest, x, y), repeats=2)
    th = timed(lambda: hvp(params, params, rest, x, y), repeats=2)
    fn = pdx.curvature.normal_spectrum_fn(loss, k=k, method="lanczos", num_iters=iters, loop=loop)
    with CompileLog() as comp:
        t0 = time.perf_counter()
        data = jax.block_until_ready(fn(params, man, rest, x, y))
        total = time.perf_counter() - t0
    hvps = int(data.num_hvps)
    run_s = total - comp.seconds
    return {"preset": preset, "params": n, "normal_dim": man.normal_dim, "layer": layer, "batch": batch,
            "k": k, "num_iters": iters, "loop": loop, "backend": jax.default_backend(), "grad_s": tg["median_s"], "hvp_s": th["median_s"],
            "hvp_over_grad": th["median_s"] / tg["median_s"], "num_hvps": hvps,
            "spectrum_total_s": total, "spectrum_compile_s": comp.seconds, "spectrum_run_s": run_s,
            "run_over_hvps": run_s / (hvps * th["median_s"]),
            "total_over_hvps": total / (hvps * th["median_s"]),
            "peak_host_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "lambda_min": float(np.nanmin(np.asarray(data.eigenvalues))),
            "lambda_max": float(np.nanmax(np.asarray(data.eigenvalues))),
            "converged": bool(data.converged)}


# ------------------------------------------------------------------------------------------ 3


def _mlp_problem(widths, batch, seed):
    import plasticity_dynamics as pdx

    model = pdx.models.create("mlp", widths=tuple(widths[1:-1]), num_outputs=widths[-1],
                              norm="none", dropout=0.0)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch, widths[0])), jnp.float32)
    y = jnp.asarray(rng.integers(0, widths[-1], batch))
    variables = model.init(jax.random.PRNGKey(seed), x[:2])

    def loss(p, x, y):
        logits = model.apply({"params": p}, x).logits
        return masked_loss(logits, y)[0]

    return model, variables["params"], loss, x, y


def section_seeds(quick: bool) -> dict:
    import plasticity_dynamics as pdx

    seeds, k = 4, 3
    probs = [_mlp_problem([32, 160, 10], 128, s) for s in range(seeds)]
    loss = probs[0][2]  # one loss function; params and batches differ per seed
    mans = [pdx.manifolds.frozen({"hidden_0": list(range(2 + s))}, p[1]) for s, p in enumerate(probs)]
    fn = pdx.curvature.normal_spectrum_fn(loss, k=k, method="lanczos")
    stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)  # noqa: E731
    ps, ms = stack([p[1] for p in probs]), stack(mans)
    xs, ys = jnp.stack([p[3] for p in probs]), jnp.stack([p[4] for p in probs])
    batched = jax.jit(jax.vmap(fn))
    reps = 1 if quick else 3
    tv = timed(lambda: batched(ps, ms, xs, ys).eigenvalues, repeats=reps)
    tl = timed(lambda: [fn(p[1], m, p[3], p[4]).eigenvalues for p, m in zip(probs, mans)], repeats=reps)
    vb = np.asarray(batched(ps, ms, xs, ys).eigenvalues)
    vl = np.stack([np.asarray(fn(p[1], m, p[3], p[4]).eigenvalues) for p, m in zip(probs, mans)])
    rel = float(np.nanmax(np.abs(vb - vl)) / np.nanmax(np.abs(vl)))
    return {"seeds": seeds, "params": int(sum(a.size for a in jax.tree.leaves(probs[0][1]))), "k": k,
            "vmapped_s": tv["median_s"], "vmapped_first_s": tv["first_call_s"],
            "loop_s": tl["median_s"], "loop_first_s": tl["first_call_s"],
            "loop_over_vmapped": tl["median_s"] / tv["median_s"], "max_rel_diff": rel}


# ------------------------------------------------------------------------------------------ 4


def section_crossover(quick: bool) -> list:
    import plasticity_dynamics as pdx

    _, params, loss, x, y = _mlp_problem([4, 64, 3], 128, 0)
    rows = []
    for units in ([1, 4] if quick else [1, 2, 4, 8, 16]):  # normal_dim = units * (4 + 1 + 3)
        man = pdx.manifolds.frozen({"hidden_0": list(range(units))}, params)
        row = {"normal_dim": man.normal_dim}
        for method in ("dense", "lanczos"):
            m = pdx.curvature._spectrum._bucket(man.normal_dim, 10**9) if method == "dense" else None
            fn = pdx.curvature.normal_spectrum_fn(loss, k=3, method=method, num_iters=m)
            t = timed(lambda: fn(params, man, x, y).eigenvalues, repeats=1 if quick else 3)
            row[f"{method}_s"] = t["median_s"]
            row[f"{method}_hvps"] = int(fn(params, man, x, y).num_hvps)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------


def render(payload: dict) -> str:
    lines = []
    if "analyze" in payload:
        lines += ["analyze (20 checkpoints x 4 seeds, frozen sets change every checkpoint):",
                  table([payload["analyze"]], list(payload["analyze"]))]
    if "resnet" in payload:
        head = "ResNet-18 normal spectrum (CPU)"
        if "resnet_environment" in payload:  # measured in a separate run (``--only resnet``)
            head += "; measured apart: " + environment_line(payload["resnet_environment"]).rstrip(".")
        lines += [head + ":", table([payload["resnet"]], list(payload["resnet"]))]
    if "seeds" in payload:
        lines += ["seeds: vmapped vs Python loop:", table([payload["seeds"]], list(payload["seeds"]))]
    if "crossover" in payload:
        rows = payload["crossover"]
        lines += ["auto crossover (warm seconds):", table(rows, list(rows[0]))]
    return "\n\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.curvature_fn", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--only", default="analyze,resnet,seeds,crossover", help="comma-separated sections")
    ap.add_argument("--resnet-iters", type=int, default=20, help="Lanczos depth of the ResNet-18 spectrum")
    ap.add_argument("--resnet-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.resnet_child:
        print(json.dumps(_resnet(args.quick, args.resnet_iters)))
        return {}
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    payload = {"benchmark": "curvature_fn", "quick": args.quick, "environment": environment()}
    for name in only:
        t0 = time.perf_counter()
        if name == "analyze":
            payload["analyze"] = section_analyze(args.quick)
        elif name == "resnet":
            payload["resnet"] = section_resnet(args.quick, args.resnet_iters)
        elif name == "seeds":
            payload["seeds"] = section_seeds(args.quick)
        elif name == "crossover":
            payload["crossover"] = section_crossover(args.quick)
        print(f"[{name}: {time.perf_counter() - t0:.1f} s]", flush=True)
    print(render(payload))
    print(environment_line(payload["environment"]))
    out = write_json(args.out or default_out("curvature_fn", args.quick), payload)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()

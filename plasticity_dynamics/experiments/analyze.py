"""Analyse a run directory: LoP manifolds, their normal curvature and gradient leakage along
the recorded trajectory (``plasticity-dynamics analyze RUN_DIR``).

For every selected checkpoint and seed, on the fixed metric batch of the checkpoint's task:

1. ``pdx.manifolds.detect``: frozen units (|f'(z)| = 0 on every sample, Theorem 2.1) and clone
   clusters (activation cosine > 0.9999), with their evidence;
2. for each non-empty manifold (frozen M_F, cloned M_D): the extreme eigenvalues of the loss
   Hessian restricted to its normal space, and the stable / unstable / saddle / degenerate
   verdict (``pdx.curvature.normal_spectrum``; PAPER.md 1.6, Definition A.2);
3. the leakage ‖P_N g‖ / ‖g‖ of the loss gradient and the distance of the point from the
   manifold's reference leaf (0 at detection: the manifold is built at the point).

The loss is the masked training loss in train mode with dropout off (the gradient the optimiser
sees, without its noise). Writes ``RUN_DIR/manifolds.json`` and ``RUN_DIR/figures/manifolds_*``.
The curvature kernels are compiled once per manifold shape and reused across checkpoints
(``normal_spectrum`` caches on the loss function and the manifold structure).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError


def select_steps(available: list[int], spec: str) -> list[int]:
    """``all`` | ``last`` | comma-separated steps (each must be a checkpoint)."""
    if not available:
        raise InputError("the run directory has no checkpoints to analyse")
    if spec == "all":
        return list(available)
    if spec == "last":
        return [available[-1]]
    try:
        wanted = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--steps {spec!r} must be all, last or comma-separated integers") from None
    missing = [s for s in wanted if s not in available]
    if missing or not wanted:
        raise InputError(f"--steps {spec!r}: no checkpoint at {missing or spec}; checkpoints: "
                         f"{', '.join(map(str, available))}")
    return wanted


def analyze(run_dir: str | Path, steps: str = "all", *, k: int = 3, progress: bool = True) -> dict:
    """Detect manifolds and their normal spectra at the checkpoints of ``run_dir``; returns the
    ``manifolds.json`` payload (also written to disk, atomically)."""
    from ..curvature import normal_spectrum
    from ..manifolds import detect
    from ..models import create
    from ..training import Config, build, list_checkpoints, load_checkpoint
    from ..training.engine import init_state, progress_bar
    from ..training.rundir import atomic_write_json
    from ..training.step import masked_loss

    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise InputError(f"RUN_DIR {str(run_dir)!r} is not a run directory (no config.toml)")
    chosen = select_steps(list_checkpoints(run_dir), steps)
    config = Config.from_toml(run_dir / "config.toml")
    c = build(config)
    model = c.model
    no_drop = {k_: 0.0 for k_ in ("dropout", "attention_dropout") if model.options.get(k_)}
    plain = create(model.name, **{**model.options, **no_drop}) if no_drop else model
    template = jax.vmap(lambda s: init_state(c, s))(jnp.asarray(config.seeds))
    kind = c.stream.loss

    def loss_fn(params, rest, x, y, mask):
        out = plain.apply({**rest, "params": params}, x, train=True)
        return masked_loss(out.logits, y, mask, kind)[0]

    grad_fn = jax.jit(jax.grad(loss_fn))
    records = []
    bar = progress_bar(len(chosen) * len(config.seeds), progress, desc="analyze", unit="ckpt·seed")
    t0 = time.perf_counter()
    for step in chosen:
        state, meta = load_checkpoint(run_dir, step, template)
        task = int(meta.get("task", 0))
        x, y, mask = (jnp.asarray(a) for a in c.stream.metric_batch(task))
        entry = {"step": step, "task": task, "seeds": []}
        for i, seed in enumerate(config.seeds):
            variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a[i]), state["variables"])
            params = variables["params"]
            rest = {k_: v for k_, v in variables.items() if k_ != "params"}
            det = detect(model, variables, (x, y))
            g = grad_fn(params, rest, x, y, mask)
            seed_entry = {"seed": seed, "detection": det.summary(), "manifolds": {}}
            for name, man in (("frozen", det.frozen), ("cloned", det.cloned)):
                if man.normal_dim == 0:
                    continue
                spec = normal_spectrum(loss_fn, params, man, k=k, args=(rest, x, y, mask))
                seed_entry["manifolds"][name] = {
                    "normal_dim": int(man.normal_dim), "verdict": spec.verdict, "method": spec.method,
                    "eigenvalues": [float(v) for v in spec.eigenvalues],
                    "lambda_min": float(np.min(spec.eigenvalues)), "lambda_max": float(np.max(spec.eigenvalues)),
                    "residuals": [float(r) for r in spec.residuals], "tolerance": float(spec.tolerance),
                    "num_hvps": int(spec.num_hvps), "wall_time_s": float(spec.wall_time),
                    "leakage": float(man.leakage(g)), "distance": float(man.distance(params)),
                }
            entry["seeds"].append(seed_entry)
            bar.update(1)
        records.append(entry)
    bar.close()
    payload = {"run_dir": str(run_dir), "k": k, "wall_time_s": round(time.perf_counter() - t0, 2),
               "loss": "masked training loss, train mode, dropout off", "checkpoints": records}
    atomic_write_json(run_dir / "manifolds.json", payload)
    plot_analysis(payload, run_dir / "figures")
    return payload


def plot_analysis(payload: dict, out_dir: Path) -> list:
    """Extreme normal eigenvalues (markers: verdict) and leakage against step, per manifold."""
    import matplotlib.pyplot as plt

    from ..plotting.run import save_figure

    marker = {"stable": "o", "unstable": "v", "saddle": "X", "degenerate": "s"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for j, name in enumerate(("frozen", "cloned")):
        ax = axes[j]
        for entry in payload["checkpoints"]:
            for s in entry["seeds"]:
                m = s["manifolds"].get(name)
                if m is None:
                    continue
                for val, col in ((m["lambda_min"], "C0"), (m["lambda_max"], "C3")):
                    ax.scatter(entry["step"], val, marker=marker[m["verdict"]], color=col, s=25)
                axes[2].scatter(entry["step"], max(m["leakage"], 1e-12), color=f"C{j}", marker=marker[m["verdict"]],
                                s=20, label=name if entry is payload["checkpoints"][0] and s is entry["seeds"][0] else None)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_title(f"{name} manifold: λ_min (blue), λ_max (red)\nmarker: o stable, v unstable, X saddle, s degenerate",
                     fontsize=8)
        ax.set_xlabel("step")
        ax.set_yscale("symlog", linthresh=1e-6)
    axes[2].set_yscale("log")
    axes[2].set_title("gradient leakage ‖P_N g‖/‖g‖", fontsize=9)
    axes[2].set_xlabel("step")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / "manifolds_curvature")

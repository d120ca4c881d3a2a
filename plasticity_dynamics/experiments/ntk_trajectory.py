"""eNTK over a continual run: effective rank and the normal eNTK of the frozen manifold beside
the dead fraction, task by task (new; C-CHAIN, ICML 2025, ties plasticity loss to a falling NTK
rank).

Protocol: the continual MLP of the ``continual`` figure (Adam, class split with head zeroing;
``medium``: the 60-task ``random_subsets`` stream), trained once with a checkpoint at the end of
every task (``medium``: of every sixth). At each checkpoint and seed, on the first
``ntk_batch`` examples of the task's fixed metric batch (eval mode, all 10 logits):

- the eNTK ``K = J J^T`` (``pdx.curvature.ntk_spectrum``, dense: every eigenvalue), its
  effective rank (exp entropy of the normalised eigenvalues) and ``tr K``;
- the frozen units found by ``pdx.manifolds.detect`` on the metric batch and the normal eNTK
  ``J P_N J^T`` of their manifold M_F: its trace and largest eigenvalue, i.e. how far the
  outputs could still move by changing the frozen units' parameters (0 for exactly dead
  ReLU units whose outgoing weights see no gradient... and whose incoming weights cannot move
  the outputs either: the normal eNTK of a dead unit is exactly 0 to first order);
- the dead fraction (``dead_frac@1e-07,0.95``, mean over the hidden layers) from the run's
  metrics at the same step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .continual import DEAD, _SCALE, family_config, layer_mean
from .registry import register

_NTK_BATCH = {"smoke": 24, "small": 48, "medium": 48, "paper": 48}


@register("ntk-trajectory", "new (eNTK rank over tasks)",
          "Continual MLP: eNTK effective rank and the normal eNTK of the frozen manifold at each task end, "
          "beside the dead fraction.", scales=("smoke", "small", "medium", "paper"))
def run_ntk_trajectory(scale: str, out_dir: Path, data_dir=None, progress=True) -> dict:
    import tempfile

    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt

    from ..curvature import ntk_spectrum
    from ..manifolds import detect
    from ..plotting.run import save_figure
    from ..training import list_checkpoints, load_checkpoint, train
    from ..training.engine import init_state

    s = _SCALE[scale]
    every_task = 6 if scale == "medium" else 1
    cfg = family_config("mlp", scale, data_dir=data_dir).with_overrides(
        {"record.checkpoint_every": s["steps"] * every_task})
    with tempfile.TemporaryDirectory() as tmp:
        run = train(cfg, out=Path(tmp) / "run", progress=progress)
        c = run.components
        model = c.model
        template = jax.vmap(lambda sd: init_state(c, sd))(jnp.asarray(cfg.seeds))

        def logits(params, batch):  # eval mode; the non-params variables ride in the batch
            rest, x = batch
            return model.apply({**rest, "params": params}, x, train=False).logits

        rows = []
        for step in list_checkpoints(run.run_dir):
            state, meta = load_checkpoint(run.run_dir, step, template)
            task = int(meta.get("task", 0))
            x, y, _mask = c.stream.metric_batch(task)
            xs = jnp.asarray(x[:_NTK_BATCH[scale]])
            for i, seed in enumerate(cfg.seeds):
                variables = jax.tree_util.tree_map(lambda a: a[i], state["variables"])
                rest = {k: v for k, v in variables.items() if k != "params"}
                full = ntk_spectrum(logits, variables["params"], (rest, xs), method="dense")
                det = detect(model, variables, (x, y))
                row = {"step": int(step), "task": task, "seed": int(seed),
                       "effective_rank": full.effective_rank, "trace": full.trace,
                       "lambda_max": float(full.eigenvalues[0]), "size": full.size,
                       "frozen_normal_dim": int(det.frozen.normal_dim),
                       "normal_trace": 0.0, "normal_lambda_max": 0.0}
                if det.frozen.normal_dim > 0:
                    nt = ntk_spectrum(logits, variables["params"], (rest, xs), manifold=det.frozen,
                                      method="dense")
                    row["normal_trace"], row["normal_lambda_max"] = nt.trace, float(nt.eigenvalues[0])
                rows.append(row)
        dst, dead = layer_mean(run.table, DEAD)
    for r in rows:
        j = int(np.argmin(np.abs(dst - r["step"])))
        r["dead_fraction"] = float(dead[cfg.seeds.index(r["seed"]), j]) if dead.size else float("nan")

    tasks = sorted({r["task"] for r in rows})

    def per_task(key):
        return np.array([[r[key] for r in rows if r["task"] == t] for t in tasks])  # (tasks, seeds)

    erank, dead_f, ntr, tr = (per_task(k) for k in ("effective_rank", "dead_fraction", "normal_trace", "trace"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    t1 = np.asarray(tasks) + 1
    axes[0].plot(t1, erank.mean(1), "o-", color="C0", label="eNTK effective rank")
    axes[0].fill_between(t1, erank.min(1), erank.max(1), color="C0", alpha=0.2)
    axes[0].set_ylabel("effective rank")
    ax2 = axes[0].twinx()
    ax2.plot(t1, dead_f.mean(1), "s--", color="C3", label="dead fraction")
    ax2.set_ylabel("dead fraction")
    axes[0].set_title(f"eNTK effective rank (batch {rows[0]['size']} outputs) and dead fraction", fontsize=9)
    axes[1].semilogy(t1, np.maximum(tr.mean(1), 1e-30), "o-", label="tr J Jᵀ")
    axes[1].semilogy(t1, np.maximum(ntr.mean(1), 1e-30), "s-", label="tr J P_N Jᵀ (frozen units)")
    axes[1].set_title("eNTK trace and the frozen manifold's normal eNTK", fontsize=9)
    axes[1].legend(fontsize=7)
    axes[2].scatter(dead_f.ravel(), erank.ravel(), c=np.repeat(t1, dead_f.shape[1]), cmap="viridis")
    axes[2].set_xlabel("dead fraction")
    axes[2].set_ylabel("eNTK effective rank")
    axes[2].set_title("rank against dead fraction (colour: task)", fontsize=9)
    for ax in axes[:2]:
        ax.set_xlabel("task")
    fig.tight_layout()
    save_figure(fig, out_dir / "figures" / "ntk_trajectory")
    first, last = erank[0].mean(), erank[-1].mean()
    checks = [
        ("eNTK effective rank is finite and within [1, B·C] at every task end",
         f"{erank.min():.1f} … {erank.max():.1f} of {rows[0]['size']}",
         bool(np.all(np.isfinite(erank)) and erank.min() >= 1 and erank.max() <= rows[0]["size"])),
        ("normal eNTK of the frozen manifold is at most the whole eNTK (J P_N Jᵀ ≼ J Jᵀ)",
         f"max ratio {np.max(ntr / np.maximum(tr, 1e-30)):.3g}", bool(np.all(ntr <= tr * (1 + 1e-4)))),
        ("eNTK effective rank falls from the first to the last task (C-CHAIN's trend)",
         f"{first:.2f} → {last:.2f}", bool(last < first)),
    ]
    corr = float(np.corrcoef(dead_f.ravel(), erank.ravel())[0, 1]) if np.ptp(dead_f) > 0 else float("nan")
    results = {"rows": rows, "tasks": tasks, "effective_rank_by_task": erank.mean(1).tolist(),
               "dead_fraction_by_task": dead_f.mean(1).tolist(), "normal_trace_by_task": ntr.mean(1).tolist(),
               "trace_by_task": tr.mean(1).tolist(), "corr_dead_rank": corr, "ntk_batch": _NTK_BATCH[scale]}
    return {"results": results, "checks": checks,
            "notes": [f"eNTK on the first {_NTK_BATCH[scale]} examples of each task's metric batch × 10 logits "
                      "(dense: every eigenvalue); effective rank = exp entropy of the normalised eigenvalues.",
                      "Normal eNTK of M_F: exactly dead units (f' = 0 on every sample) contribute nothing to "
                      "first order, so its trace measures the frozen-but-not-dead (saturated) part.",
                      f"Correlation of dead fraction and eNTK effective rank over (task, seed): {corr:.3f}."]}

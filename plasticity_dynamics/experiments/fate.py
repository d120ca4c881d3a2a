"""Unit fate across tasks (new, beyond the paper): which units die, saturate or clone, when,
and whether any come back. Its scales are the continual MLP's (``continual.family_config``), so
``medium`` is the 60-task ``random_subsets`` stream.

Trains the continual MLP (no normalisation, as Fig 3.1) with a checkpoint at every record,
then classifies every unit of every hidden layer at every checkpoint
(``pdx.metrics.unit_states``: active / dormant / saturated / frozen / dead, plus clone cluster)
on the task's fixed metric batch, and summarises transitions, dwell times and revivals with
``pdx.metrics.track_fate``. Figure: one raster per layer (units × records, colour = state),
task switches dotted.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..fileio import jsonable
from .continual import family_config, stream_note
from .registry import register


def unit_fates(run_dir: Path, seed_index: int = 0) -> dict:
    """Per layer: states (records, units), clusters (records, units), steps, tasks, summary."""
    from ..metrics import track_fate, unit_states
    from ..training import Config, build, list_checkpoints, load_checkpoint
    from ..training.engine import init_state
    from ..training.step import masked_loss

    config = Config.from_toml(run_dir / "config.toml")
    c = build(config)
    model = c.model
    template = jax.vmap(lambda s: init_state(c, s))(jnp.asarray(config.seeds))

    @jax.jit
    def signals(variables, x, y, mask):
        probes0 = jax.tree_util.tree_map(jnp.zeros_like, model.apply(variables, x).activations)

        def loss(probes):
            out = model.apply(variables, x, probes=probes)
            return masked_loss(out.logits, y, mask, c.stream.loss)[0], out

        g, out = jax.grad(loss, has_aux=True)(probes0)
        return out.activations, out.preactivations, g

    layers = [k for k in model.layer_kinds]
    per = {layer: {"state": [], "cluster": []} for layer in layers}
    steps, tasks = [], []
    for step in list_checkpoints(run_dir):
        state, meta = load_checkpoint(run_dir, step, template)
        variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a[seed_index]), state["variables"])
        x, y, mask = (jnp.asarray(a) for a in c.stream.metric_batch(int(meta["task"])))
        h, z, g = signals(variables, x, y, mask)
        for layer in layers:
            flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
            us = unit_states(flat(h[layer]), flat(g[layer]), flat(z[layer]) if layer in z else None,
                             activation=model.activation)
            per[layer]["state"].append(np.asarray(us.state))
            per[layer]["cluster"].append(np.asarray(us.cluster))
        steps.append(step)
        tasks.append(int(meta["task"]))
    out = {"steps": np.asarray(steps), "tasks": np.asarray(tasks)}
    for layer in layers:
        st, cl = np.stack(per[layer]["state"]), np.stack(per[layer]["cluster"])
        out[layer] = {"state": st, "cluster": cl, "summary": track_fate(st, tasks=out["tasks"], clusters=cl)}
    return out


@register("unit-fate", "new (unit fate rasters)",
          "Continual MLP without normalisation: the state of every hidden unit at every record "
          "(active, dormant, saturated, frozen, dead), transitions and revivals across task switches.",
          scales=("smoke", "small", "medium", "paper"))
def run_unit_fate(scale: str, out_dir: Path, data_dir=None, progress=True) -> dict:
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from ..metrics.fate import STATES
    from ..plotting.run import save_figure
    from ..training import train

    cfg = family_config("mlp", scale, data_dir=data_dir)
    cfg = cfg.with_overrides({"record.checkpoint_every": cfg.record.every, "record.metrics": False})
    run_dir = Path(out_dir) / "run"
    train(cfg, out=run_dir, force=True, progress=progress)
    fates = unit_fates(run_dir)
    layers = [k for k in fates if k not in ("steps", "tasks")]
    cmap = ListedColormap(["#2ca02c", "#bcbd22", "#ff7f0e", "#9467bd", "#d62728"])
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6), squeeze=False)
    results, checks = {}, []
    switches = [i for i in range(1, len(fates["tasks"])) if fates["tasks"][i] != fates["tasks"][i - 1]]
    for ax, layer in zip(axes[0], layers):
        st = fates[layer]["state"]
        im = ax.imshow(st.T, aspect="auto", interpolation="nearest", cmap=cmap, vmin=-0.5, vmax=len(STATES) - 0.5)
        for sw in switches:
            ax.axvline(sw - 0.5, color="k", linestyle=":", linewidth=0.8)
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("record")
        summ = fates[layer]["summary"]
        dead_first = float(np.mean(st[0] == STATES.index("dead")))
        dead_last = float(np.mean(st[-1] == STATES.index("dead")))
        results[layer] = {"dead_first": dead_first, "dead_last": dead_last,
                          "summary": jsonable(summ)}
    axes[0][0].set_ylabel("unit")
    cbar = fig.colorbar(im, ax=axes[0].tolist(), ticks=range(len(STATES)))
    cbar.ax.set_yticklabels(STATES, fontsize=7)
    fig.suptitle("Unit fate across tasks (dotted: task switch)", fontsize=10)
    save_figure(fig, out_dir / "figures" / "unit_fate")
    total_first = np.mean([r["dead_first"] for r in results.values()])
    total_last = np.mean([r["dead_last"] for r in results.values()])
    checks.append(("dead units accumulate over tasks (Fig 3.1's mechanism, unit by unit)",
                   f"{total_first:.3f} → {total_last:.3f}", total_last > total_first))
    return {"results": results, "checks": checks,
            "notes": [stream_note(scale) + " MLP only.",
                      "States from pdx.metrics.unit_states with the paper's thresholds; seed 0; "
                      f"run directory with all checkpoints: {run_dir}.",
                      "'saturated' is the paper's gradient criterion |g| / mean|h| < 1e-4 on 99 % of samples: it "
                      "also fires for every unit when the metric batch is fitted (loss ≈ 0), as at the end of "
                      "an easy two-class task; read it together with the loss."]}

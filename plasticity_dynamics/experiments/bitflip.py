"""Bit flipping with a switch from SGD to continual backprop (Fig B.1, B.2). PAPER.md 5.7.

Online regression, batch 1: m input bits (f of them flipping, one inverted every T steps)
plus a bias bit, targets from a fixed net of LTUs; a one-hidden-layer ReLU learner trained
by SGD (lr 0.01, MSE); continual backprop (CBP) switches on at a fraction of the stream
(0.25, 0.5, 0.75 in v2's Fig B.1). Metrics every ``bin`` samples on a fixed random batch of
128 inputs; duplicate fraction at cosine 0.98 and saturation at (0.05, 80 %), as the paper's
bit-flipping runs. Phase bars (B.2) average the last ``tail`` steps of each phase.

Scales: ``paper`` = 5M samples, T = 10,000, widths 5/10/50/100, 5 seeds; ``small`` = 400k
samples with T = 1,000 (same number of flips per sample as 4M at T = 10,000 would give
a tenth of), widths 5/10/50/100, 3 seeds; ``smoke`` = 40k samples, T = 500, width 50.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..training import Config, train
from .continual import layer_mean, online
from .registry import register

DUP = "duplicate_frac@0.98"
RANK = "effective_rank"

_SCALE = {
    "smoke": dict(steps=40_000, T=500, widths=(50,), seeds=2, bin=1000, switches=(0.5,), tail=5_000),
    "small": dict(steps=400_000, T=1_000, widths=(5, 10, 50, 100), seeds=3, bin=2000, switches=(0.25, 0.5, 0.75),
                  tail=40_000),
    "paper": dict(steps=5_000_000, T=10_000, widths=(5, 10, 50, 100), seeds=5, bin=1000,
                  switches=(0.25, 0.5, 0.75), tail=100_000),
}


def bitflip_config(scale: str, width: int, switch: float | None, *, cbp_rate: float = 1e-4) -> Config:
    """SGD on the bit-flipping stream; CBP from ``switch`` × steps on (None: SGD throughout)."""
    s = _SCALE[scale]
    over = {
        "model.name": "mlp", "model.preset": None, "model.widths": [width], "model.activation": "relu",
        "model.norm": "none", "model.dropout": 0.0, "data.name": "bitflip",
        "tasks.kind": "bitflip", "tasks.metric_batch_size": 128,
        "tasks.T": s["T"], "tasks.num_steps": s["steps"], "tasks.steps_per_task": s["steps"],
        "train.steps_per_task": s["steps"], "train.batch_size": 1,
        "optim.name": "sgd", "optim.lr": 0.01, "record.every": s["bin"], "seeds": s["seeds"],
        "record.duplicate_thresholds": [0.98], "record.sat_tau": 0.05, "record.sat_frac": 0.8,
        "record.max_rows": 128,
    }
    if switch is not None:
        over.update({"intervention.name": "cbp", "intervention.start_step": int(switch * s["steps"]),
                     "intervention.replacement_rate": cbp_rate, "intervention.maturity_threshold": 100,
                     "intervention.decay": 0.99})
    return Config().with_overrides(over)


def _phase_mean(steps, vals, lo, hi):
    sel = (steps > lo) & (steps <= hi)
    return float(vals[:, sel].mean()) if sel.any() else float("nan")


@register("bitflip", "Fig B.1",
          "Bit flipping: online loss and effective rank of an SGD learner, switching to continual backprop at "
          "25 / 50 / 75 % of the stream.")
def run_bitflip(scale: str, out_dir: Path, data_dir=None, progress=True) -> dict:
    import matplotlib.pyplot as plt

    from ..plotting.run import save_figure

    s = _SCALE[scale]
    width = max(s["widths"])
    fig, axes = plt.subplots(1, len(s["switches"]), figsize=(4.6 * len(s["switches"]), 3.4), squeeze=False)
    results, checks = {}, []
    for i, frac in enumerate(s["switches"]):
        run = train(bitflip_config(scale, width, frac), progress=progress)
        sl, loss = online(run.table, "loss")
        sr, rank = layer_mean(run.table, RANK)
        sd, dup = layer_mean(run.table, DUP)
        ax = axes[0][i]
        ax.plot(sl, loss.mean(0), color="C3", label="online loss")
        ax.fill_between(sl, loss.mean(0) - loss.std(0), loss.mean(0) + loss.std(0), color="C3", alpha=0.2)
        ax.set_xlabel("sample")
        ax.set_ylabel("online MSE")
        ax2 = ax.twinx()
        ax2.plot(sr, rank.mean(0), color="C2", label="effective rank")
        ax2.set_ylabel("effective rank")
        ax.axvline(frac * s["steps"], color="k", linestyle=":")
        ax.set_title(f"width {width}, switch to CBP at {frac:.2f}", fontsize=9)
        cut, end = frac * s["steps"], s["steps"]
        tail = min(s["tail"], int(cut))
        r = {
            "loss_sgd_tail": _phase_mean(sl, loss, cut - tail, cut), "loss_cbp_tail": _phase_mean(sl, loss, end - tail, end),
            "rank_sgd_tail": _phase_mean(sr, rank, cut - tail, cut), "rank_cbp_tail": _phase_mean(sr, rank, end - tail, end),
            "dup_sgd_tail": _phase_mean(sd, dup, cut - tail, cut), "dup_cbp_tail": _phase_mean(sd, dup, end - tail, end),
            "wall_time_s": run.summary["wall_time_s"],
        }
        results[f"switch_{frac}"] = r
        checks.append((f"switch {frac}: CBP lowers the online loss", f"{r['loss_sgd_tail']:.3f} → {r['loss_cbp_tail']:.3f}",
                       r["loss_cbp_tail"] < r["loss_sgd_tail"]))
        checks.append((f"switch {frac}: CBP raises the effective rank", f"{r['rank_sgd_tail']:.2f} → {r['rank_cbp_tail']:.2f}",
                       r["rank_cbp_tail"] > r["rank_sgd_tail"]))
        checks.append((f"switch {frac}: CBP lowers the duplicate fraction", f"{r['dup_sgd_tail']:.3f} → {r['dup_cbp_tail']:.3f}",
                       r["dup_cbp_tail"] <= r["dup_sgd_tail"]))
    fig.suptitle("Fig B.1: bit flipping, SGD then continual backprop (dotted: switch)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_dir / "figures" / "figB_1")
    notes = [f"{s['steps']} samples, T = {s['T']}, learner width {width}, {s['seeds']} seeds; tails of "
             f"{s['tail']} samples. Learner init is PyTorch-default uniform (paper: Kaiming-uniform, zero bias)."]
    return {"results": results, "checks": checks, "notes": notes}


@register("bitflip-widths", "Fig B.2",
          "Bit flipping: effective rank, duplicate fraction and loss at the end of the SGD and CBP phases, "
          "over learner widths.")
def run_bitflip_widths(scale: str, out_dir: Path, data_dir=None, progress=True) -> dict:
    import matplotlib.pyplot as plt

    from ..plotting.run import save_figure

    from ..sweep import expand, sweep_runs

    s = _SCALE[scale]
    results, checks = {}, []
    # a width sweep: one program per width (widths change shapes), run by the sweep machinery
    spec = expand(bitflip_config(scale, s["widths"][0], 0.5), {"model.widths": [[w] for w in s["widths"]]})
    for w, run in zip(s["widths"], sweep_runs(spec, progress=progress)):
        sl, loss = online(run.table, "loss")
        sr, rank = layer_mean(run.table, RANK)
        sd, dup = layer_mean(run.table, DUP)
        cut, end = 0.5 * s["steps"], s["steps"]
        tail = min(s["tail"], int(cut))
        results[str(w)] = {
            "SGD": [_phase_mean(sr, rank, cut - tail, cut), _phase_mean(sd, dup, cut - tail, cut),
                    _phase_mean(sl, loss, cut - tail, cut)],
            "CBP": [_phase_mean(sr, rank, end - tail, end), _phase_mean(sd, dup, end - tail, end),
                    _phase_mean(sl, loss, end - tail, end)],
        }
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    xs = np.arange(len(s["widths"]))
    for j, name in enumerate(("effective rank", "duplicate fraction", "online loss")):
        for k, phase in enumerate(("SGD", "CBP")):
            axes[j].bar(xs + 0.38 * k, [results[str(w)][phase][j] for w in s["widths"]], 0.38, label=phase)
        axes[j].set_xticks(xs + 0.19, [str(w) for w in s["widths"]])
        axes[j].set_xlabel("learner width")
        axes[j].set_title(name, fontsize=9)
    axes[0].legend()
    fig.suptitle("Fig B.2: end of the SGD phase vs end of the CBP phase", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_dir / "figures" / "figB_2")
    wide, narrow = str(max(s["widths"])), str(min(s["widths"]))
    checks.append((f"width {wide}: CBP lowers the duplicate fraction",
                   f"{results[wide]['SGD'][1]:.3f} → {results[wide]['CBP'][1]:.3f}",
                   results[wide]["CBP"][1] <= results[wide]["SGD"][1]))
    if wide != narrow:
        dup_n, dup_w = results[narrow]["SGD"][1], results[wide]["SGD"][1]
        checks.append(("under SGD the duplicate fraction grows with width",
                       f"width {narrow}: {dup_n:.3f}, width {wide}: {dup_w:.3f}", dup_w > dup_n))
        gap = {w: results[w]["SGD"][2] - results[w]["CBP"][2] for w in (narrow, wide)}
        checks.append(("the SGD − CBP loss gap grows with width",
                       f"width {narrow}: {gap[narrow]:+.3f}, width {wide}: {gap[wide]:+.3f}", gap[wide] > gap[narrow]))
    return {"results": results, "checks": checks, "notes": ["Each bar: mean over seeds of the phase's last samples."]}

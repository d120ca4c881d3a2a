"""Continual-learning figures: symptoms over tasks (Fig 3.1, 3.2, B.4–B.6) and the effect of
normalisation (Fig 4.1, B.3). PAPER.md 5.3.

Protocol: a class-split stream (k classes per task, loss masked to the task's classes, output
layer zeroed at each task start, optimiser state carried over), Adam (1e-3; 1e-4 for the ViT at
paper scale), batch 128, metrics on a fixed class-balanced batch of the current task. Every
configuration trains all its seeds in one compiled program (``pdx.train``).

Scales: ``paper`` = Tiny ImageNet 40 × 5 classes, the paper's models, 500 steps per task
(the "steps" reading of PAPER.md 5.3; pass ``epochs`` through the config for the other reading),
5 seeds. ``small`` = MLP on mnist1d, CNN/ResNet-18/ViT on scikit-learn digits (8×8), 5 × 2-class
tasks, CPU presets. ``smoke`` = MLP only, a few dozen steps per task.
``medium`` = the long horizon on the small data: a 10-class data set split into 2-class tasks
gives only 5, so the stream is ``random_subsets`` (each task 2 classes drawn at random, fresh
head mask, head zeroed; the Continual-ImageNet protocol of Dohare et al., binary tasks from
random class pairs) for ``MEDIUM_TASKS`` tasks; everything else is the small preset (steps,
batch, Adam lr, metric batch); 2 seeds; MLP and CNN only, the families
that fit 30 minutes on 2 idle cores (see ``_SCALE["medium"]``). Normalisation at medium scale trains the MLP only (5 variants).
Nothing here was tuned to make a trend appear.

Model-level numbers are means over the monitored layers of a family (for the ViT's duplicate
and saturated fractions: the residual-stream block outputs ``block_i``, as the paper).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records import as_table

from ..training import Config, train
from ..plotting.run import band as _band
from .registry import register

DEAD = "dead_frac@1e-07,0.95"
DUP = "duplicate_frac@0.95"
SAT = "saturated_frac@0.0001,0.99"
RANK = "effective_rank"

_SCALE = {
    "smoke": dict(families=("mlp",), steps=100, tasks=4, seeds=2, every=50, mbs=100, lr=1e-2, batch=64),
    "small": dict(families=("mlp", "cnn", "resnet18", "vit"), steps=300, tasks=5, seeds=3, every=50, mbs=300,
                  lr=1e-2, batch=64),
    "paper": dict(families=("mlp", "cnn", "resnet18", "vit"), steps=500, tasks=40, seeds=5, every=100, mbs=500,
                  lr=1e-3, batch=128),
}
# Medium-scale time, measured end to end on the idle 2-core machine (2026-12-01/02, after conv models
# train in straight-line blocks on CPU): continual 224 s with 2 seeds per family (104 s when the CNN
# ran 1 seed, a choice made from an estimate before that change), normalisation 92 s, unit fate 20 s.
MEDIUM_TASKS = 60
_SCALE["medium"] = dict(_SCALE["small"], families=("mlp", "cnn"), tasks=MEDIUM_TASKS, seeds=2, every=100,
                        stream="random_subsets")

# Normalisation trains 5 variants per family: 2 seeds at small scale (measured 19 min on 2 cores);
# at medium scale the MLP only (60 tasks × 5 variants).
_NORMALISATION_SEEDS = {"small": 2, "medium": 2}
_NORMALISATION_FAMILIES = {"medium": ("mlp",)}


def family_config(family: str, scale: str, *, norm: str = "none", affine: bool = True, dropout: float = 0.0,
                  data_dir: str | None = None, seeds: int | None = None) -> Config:
    """The continual-learning config of one family at one scale (``seeds`` overrides the scale's)."""
    s = _SCALE[scale]
    if scale == "paper":
        data, preset, cpt, lr = "tinyimagenet", "paper", 5, (1e-4 if family == "vit" else 1e-3)
    else:
        data, preset, cpt, lr = ("mnist1d" if family == "mlp" else "digits"), "small", 2, s["lr"]
        if family == "vit":
            lr = s["lr"] / 10
    over = {
        "model.name": family, "model.preset": preset, "model.norm": norm, "model.norm_affine": affine,
        "model.dropout": dropout, "data.name": data, "data.data_dir": data_dir,
        "tasks.kind": s.get("stream", "class_split"), "tasks.classes_per_task": cpt, "tasks.num_tasks": s["tasks"],
        "tasks.metric_batch_size": s["mbs"], "train.steps_per_task": s["steps"], "train.batch_size": s["batch"],
        "optim.name": "adam", "optim.lr": lr, "record.every": s["every"], "seeds": seeds or s["seeds"],
    }
    if family == "vit":
        over["model.attention_dropout"] = dropout
    return Config().with_overrides(over)


def layer_mean(rows, metric: str, layers=None):
    """steps (R,), values (seeds, R): mean over the selected layers of ``metric``.
    ``rows``: a run's :class:`pdx.records.MetricsTable` or its row tuples."""
    t = as_table(rows)
    mask = t.select(metric) & (t["layer"] != "")
    if layers is not None:
        mask &= np.isin(t["layer"], list(layers))
    return _grid(t, mask)


def online(rows, metric: str):
    """steps, (seeds, R) of a model-level metric (training loss / online accuracy)."""
    t = as_table(rows)
    return _grid(t, t.select(metric, ""))


def _grid(t, mask):
    """(steps (R,), (seeds, R) mean of the selected values per seed and step)."""
    seeds, si = np.unique(t["seed"][mask], return_inverse=True)
    steps, ti = np.unique(t["step"][mask], return_inverse=True)
    total = np.zeros((len(seeds), len(steps)))
    count = np.zeros((len(seeds), len(steps)))
    np.add.at(total, (si, ti), t["value"][mask])
    np.add.at(count, (si, ti), 1)
    with np.errstate(invalid="ignore"):
        return steps, total / count


def task_means(steps, values, steps_per_task: int):
    """(tasks,) mean over seeds and over the records of each task of ``values`` (seeds, R) at
    ``steps`` (R,); a record at a task's last step belongs to that task, a record at step 0 to none."""
    task = (np.asarray(steps) - 1) // steps_per_task
    return np.array([values[:, task == t].mean() for t in range(int(task.max()) + 1)])


def early_late(per_task):
    """(mean of the first 10 % of tasks, mean of the last 10 %), at least one task each: the
    "early-task level" that a long-horizon trend is measured from (the first record alone sits
    before the rank's early rise)."""
    k = max(1, len(per_task) // 10)
    return float(np.mean(per_task[:k])), float(np.mean(per_task[-k:]))


def _monitored(run, family):
    kinds = run.components.model.layer_kinds
    if family == "vit":
        return [k for k in kinds if not k.endswith("_mlp")]
    return list(kinds)




def stream_note(scale: str) -> str:
    """One line naming the stream of ``scale`` (for the summaries)."""
    s = _SCALE[scale]
    if scale == "paper":
        what = "Tiny ImageNet 40×5 classes (class split)"
    elif s.get("stream") == "random_subsets":
        what = (f"mnist1d (MLP) / digits (others), random_subsets: {s['tasks']} tasks of 2 classes drawn at random "
                "(adaptation: a 10-class class split has only 5 tasks)")
    else:
        what = f"mnist1d (MLP) / digits (others), {s['tasks']}×2 classes (class split)"
    return f"Streams: {what}; {s['steps']} optimiser steps per task (the 'steps' reading of PAPER.md 5.3)."


@register("continual", "Fig 3.1, 3.2, B.4, B.5, B.6",
          "Continual class-split training without normalisation or dropout: dead fraction (ViT: duplicate "
          "fraction), online accuracy and effective rank over tasks, per layer.",
          scales=("smoke", "small", "medium", "paper"))
def run_continual(scale: str, out_dir: Path, data_dir=None, progress=True) -> dict:
    import matplotlib.pyplot as plt

    from ..plotting.run import save_figure

    fams = _SCALE[scale]["families"]
    runs = {f: train(family_config(f, scale, data_dir=data_dir), progress=progress) for f in fams}
    results, checks = {}, []
    fig1, ax1 = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.3), squeeze=False)
    fig2, ax2 = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.3), squeeze=False)
    fig5, ax5 = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.3), squeeze=False)
    fig6, ax6 = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.3), squeeze=False)
    fig4, ax4 = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.3), squeeze=False)
    for i, fam in enumerate(fams):
        run = runs[fam]
        layers = _monitored(run, fam)
        symptom, sname = (DUP, "duplicate fraction") if fam == "vit" else (DEAD, "dead fraction")
        st, sym = layer_mean(run.table, symptom, layers)
        sa, acc = online(run.table, "accuracy")
        sr, rank = layer_mean(run.table, RANK, layers)
        a = ax1[0][i]
        _band(a, st, sym, sname, "C3")
        a.set_ylim(-0.02, 1.02)
        a.set_title(fam, fontsize=9)
        a.set_xlabel("step")
        a2 = a.twinx()
        _band(a2, sa, acc, "online accuracy", "C0")
        a2.set_ylim(0, 1.02)
        if i == 0:
            a.set_ylabel(sname)
        a = ax2[0][i]
        _band(a, sr, rank, "effective rank", "C2")
        a.set_title(fam, fontsize=9)
        a.set_xlabel("step")
        a3 = a.twinx()
        _band(a3, st, sym, sname, "C3", "--")
        a3.set_ylim(-0.02, 1.02)
        for lay_i, layer in enumerate(layers):
            _s, v = layer_mean(run.table, DUP, [layer])
            _band(ax5[0][i], _s, v, layer, f"C{lay_i % 10}")
            _s, v = layer_mean(run.table, SAT if fam == "vit" else DEAD, [layer])
            _band(ax6[0][i], _s, v, layer, f"C{lay_i % 10}")
        for ax, yl in ((ax5[0][i], "duplicate fraction"), (ax6[0][i], "saturated" if fam == "vit" else "dead")):
            ax.set_title(f"{fam}: {yl} per layer", fontsize=9)
            ax.set_xlabel("step")
            ax.legend(fontsize=6)
        _sd, dead = layer_mean(run.table, DEAD if fam != "vit" else SAT, layers)
        _su, dup = layer_mean(run.table, DUP, layers)
        sc = ax4[0][i].scatter(dup.mean(0), dead.mean(0), c=_su, s=10 + 60 * np.interp(_su, sa, acc.mean(0)),
                               cmap="viridis_r")
        ax4[0][i].set_xlabel("duplicate fraction")
        ax4[0][i].set_ylabel("saturated fraction" if fam == "vit" else "dead fraction")
        ax4[0][i].set_title(f"{fam} (colour: step, size: accuracy)", fontsize=8)
        fig4.colorbar(sc, ax=ax4[0][i])
        spt = run.summary["schedule"][0]["steps"]
        rank_early, rank_late = early_late(task_means(sr, rank, spt))
        results[fam] = {
            "symptom": symptom, "symptom_first": float(sym[:, 0].mean()), "symptom_last": float(sym[:, -1].mean()),
            "rank_early_tasks": rank_early, "rank_late_tasks": rank_late,
            "accuracy_first_task": float(acc[:, : max(1, acc.shape[1] // _SCALE[scale]["tasks"])].mean()),
            "accuracy_last_task": float(acc[:, -max(1, acc.shape[1] // _SCALE[scale]["tasks"]):].mean()),
            "rank_first": float(rank[:, 0].mean()), "rank_last": float(rank[:, -1].mean()),
            "wall_time_s": run.summary["wall_time_s"],
        }
        r = results[fam]
        checks.append((f"{fam}: {sname} rises over tasks", f"{r['symptom_first']:.3f} → {r['symptom_last']:.3f}",
                       r["symptom_last"] > r["symptom_first"]))
        checks.append((f"{fam}: effective rank falls from its early-task level",
                       f"{r['rank_early_tasks']:.1f} → {r['rank_late_tasks']:.1f} (first / last 10 % of tasks; "
                       f"first record {r['rank_first']:.1f}, last {r['rank_last']:.1f})",
                       r["rank_late_tasks"] < r["rank_early_tasks"]))
    figs = out_dir / "figures"
    fig1.suptitle("Fig 3.1: symptom (left axis) and online accuracy (right axis)", fontsize=10)
    fig2.suptitle("Fig 3.2: effective rank (left) and symptom (right, dashed)", fontsize=10)
    fig4.suptitle("Fig B.4: duplicate vs dead fraction along training", fontsize=10)
    fig5.suptitle("Fig B.5: duplicate fraction per layer", fontsize=10)
    fig6.suptitle("Fig B.6: dead (ViT: saturated) fraction per layer", fontsize=10)
    for fig, stem in ((fig1, "fig3_1"), (fig2, "fig3_2"), (fig4, "figB_4"), (fig5, "figB_5"), (fig6, "figB_6")):
        fig.tight_layout()
        save_figure(fig, figs / stem)
    notes = [stream_note(scale), "Symptoms are means over monitored layers; bands are the std over seeds."]
    return {"results": results, "checks": checks, "notes": notes}


@register("normalisation", "Fig 4.1, B.3",
          "Effective rank over tasks for no norm / batch norm / layer norm, with and without affine parameters "
          "(Fig 4.1), and bars of saturated fraction, duplicate fraction and average online accuracy (B.3).",
          scales=("smoke", "small", "medium", "paper"))
def run_normalisation(scale: str, out_dir: Path, data_dir=None, progress=True) -> dict:
    import matplotlib.pyplot as plt

    from ..plotting.run import save_figure
    from ..sweep import expand, sweep_runs

    fams = _NORMALISATION_FAMILIES.get(scale, _SCALE[scale]["families"])
    variants = [("none", True), ("batch", False), ("batch", True), ("layer", False), ("layer", True)]
    seeds = _NORMALISATION_SEEDS.get(scale)
    results, checks = {}, []
    fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.3), squeeze=False)
    bars = {}
    for i, fam in enumerate(fams):
        ax = axes[0][i]
        # the variants as a zip sweep over (norm, affine): one program each (norms change shapes)
        spec = expand(family_config(fam, scale, data_dir=data_dir, seeds=seeds),
                      {"model.norm": [n for n, _ in variants], "model.norm_affine": [a for _, a in variants]}, "zip")
        for (norm, affine), run in zip(variants, sweep_runs(spec, progress=progress)):
            layers = _monitored(run, fam)
            st, rank = layer_mean(run.table, RANK, layers)
            label = {"none": "baseline", "batch": "BN", "layer": "LN"}[norm] + (" + affine" if affine and norm != "none" else "")
            _band(ax, st, rank, label, f"C{['none', 'batch', 'layer'].index(norm)}", ":" if affine and norm != "none" else "-")
            _s, sat = layer_mean(run.table, SAT, layers)
            _s, dup = layer_mean(run.table, DUP, layers)
            _s, dead = layer_mean(run.table, DEAD, layers)
            _s, acc = online(run.table, "accuracy")
            bars[(fam, label)] = (sat.mean(), dup.mean(), acc.mean())
            results.setdefault(fam, {})[label] = {
                "rank_last": float(rank[:, -1].mean()), "saturated_mean": float(sat.mean()),
                "dead_last": float(dead[:, -1].mean()), "duplicate_mean": float(dup.mean()),
                "accuracy_mean": float(acc.mean()),
            }
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
        res = results[fam]
        best_norm = max(res["BN + affine"]["rank_last"], res["LN + affine"]["rank_last"])
        checks.append((f"{fam}: normalised nets keep a higher effective rank than the baseline",
                       f"baseline {res['baseline']['rank_last']:.1f} vs best normalised {best_norm:.1f}",
                       best_norm > res["baseline"]["rank_last"]))
        # Each family against its usual normalisation; the ViT's symptom is duplication (no dead
        # units on the residual stream, PAPER.md 4), the others' is dead units.
        std = "LN + affine" if fam == "vit" else "BN + affine"
        key, what = (("duplicate_mean", "duplicate fraction (run mean)") if fam == "vit"
                     else ("dead_last", "final dead fraction"))
        checks.append((f"{fam}: normalisation lowers the {what}",
                       f"baseline {res['baseline'][key]:.3f} vs {std} {res[std][key]:.3f}",
                       res[std][key] < res["baseline"][key]))
        checks.append((f"{fam}: normalisation raises the average online accuracy (B.3)",
                       f"baseline {res['baseline']['accuracy_mean']:.3f} vs {std} {res[std]['accuracy_mean']:.3f}",
                       res[std]["accuracy_mean"] > res["baseline"]["accuracy_mean"]))
    fig.suptitle("Fig 4.1: effective rank (dotted: with affine)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_dir / "figures" / "fig4_1")
    figb, axb = plt.subplots(3, len(fams), figsize=(4.2 * len(fams), 7.5), squeeze=False)
    for i, fam in enumerate(fams):
        labels = [lab for (f, lab) in bars if f == fam]
        for row, name in enumerate(("saturated fraction", "duplicate fraction", "online accuracy")):
            axb[row][i].bar(range(len(labels)), [bars[(fam, lab)][row] for lab in labels], color="C0")
            axb[row][i].set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
            axb[row][0].set_ylabel(name)
        axb[0][i].set_title(fam, fontsize=9)
    figb.suptitle("Fig B.3: symptoms and accuracy by normalisation (means over the run)", fontsize=10)
    figb.tight_layout()
    save_figure(figb, out_dir / "figures" / "figB_3")
    n_seeds = seeds or _SCALE[scale]["seeds"]
    return {"results": results, "checks": checks,
            "notes": [f"{len(variants)} normalisation variants × {len(fams)} families, {n_seeds} seeds each, "
                      f"{_SCALE[scale]['tasks']} tasks × {_SCALE[scale]['steps']} steps (the continual protocol).",
                      stream_note(scale),
                      "Means over monitored layers, seeds and records; see continual.py for the protocol."]}

"""Figures of one training run, read from its tidy metrics table.

``plot_run(rows, out_dir)`` writes ``loss_accuracy.{png,pdf}`` (training loss and
online accuracy against step, mean ± standard deviation over seeds, task
boundaries dotted) and, when unit metrics were recorded, ``unit_metrics.{png,pdf}``
(dead fraction, duplicate fraction and effective rank per layer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fileio import atomic_write
from ..records import as_table


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Save ``fig`` as ``stem.png`` (150 dpi) and ``stem.pdf``, atomically (:mod:`pdx.fileio`);
    close it."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    paths = []
    for ext, kw in (("png", {"dpi": 150}), ("pdf", {})):
        path = stem.with_suffix(f".{ext}")
        atomic_write(path, lambda fh: fig.savefig(fh, format=ext, bbox_inches="tight", **kw))
        paths.append(path)
    plt.close(fig)
    return paths


def series(rows, metric: str, layer: str = ""):
    """(steps, mean over seeds, std over seeds) for one metric/layer; None if absent.
    ``rows``: a :class:`pdx.records.MetricsTable` or row tuples."""
    t = as_table(rows)
    mask = t.select(metric, layer)
    if not mask.any():
        return None
    steps, values = t["step"][mask], t["value"][mask]
    uniq, inv = np.unique(steps, return_inverse=True)
    count = np.bincount(inv)
    mean = np.bincount(inv, weights=values) / count
    var = np.maximum(np.bincount(inv, weights=values ** 2) / count - mean ** 2, 0.0)
    return uniq, mean, np.sqrt(var)


def task_boundaries(rows) -> list[int]:
    """Steps at which a new task starts (the last record of each task but the last)."""
    t = as_table(rows)
    tasks, steps = t["task"], t["step"]
    return [int(steps[tasks == k].max()) for k in np.unique(tasks)[:-1]]


def band(ax, x, values, label=None, color=None, style="-"):
    """Plot the mean over seeds of ``values`` (seeds, R) against ``x`` (R,) with a ±1 std band
    (NaNs ignored); returns the line."""
    values = np.asarray(values, dtype=float)
    mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
    line, = ax.plot(x, mean, style, label=label, color=color)
    ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=line.get_color())
    return line


def _band(ax, s, label, color=None):
    steps, mean, std = s
    return band(ax, steps, np.stack([mean - std, mean + std]), label, color)


def _first_metric(table, prefix: str) -> str | None:
    names = sorted(m for m in set(table["metric"].tolist()) if m.startswith(prefix))
    return names[0] if names else None


def plot_run(rows, out_dir: str | Path, title: str = "") -> list[Path]:
    """Write the run's figures into ``out_dir``; return the paths written. ``rows``: the run's
    :class:`pdx.records.MetricsTable` (``run.table``) or its row tuples."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = as_table(rows)
    bounds = task_boundaries(rows)

    fig, ax = plt.subplots(figsize=(7, 3.6))
    loss = series(rows, "loss")
    if loss is not None:
        _band(ax, loss, "training loss", "C0")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    acc = series(rows, "accuracy")
    handles = [h for h in ax.get_lines()]
    if acc is not None:
        ax2 = ax.twinx()
        handles.append(_band(ax2, acc, "online accuracy", "C1"))
        ax2.set_ylabel("online accuracy")
        ax2.set_ylim(0, 1.02)
    for b in bounds:
        ax.axvline(b, color="grey", linestyle=":", linewidth=0.8)
    ax.legend(handles=handles, labels=[h.get_label() for h in handles], loc="best", fontsize=8)
    ax.set_title(title or "loss and online accuracy (mean ± std over seeds; dotted: task switch)", fontsize=9)
    written += save_figure(fig, out_dir / "loss_accuracy")

    panels = [(p, _first_metric(rows, p)) for p in ("dead_frac", "duplicate_frac", "effective_rank")]
    panels = [(p, m) for p, m in panels if m is not None]
    if panels:
        sel = rows.select(panels[0][1])
        layers = sorted(set(rows["layer"][sel].tolist()) - {""})
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
        for ax, (_, metric) in zip(axes[0], panels):
            for i, layer in enumerate(layers):
                s = series(rows, metric, layer)
                if s is not None:
                    _band(ax, s, layer, f"C{i % 10}")
            for b in bounds:
                ax.axvline(b, color="grey", linestyle=":", linewidth=0.8)
            ax.set_title(metric, fontsize=9)
            ax.set_xlabel("step")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        written += save_figure(fig, out_dir / "unit_metrics")
    return written

"""The registry of reproducible figures and the ``reproduce`` driver.

Each :class:`Figure` knows how to run itself at a scale (``smoke``: under a minute,
for tests; ``small``: minutes on a 2-core CPU with the embedded data; ``paper``:
the paper's models, datasets and lengths, meant for a GPU) and returns a dict of
key numbers plus the trend checks that its ``summary.md`` sets beside the paper.

``reproduce(name, scale, out)`` writes ``out/figures/*.{png,pdf}``,
``out/results.json`` and ``out/summary.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InputError, check_choice

SCALES = ("smoke", "small", "paper")


@dataclass(frozen=True)
class Figure:
    """A reproducible figure (or group of panels).

    run(scale, out_dir, data_dir, progress) -> {"results": {...}, "checks": [(claim, measured, holds)],
    "notes": [str]}; it writes its figures into ``out_dir / "figures"``.
    """

    name: str
    paper: str
    description: str
    run: Callable


FIGURES: dict[str, Figure] = {}


def register(name: str, paper: str, description: str):
    def deco(fn):
        FIGURES[name] = Figure(name, paper, description, fn)
        return fn

    return deco


def reproduce(name: str, scale: str = "small", out: str | Path | None = None, data_dir: str | None = None,
              force: bool = False, progress: bool = True) -> dict:
    """Run one registered figure and write its outputs; returns the results dict."""
    from ..training.rundir import atomic_write_json, atomic_write_text

    _load_all()
    check_choice("NAME", name, sorted(FIGURES))
    check_choice("--scale", scale, SCALES)
    fig = FIGURES[name]
    out = Path(out) if out is not None else Path("runs") / f"reproduce-{name}-{scale}"
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"--out {str(out)!r} is not empty; use --force to overwrite")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise InputError(f"--data-dir {data_dir!r} is not a directory")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = fig.run(scale=scale, out_dir=out, data_dir=data_dir, progress=progress)
    wall = time.perf_counter() - t0
    payload = {"figure": name, "paper": fig.paper, "scale": scale, "wall_time_s": round(wall, 2),
               "results": result.get("results", {}), "checks": [list(c) for c in result.get("checks", [])],
               "notes": result.get("notes", [])}
    atomic_write_json(out / "results.json", payload)
    atomic_write_text(out / "summary.md", _summary_md(fig, scale, wall, result))
    payload["out"] = str(out)
    return payload


def _summary_md(fig: Figure, scale: str, wall: float, result: dict) -> str:
    lines = [f"# {fig.name} ({fig.paper}) at scale `{scale}`", "", fig.description, "",
             f"Wall time: {wall:.1f} s.", "", "| paper's trend | measured here | holds |", "|---|---|---|"]
    for claim, measured, holds in result.get("checks", []):
        lines.append(f"| {claim} | {measured} | {'yes' if holds else '**no**'} |")
    notes = result.get("notes", [])
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _load_all() -> None:
    """Import the experiment modules so that they register their figures."""
    from . import bitflip, cloning, cloning_curvature, continual, fate, theory_registry  # noqa: F401


def figures() -> dict[str, Figure]:
    _load_all()
    return dict(FIGURES)


def dump(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)

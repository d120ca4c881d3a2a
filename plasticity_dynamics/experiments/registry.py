"""The registry of reproducible figures and the ``reproduce`` driver.

Each :class:`Figure` knows how to run itself at a scale (``smoke``: under a minute,
for tests; ``small``: minutes on a 2-core CPU with the embedded data; ``medium``: long
horizons (50+ tasks, or a task the base has not solved) in at most about 30 minutes on
2 idle cores, only for the figures whose trend needs them (``Figure.scales``);
``paper``: the paper's models, datasets and lengths, meant for a GPU) and returns a dict
of key numbers plus the trend checks that its ``summary.md`` sets beside the paper.

``reproduce(name, scale, out)`` writes ``out/figures/*.{png,pdf}``,
``out/results.json`` and ``out/summary.md``. The summary also tabulates every check at
every scale found next to ``out`` under the default names (``reproduce-NAME-SCALE/``),
so running one figure at several scales into one folder compares them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InputError, check_choice

SCALES = ("smoke", "small", "medium", "paper")
BASIC_SCALES = ("smoke", "small", "paper")  # what every figure runs at; "medium" only where it is listed


@dataclass(frozen=True)
class Figure:
    """A reproducible figure (or group of panels).

    run(scale, out_dir, data_dir, progress) -> {"results": {...}, "checks": [(claim, measured, holds)],
    "notes": [str]}; it writes its figures into ``out_dir / "figures"``. ``scales``: the scales
    it has presets for.
    """

    name: str
    paper: str
    description: str
    run: Callable
    scales: tuple = BASIC_SCALES


FIGURES: dict[str, Figure] = {}


def register(name: str, paper: str, description: str, scales: tuple = BASIC_SCALES):
    def deco(fn):
        FIGURES[name] = Figure(name, paper, description, fn, tuple(scales))
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
    if scale not in fig.scales:
        raise InputError(f"--scale {scale!r}: figure {name!r} has presets for {', '.join(fig.scales)} only")
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
    summary = _summary_md(fig, scale, wall, result, _other_scales(out, name, scale))
    atomic_write_text(out / "summary.md", summary)
    if progress:  # the trend table, as summary.md has it
        print("\n".join(line for line in summary.splitlines() if line.startswith("|")), flush=True)
    payload["out"] = str(out)
    return payload


def _other_scales(out: Path, name: str, scale: str) -> dict:
    """{scale: results.json payload} of this figure's runs at the other scales, found beside ``out``
    under the default folder names ``reproduce-NAME-SCALE``."""
    found = {}
    for other in SCALES:
        path = out.parent / f"reproduce-{name}-{other}" / "results.json"
        if other != scale and path.is_file():
            try:
                payload = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if payload.get("figure") == name and payload.get("scale") == other:
                found[other] = payload
    return found


def _summary_md(fig: Figure, scale: str, wall: float, result: dict, others: dict | None = None) -> str:
    lines = [f"# {fig.name} ({fig.paper}) at scale `{scale}`", "", fig.description, "",
             f"Wall time: {wall:.1f} s.", "", "| paper's trend | measured here | holds |", "|---|---|---|"]
    for claim, measured, holds in result.get("checks", []):
        lines.append(f"| {claim} | {measured} | {'yes' if holds else '**no**'} |")
    if others:
        runs = {**{s: [list(c) for c in p.get("checks", [])] for s, p in others.items()},
                scale: [list(c) for c in result.get("checks", [])]}
        order = [s for s in SCALES if s in runs]
        claims = list(dict.fromkeys(c[0] for s in order for c in runs[s]))
        lines += ["", "The paper's trends at every scale run beside this one (measured; holds?):", "",
                  "| paper's trend | " + " | ".join(f"`{s}`" for s in order) + " |",
                  "|---|" + "---|" * len(order)]
        for claim in claims:
            cells = []
            for s in order:
                hit = [c for c in runs[s] if c[0] == claim]
                cells.append(f"{hit[0][1]} ({'yes' if hit[0][2] else '**no**'})" if hit else "–")
            lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    notes = result.get("notes", [])
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _load_all() -> None:
    """Import the experiment modules so that they register their figures."""
    from . import (bitflip, cloning, cloning_curvature, continual, fate, ntk_trajectory,  # noqa: F401
                   theory_registry)


def figures() -> dict[str, Figure]:
    _load_all()
    return dict(FIGURES)


def dump(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)

"""Every registered figure runs end to end at smoke scale through ``reproduce``: the paper's panel
files (PNG and PDF, non-empty), ``results.json`` and a ``summary.md`` with one row per trend check.
The expected file names are the paper's figure numbers, written out here independently of the code."""

import json

import pytest

from plasticity_dynamics.experiments import figures, reproduce

# Figure name -> the panel files it must write at smoke scale (smoke runs the MLP only where a
# figure has one panel per family, so cloning-noise writes the MLP's B.8/B.9 and not the ViT's).
EXPECTED = {
    "cloning": ["fig2_1"],
    "cloning-families": ["figB_7"],
    "cloning-noise": ["figB_8", "figB_9"],
    "cloning-dropout": ["figB_12"],
    "cloning-optimizers": ["figB_13_14"],
    "continual": ["fig3_1", "fig3_2", "figB_4", "figB_5", "figB_6"],
    "normalisation": ["fig4_1", "figB_3"],
    "bitflip": ["figB_1"],
    "bitflip-widths": ["figB_2"],
    "figA.1": ["fig_a1"],
    "figA.2": ["fig_a2"],
    "figA.3": ["fig_a3"],
    "cloning-curvature": ["cloning_curvature"],
    "unit-fate": ["unit_fate"],
}
# The heaviest smoke runs (about a minute each on 2 cores) run with `make test-all`.
SLOW = {"normalisation", "cloning-noise", "unit-fate", "cloning-curvature"}


def test_every_registered_figure_is_listed_here():
    assert sorted(figures()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in EXPECTED])
def test_reproduce_smoke_writes_figures_results_and_summary(tmp_path, name):
    out = tmp_path / name
    payload = reproduce(name, "smoke", out, progress=False)
    files = sorted(p.name for p in (out / "figures").iterdir())
    assert files == sorted(f"{stem}.{ext}" for stem in EXPECTED[name] for ext in ("pdf", "png"))
    assert all((out / "figures" / f).stat().st_size > 1000 for f in files)
    saved = json.loads((out / "results.json").read_text())
    assert saved["figure"] == name and saved["scale"] == "smoke" and saved["wall_time_s"] > 0
    assert saved["checks"], "every figure compares at least one trend with the paper"
    for claim, measured, holds in saved["checks"]:
        assert isinstance(claim, str) and isinstance(measured, str) and isinstance(holds, bool)
    summary = (out / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| ") and not line.startswith("| paper")]
    assert len(rows) == len(saved["checks"])
    assert payload["out"] == str(out)

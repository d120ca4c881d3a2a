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


def test_medium_scale_only_where_a_figure_has_a_preset(tmp_path):
    from plasticity_dynamics.errors import InputError

    with_medium = {n for n, f in figures().items() if "medium" in f.scales}
    assert with_medium == {"continual", "normalisation", "unit-fate", "cloning-families"}
    with pytest.raises(InputError, match="'cloning' has presets for smoke, small, paper only"):
        reproduce("cloning", "medium", tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_medium_presets_are_long_horizons_on_the_small_data():
    from plasticity_dynamics.experiments.cloning import clone_settings, random_label_dataset
    from plasticity_dynamics.experiments.continual import family_config
    from plasticity_dynamics import data as pdata
    import numpy as np

    for fam in ("mlp", "cnn"):
        small, medium = family_config(fam, "small"), family_config(fam, "medium")
        assert medium.tasks.kind == "random_subsets" and medium.tasks.num_tasks >= 50
        # the adaptation changes the stream and its length only
        for section in ("model", "optim", "train", "data"):
            assert getattr(medium, section) == getattr(small, section), section
    digits = pdata.load("digits")
    shuffled = random_label_dataset(digits)
    np.testing.assert_array_equal(shuffled.x_train, digits.x_train)
    agree = np.mean(shuffled.y_train == digits.y_train)
    assert 0.03 < agree < 0.2  # chance agreement is 1/10
    counts = np.bincount(shuffled.y_train, minlength=10)
    n = len(digits.y_train)
    assert np.all(np.abs(counts - n / 10) < 5 * np.sqrt(n * 0.09))
    np.testing.assert_array_equal(random_label_dataset(digits).y_train, shuffled.y_train)  # seeded
    for fam in ("mlp", "cnn", "resnet18", "vit"):
        assert clone_settings(fam, "medium") == clone_settings(fam, "small")


def test_summary_compares_the_scales_run_beside_it(tmp_path, monkeypatch):
    from plasticity_dynamics.experiments import registry

    def run(scale, out_dir, data_dir=None, progress=True):
        holds = scale == "medium"
        return {"results": {}, "checks": [("x rises", f"{scale} numbers", holds)], "notes": []}

    registry._load_all()
    monkeypatch.setitem(registry.FIGURES, "fake", registry.Figure("fake", "Fig 0", "a fake", run,
                                                                  ("smoke", "medium")))
    reproduce("fake", "smoke", tmp_path / "reproduce-fake-smoke", progress=False)
    alone = (tmp_path / "reproduce-fake-smoke" / "summary.md").read_text()
    assert "every scale" not in alone
    reproduce("fake", "medium", tmp_path / "reproduce-fake-medium", progress=False)
    both = (tmp_path / "reproduce-fake-medium" / "summary.md").read_text()
    assert "| paper's trend | `smoke` | `medium` |" in both
    assert "| x rises | smoke numbers (**no**) | medium numbers (yes) |" in both

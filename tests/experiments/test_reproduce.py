"""Every registered figure runs end to end at smoke scale through ``reproduce``: the paper's panel
files (PNG and PDF, non-empty), ``results.json`` and a ``summary.md`` with one row per trend check,
and its trend checks come out as written in ``TRENDS``. The expected file names are the paper's
figure numbers, written out here independently of the code."""

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
    "ntk-trajectory": ["ntk_trajectory"],
}
# The heaviest smoke runs (about a minute each on 2 cores) run with `make test-all`, and so do
# cloning-dropout and cloning-optimizers (20-30 s each; the same clone_run as `cloning`, which
# stays in the default suite) to keep `make test` under 15 min on a fresh clone.
SLOW = {"normalisation", "cloning-noise", "unit-fate", "cloning-curvature", "ntk-trajectory",
        "cloning-dropout", "cloning-optimizers"}

# Figure name -> [(words of a check's claim, whether it holds at smoke scale)]. Every check whose
# claim starts with the words, or has them after a space, must come out so (at least one must
# exist). True = the paper's trend is reproduced at smoke scale; False = it is not at this scale,
# and the comment gives the numbers seen when this was written, so that a change in either
# direction is noticed. Checks whose margin at smoke scale is within float noise are left out and
# named in the comment. `make test-all` runs all of them (the SLOW ones are slow-marked).
TRENDS = {
    # Fig 2.1 (smoke, MLP): trapped SGD clone; noise (end R² 0.973) and dropout (0.987) escape; the noisy
    # clone's rank 56.5 vs 44.3. Left out: "noisy clone reaches a lower loss" (1.120 vs 1.123, within noise).
    "cloning": [("SGD: R² stays 1", True), ("SGD + noise: R² falls below 0.99", True),
                ("SGD + dropout: R² falls below 0.99", True), ("higher effective rank", True)],
    # Fig B.7 at smoke is the MLP only, as Fig 2.1. The clones' losses at smoke: noise 1.120 vs SGD 1.123
    # (within noise, left out); dropout 1.317 vs 1.123, not below: its training loss carries the dropout
    # masks, and 300 steps are too few for the escape to pay off (the paper's B.7 needs 195k steps).
    "cloning-families": [("mlp SGD: R² stays 1", True), ("mlp SGD + noise: R² falls below 0.99", True),
                         ("mlp SGD + dropout: R² falls below 0.99", True),
                         ("mlp SGD + dropout: the clone's loss ends below", False)],
    # Fig B.8 (smoke, MLP, σ₀ ∈ {0.01, 0.05} × λ ∈ {0, 0.999}): neither claim holds at smoke scale.
    # A single noisy step (σ₀ = 0.01, λ = 0) leaves end R² 0.997 (above 0.99) and the worst decaying
    # noise ends at loss 1.181 against the SGD clone's 1.123 (300 clone steps; the paper's are 195k).
    "cloning-noise": [("a single noisy step (λ = 0) breaks the clones", False),
                      ("every decaying noise (λ < 1) ends below the SGD clone's loss", False)],
    # Fig B.12 (smoke, MLP): dropout p = 0.1 breaks the clones (end R² 0.987).
    "cloning-dropout": [("dropout breaks the clones", True)],
    # Fig B.13 (smoke, MLP): SGD and Adam (fresh state at cloning) both stay on the cloning manifold.
    "cloning-optimizers": [("mlp SGD: R² stays 1", True), ("mlp Adam: R² stays 1", True)],
    # Fig 3.1 / 3.2 (smoke, MLP, 4 class-split tasks): dead fraction 0.094 -> 0.271, rank 22.4 -> 19.2.
    "continual": [("mlp: dead fraction rises", True), ("mlp: effective rank falls", True)],
    # Fig 4.1 / B.3 (smoke, MLP): rank baseline 19.2 vs best normalised 25.6; final dead fraction
    # 0.271 vs 0.000 (BN + affine); mean online accuracy 0.891 vs 0.910.
    "normalisation": [("higher effective rank than the baseline", True), ("lowers the final dead fraction", True),
                      ("raises the average online accuracy", True)],
    # Fig B.1 (smoke): after the SGD -> CBP switch the rank rises (18.1 -> 29.7) and duplicates vanish
    # (0.032 -> 0); the online loss does NOT fall at smoke scale (1.282 -> 1.363 when written).
    "bitflip": [("CBP raises the effective rank", True), ("CBP lowers the duplicate fraction", True),
                ("CBP lowers the online loss", False)],
    # Fig B.2 (smoke): CBP removes the width-50 learner's duplicates (0.032 -> 0).
    "bitflip-widths": [("CBP lowers the duplicate fraction", True)],
    # Theory figures: exact statements, reproduced to float64 rounding.
    "figA.1": [("gap c² − K(c)² ≥ γ c²(1 − c²)", True), ("er₂ ratio ≥ 1 + γΨ/‖C‖²", True)],
    "figA.2": [("strictly monotone in the ReLU bias", True), ("strictly monotone in the tanh gain", True),
               ("requires frozen probability", True), ("rises with gain while units freeze", True)],
    # Fig A.3: for relu, tanh, sigmoid and gelu the top-γ decile sits at median P(frozen) >= 0.65; selu
    # (0.26) and elu (0.37) reach their highest γ with few frozen inputs (negative saturation is not
    # zero-derivative), so the claim does not hold for them; the rank correlation is positive for all 6.
    "figA.3": [("relu: high γ_φ", True), ("tanh: high γ_φ", True), ("sigmoid: high γ_φ", True),
               ("gelu: high γ_φ", True), ("selu: high γ_φ", False), ("elu: high γ_φ", False),
               ("rise together", True)],
    # New figure (smoke): escapes from the cloning manifold at four points of an SGD run all grow
    # (growth 1.026-1.150 per step) and the SGD clone stays on M_D exactly. Left out: "growth within the
    # update-map spectral radius", which holds at 3 of 4 points (1.150 vs 1.135 at step 350).
    # The Lyapunov exponents over the 60-step escape window (0.0174-0.0185 per step, factor ~1.018
    # against the frozen-point radius 1.056-1.135): a 1e-6 perturbation along the top direction grows
    # 2.84-3.06x, within 2 % of exp(T λ₁), and stays linear (within 10 %) for all 60 steps.
    "cloning-curvature": [("a normal perturbation grows", True), ("SGD clone stays on M_D", True),
                          ("measured 1e-6 growth within 10 %", True),
                          ("tangent propagator grows as its top Lyapunov exponent says", True)],
    # New figure (smoke, MLP, 4 tasks, eNTK of 24 examples x 10 logits): effective rank 25.15 -> 22.28;
    # the frozen manifold's normal eNTK is exactly 0 (dead ReLU units move no output to first order).
    "ntk-trajectory": [("eNTK effective rank is finite", True), ("normal eNTK of the frozen manifold", True),
                       ("eNTK effective rank falls", True)],
    # New figure (smoke): dead units 0.109 -> 0.198 of the hidden units from the first to the last record.
    "unit-fate": [("dead units accumulate", True)],
}


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
    for words, expected in TRENDS[name]:
        hits = [(c, m, h) for c, m, h in saved["checks"] if c.startswith(words) or f" {words}" in c]
        assert hits, f"{name}: no check mentions {words!r}"
        wrong = [h for h in hits if h[2] is not expected]
        assert not wrong, f"{name}: expected holds={expected} for {wrong}"


def test_every_figure_has_a_trend_expectation():
    assert sorted(TRENDS) == sorted(EXPECTED) and all(TRENDS.values())


def test_medium_scale_only_where_a_figure_has_a_preset(tmp_path):
    from plasticity_dynamics.errors import InputError

    with_medium = {n for n, f in figures().items() if "medium" in f.scales}
    assert with_medium == {"continual", "normalisation", "unit-fate", "cloning-families", "ntk-trajectory"}
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
    assert len(family_config("mlp", "medium").seeds) == len(family_config("cnn", "medium").seeds) == 2
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

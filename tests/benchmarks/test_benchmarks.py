"""The benchmark scripts run and write what the README is generated from (so they cannot rot).

Fast: the detection benchmark alone in quick mode (one tiny MLP), its planted ground truth
checked against the network's own activations, its scoring on hand-made sets, and the README
section rewriting of run_all. Slow: ``python -m benchmarks.run_all --quick`` end to end.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import detection, run_all


def test_score_counts_and_conventions():
    s = detection.score({1, 2, 3}, {2, 3, 4, 5})
    assert (s["tp"], s["fp"], s["fn"]) == (2, 2, 1)
    assert s["precision"] == 0.5 and s["recall"] == pytest.approx(2 / 3)
    empty = detection.score({1}, set())  # nothing reported: no false claim, nothing found
    assert empty["precision"] == 1.0 and empty["recall"] == 0.0


@pytest.mark.parametrize("family,options,shape", [
    ("mlp", dict(widths=(16, 16)), (48, 8)),
    ("cnn", dict(channels=(8, 8), fc_widths=(16,)), (12, 8, 8, 2)),
])
def test_planted_truth_holds_in_the_network(family, options, shape):
    """Planted dead units output 0 on every sample (and position), planted clones output exactly
    the same as their source, and every other unit is active on part of the batch."""
    import plasticity_dynamics as pdx

    model = pdx.models.create(family, norm="none", dropout=0.0, **options)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"]
    planted, truth = detection.plant(model, params, x, 2, rng)
    acts = model.apply({"params": jax.tree.map(jnp.asarray, planted)}, jnp.asarray(x)).activations
    layers = {layer for layer, _, _ in truth["pairs"]} | {layer for layer, _ in truth["frozen"]}
    assert layers == set(acts)  # something planted in every monitored layer
    assert len(truth["frozen"]) == 2 * len(acts) and len(truth["pairs"]) == 4 * len(acts)  # sizes 2, 3
    for layer, a in acts.items():
        h = np.asarray(a).reshape(-1, a.shape[-1])
        dead = {u for (lay, u) in truth["frozen"] if lay == layer}
        for u in dead:
            assert np.all(h[:, u] == 0)
        for lay, i, j in truth["pairs"]:
            if lay == layer:
                np.testing.assert_array_equal(h[:, i], h[:, j])
        alive = [u for u in range(h.shape[1]) if u not in dead]
        active = (h[:, alive] > 0).mean(axis=0)
        assert active.min() > 0.1, (layer, active.min())  # median-centred: about half the samples


def test_detection_quick_alone(tmp_path):
    out = tmp_path / "detection.json"
    payload = detection.main(["--quick", "--models", "mlp", "--settings", "activations,weights",
                              "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["quick"] is True and saved["settings"] == ["activations", "weights"]
    assert {"jax", "backend", "device_kind", "cpu_count"} <= set(saved["environment"])
    (model,) = saved["models"]
    info = model["info"]
    assert info["planted_frozen"] == 4 and info["planted_pairs"] == 8
    for s in ("activations", "weights"):
        assert info[f"{s}_first_call_s"] > 0 and info[f"{s}_median_s"] > 0
        assert 0 <= info[f"{s}_median_compile_s"] <= info[f"{s}_median_s"]
    rows = {(r["eps"], r["setting"]): r for r in model["rows"]}
    assert set(rows) == {(e, s) for e in ("unplanted", "0", "1e-4", "1e-2") for s in ("activations", "weights")}
    for s in ("activations", "weights"):
        # nothing to find in the unplanted network, everything found without noise
        assert rows["unplanted", s]["frozen_tp_fp_fn"] == "0/0/0" and rows["unplanted", s]["pair_tp_fp_fn"] == "0/0/0"
        assert rows["0", s]["frozen_tp_fp_fn"] == "4/0/0" and rows["0", s]["pair_tp_fp_fn"] == "8/0/0"
        for e in ("1e-4", "1e-2"):  # dead units sit far inside M_F: noise this small keeps them dead
            assert rows[e, s]["frozen_precision"] == 1.0 and rows[e, s]["frozen_recall"] == 1.0
    # the README section run_all would write, and its rewriting in place
    readme = tmp_path / "README.md"
    readme.write_text("# hand-written title\n\nkept text\n\n<!-- BEGIN detection -->\nSTALE-SECTION-BODY\n"
                      "<!-- END detection -->\n\ntail text\n")
    run_all.update_readme(readme, {"detection": run_all.section("detection", payload, 1.0)})
    text = readme.read_text()
    assert text.startswith("# hand-written title\n\nkept text\n") and text.rstrip().endswith("tail text")
    assert "STALE-SECTION-BODY" not in text
    assert text.count("<!-- BEGIN detection") == 1 and text.count("<!-- END detection -->") == 1
    assert "| mlp | 1e-4 | weights |" in text and "Quick (smoke) sizes" in text


def test_replace_section_appends_when_missing():
    text = run_all.replace_section("# t\n", "metrics", "<!-- BEGIN metrics -->\nx\n<!-- END metrics -->")
    assert text == "# t\n\n<!-- BEGIN metrics -->\nx\n<!-- END metrics -->\n"


def test_run_all_rejects_unknown_benchmark():
    with pytest.raises(SystemExit):
        run_all.main(["--only", "nope", "--no-readme"])


@pytest.mark.slow
def test_run_all_quick(tmp_path):
    """Every benchmark's quick mode, through run_all, writes its JSON and its README section."""
    readme = tmp_path / "README.md"
    summary = run_all.main(["--quick", "--results", str(tmp_path), "--readme", str(readme)])
    assert summary["failed"] == [], summary["runs"]
    text = readme.read_text()
    for name in run_all.BENCHMARKS:
        saved = json.loads((tmp_path / f"{name}.json").read_text())
        assert saved["quick"] is True
        assert {"jax", "backend", "device_kind", "cpu_count"} <= set(saved["environment"])
        assert f"<!-- BEGIN {name}" in text and f"<!-- END {name} -->" in text
    training = json.loads((tmp_path / "training.json").read_text())
    assert [r["seeds"] for r in training["vmap"]] == [1, 4, 16]
    assert [r["devices"] for r in training["devices"]] == [1, 2, 4]
    assert json.loads((tmp_path / "run_all.json").read_text())["quick"] is True


def test_record_writes_benchmark_runs_and_reports_the_ratio(tmp_path):
    from benchmarks import record_writes

    payload = record_writes.main(["--records", "40", "--rows", "5", "--out", str(tmp_path / "rw.json")])
    saved = json.loads((tmp_path / "rw.json").read_text())
    assert saved["result"]["records"] == 40 and saved["result"]["append"]["ratio_last_first"] > 0
    assert "last / first" in record_writes.render(payload)

"""The metrics benchmark runs end to end in quick mode and writes its JSON (slow: compiles two models)."""

import json

import pytest


@pytest.mark.slow
def test_benchmark_quick(tmp_path):
    from benchmarks.metrics import main

    out = tmp_path / "metrics.json"
    payload = main(["--quick", "--repeats", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["quick"] is True and payload["quick"] is True
    env = saved["environment"]
    assert {"jax", "backend", "device_kind", "cpu_count"} <= set(env)
    assert [r["model"] for r in saved["results"]] == ["mlp 5x128", "cnn small"]
    assert [(r["kind"], r["rows"], r["units"]) for r in saved["layers"]] == [("dense", 200, 32), ("conv", 2048, 8)]
    for r in saved["layers"]:
        assert r["jax_s"] > 0 and r["numpy_s"] > 0 and r["numpy_over_jax"] == r["numpy_s"] / r["jax_s"]
        assert r["min_ratio"] == r["numpy_min_s"] / r["jax_min_s"] and r["jax_min_s"] <= r["jax_s"]
        assert r["max_rel_diff"] < 1e-3, r["max_rel_diff_at"]  # JAX and NumPy float64 formulas agree
    for r in saved["results"]:
        assert r["compile_s"] > 0 and r["jax_total_s"] > 0 and r["numpy_metrics_s"] > 0
        assert r["max_rel_diff"] < 1e-3, r["max_rel_diff_at"]  # JAX and NumPy formulas agree

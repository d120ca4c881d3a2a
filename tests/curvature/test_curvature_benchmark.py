"""The curvature benchmark runs end to end in quick mode and writes its JSON (slow: ~30 s)."""

import json

import pytest


@pytest.mark.slow
def test_benchmark_quick_writes_json(tmp_path):
    from benchmarks.curvature import main

    out = tmp_path / "curvature.json"
    payload = main(["--quick", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["quick"] is True and saved["environment"]["jax"]
    sizes = [r["size"] for r in saved["rows"]]
    assert sizes == ["2k", "7k", "250k"]
    two_k = saved["rows"][0]
    # the Krylov extremes agree with the dense route and both give the same verdict
    assert two_k["extreme_rel_err"] < 1e-4 and two_k["verdict"] == two_k["dense_verdict"]
    assert payload["targets"]["krylov_params"] > 200_000

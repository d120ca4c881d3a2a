"""benchmarks.device_check runs without an accelerator (shrunk, with a message) and writes its
JSON; its measured must-hold properties hold (slow: ~3 min of XLA compiles on a loaded CPU)."""

import json

import jax
import pytest


@pytest.mark.slow
def test_device_check_shrinks_on_cpu_and_writes_json(tmp_path):
    if jax.default_backend() != "cpu":
        pytest.skip("the shrunk path is the CPU one")
    from benchmarks.device_check import main

    out = tmp_path / "device_check.json"
    main(["--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["full"] is False and "no accelerator" in saved["message"]
    assert saved["devices"]["platform"] == "cpu" and saved["devices"]["count"] >= 1
    hold = saved["must_hold"]
    assert hold["one_compile_per_trajectory"] and hold["spectrum_compiles"] == 1
    assert len(set(hold["normal_dims"])) == 3 and hold["no_device_to_host_copy"]
    assert saved["resnet"]["num_hvps"] > 0 and saved["resnet"]["spectrum_compile_s"] > 0
    assert saved["cloning"]["stays_on_manifold"] and saved["cloning"]["finite"]
    assert [s["family"] for s in saved["seeds"]] == ["mlp", "cnn"]

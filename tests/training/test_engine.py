"""Training engine: determinism, seeds = separate runs, devices, resume, retracing, divergence."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from plasticity_dynamics.errors import DivergenceError, InputError
from plasticity_dynamics.training import Config, list_checkpoints, read_metrics, train
from plasticity_dynamics.training import engine


def tiny(**extra):
    base = {
        "model.name": "mlp", "model.preset": "tiny", "data.name": "mnist1d",
        "tasks.classes_per_task": 5, "tasks.num_tasks": 2, "tasks.metric_batch_size": 60,
        "train.steps_per_task": 12, "train.batch_size": 16, "record.every": 4, "seeds": 2,
    }
    base.update(extra)
    return Config().with_overrides(base)


def by_key(rows):
    return {(r[0], r[1], r[3], r[4]): r[5] for r in rows}


def assert_same_numbers(a, b, metric_rtol=2e-4):
    """Training loss/accuracy to 1e-5 relative. Unit metrics get ``metric_rtol``: vmap and
    sharding change XLA's reduction order (float32 rounding ~1e-7), and metrics such as the
    gradient norm of a nearly-fitted batch (a sum of cancelling per-example terms) or
    eigenvalues of Gram matrices amplify that."""
    assert a.keys() == b.keys()
    for k in a:
        rtol = 1e-5 if k[2] == "" else metric_rtol
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=1e-5, err_msg=str(k))


def assert_same_state(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_same_config_same_numbers_and_no_retracing_between_records():
    engine.TRACE_COUNTS.clear()
    engine._PROGRAMS.clear()
    a = train(tiny(), progress=False)
    # 2 tasks x 3 records, one chunk program, one metric-batch shape: one trace each (and none for b)
    assert engine.TRACE_COUNTS == {"chunk": 1, "metrics": 1}
    b = train(tiny(), progress=False)
    assert by_key(a.rows) == by_key(b.rows)
    losses = [r[5] for r in a.rows if r[4] == "loss" and r[3] == ""]
    assert all(np.isfinite(losses)) and len(losses) == 2 * 6


def test_vmapped_seeds_equal_separate_runs():
    # SGD: Adam's normalised steps turn float32 reduction-order noise in tiny gradients into
    # lr-sized differences, so exact-state comparisons use SGD (the loss rows still use Adam below).
    cfg = lambda seeds: tiny(seeds=seeds, **{"record.metrics": False, "optim.name": "sgd", "optim.lr": 0.1})  # noqa: E731
    together_run = train(cfg([0, 1, 2, 3]), progress=False, devices=1)
    together = by_key(together_run.rows)
    for s in range(4):
        alone_run = train(cfg([s]), progress=False, devices=1)
        assert_same_numbers({k: v for k, v in together.items() if k[1] == s}, by_key(alone_run.rows))
        assert_same_state(jax.tree_util.tree_map(lambda a: a[s], together_run.final_state),
                          jax.tree_util.tree_map(lambda a: a[0], alone_run.final_state))


@pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 (fake) devices")
def test_four_devices_equal_one_device():
    cfg = tiny(seeds=[0, 1, 2, 3], **{"optim.name": "sgd", "optim.lr": 0.1})
    one = train(cfg, progress=False, devices=1)
    four = train(cfg, progress=False, devices=4)
    assert four.summary["devices"] == 4 and one.summary["devices"] == 1
    assert_same_state(one.final_state, four.final_state)
    assert_same_numbers(by_key(one.rows), by_key(four.rows), metric_rtol=5e-3)


def test_run_dir_layout_and_resume_equals_uninterrupted(tmp_path):
    cfg = tiny(**{"record.checkpoint_every": 4, "record.max_rows": 64})
    full = train(cfg, out=tmp_path / "full", progress=False)
    for name in ("config.toml", "metrics.csv", "summary.json"):
        assert (tmp_path / "full" / name).is_file()
    assert list_checkpoints(tmp_path / "full") == [4, 8, 12, 16, 20, 24]

    # Simulate a stop at step 16 (mid task 2): drop later checkpoints; their metric rows stay, as a
    # kill between a record and its checkpoint leaves them, and resume must cut them.
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "full", cut)
    for step in (20, 24):
        (cut / "checkpoints" / f"step_{step:08d}.npz").unlink()
        (cut / "checkpoints" / f"step_{step:08d}.sha256").unlink()
    resumed = train(None, out=cut, resume=True, progress=False)
    assert by_key(resumed.rows) == by_key(full.rows)
    assert by_key(read_metrics(cut / "metrics.csv")) == by_key(read_metrics(tmp_path / "full" / "metrics.csv"))


def test_corrupt_checkpoint_is_reported_not_loaded(tmp_path, capsys):
    cfg = tiny(**{"record.checkpoint_every": 4, "record.metrics": False})
    full = train(cfg, out=tmp_path / "r", progress=False)
    last = tmp_path / "r" / "checkpoints" / "step_00000024.npz"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    resumed = train(None, out=tmp_path / "r", resume=True, progress=False)
    assert "corrupt" in capsys.readouterr().err
    assert by_key(resumed.rows) == by_key(full.rows)


def test_refuses_non_empty_out_and_writes_nothing_on_bad_input(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        train(tiny(), out=out, progress=False)
    with pytest.raises(InputError, match="model.name"):
        train(tiny(**{"model.name": "cnn"}), out=tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_divergence_stops_with_step_and_seed(tmp_path):
    cfg = tiny(**{"optim.name": "sgd", "optim.lr": 1e6, "model.activation": "linear", "model.norm": "none",
                  "record.metrics": False})
    with pytest.raises(DivergenceError) as exc:
        train(cfg, out=tmp_path / "d", progress=False)
    assert "step" in str(exc.value) and "seed" in str(exc.value)
    assert exc.value.step is not None


def test_epochs_per_task_reading():
    cfg = tiny(**{"train.steps_per_task": None, "train.epochs_per_task": 1, "record.metrics": False})
    run = train(cfg, progress=False)
    steps = [s["steps"] for s in run.summary["schedule"]]
    assert all(n == run.components.stream.steps_per_epoch(t) for t, n in enumerate(steps))

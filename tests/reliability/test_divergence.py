"""Divergence: exit 3 naming step and seed; the last good checkpoint and earlier records stay."""

import re

from plasticity_dynamics.cli import main
from plasticity_dynamics.training import list_checkpoints, load_checkpoint, read_metrics

ARGS = ["--set", "model.preset=tiny", "--set", "model.norm=none", "--set", "tasks.num_tasks=2",
        "--set", "tasks.classes_per_task=5", "--set", "train.steps_per_task=8", "--set", "record.every=4",
        "--set", "seeds=2", "--set", "train.batch_size=8", "--set", "record.metrics=false", "--set", "record.checkpoint_every=4",
        "--set", "optim.name='sgd'", "--set", "optim.lr=0.01", "--quiet"]


def test_divergence_after_a_good_checkpoint_keeps_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *ARGS]) == 0
    good = read_metrics(out / "metrics.csv")
    # Make the rest of the run blow up: resume task 2 with an absurd learning rate and a linear net.
    cfg = (out / "config.toml").read_text()
    (out / "config.toml").write_text(re.sub(r"lr = [0-9.e-]+", "lr = 1e30", cfg))
    for step in (12, 16):  # forget task 2 so that the resume re-trains it
        (out / "checkpoints" / f"step_{step:08d}.npz").unlink()
        (out / "checkpoints" / f"step_{step:08d}.sha256").unlink()
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "step" in err and "seed" in err and "last good checkpoint: step 8" in err
    assert list_checkpoints(out) == [4, 8]
    kept = read_metrics(out / "metrics.csv")
    assert [r for r in good if r[0] <= 8] == [r for r in kept if r[0] <= 8]
    assert all(r[0] <= 8 for r in kept)

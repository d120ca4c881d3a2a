"""A run killed with SIGKILL resumes to exactly the uninterrupted run: same experiment, same bytes.

The run uses ``model.preset = None`` (the paper's widths) and ``tasks.num_tasks = None`` (every
task): both must survive config.toml, or the resume would rebuild another experiment. Kill points
come from fixed seeds (``random.Random(seed)``), so a failure names a point that can be rerun.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from plasticity_dynamics.training import Config, list_checkpoints, read_metrics

ARGS = ["--set", "model.preset=none", "--set", "tasks.num_tasks=none", "--set", "tasks.classes_per_task=5",
        "--set", "train.steps_per_task=120", "--set", "record.every=6", "--set", "record.checkpoint_every=6",
        "--set", "seeds=2", "--set", "train.batch_size=8", "--set", "record.metrics=false", "--quiet"]
KILL_SEEDS = [0, pytest.param(1, marks=pytest.mark.slow)]  # a second kill point in `make test-all`


def cli(*argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "plasticity_dynamics.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "full"
    proc = cli("train", "--out", str(out), *ARGS)
    assert proc.wait(timeout=900) == 0, proc.stderr.read()
    return out


def test_none_values_are_stored(full):
    cfg = Config.from_toml(full / "config.toml")
    assert cfg.model.preset is None and cfg.tasks.num_tasks is None
    import json

    summary = json.loads((full / "summary.json").read_text())
    assert summary["model"]["options"]["widths"] == [128, 128, 128, 128, 128]  # the paper's MLP
    assert summary["stream"]["num_tasks"] == 2  # 10 classes // 5


@pytest.mark.parametrize("kill_seed", KILL_SEEDS)
def test_sigkill_then_resume_equals_uninterrupted(full, tmp_path, kill_seed):
    target = random.Random(kill_seed).randint(1, 30)  # kill after this many checkpoints (of 40)
    cut = tmp_path / "cut"
    proc = cli("train", "--out", str(cut), *ARGS)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None and len(list_checkpoints(cut)) < target:
        time.sleep(0.002)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = list_checkpoints(cut)[-1] if list_checkpoints(cut) else 0
    # No reader ever sees a half-written file: whatever is there parses.
    if (cut / "metrics.csv").exists():
        read_metrics(cut / "metrics.csv")
    resume = cli("train", "--out", str(cut), "--resume", "--quiet")
    out, err = resume.communicate(timeout=900)
    assert resume.returncode == 0, err
    assert (cut / "metrics.csv").read_bytes() == (full / "metrics.csv").read_bytes(), \
        f"kill seed {kill_seed}: killed after checkpoint {killed_at}"
    assert list_checkpoints(cut) == list_checkpoints(full)
    assert (cut / "config.toml").read_bytes() == (full / "config.toml").read_bytes()

"""A run killed with SIGKILL at a random moment resumes to exactly the uninterrupted numbers."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from plasticity_dynamics.training import list_checkpoints, read_metrics

ARGS = ["--set", "model.preset=tiny", "--set", "tasks.num_tasks=2", "--set", "tasks.classes_per_task=5",
        "--set", "train.steps_per_task=120", "--set", "record.every=6", "--set", "record.checkpoint_every=6",
        "--set", "seeds=2", "--set", "train.batch_size=8", "--set", "record.metrics=false", "--quiet"]


def cli(*argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "plasticity_dynamics.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def table(path):
    return {(r[0], r[1], r[3], r[4]): r[5] for r in read_metrics(path)}


def test_sigkill_at_random_checkpoint_then_resume_equals_uninterrupted(tmp_path):
    full = tmp_path / "full"
    proc = cli("train", "--out", str(full), *ARGS)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()

    rng = random.Random(int(os.environ.get("PDX_KILL_SEED", time.time_ns() % 1000)))
    target = rng.randint(1, 30)  # kill after this many checkpoints (of 40)
    cut = tmp_path / "cut"
    proc = cli("train", "--out", str(cut), *ARGS)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(list_checkpoints(cut)) < target:
        time.sleep(0.002)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = list_checkpoints(cut)[-1] if list_checkpoints(cut) else 0
    # No reader ever sees a half-written file: whatever is there parses.
    read_metrics(cut / "metrics.csv") if (cut / "metrics.csv").exists() else None
    resume = cli("train", "--out", str(cut), "--resume", "--quiet")
    out, err = resume.communicate(timeout=600)
    assert resume.returncode == 0, err
    a, b = table(full / "metrics.csv"), table(cut / "metrics.csv")
    assert a.keys() == b.keys(), f"killed after checkpoint {killed_at}"
    for k in a:
        assert a[k] == b[k], (k, killed_at)
    assert list_checkpoints(cut) == list_checkpoints(full)

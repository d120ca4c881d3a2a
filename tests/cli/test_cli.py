"""The command line: exit codes, one-line errors, nothing written on bad input."""

import subprocess
import sys

import pytest

from plasticity_dynamics.cli import main

TINY = ["--set", "model.preset=tiny", "--set", "train.steps_per_task=8", "--set", "record.every=4",
        "--set", "tasks.num_tasks=2", "--set", "tasks.classes_per_task=5", "--set", "seeds=1",
        "--set", "tasks.metric_batch_size=40", "--set", "train.batch_size=8", "--quiet"]


def test_train_writes_run_dir_and_figure(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    for name in ("config.toml", "metrics.csv", "summary.json", "figures/loss_accuracy.png", "figures/loss_accuracy.pdf"):
        assert (out / name).is_file(), name
    assert (out / "figures" / "loss_accuracy.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "figure:" in printed and "final loss" in printed
    # report redraws from metrics.csv alone
    assert main(["report", str(out)]) == 0


@pytest.mark.parametrize("argv,needle", [
    (["train", "--set", "optim.lr=-1"], "optim.lr=-1"),
    (["train", "--set", "model.name=mlpp"], "mlpp"),
    (["train", "--set", "data.name=imagenet22k"], "imagenet22k"),
    (["train", "--set", "model.widths=[0]"], "0"),
    (["train", "--set", "model.dropout=1.5"], "1.5"),
    (["train", "--set", "tasks.classes_per_task=11"], "11"),
    (["train", "--set", "nonsense"], "nonsense"),
    (["train", "--set", "data.name=cifar10", "--set", "data.data_dir='/nonexistent'"], "/nonexistent"),
    (["reproduce", "fig99"], "fig99"),
    (["reproduce", "continual", "--scale", "huge"], "huge"),
    (["report", "/nonexistent/run"], "/nonexistent/run"),
    (["list", "things"], "things"),
    (["frobnicate"], "frobnicate"),
])
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    extra = ["--out", str(out)] if argv[0] in ("train", "reproduce") else []
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_console_script_runs_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "plasticity_dynamics.cli", "train", "--set", "optim.lr=0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "optim.lr=0" in proc.stderr


def test_list_commands(capsys):
    for what in ("presets", "datasets", "metrics", "figures"):
        assert main(["list", what]) == 0
    out = capsys.readouterr().out
    assert "dead_frac@1e-07,0.95" in out and "mnist1d" in out and "continual" in out

"""Resume never loses work: a resume that cannot continue exits 2 with one line and touches nothing;
metric rows past the resumed step go only after a checkpoint has loaded; --set may only restate."""

import hashlib
import re
from pathlib import Path

import pytest

from plasticity_dynamics.cli import main
from plasticity_dynamics.training import read_metrics
from plasticity_dynamics.training.rundir import MetricsWriter, cut_metrics, metrics_cut

SETS = ["--set", "model.preset=tiny", "--set", "train.steps_per_task=8", "--set", "record.every=4",
        "--set", "tasks.num_tasks=2", "--set", "seeds=1", "--set", "train.batch_size=8",
        "--set", "tasks.metric_batch_size=32", "--set", "record.metrics=false", "--quiet"]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    assert main(["train", "--out", str(out), *SETS]) == 0
    return out


def fresh_copy(run_dir, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    return dst


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_edited_width_exits_2_and_every_file_is_untouched(run_dir, tmp_path, capsys):
    d = fresh_copy(run_dir, tmp_path)
    text = (d / "config.toml").read_text()
    (d / "config.toml").write_text(text.replace('preset = "tiny"', 'preset = "tiny"\nwidths = [24, 24]'))
    before = snapshot(d)
    assert main(["train", "--out", str(d), "--resume", "--quiet"]) == 2
    line = one_error_line(capsys)
    # the first differing leaf in flatten order, with the seed axis first: expected 24 units, found 16
    assert "['dense_0']" in line and "expected float32[1, 24" in line and "found float32[1, 16" in line, line
    assert snapshot(d) == before


def test_every_checkpoint_corrupt_exits_2_and_touches_nothing(run_dir, tmp_path, capsys):
    d = fresh_copy(run_dir, tmp_path)
    for p in (d / "checkpoints").glob("*.npz"):
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    before = snapshot(d)
    assert main(["train", "--out", str(d), "--resume", "--quiet"]) == 2
    assert "fail their checksum" in one_error_line(capsys)
    assert snapshot(d) == before


def test_set_equal_to_stored_is_accepted_and_differing_is_refused(run_dir, tmp_path, capsys):
    d = fresh_copy(run_dir, tmp_path)
    before = snapshot(d)
    assert main(["train", "--out", str(d), "--resume", "--set", "optim.lr=0.5", "--quiet"]) == 2
    line = one_error_line(capsys)
    assert "optim.lr=0.5" in line and "0.001" in line and "--out" in line, line
    assert snapshot(d) == before
    # restating stored values is fine; the finished run just has nothing left to do
    assert main(["train", "--out", str(d), "--resume", "--set", "optim.lr=0.001", "--set", "model.preset=tiny",
                 "--quiet"]) == 0
    assert read_metrics(d / "metrics.csv") == read_metrics(run_dir / "metrics.csv")


def test_rows_past_the_checkpoint_and_a_partial_line_are_dropped_on_resume(run_dir, tmp_path):
    d = fresh_copy(run_dir, tmp_path)
    full_bytes = (d / "metrics.csv").read_bytes()
    # the run as a kill could leave it: last checkpoint gone, its rows written, half a row more
    last = max(int(m.group(1)) for p in (d / "checkpoints").glob("*.npz") if (m := re.search(r"(\d{8})", p.name)))
    for suffix in (".npz", ".sha256"):
        (d / "checkpoints" / f"step_{last:08d}{suffix}").unlink()
    with open(d / "metrics.csv", "a") as fh:
        fh.write("99,0,1,,lo")
    assert main(["train", "--out", str(d), "--resume", "--quiet"]) == 0
    assert (d / "metrics.csv").read_bytes() == full_bytes


def test_metrics_writer_appends_and_cut_keeps_whole_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    with MetricsWriter(path) as w:
        w.append([(4, 0, 0, "", "loss", 0.5)])
        w.append([(8, 0, 0, "", "loss", 0.25), (8, 0, 0, "hidden_0", "rank", 3.0)])
    with open(path, "a") as fh:
        fh.write("12,0,0,,lo")
    assert [r[0] for r in read_metrics(path)] == [4, 8, 8]  # the partial line is not a row
    cut = metrics_cut(path, 4)
    assert cut is not None and path.stat().st_size > cut
    assert read_metrics(path) and path.read_bytes()[:cut].endswith(b"0.5\n")
    cut_metrics(path, cut)
    assert read_metrics(path) == [(4, 0, 0, "", "loss", 0.5)]
    assert metrics_cut(path, 4) is None

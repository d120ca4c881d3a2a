"""A failing cell is recorded and the others finish; a SIGKILLed sweep resumes the missing cells only."""

import os
import signal
import subprocess
import sys
import time

import pytest

from _sweep_testkit import TINY_BASE

from plasticity_dynamics.sweep import run_sweep



def test_failing_cells_are_recorded_and_do_not_stop_the_others(tmp_path):
    # cell 1 diverges inside a program it shares with cell 0 (lanes); cell 2 is bad input
    # (no such model family): a program of its own that cannot be built
    f = tmp_path / "s.toml"
    f.write_text('[sweep]\nmode = "zip"\nseeds = [0]\n[sweep.axes]\n"optim.lr" = [0.05, 1e30, 0.05]\n'
                 '"model.name" = ["mlp", "mlp", "nosuch"]\n' + TINY_BASE)
    res = run_sweep(f, out=tmp_path / "out", progress=False)
    status = [(c["status"], c["error"]) for c in res["cells"]]
    assert status[0] == ("done", "")
    assert status[1][0] == "failed" and "training diverged" in status[1][1]
    assert status[2][0] == "failed" and "nosuch" in status[2][1]
    rows = (tmp_path / "out" / "cells.csv").read_text().splitlines()
    assert rows[2].startswith("1,1e+30,mlp,0,failed,training diverged")
    assert (tmp_path / "out" / "cells" / "cell_0002" / "error.txt").is_file()
    cells_in_table = {line.split(",")[0] for line in (tmp_path / "out" / "table.csv").read_text().splitlines()[1:]}
    assert "0" in cells_in_table and "2" not in cells_in_table


WIDTHS = '[sweep]\nseeds = [0]\n[sweep.axes]\n"model.widths" = [[6], [8], [10], [12]]\n' + TINY_BASE.replace(
    'preset = "tiny", ', "").replace("steps_per_task = 8", "steps_per_task = 40")


@pytest.mark.slow
def test_sigkill_then_resume_runs_only_missing_cells(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(WIDTHS)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "plasticity_dynamics.cli", "sweep", str(f), "--out", str(out),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = out / "cells" / "cell_0000" / "summary.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not first.is_file():
        time.sleep(0.005)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {i for i in range(4) if (out / "cells" / f"cell_{i:04d}" / "summary.json").is_file()}
    assert 0 in done_before and len(done_before) < 4
    stamps = {i: (out / "cells" / f"cell_{i:04d}" / "summary.json").stat().st_mtime_ns for i in done_before}
    res = run_sweep(f, out=out, resume=True, progress=False)
    assert res["ran"] == 4 - len(done_before)
    assert [c["status"] for c in res["cells"]] == ["done"] * 4
    for i, t in stamps.items():  # finished cells were not run again
        assert (out / "cells" / f"cell_{i:04d}" / "summary.json").stat().st_mtime_ns == t
    cells_in_table = {line.split(",")[0] for line in (out / "table.csv").read_text().splitlines()[1:]}
    assert cells_in_table == {"0", "1", "2", "3"}
    # a resumed sweep refuses a changed file
    f.write_text(WIDTHS.replace("[12]]", "[14]]"))
    from plasticity_dynamics.errors import InputError

    with pytest.raises(InputError, match="differs"):
        run_sweep(f, out=out, resume=True, progress=False)

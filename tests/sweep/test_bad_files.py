"""Bad sweep files: exit code 2, one line on stderr, nothing written."""

import pytest

from plasticity_dynamics.cli import main

TINY = """
[base]
model = { preset = "tiny", dropout = 0.0 }
tasks = { classes_per_task = 5, num_tasks = 1 }
train = { steps_per_task = 4, batch_size = 8 }
record = { every = 4, metrics = false }
"""

CASES = {
    "unknown sweep key": ('[sweep]\nmodes = "grid"\n[sweep.axes]\n"optim.lr" = [0.1]\n', "unknown key sweep.modes"),
    "unknown config key": ('[sweep]\n[sweep.axes]\n"optim.lrr" = [0.1]\n', "optim.lrr"),
    "unknown table": ('[sweep]\n[sweep.axes]\n"optim.lr" = [0.1]\n[extra]\na = 1\n', "unknown sweep file table"),
    "empty axis": ('[sweep]\n[sweep.axes]\n"optim.lr" = []\n', "is empty"),
    "no axes": ('[sweep]\nseeds = [0]\n', "[sweep.axes] is missing or empty"),
    "axis twice (quoted and nested)": ('[sweep]\n[sweep.axes]\n"optim.lr" = [0.1]\noptim.lr = [0.2]\n', "given twice"),
    "axis twice (repeated key)": ('[sweep]\n[sweep.axes]\n"optim.lr" = [0.1]\n"optim.lr" = [0.2]\n', "given twice"),
    "axis also in base": ('[sweep]\n[sweep.axes]\n"train.batch_size" = [4, 8]\n', "set in [base] and swept"),
    "zip unequal": ('[sweep]\nmode = "zip"\n[sweep.axes]\n"optim.lr" = [0.1, 0.2]\n"optim.momentum" = [0.5]\n',
                    "equal length"),
    "bad mode": ('[sweep]\nmode = "cross"\n[sweep.axes]\n"optim.lr" = [0.1]\n', "sweep.mode"),
    "bad value in a cell": ('[sweep]\n[sweep.axes]\n"optim.lr" = [0.1, -1.0]\n', "cell 1"),
    "too many lanes": ('[sweep]\nseeds = 4\nmax_memory_gb = 1e-6\n[sweep.axes]\n"optim.lr" = [0.1, 0.2]\n',
                       "8 lanes of one program and need about"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_sweep_file_exit_2_nothing_written(tmp_path, capsys, name):
    body, expected = CASES[name]
    f = tmp_path / "s.toml"
    f.write_text(body + (TINY if "[base]" not in body and "[extra]" not in body else ""))
    out = tmp_path / "out"
    assert main(["sweep", str(f), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and expected in err, err
    assert not out.exists()


def test_address_without_ray_executor_is_refused(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text('[sweep]\n[sweep.axes]\n"optim.lr" = [0.1]\n' + TINY)
    assert main(["sweep", str(f), "--out", str(tmp_path / "o"), "--address", "auto"]) == 2
    assert "--address applies to --executor ray only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

"""Sweep lanes: a 4 x 4 lr x sigma0 noisy-SGD grid with 2 seeds (32 lanes) is one compiled
program, and every lane equals its separate run (engine equivalence style).

A lane runs the code of a separate ``train`` run (the optimiser values are arguments in both),
with the same keys (a lane's data, dropout and noise keys are its seed's). What differs is the
vmapped lane count, and XLA:CPU picks its batched-matmul and reduction strategies by shape:
measured here, SGD lanes are bit-identical to separate runs up to 16 lanes of the tiny MLP
(tested below with 8), while at 32 lanes the states differ by float32 rounding (~1e-8), as the
engine's vmapped-seeds test already allows. Recorded losses agree to about one float32 ulp.
"""

import jax
import numpy as np
import pytest
from _sweep_testkit import TINY_BASE

from plasticity_dynamics.runtime import CompileLog
from plasticity_dynamics.sweep import group_cells, parse_sweep, run_sweep
from plasticity_dynamics.training import engine, train, train_lanes

LRS, SIGMAS = [0.02, 0.05, 0.1, 0.2], [0.0, 0.01, 0.1, 0.5]
BASE = {"optim": {"name": "noisy_sgd"}, "model": {"preset": "tiny", "dropout": 0.0},
        "tasks": {"classes_per_task": 5, "num_tasks": 2, "metric_batch_size": 40},
        "train": {"steps_per_task": 12, "batch_size": 8}, "record": {"every": 4, "metrics": False}}


def grid_spec():
    return parse_sweep({"sweep": {"mode": "grid", "seeds": [0, 1],
                                  "axes": {"optim.lr": LRS, "optim.noise_sigma0": SIGMAS}}, "base": BASE})


def test_grid_is_one_program_and_lanes_equal_separate_runs():
    spec = grid_spec()
    programs = group_cells(spec)
    assert len(programs) == 1 and programs[0].lanes == 32
    engine._PROGRAMS.clear()
    engine.TRACE_COUNTS.clear()
    with CompileLog() as names:
        lanes = train_lanes(list(spec.configs), progress=False, devices=1)
    assert names.count("jit(chunk)") == 1 and engine.TRACE_COUNTS["chunk"] == 1, names.names
    for cfg, lane in zip(spec.configs, lanes):
        alone = train(cfg, progress=False, devices=1)
        assert lane.config == cfg and lane.error is None
        a, b = alone.table.columns, lane.table.columns
        for col in ("step", "seed", "task", "layer", "metric"):
            np.testing.assert_array_equal(a[col], b[col])
        np.testing.assert_allclose(a["value"], b["value"], rtol=1e-6, atol=0)
        for x, y in zip(jax.tree_util.tree_leaves(alone.final_state), jax.tree_util.tree_leaves(lane.final_state)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"lr={cfg.optim.lr}")


@pytest.mark.slow  # 25 s; the 32-lane grid test above keeps lanes == separate runs in `make test`
def test_sgd_lanes_are_bit_identical_to_separate_runs():
    spec = parse_sweep({"sweep": {"seeds": [0, 1], "axes": {"optim.lr": LRS}},
                        "base": {**BASE, "optim": {"name": "sgd"}}})
    lanes = train_lanes(list(spec.configs), progress=False, devices=1)
    for cfg, lane in zip(spec.configs, lanes):
        alone = train(cfg, progress=False, devices=1)
        for x, y in zip(jax.tree_util.tree_leaves(alone.final_state), jax.tree_util.tree_leaves(lane.final_state)):
            np.testing.assert_array_equal(x, y, err_msg=f"lr={cfg.optim.lr}")


def test_sweep_directory_cells_and_table(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("""
[sweep]
mode = "zip"
seeds = [3]
[sweep.axes]
"optim.lr" = [0.05, 0.1]
"optim.momentum" = [0.5, 0.9]
""" + TINY_BASE)
    res = run_sweep(f, out=tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert res["programs"] == 1 and [c["status"] for c in res["cells"]] == ["done", "done"]
    assert (out / "cells.csv").read_text().splitlines() == [
        "cell,optim.lr,optim.momentum,program,status,error", "0,0.05,0.5,0,done,", "1,0.1,0.9,0,done,"]
    assert (out / "plan.txt").read_text().splitlines()[0].startswith("one program: every cell is a lane")
    header, *rows = (out / "table.csv").read_text().splitlines()
    assert header == "cell,optim.lr,optim.momentum,step,seed,task,layer,metric,value"
    assert len(rows) == 2 * 2 * 2  # cells x records x (loss, accuracy)
    # each cell directory is a normal run: its config.toml rebuilds exactly that cell
    from plasticity_dynamics.training import Config

    for i, cfg in enumerate(parse_sweep(__import__("tomllib").loads(f.read_text())).configs):
        assert Config.from_toml(out / "cells" / f"cell_{i:04d}" / "config.toml") == cfg


def _exact_spec(exact=True, seeds=(0, 1)):
    lrs = [0.01 * (i + 1) for i in range(16)]
    return parse_sweep({"sweep": {"seeds": list(seeds), "exact": exact, "axes": {"optim.lr": lrs}},
                        "base": {**BASE, "optim": {"name": "sgd"}, "tasks": {**BASE["tasks"], "num_tasks": 1}}})


def test_exact_caps_programs_at_16_lanes():
    from plasticity_dynamics.errors import InputError
    from plasticity_dynamics.sweep import EXACT_MAX_LANES, describe_plan

    assert [(p.cells, p.lanes) for p in group_cells(_exact_spec(False))] == [(list(range(16)), 32)]
    spec = _exact_spec()
    programs = group_cells(spec)
    assert [(p.cells, p.lanes) for p in programs] == [(list(range(8)), 16), (list(range(8, 16)), 16)]
    assert EXACT_MAX_LANES == 16 and "at most 16 lanes" in describe_plan(spec, programs)[0]
    assert [p.lanes for p in group_cells(_exact_spec(seeds=range(3)))] == [15, 15, 15, 3]  # whole cells
    with pytest.raises(InputError, match="caps a program at 16 lanes"):
        _exact_spec(seeds=range(17))
    with pytest.raises(InputError, match="sweep.exact"):
        _exact_spec(exact="yes")


@pytest.mark.slow  # two 16-lane programs (one compile) against 16 separate runs
def test_exact_sweep_of_32_sgd_lanes_is_bit_identical_to_separate_runs():
    from plasticity_dynamics.sweep import sweep_runs

    spec = _exact_spec()
    engine._PROGRAMS.clear()
    with CompileLog() as names:
        runs = sweep_runs(spec, progress=False)
    assert names.count("jit(chunk)") == 1, names.names  # two programs of 16 lanes: one compiled program
    for cfg, lane in zip(spec.configs, runs):
        alone = train(cfg, progress=False, devices=1)
        for x, y in zip(jax.tree_util.tree_leaves(alone.final_state), jax.tree_util.tree_leaves(lane.final_state)):
            np.testing.assert_array_equal(x, y, err_msg=f"lr={cfg.optim.lr}")
        # the recorded loss is a batch mean, a reduction whose order XLA picks by shape: one ulp
        np.testing.assert_array_max_ulp(alone.table.columns["value"].astype(np.float32),
                                        lane.table.columns["value"].astype(np.float32), maxulp=2)

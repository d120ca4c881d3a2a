"""The ray executor: a 3-cell width sweep on a local Ray cluster gives the local executor's table."""

import pytest

from plasticity_dynamics.sweep import run_sweep

SWEEP = """
[sweep]
seeds = [0, 1]
[sweep.axes]
"model.widths" = [[6], [8], [10]]
[base]
optim = { name = "sgd", lr = 0.05 }
model = { dropout = 0.0 }
tasks = { classes_per_task = 5, num_tasks = 1 }
train = { steps_per_task = 8, batch_size = 8 }
record = { every = 4, metrics = false }
"""


@pytest.mark.slow
def test_ray_width_sweep_equals_local(tmp_path):
    ray = pytest.importorskip("ray")  # installed by `make test-all` (the ray extra)
    from plasticity_dynamics.sweep.executors import worker_env

    f = tmp_path / "s.toml"
    f.write_text(SWEEP)
    local = run_sweep(f, out=tmp_path / "local", progress=False)
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": worker_env()})
    try:
        remote = run_sweep(f, out=tmp_path / "ray", executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert [c["status"] for c in remote["cells"]] == ["done"] * 3
    assert remote["programs"] == 3
    assert (tmp_path / "ray" / "cells.csv").read_text() == (tmp_path / "local" / "cells.csv").read_text()
    assert (tmp_path / "ray" / "table.csv").read_text() == (tmp_path / "local" / "table.csv").read_text()

"""train_lanes: configs of one program only; each lane writes a normal run directory."""

import pytest

from plasticity_dynamics.errors import InputError
from plasticity_dynamics.training import Config, train_lanes
from plasticity_dynamics.training.engine import program_key


def tiny(**extra):
    base = {"model.preset": "tiny", "model.dropout": 0.0, "tasks.classes_per_task": 5, "tasks.num_tasks": 1,
            "train.steps_per_task": 8, "train.batch_size": 8, "record.every": 4, "record.metrics": False,
            "seeds": [0], "optim.name": "sgd"}
    return Config().with_overrides({**base, **extra})


def test_program_key_ignores_lane_values_but_not_structure():
    assert program_key(tiny(**{"optim.lr": 0.1})) == program_key(tiny(**{"optim.lr": 0.2, "seeds": [4, 5]}))
    assert program_key(tiny(**{"optim.momentum": 0.5})) == program_key(tiny(**{"optim.momentum": 0.9}))
    assert program_key(tiny()) != program_key(tiny(**{"optim.momentum": 0.9}))  # a momentum buffer
    assert program_key(tiny()) != program_key(tiny(**{"model.widths": [8]}))


def test_configs_of_different_programs_are_refused(tmp_path):
    with pytest.raises(InputError, match="model.widths"):
        train_lanes([tiny(), tiny(**{"model.widths": [8]})], outs=[tmp_path / "a", tmp_path / "b"], progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(InputError, match="share a run directory"):
        train_lanes([tiny(), tiny(**{"optim.lr": 0.2})], outs=[tmp_path / "a", tmp_path / "a"], progress=False)


def test_each_lane_is_a_normal_run_directory_that_resumes(tmp_path):
    from plasticity_dynamics.training import list_checkpoints, read_metrics, train

    a, b = tiny(**{"optim.lr": 0.05}), tiny(**{"optim.lr": 0.2, "seeds": [1, 2]})
    runs = train_lanes([a, b], outs=[tmp_path / "a", tmp_path / "b"], progress=False)
    assert [r.error for r in runs] == [None, None]
    assert Config.from_toml(tmp_path / "b" / "config.toml") == b
    assert list_checkpoints(tmp_path / "b") == [8]
    rows = read_metrics(tmp_path / "b" / "metrics.csv")
    assert {r[1] for r in rows} == {1, 2}
    again = train(out=tmp_path / "b", resume=True, progress=False)  # a lane's directory resumes alone
    assert again.config == b and read_metrics(tmp_path / "b" / "metrics.csv") == rows

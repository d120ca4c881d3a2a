"""A training config names a model by a Python entry point "module:function": pdx.train runs
it (unit metrics recorded on the wrapped model) and analyze detects manifolds on its
checkpoints, with no change to the engine."""

from __future__ import annotations

import json

import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError
from plasticity_dynamics.experiments.analyze import analyze
from plasticity_dynamics.training import Config, train

ENTRY = "_models_planted:entry_tanh_mlp"


def test_create_resolves_entry_point_and_passes_options():
    model = pdx.models.create(ENTRY, preset="small", num_outputs=4, width=6)
    assert model.init()["params"]["w_out"].shape == (6, 4)
    assert list(model.layer_kinds) == ["w_in"] and model.activation == "tanh"


@pytest.mark.parametrize("spec,what", [("no_such_module_x:f", "cannot import"),
                                       ("_models_planted:nope", "no function"),
                                       ("_models_planted:FROZEN", "no function"),
                                       (":f", "entry point")])
def test_bad_entry_point_is_one_line(spec, what):
    with pytest.raises(InputError) as err:
        pdx.models.create(spec)
    assert what in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_train_and_analyze_a_custom_model(tmp_path):
    out = tmp_path / "run"
    cfg = Config().with_overrides({
        "model.name": ENTRY, "model.preset": None, "model.width": 12, "tasks.num_tasks": 1,
        "tasks.classes_per_task": 5, "tasks.metric_batch_size": 50, "train.steps_per_task": 10,
        "train.batch_size": 16, "record.every": 5, "record.checkpoint_every": 5, "seeds": 1})
    run = train(cfg, out=out, progress=False)
    layers = {lay for _s, _seed, _t, lay, met, _v in run.rows if met.startswith("frozen")}
    assert "w_in" in layers
    payload = analyze(out, "last", k=2, progress=False)
    seed = payload["checkpoints"][-1]["seeds"][0]
    assert json.loads((out / "manifolds.json").read_text())["checkpoints"]
    assert "frozen_normal_dim" in json.dumps(seed["detection"])


@pytest.mark.slow  # loads the dataset first (~40 s on a shared 2-core machine)
def test_cli_gets_one_line_without_traceback_for_an_unprovable_model(tmp_path, capsys):
    from plasticity_dynamics.cli import main

    code = main(["train", "--set", "model.name=_models_planted:entry_unprovable",
                 "--set", "train.steps_per_task=2", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "'sort'" in err[0] and "w" in err[0] and "Traceback" not in err[0]

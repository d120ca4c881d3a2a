"""Config: TOML round trip, dotted overrides, validation messages."""

import pytest

from plasticity_dynamics.errors import InputError
from plasticity_dynamics.training import Config, parse_override


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = Config()
    cfg.validate()
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert Config.from_toml(path) == cfg


def test_overrides_reach_typed_fields_and_options(tmp_path):
    cfg = Config().with_overrides({"optim.lr": 0.01, "model.widths": [8, 8], "seeds": 3, "tasks.head_zeroing": "false"})
    assert cfg.optim.lr == 0.01 and isinstance(cfg.optim.lr, float)
    assert cfg.model.options == {"widths": (8, 8)}  # option lists are stored as tuples
    assert cfg.seeds == (0, 1, 2)
    assert cfg.tasks.head_zeroing is False
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert Config.from_toml(path) == cfg


@pytest.mark.parametrize("text,key,value", [
    ("optim.lr=1e-3", "optim.lr", 1e-3),
    ("model.widths=[4, 5]", "model.widths", [4, 5]),
    ("model.activation=tanh", "model.activation", "tanh"),
    ("data.name='digits'", "data.name", "digits"),
    ("record.metrics=false", "record.metrics", False),
])
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


@pytest.mark.parametrize("overrides,needle", [
    ({"optim.lr": -1.0}, "optim.lr=-1.0"),
    ({"optim.lr": 0}, "optim.lr=0"),
    ({"optim.name": "lbfgs"}, "optim.name='lbfgs'"),
    ({"train.batch_size": 0}, "train.batch_size=0"),
    ({"train.batch_size": 2.5}, "train.batch_size=2.5"),
    ({"train.steps_per_tsk": 3}, "train.steps_per_tsk"),
    ({"bogus.key": 1}, "bogus.key"),
    ({"seeds": 0}, "seeds=0"),
    ({"seeds": [1, 1]}, "repeated"),
    ({"record.every": 10, "record.checkpoint_every": 15}, "record.checkpoint_every=15"),
    ({"optim.momentum": 1.0}, "optim.momentum=1.0"),
])
def test_bad_values_name_the_value(overrides, needle):
    with pytest.raises(InputError) as exc:
        Config().with_overrides(overrides)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg


def test_bad_toml_is_input_error(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[model\nname=")
    with pytest.raises(InputError, match="not valid TOML"):
        Config.from_toml(p)
    with pytest.raises(InputError, match="does not exist"):
        Config.from_toml(tmp_path / "missing.toml")

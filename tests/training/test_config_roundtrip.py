"""Property: every config survives config.toml exactly (from_toml(to_toml(c)) == c), None included."""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plasticity_dynamics.training import Config
from plasticity_dynamics.training.config import OPTIMIZERS

_text = st.text(alphabet=string.ascii_letters + string.digits + " _-./:é", min_size=0, max_size=12)
_scalar = st.one_of(st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False, allow_infinity=False,
                                                                         width=64), _text)
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3).map(tuple),
                                                       st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True),
                                                                       inner, max_size=3)),
                      max_leaves=6)
_opt_key = st.from_regex(r"opt_[a-z0-9_]{1,8}", fullmatch=True)
_options = st.dictionaries(_opt_key, st.one_of(st.none(), _value), max_size=3)
_pos_int = st.integers(1, 10_000)
_opt_int = st.one_of(st.none(), _pos_int)
_unit = st.floats(0.0, 1.0, exclude_max=True, allow_nan=False)


@st.composite
def configs(draw):
    optim = draw(st.sampled_from(OPTIMIZERS))
    noisy = optim == "noisy_sgd"
    epochs = draw(_opt_int)
    iv_name = draw(st.sampled_from(["none", "cbp", "redo", "shrink_perturb", "head_reset", "full_reset"]))
    metrics = draw(st.booleans())
    every = draw(_pos_int)
    tree = {
        "model.name": draw(st.sampled_from(["mlp", "cnn", "resnet18", "vit"])),
        "model.preset": draw(st.one_of(st.none(), st.sampled_from(["small", "tiny", "paper"]))),
        "data.name": draw(st.sampled_from(["mnist1d", "digits", "cifar10"])),
        "data.data_dir": draw(st.one_of(st.none(), _text)),
        "tasks.kind": draw(st.sampled_from(["class_split", "permuted_inputs", "bitflip"])),
        "tasks.classes_per_task": draw(_opt_int),
        "tasks.num_tasks": draw(_opt_int),
        "tasks.head_zeroing": draw(st.one_of(st.none(), st.booleans())),
        "tasks.metric_batch_size": draw(_pos_int),
        "train.epochs_per_task": epochs,
        "train.steps_per_task": None if epochs is not None else draw(_opt_int),
        "train.batch_size": draw(_pos_int),
        "train.reset_optimizer_each_task": draw(st.booleans()),
        "optim.name": optim,
        "optim.lr": draw(st.floats(1e-8, 10.0)),
        "optim.momentum": 0.0 if optim == "adam" else draw(_unit),
        "optim.weight_decay": draw(st.floats(0.0, 1.0)),
        "optim.noise_sigma0": draw(st.one_of(st.none(), st.floats(0.0, 1.0))) if noisy else None,
        "optim.noise_decay": draw(st.one_of(st.none(), st.floats(0.0, 1.0))) if noisy else None,
        "intervention.name": iv_name,
        "intervention.start_step": 0 if iv_name == "none" else draw(st.integers(0, 10**6)),
        "record.every": every,
        "record.checkpoint_every": draw(st.one_of(st.none(), st.integers(1, 20).map(lambda k: k * every))),
        "record.metrics": metrics,
        "seeds": draw(st.lists(st.integers(0, 2**31), min_size=1, max_size=4, unique=True)),
    }
    for section, opts in (("model", draw(_options)), ("tasks", draw(_options)),
                          ("intervention", {} if iv_name == "none" else draw(_options)),
                          ("record", draw(_options) if metrics else {})):
        tree.update({f"{section}.{k}": v for k, v in opts.items()})
    return Config().with_overrides(tree)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_toml_round_trip_is_exact(tmp_path_factory, cfg):
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(cfg.to_toml())
    back = Config.from_toml(path)
    assert back == cfg, cfg.differences(back)
    assert back.to_toml() == cfg.to_toml()


def test_none_values_survive_and_are_listed():
    cfg = Config().with_overrides({"model.preset": None, "tasks.num_tasks": None, "model.opt_gain": None})
    text = cfg.to_toml()
    assert 'none = [' in text and '"model.preset"' in text and '"model.opt_gain"' in text
    back = Config.from_dict(__import__("tomllib").loads(text))
    assert back.model.preset is None and back.tasks.num_tasks is None and back.model.options == {"opt_gain": None}


def test_differences_name_every_changed_key():
    a = Config()
    b = a.with_overrides({"model.widths": [8], "optim.lr": 0.5})
    assert [d[0] for d in a.differences(b)] == ["model.widths", "optim.lr"]

"""Oracle: the zoo's unit partitions, now inferred from the jaxpr (one path for every model,
issue 17), equal the partitions of the deleted hand-written walkers exactly, names included.

The walkers' output is frozen in data/zoo_layouts.json (written once by
data/make_zoo_layouts.py while they existed): for mlp, cnn, resnet18 and vit of the "tiny"
preset in every norm / norm_affine / norm_after_activation option, and for the bare params of
mlp and cnn without the model (``pdx.manifolds.frozen(units, params)``): group names and
sizes in order, every leaf's (axis, group, role) specs, every layer's name, group, activation
flag, monitored flag, incoming and outgoing (leaf, axis) pairs (compared as sets: their order
within a layer carries no meaning), head sizes. A second check wraps ``model.apply`` with
``pdx.models.from_function`` (no zoo names known) and finds the same partition up to a
renaming of groups."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import jax
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError
from plasticity_dynamics.manifolds import unit_partition

DATA = pathlib.Path(__file__).with_name("data")
_spec = importlib.util.spec_from_file_location("make_zoo_layouts", DATA / "make_zoo_layouts.py")
mk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mk)
WANT = json.loads((DATA / "zoo_layouts.json").read_text())

FAST = {("mlp", "batch", True, False), ("cnn", "layer", False, True),
        ("resnet18", "batch", True, False), ("vit", "layer", True, False)}


def _cases():
    for case in mk.cases():
        yield case if case in FAST else pytest.param(*case, marks=pytest.mark.slow)


def _canon(snap):
    """JSON round trip; a layer's incoming / outgoing pairs as sorted lists."""
    snap = json.loads(json.dumps(snap))
    snap["layers"] = [row[:4] + [sorted(row[4]), sorted(row[5])] for row in snap["layers"]]
    return snap


def _build(family, norm, affine, after):
    model = pdx.models.create(family, preset="tiny", norm=norm, norm_affine=affine,
                              norm_after_activation=after)
    x = mk.example_x(family)
    return model, model.init(jax.random.PRNGKey(0), x), x


@pytest.mark.parametrize("family,norm,affine,after", list(_cases()))
def test_zoo_partition_equals_frozen_walkers(family, norm, affine, after):
    model, variables, _ = _build(family, norm, affine, after)
    key = mk.key(family, norm, affine, after)
    assert _canon(mk.snapshot(unit_partition(model, variables))) == _canon(WANT[key])
    if "bare:" + key in WANT:  # no model: rebuilt from the parameter shapes
        got = unit_partition(None, variables["params"])
        assert _canon(mk.snapshot(got)) == _canon(WANT["bare:" + key])
        assert got.family == family


def _wrap(model, variables, x):
    state = variables.get("batch_stats")
    if state is None:
        def fn(p, xx):
            return model.apply({"params": p}, xx).logits
    else:
        def fn(v, xx):
            return model.apply(v, xx).logits
    return pdx.models.from_function(fn, variables["params"], x, state=state)


@pytest.mark.parametrize("family,norm,affine,after", list(_cases()))
def test_wrapped_zoo_model_equals_frozen_walkers_up_to_names(family, norm, affine, after):
    model, variables, x = _build(family, norm, affine, after)
    want = WANT[mk.key(family, norm, affine, after)]
    wrapped = _wrap(model, variables, x)
    got = _canon(mk.snapshot(unit_partition(wrapped, wrapped.init())))
    names = {}
    assert [p for p, _ in got["leaves"]] == [p for p, _ in want["leaves"]]
    for (path, specs), (_, ref) in zip(got["leaves"], want["leaves"]):
        assert [s[::2] for s in specs] == [s[::2] for s in ref], path
        for s, r in zip(specs, ref):
            assert names.setdefault(s[1], r[1]) == r[1], (path, s, r)
    sizes = dict(want["groups"])
    assert sorted(names.values()) == sorted(sizes)  # a bijection onto the groups
    assert {names[g]: n for g, n in got["groups"]} == sizes
    ref_layers = {(r[1], str(r[4]), str(r[5])) for r in _canon(want)["layers"] if r[2]}
    assert {(names[r[1]], str(r[4]), str(r[5])) for r in got["layers"]} == ref_layers
    assert sorted([names[g], d] for g, d in got["head_dims"]) == want["head_dims"]


def test_layout_is_traced_once_per_model_and_shapes():
    from plasticity_dynamics.models import zoo_layout as zl

    model, variables, _ = _build("mlp", "none", True, False)
    zl._cached.cache_clear()
    for _ in range(3):
        unit_partition(model, variables)
    info = zl._cached.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    wide = pdx.models.create("mlp", preset="tiny", norm="none", widths=(32, 16))
    unit_partition(wide, wide.init(jax.random.PRNGKey(0), mk.example_x("mlp")))
    assert zl._cached.cache_info().misses == 2


def test_bare_params_of_other_models_need_the_model():
    model, variables, _ = _build("vit", "layer", True, False)
    with pytest.raises(InputError, match="pass the model"):
        unit_partition(None, variables["params"])


def test_linear_activation_keeps_the_zoo_layout():
    """An identity activation has no site to infer; the zoo layout (hidden layers with an
    activation function, as the walkers declared them) is traced with relu in its place."""
    model = pdx.models.create("mlp", preset="tiny", norm="none", activation="linear")
    variables = model.init(jax.random.PRNGKey(0), mk.example_x("mlp"))
    got = mk.snapshot(unit_partition(model, variables))
    assert _canon(got) == _canon(WANT[mk.key("mlp", "none", True, False)])

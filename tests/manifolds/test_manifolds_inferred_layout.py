"""Oracle: the unit layout inferred from the jaxpr of a zoo model (pdx.models.from_function
around ``model.apply``) equals the hand-written layout of manifolds/layouts.py, for mlp, cnn,
resnet18 and vit in every norm / norm_affine / norm_after_activation option. Equality is exact
up to the names of the groups (a bijection, the same for every leaf): every leaf (params and
batch statistics) has the same unit axes with the same roles, every group the same size,
every layer with an activation the same incoming and outgoing (leaf, axis) pairs, and the
attention groups the same head size. (The zoo's extra monitored points without an
activation, vit block outputs, are declared by the zoo, not inferred.)"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.manifolds import unit_partition

FAST = {("mlp", "batch", True, False), ("cnn", "layer", False, True),
        ("resnet18", "batch", True, False), ("vit", "layer", True, False)}


def _cases():
    for fam in ("mlp", "cnn", "resnet18", "vit"):
        for norm, affine, after in itertools.product(("none", "batch", "layer"), (True, False),
                                                     (False, True)):
            if after and fam in ("resnet18", "vit"):
                continue
            case = (fam, norm, affine, after)
            yield case if case in FAST else pytest.param(*case, marks=pytest.mark.slow)


def _wrap(model, variables, x):
    state = variables.get("batch_stats")
    if state is None:
        def fn(p, xx):
            return model.apply({"params": p}, xx).logits
    else:
        def fn(v, xx):
            return model.apply(v, xx).logits
    return pdx.models.from_function(fn, variables["params"], x, state=state)


def _assert_same(hand, inferred):
    names = {}
    assert set(hand.leaves) == set(inferred.leaves)
    for path, specs in hand.leaves.items():
        got = inferred.leaves[path]
        assert [(s.axis, s.role) for s in got] == [(s.axis, s.role) for s in specs], path
        for a, b in zip(specs, got):
            assert names.setdefault(b.group, a.group) == a.group, (path, a, b)
    assert sorted(names.values()) == sorted(hand.groups)  # a bijection onto the groups
    for g, h in names.items():
        assert inferred.units(g) == hand.units(h)
    want = {(lu.group, tuple(sorted(lu.incoming)), tuple(sorted(lu.outgoing)))
            for lu in hand.layers.values() if lu.activation}
    got = {(names[lu.group], tuple(sorted(lu.incoming)), tuple(sorted(lu.outgoing)))
           for lu in inferred.layers.values()}
    assert got == want
    assert {names[g]: d for g, d in inferred.head_dims.items()} == dict(hand.head_dims)


@pytest.mark.parametrize("family,norm,affine,after", list(_cases()))
def test_inferred_layout_equals_hand_written(family, norm, affine, after):
    model = pdx.models.create(family, preset="tiny", norm=norm, norm_affine=affine,
                              norm_after_activation=after)
    x = jnp.ones((2, 12)) if family == "mlp" else jnp.ones((2, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    wrapped = _wrap(model, variables, x)
    _assert_same(unit_partition(model, variables), unit_partition(wrapped, wrapped.init()))
    assert len(wrapped.layer_kinds) == sum(lu.activation for lu in
                                           unit_partition(model, variables).layers.values())

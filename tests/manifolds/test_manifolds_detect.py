"""detect(): planted frozen units and clone clusters on hand-built networks; fresh networks."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

import plasticity_dynamics as pdx
from _manifolds_testkit import make_net

mf = pdx.manifolds


def _set(params, module, leaf, fn):
    a = np.array(params[module][leaf])
    fn(a)
    return {**params, module: {**params[module], leaf: jnp.asarray(a)}}


def _xent_grad(model, variables, x):
    y = jnp.arange(x.shape[0]) % 10
    return jax.jit(jax.grad(lambda p: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        model.apply({**variables, "params": p}, x).logits, y))))(variables["params"])


def test_fresh_networks_report_nothing():
    """Freshly initialised (not randomised) networks: no clone clusters, no frozen units. The
    one exception allowed is a real one: a fresh cnn fc unit after ReLU + max-pool (all inputs
    >= 0) can be negative on every input; then it must really be dead (checked on z)."""
    for family, shape in (("mlp", (128, 12)), ("cnn", (128, 8, 8, 3))):
        model = pdx.models.create(family, preset="tiny")
        x = jax.random.normal(jax.random.PRNGKey(101), shape)
        variables = model.init(jax.random.PRNGKey(1), x[:2])
        det = mf.detect(model, variables, x)
        assert det.summary()["clones"] == {} and det.cloned.normal_dim == 0, family
        if family != "cnn":
            assert det.empty and det.frozen_units == {}, det.summary()
        for layer, units in det.frozen_units.items():
            pre = model.apply(variables, x, train=True, rng=jax.random.PRNGKey(0)).preactivations
            assert layer.startswith("fc_")
            z = np.asarray(pre[layer]).reshape(-1, np.shape(pre[layer])[-1])
            assert np.all(z[:, units] <= 0)
        json.dumps(det.summary())


def test_planted_dead_and_saturated_units_are_found_with_their_case():
    # relu, no norm: a very negative bias kills hidden_0 units 3 and 7
    model, variables, x = make_net("mlp", seed=4, batch=64, norm="none")
    p = _set(variables["params"], "dense_0", "bias", lambda b: b.__setitem__([3, 7], -1e3))
    v = {**variables, "params": p}
    det = mf.detect(model, v, x)
    np.testing.assert_array_equal(det.frozen_units["hidden_0"], [3, 7])
    np.testing.assert_array_equal(det.dead_units["hidden_0"], [3, 7])
    assert set(det.frozen_units) == {"hidden_0"}
    assert all(u["case"] == "dead" and u["frozen_fraction"] == 1.0
               for u in det.summary()["frozen"]["hidden_0"])
    # oracle: the true gradient vanishes on every coordinate of the frozen manifold's normal
    # space (incoming column, bias, and the dead units' outgoing rows)
    g = _xent_grad(model, v, x)
    assert float(det.frozen.leakage(g)) == 0.0
    assert det.frozen.normal_dim == 2 * (12 + 1) + 2 * 16
    assert not np.any(np.asarray(g["dense_1"]["kernel"])[[3, 7], :])

    # tanh: a huge bias saturates hidden_1 unit 5 at h = 1 (f' = 0, h != 0)
    model, variables, x = make_net("mlp", seed=5, batch=64, norm="none", activation="tanh")
    p = _set(variables["params"], "dense_1", "bias", lambda b: b.__setitem__(5, 1e3))
    v = {**variables, "params": p}
    det = mf.detect(model, v, x)
    assert {k: list(u) for k, u in det.frozen_units.items()} == {"hidden_1": [5]}
    assert det.summary()["frozen"]["hidden_1"][0]["case"] == "saturated"
    assert det.frozen.normal_dim == 16 + 1  # incoming column and bias only
    assert float(det.frozen.leakage(_xent_grad(model, v, x))) == 0.0


def test_planted_weight_clones_are_found_exactly():
    """hidden_1 unit 9 made an exact copy of unit 2 (incoming column, bias, norm parameters and
    running statistics, outgoing row): one cluster {2, 9}, nothing else."""
    model, variables, x = make_net("mlp", seed=6, batch=64)
    p = variables["params"]
    p = _set(p, "dense_1", "kernel", lambda k: k.__setitem__((slice(None), 9), k[:, 2]))
    p = _set(p, "dense_1", "bias", lambda b: b.__setitem__(9, b[2]))
    p = _set(p, "norm_1", "scale", lambda b: b.__setitem__(9, b[2]))
    p = _set(p, "norm_1", "bias", lambda b: b.__setitem__(9, b[2]))
    p = _set(p, "out", "kernel", lambda k: k.__setitem__(9, k[2]))
    stats = variables["batch_stats"]
    stats = _set(stats, "norm_1", "mean", lambda b: b.__setitem__(9, b[2]))
    stats = _set(stats, "norm_1", "var", lambda b: b.__setitem__(9, b[2]))
    v = {"params": p, "batch_stats": stats}
    for clones in ("activations", "weights", "both"):
        det = mf.detect(model, v, x, clones=clones)
        assert det.summary()["clones"].keys() == {"hidden_1"}, clones
        assert det.summary()["clones"]["hidden_1"]["clusters"] == [[2, 9]]
        assert det.frozen_units == {}
        # block {2, 9}: dense_1 kernel 16 + bias 1 + norm scale, bias 2 + out kernel 10
        assert det.cloned.normal_dim == 16 + 1 + 2 + 10
    ev = det.summary()["clones"]["hidden_1"]
    assert ev["spread"] < 1e-6 and ev["r2"]["hidden_1"] > 1 - 1e-6
    assert det.summary()["cloned_relative_distance"] < 1e-6


def test_detect_recovers_expansion_partitions(nets, expanded):
    for family in ("mlp", "vit"):
        model, variables, x = nets[family]
        wide_model, wide, part = expanded[family]
        det = mf.detect(wide_model, wide, x)
        for g in part.groups:  # every group, including vit heads found from weights only
            np.testing.assert_array_equal(det.partition.groups[g], part.groups[g])
        assert det.cloned.normal_dim == mf.cloned(part, wide["params"]).normal_dim
        assert det.summary()["cloned_relative_distance"] < 1e-6
        json.dumps(det.summary())

"""Function-preserving expansion: outputs, layouts, gradients and optimiser states."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plasticity_dynamics as pdx
from _manifolds_testkit import FAMILIES, apply_fn

mf = pdx.manifolds


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("family", FAMILIES)
def test_expanded_outputs_equal_base_in_eval_and_train_mode(nets, family, factor):
    model, variables, x = nets[family]
    wide_model, wide, part = mf.expand(model, variables, factor)
    for train in (False, True):
        base = apply_fn(model, train)(variables, x)
        assert _rel(apply_fn(wide_model, train)(wide, x), base) < 1e-5, (family, factor, train)
    # every group is an interleaved E-fold cloning
    for g in part.groups:
        np.testing.assert_array_equal(part.block_sizes(g), factor)


def test_expanded_layouts_by_hand(nets):
    """Interleaved rules written out with NumPy: kernels W[k*E + c, l*E + d] = W[k, l] / E,
    biases and norm statistics duplicated, conv -> fc flatten position-major, channel fastest."""
    e = 2
    model, variables, _ = nets["cnn"]
    _, wide, _ = mf.expand(model, variables, e)
    p, w = variables["params"], wide["params"]
    k1 = np.asarray(p["conv_1"]["kernel"])
    np.testing.assert_allclose(w["conv_1"]["kernel"],
                               np.repeat(np.repeat(k1, e, axis=2), e, axis=3) / e, rtol=1e-6)
    np.testing.assert_array_equal(w["conv_0"]["kernel"],
                                  np.repeat(np.asarray(p["conv_0"]["kernel"]), e, axis=3))
    var = np.asarray(variables["batch_stats"]["norm_1"]["var"])
    np.testing.assert_array_equal(wide["batch_stats"]["norm_1"]["var"], np.repeat(var, e))
    fc = np.asarray(p["fc_0"]["kernel"])             # (positions * C, F)
    c = k1.shape[-1]
    fc3 = fc.reshape(-1, c, fc.shape[1])             # (positions, C, F)
    want = np.repeat(np.repeat(fc3, e, axis=1), e, axis=2) / e
    np.testing.assert_allclose(w["fc_0"]["kernel"], want.reshape(-1, want.shape[2]), rtol=1e-6)
    np.testing.assert_allclose(w["out"]["kernel"],
                               np.repeat(np.asarray(p["out"]["kernel"]), e, 0) / e, rtol=1e-6)
    np.testing.assert_array_equal(w["out"]["bias"], p["out"]["bias"])


def test_vit_head_duplication_layout_and_why_head_dim_doubling_is_not_exact(nets):
    model, variables, x = nets["vit"]
    e, hd = 2, model.options["dim"] // model.options["heads"]
    wide_model, wide, part = mf.expand(model, variables, e)
    assert wide_model.options["heads"] == e * model.options["heads"]
    assert wide_model.options["dim"] == e * model.options["dim"]
    q = np.asarray(variables["params"]["block_0"]["attn"]["query"]["kernel"])
    qw = np.asarray(wide["params"]["block_0"]["attn"]["query"]["kernel"])
    for h in range(model.options["heads"]):
        for c in range(e):
            cols = slice((h * e + c) * hd, (h * e + c + 1) * hd)   # wide head h*E + c
            np.testing.assert_allclose(qw[::e, cols] * e, q[:, h * hd:(h + 1) * hd], rtol=1e-6)
    # The authors' variant: same number of heads, interleaved features (head_dim doubles).
    # Attention logits grow by sqrt(E), so the function changes.
    doubled = pdx.models.create("vit", **{**wide_model.options, "heads": model.options["heads"]})
    part_d = mf.unit_partition(model, variables)
    srcs = {g: mf.source_map(part_d.units(g), e) for g in part_d.groups}   # all interleaved
    from plasticity_dynamics.manifolds.expand import expand_leaf
    from plasticity_dynamics.manifolds.partition import collection_paths
    leaves = [expand_leaf(v, part_d.specs(path), srcs, {g: e for g in srcs})
              for path, v in collection_paths(variables)]
    vd = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(variables), leaves)
    base = apply_fn(model)(variables, x)
    assert _rel(apply_fn(doubled)(vd, x), base) > 1e-3


def test_wide_gradient_is_the_grad_mode_expansion_of_the_base_gradient(nets):
    """At the expanded point dL/dW_wide = expand(dL/dW_base) / E_out (clones' backward signals
    are delta_base / E); expand_opt_state uses exactly this rule, so Adam's mu / sqrt(nu) is the
    base one. Oracle: jax.grad of both networks."""
    model, variables, x = nets["mlp"]
    y = jnp.arange(x.shape[0]) % 10
    wide_model, wide, part = mf.expand(model, variables, 2)

    def grad(m, v):
        return jax.jit(jax.grad(lambda p: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
            m.apply({**v, "params": p}, x).logits, y))))(v["params"])

    gb, gw = grad(model, variables), grad(wide_model, wide)
    state = optax.ScaleByAdamState(count=jnp.int32(3), mu=gb,
                                   nu=jax.tree_util.tree_map(jnp.square, gb))
    ws = mf.expand_opt_state((state, optax.EmptyState()), part)[0]
    for a, b in zip(jax.tree_util.tree_leaves(ws.mu), jax.tree_util.tree_leaves(gw)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7)
    for a, b in zip(jax.tree_util.tree_leaves(ws.nu), jax.tree_util.tree_leaves(gw)):
        np.testing.assert_allclose(a, np.square(b), rtol=5e-4, atol=1e-12)
    assert int(ws.count) == 3
    # a real optax state keeps its structure and becomes block-constant (tangent)
    opt = optax.adam(1e-3)
    s = opt.update(gb, opt.init(variables["params"]), variables["params"])[1]
    sw = mf.expand_opt_state(s, part)
    assert jax.tree_util.tree_structure(sw) == jax.tree_util.tree_structure(
        opt.init(wide["params"]))
    man = mf.cloned(part, wide["params"])
    assert float(man.leakage(sw[0].mu)) < 1e-6 and float(man.leakage(sw[0].nu)) < 1e-6


def test_expand_rejects_bad_factor(nets):
    model, variables, _ = nets["mlp"]
    for bad in (0, 1.5, -2):
        with pytest.raises(pdx.errors.InputError):
            mf.expand(model, variables, bad)

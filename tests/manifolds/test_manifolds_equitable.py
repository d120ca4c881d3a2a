"""Base (quotient) network, M_RE / M_CE membership, equitable-but-not-block-constant points."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from _manifolds_testkit import FAMILIES, apply_fn

mf = pdx.manifolds


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("family", FAMILIES)
def test_base_network_of_expanded_network_reproduces_it(nets, expanded, family):
    model, variables, x = nets[family]
    wide_model, wide, part = expanded[family]
    base_model, base = mf.base_network(wide_model, wide, part)
    assert base_model.options == model.options
    assert _rel(apply_fn(base_model)(base, x), apply_fn(wide_model)(wide, x)) < 1e-5
    # the quotient recovers the base parameters themselves
    for a, b in zip(jax.tree_util.tree_leaves(base), jax.tree_util.tree_leaves(variables)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_base_weight_is_the_column_sum_not_total_over_rows(nets, expanded):
    """PAPER.md 1.4 erratum: first layer, |S_i| = 1 (inputs), |S_j| = 2: the clones each carry
    w_base, the total is 2 w_base; the base weight must be the column sum w_base."""
    _, variables, _ = nets["mlp"]
    wide_model, wide, part = expanded["mlp"]
    _, base = mf.base_network(wide_model, wide, part)
    w = np.asarray(wide["params"]["dense_0"]["kernel"])
    np.testing.assert_allclose(base["params"]["dense_0"]["kernel"], w[:, ::2], rtol=1e-6)
    np.testing.assert_allclose(w[:, ::2] + w[:, 1::2], 2 * w[:, ::2])  # total / |S_i| = 2 w_base


def _perturbed(wide, rows, cols, block):
    params = jax.tree_util.tree_map(lambda a: a, wide["params"])
    k = np.array(params["dense_1"]["kernel"])
    k[np.ix_(rows, cols)] += block
    params = {**params, "dense_1": {**params["dense_1"], "kernel": jnp.asarray(k)}}
    return {**wide, "params": params}


def test_equitable_not_block_constant_point_keeps_outputs_cloned(nets, expanded):
    model, variables, x = nets["mlp"]
    wide_model, wide, part = expanded["mlp"]
    d = 0.3
    # zero row and column sums inside the block (S_1 of hidden_0) x (S_2 of hidden_1)
    eq = _perturbed(wide, [2, 3], [4, 5], np.array([[d, -d], [-d, d]]))
    assert mf.in_row_equitable(part, eq["params"]) and mf.in_column_equitable(part, eq["params"])
    m = mf.cloned(part, wide["params"])
    np.testing.assert_allclose(float(m.distance(eq["params"])), 2 * d, rtol=1e-5)  # not M_BC
    out = wide_model.apply(eq, x)
    h = np.asarray(out.activations["hidden_1"])
    np.testing.assert_allclose(h[:, ::2], h[:, 1::2], atol=1e-6)  # still forward clones
    base_model, base = mf.base_network(wide_model, eq, part)
    assert _rel(apply_fn(base_model)(base, x), out.logits) < 1e-5
    assert _rel(out.logits, apply_fn(model)(variables, x)) < 1e-5
    # break the column sums: no longer equitable, clones differ
    bad = _perturbed(wide, [2], [4], np.array([[d]]))
    assert not mf.in_column_equitable(part, bad["params"])
    assert not mf.in_row_equitable(part, bad["params"])
    hb = np.asarray(wide_model.apply(bad, x).activations["hidden_1"])
    assert np.max(np.abs(hb[:, 4] - hb[:, 5])) > 1e-3
    # row sums only: equal row sums within S_1 but unequal column sums
    row_only = _perturbed(wide, [2, 3], [4, 5], np.array([[d, -d], [d, -d]]))
    assert mf.in_row_equitable(part, row_only["params"])
    assert not mf.in_column_equitable(part, row_only["params"])


def test_equitable_residuals_match_numpy_definitions(nets, expanded):
    """Residuals on a hand-perturbed kernel equal the NumPy block row/column-sum spreads."""
    wide_model, wide, part = expanded["mlp"]
    rng = np.random.default_rng(0)
    k = np.asarray(wide["params"]["dense_1"]["kernel"]) + 0.1 * rng.standard_normal((32, 32))
    params = {**wide["params"], "dense_1": {**wide["params"]["dense_1"],
                                            "kernel": jnp.asarray(k, jnp.float32)}}
    r = mf.equitable_residuals(part, params)
    # C_a A_b k: average over output blocks, then centre within input blocks
    ab = np.repeat(k.reshape(32, 16, 2).mean(2), 2, axis=1)
    row = ab - np.repeat(ab.reshape(16, 2, 32).mean(1), 2, axis=0)
    ba = np.repeat(k.reshape(16, 2, 32).mean(1), 2, axis=0)
    col = ba - np.repeat(ba.reshape(32, 16, 2).mean(2), 2, axis=1)
    np.testing.assert_allclose(float(r["row"]), np.linalg.norm(row), rtol=1e-4)
    np.testing.assert_allclose(float(r["column"]), np.linalg.norm(col), rtol=1e-4)
    proj = mf.equitable_projection(part, params)
    assert mf.in_row_equitable(part, proj) and mf.in_column_equitable(part, proj)


def test_base_network_rejects_non_quotients(nets):
    model, variables, _ = nets["vit"]
    part = mf.unit_partition(model, variables)
    ids = np.arange(part.units("block_0/attn"))
    ids[1] = 0  # merges two features of one head: the quotient is not a vit
    with pytest.raises(pdx.errors.InputError):
        mf.base_network(model, variables, part.with_blocks({"block_0/attn": ids}))
    lm, lv, _ = nets["mlp"]
    with pytest.raises(pdx.errors.InputError):
        mf.base_network(lm, lv["params"], mf.unit_partition(lm, lv))

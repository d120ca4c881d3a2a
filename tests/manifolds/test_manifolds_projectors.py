"""Projector properties of cloned and frozen manifolds, against NumPy oracles written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from _manifolds_testkit import FAMILIES

mf = pdx.manifolds


def _random_partition(model, variables, seed):
    part = mf.unit_partition(model, variables)
    rng = np.random.default_rng(seed)
    blocks = {g: rng.integers(0, max(1, part.units(g) // 2), part.units(g)) for g in part.groups}
    return part.with_blocks(blocks), blocks


def _random_tree(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(rng.standard_normal(np.shape(a)), jnp.float32), tree)


def _flat(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in leaves])


def _avg_matrix(labels):
    """Dense block-averaging matrix A (n, n): A[i, j] = 1/|S| if labels[i] == labels[j]."""
    labels = np.asarray(labels)
    same = (labels[:, None] == labels[None, :]).astype(np.float64)
    return same / same.sum(axis=1, keepdims=True)


def _properties(m, a, b, p):
    """Everything the property test needs, in one compiled program (the methods are jit-able)."""
    ta, na, nb = m.tangent(a), m.normal(a), m.normal(b)
    return dict(ta=ta, na=na, nb=nb, tta=m.tangent(ta), nna=m.normal(na),
                leak_t=m.leakage(ta), leak_n=m.leakage(na), dist_proj=m.distance(m.project(p)),
                dist=m.distance(p), off=m.offset(p))


@pytest.mark.parametrize("family", FAMILIES)
def test_projectors_idempotent_orthogonal_complementary(nets, family):
    model, variables, _ = nets[family]
    params = variables["params"]
    part, _ = _random_partition(model, variables, seed=1)
    m = mf.cloned(part, params)
    a, b = _random_tree(params, 2), _random_tree(params, 3)
    p = jax.tree_util.tree_map(lambda x, y: x + y, params, b)
    r = jax.jit(_properties)(m, a, b, p)
    ta, na, nb = _flat(r["ta"]), _flat(r["na"]), _flat(r["nb"])
    scale = np.linalg.norm(_flat(a))
    assert np.linalg.norm(_flat(r["tta"]) - ta) <= 1e-5 * scale        # P_T P_T = P_T
    assert np.linalg.norm(_flat(r["nna"]) - na) <= 1e-5 * scale        # P_N P_N = P_N
    assert np.linalg.norm(ta + na - _flat(a)) <= 1e-6 * scale          # P_T + P_N = I
    assert abs(ta @ nb) <= 1e-5 * scale * np.linalg.norm(_flat(b))     # <P_T a, P_N b> = 0
    assert 0 < m.normal_dim < m.size
    assert float(r["leak_t"]) < 1e-5 and abs(float(r["leak_n"]) - 1.0) < 1e-5
    assert float(r["dist_proj"]) <= 1e-5 * np.linalg.norm(_flat(p))
    # params = reference + b, so the offset from M is P_N b
    np.testing.assert_allclose(_flat(r["off"]), nb, atol=1e-5)
    np.testing.assert_allclose(float(r["dist"]), np.linalg.norm(nb), rtol=1e-4)


def test_mlp_tangent_matches_dense_kronecker_oracle(nets):
    """P_T on the MLP equals A_in W A_out built densely from the labels (independent oracle),
    and normal_dim = size - sum of inter-block cells."""
    model, variables, _ = nets["mlp"]
    params = variables["params"]
    part, labels = _random_partition(model, variables, seed=4)
    m = mf.cloned(part, params)
    a = _random_tree(params, 5)
    t = m.tangent(a)
    a0, a1 = _avg_matrix(labels["hidden_0"]), _avg_matrix(labels["hidden_1"])
    k = lambda lab: len(np.unique(lab))  # noqa: E731
    np.testing.assert_allclose(t["dense_0"]["kernel"], np.asarray(a["dense_0"]["kernel"]) @ a0,
                               atol=1e-5)
    np.testing.assert_allclose(t["dense_1"]["kernel"],
                               a0 @ np.asarray(a["dense_1"]["kernel"]) @ a1, atol=1e-5)
    np.testing.assert_allclose(t["out"]["kernel"], a1 @ np.asarray(a["out"]["kernel"]), atol=1e-5)
    np.testing.assert_allclose(t["norm_1"]["scale"], a1 @ np.asarray(a["norm_1"]["scale"]),
                               atol=1e-5)
    np.testing.assert_allclose(t["out"]["bias"], a["out"]["bias"], atol=0)
    k0, k1 = k(labels["hidden_0"]), k(labels["hidden_1"])
    d_in, out = params["dense_0"]["kernel"].shape[0], params["out"]["bias"].shape[0]
    cells = d_in * k0 + k0 + k0 * k1 + k1 + k1 * out + out + 2 * k0 + 2 * k1
    assert m.normal_dim == m.size - cells


def test_cnn_flatten_axis_blocks_follow_channels(nets):
    """fc_0's input axis is position-major with channel fastest: entry i belongs to channel
    i % C at position i // C, so P_T averages over (position, channel block)."""
    model, variables, _ = nets["cnn"]
    params = variables["params"]
    part, labels = _random_partition(model, variables, seed=6)
    m = mf.cloned(part, params)
    a = _random_tree(params, 7)
    lab_c, lab_f = labels["conv_1"], labels["fc_0"]
    n = params["fc_0"]["kernel"].shape[0]
    c = len(lab_c)
    flat_lab = (np.arange(n) // c) * 1000 + lab_c[np.arange(n) % c]
    want = _avg_matrix(flat_lab) @ np.asarray(a["fc_0"]["kernel"]) @ _avg_matrix(lab_f)
    np.testing.assert_allclose(m.tangent(a)["fc_0"]["kernel"], want, atol=1e-5)
    # conv kernels: every tap (kh, kw) is averaged over (in block, out block)
    a1, a0 = _avg_matrix(lab_c), _avg_matrix(labels["conv_0"])
    w = np.asarray(a["conv_1"]["kernel"])
    want = np.einsum("ij,hwjk,kl->hwil", a0, w, a1)
    np.testing.assert_allclose(m.tangent(a)["conv_1"]["kernel"], want, atol=1e-5)


def test_manifold_is_a_jit_and_loop_friendly_pytree(nets):
    model, variables, _ = nets["mlp"]
    params = variables["params"]
    part, _ = _random_partition(model, variables, seed=8)
    m = mf.cloned(part, params)
    a = _random_tree(params, 9)
    direct = _flat(m.normal(a))
    via_arg = jax.jit(lambda man, v: man.normal(v))(m, a)  # Manifold passed into jit
    np.testing.assert_allclose(_flat(via_arg), direct, atol=1e-6)
    looped = jax.jit(lambda v: jax.lax.fori_loop(0, 3, lambda i, u: m.tangent(u), v))(a)
    np.testing.assert_allclose(_flat(looped), _flat(m.tangent(a)), atol=1e-5)
    # recording along a trajectory does not retrace: new points, new manifolds of the same
    # layout (e.g. through another reference) reuse one compiled kernel
    from plasticity_dynamics.manifolds.manifold import _jitted
    m.distance(a)
    before = _jitted("distance")._cache_size()
    m.distance(_random_tree(params, 11))
    m.at(a).distance(params)
    assert _jitted("distance")._cache_size() == before
    leaves, treedef = jax.tree_util.tree_flatten(m)
    again = jax.tree_util.tree_unflatten(treedef, leaves)
    assert again.normal_dim == m.normal_dim and again.info == m.info
    with pytest.raises(pdx.errors.InputError):
        m.tangent({"dense_0": params["dense_0"]})


def test_frozen_mlp_masks_incoming_and_dead_outgoing(nets):
    model, variables, _ = nets["mlp"]
    params = variables["params"]
    m = mf.frozen({"hidden_0": [1, 4]}, params, mf.unit_partition(model, variables),
                  dead={"hidden_1": np.eye(16, dtype=bool)[2]})
    mask = jax.tree_util.tree_map(lambda x: np.zeros(np.shape(x), bool), params)
    for leaf in ("scale", "bias"):
        mask["norm_0"][leaf][[1, 4]] = True
        mask["norm_1"][leaf][2] = True
    mask["dense_0"]["kernel"][:, [1, 4]] = True
    mask["dense_0"]["bias"][[1, 4]] = True
    mask["dense_1"]["kernel"][:, 2] = True
    mask["dense_1"]["bias"][2] = True
    mask["out"]["kernel"][2, :] = True  # dead unit: outgoing weights see h = 0
    a = _random_tree(params, 10)
    np.testing.assert_array_equal(_flat(m.normal(a)), _flat(a) * _flat(mask))
    assert m.normal_dim == int(_flat(mask).sum())
    cases = {(layer, u["unit"]): u["case"] for layer, us in m.info["units"].items() for u in us}
    assert cases == {("hidden_0", 1): "saturated", ("hidden_0", 4): "saturated",
                     ("hidden_1", 2): "dead"}
    with pytest.raises(pdx.errors.InputError):
        mf.frozen({"hidden_9": [0]}, params)
    with pytest.raises(pdx.errors.InputError):
        mf.frozen({"hidden_0": [99]}, params)


def test_frozen_cnn_dead_channel_freezes_every_flattened_position(nets):
    model, variables, _ = nets["cnn"]
    params = variables["params"]
    m = mf.frozen({}, params, dead={"conv_1": [3]})
    k = np.asarray(m.normal(jax.tree_util.tree_map(jnp.ones_like, params))["fc_0"]["kernel"])
    c = params["conv_1"]["kernel"].shape[-1]
    rows = np.flatnonzero(k.any(axis=1))
    np.testing.assert_array_equal(rows, np.arange(3, k.shape[0], c))
    vit, vit_vars, _ = nets["vit"]
    with pytest.raises(pdx.errors.InputError):  # the vit residual stream has no activation
        mf.frozen({"block_0": [0]}, vit_vars["params"], mf.unit_partition(vit, vit_vars))

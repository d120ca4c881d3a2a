"""Duplicates, clone clusters and weight-symmetry clusters: planted answers and NumPy oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

m = pdx.metrics


def _np_duplicate_fraction(h, t, centred):
    h = np.asarray(h, np.float64)
    if centred:
        h = h - h.mean(0)
    norms = np.linalg.norm(h, axis=0)
    hn = np.divide(h, norms, out=np.zeros_like(h), where=norms > 0)
    c = hn.T @ hn
    d = h.shape[1]
    marked = [any(c[j, k] > t for k in range(j + 1, d)) for j in range(d)]
    return np.mean(marked)


def _np_components(adj):
    """Union-find over an explicit edge list: labels = smallest member."""
    n = adj.shape[0]
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    for i, j in zip(*np.nonzero(adj)):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)])


def test_planted_duplicates_and_clusters():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(300, 10)).astype(np.float32)
    h[:, 3] = 2.5 * h[:, 1]  # scaled copy: cosine 1
    h[:, 7] = h[:, 1]  # third member of the same cluster
    h[:, 5] = h[:, 4] + 0.01 * rng.normal(size=300)  # near copy
    h[:, 9] = 0.0  # zero column: never a duplicate
    h[:, 8] = 0.0
    np.testing.assert_array_equal(np.flatnonzero(m.duplicate_units(h)), [1, 3, 4])  # lower index of each pair
    assert float(m.duplicate_fraction(h)) == pytest.approx(0.3)
    cl = m.clone_clusters(h)
    members = m.cluster_members(cl.labels)
    assert [list(c) for c in members] == [[1, 3, 7], [4, 5]]
    np.testing.assert_array_equal(np.asarray(cl.sizes)[[1, 3, 7, 4, 5, 0, 9]], [3, 3, 3, 2, 2, 1, 1])
    assert int(cl.num_clusters) == 2 and int(cl.largest) == 3
    assert float(jnp.mean(cl.in_cluster)) == pytest.approx(0.5)


def test_pearson_differs_from_uncentred_cosine():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(500, 1))
    # two independent units sharing a large offset: uncentred cosine ~ 1, Pearson ~ 0
    h = np.concatenate([10 + base, 10 + rng.normal(size=(500, 1)), 3 * base - 1], axis=1).astype(np.float32)
    np.testing.assert_array_equal(np.flatnonzero(m.duplicate_units(h)), [0])  # 0 ~ 1 through the offset
    np.testing.assert_array_equal(np.flatnonzero(m.duplicate_units(h, centred=True)), [0])  # 0 ~ 2 (affine copy)
    cos = np.asarray(m.cosine_similarity(h, centred=True))
    assert cos[0, 2] > 0.999 and abs(cos[0, 1]) < 0.2


@pytest.mark.parametrize("seed", [0, 1])
def test_duplicate_fraction_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(100, 6))
    mix = rng.normal(size=(6, 30)) * (rng.random((6, 30)) < 0.3)
    h = (base @ mix + 0.05 * rng.normal(size=(100, 30)) + rng.choice([0, 3], size=30)).astype(np.float32)
    for t in (0.9, 0.95):
        assert float(m.duplicate_fraction(h, t)) == pytest.approx(_np_duplicate_fraction(h, t, False))
        assert float(m.duplicate_fraction_pearson(h, t)) == pytest.approx(_np_duplicate_fraction(h, t, True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_connected_components_match_union_find(seed):
    rng = np.random.default_rng(seed)
    n = 40
    adj = rng.random((n, n)) < 0.03
    adj = adj | adj.T
    got = np.asarray(m.connected_components(adj))
    np.testing.assert_array_equal(got, _np_components(adj))


def test_long_chain_is_one_cluster():
    n = 33
    adj = np.zeros((n, n), bool)
    idx = np.random.default_rng(0).permutation(n)
    adj[idx[:-1], idx[1:]] = True  # a path through all nodes in random order
    assert np.all(np.asarray(m.connected_components(adj)) == 0)


def test_clusters_vmap_over_seeds():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)

    def layer(k):
        h = jax.random.normal(k, (50, 6))
        return h.at[:, 5].set(h[:, 0])

    hs = jax.vmap(layer)(keys)
    got = jax.jit(jax.vmap(lambda h: m.clone_clusters(h).num_clusters))(hs)
    np.testing.assert_array_equal(np.asarray(got), [1, 1, 1])


def _cloned_mlp(key, units=6):
    """Hand-built 2-layer MLP parameters with units (1, 4) exact clones, (2, 5) equal incoming
    weights but different outgoing weights."""
    k1, k2, k3 = jax.random.split(key, 3)
    w_in = jax.random.normal(k1, (5, units))
    b = jax.random.normal(k2, (units,))
    w_out = jax.random.normal(k3, (units, 3))
    w_in = w_in.at[:, 4].set(w_in[:, 1]).at[:, 5].set(w_in[:, 2])
    b = b.at[4].set(b[1]).at[5].set(b[2])
    w_out = w_out.at[4].set(w_out[1])
    return w_in, b, w_out


def test_weight_symmetry_clusters_hand_built():
    w_in, b, w_out = _cloned_mlp(jax.random.PRNGKey(0))
    incoming = jnp.concatenate([w_in.T, b[:, None]], axis=1)
    cl = m.weight_symmetry_clusters(incoming, w_out)
    assert [list(c) for c in m.cluster_members(cl.labels)] == [[1, 4]]
    cl_in = m.weight_symmetry_clusters(incoming)  # incoming only: both pairs
    assert [list(c) for c in m.cluster_members(cl_in.labels)] == [[1, 4], [2, 5]]
    nudged = incoming.at[4, 0].add(1e-3)  # outside the default tolerance
    assert int(m.weight_symmetry_clusters(nudged, w_out).num_clusters) == 0
    assert int(m.weight_symmetry_clusters(nudged, w_out, atol=2e-3).num_clusters) == 1


def _random_variables(model, x, seed):
    """Random variables with the model's structure (shapes from eval_shape: no compilation)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def test_unit_weight_features_on_contract_models():
    mlp = pdx.models.create("mlp", preset="tiny", norm="batch")
    v = _random_variables(mlp, jnp.ones((4, 12)), 0)
    p = v["params"]
    # make hidden_0 units 3 and 7 clones: incoming column, bias, norm params, outgoing rows
    p["dense_0"]["kernel"][:, 7] = p["dense_0"]["kernel"][:, 3]
    p["dense_0"]["bias"][7] = p["dense_0"]["bias"][3]
    p["dense_1"]["kernel"][7] = p["dense_1"]["kernel"][3]
    for tree in (p["norm_0"], v["batch_stats"]["norm_0"]):
        for leaf in tree.values():
            leaf[7] = leaf[3]
    inc, out = m.unit_weight_features(v, "hidden_0")
    assert inc.shape[0] == out.shape[0] == mlp.options["widths"][0]
    cl = m.weight_symmetry_clusters(inc, out)
    assert [list(c) for c in m.cluster_members(cl.labels)] == [[3, 7]]
    v["batch_stats"]["norm_0"]["mean"][7] += 1.0  # different running statistics break the symmetry
    assert int(m.weight_symmetry_clusters(*m.unit_weight_features(v, "hidden_0")).num_clusters) == 0

    cnn = pdx.models.create("cnn", preset="tiny")
    vc = _random_variables(cnn, jnp.ones((2, 8, 8, 3)), 1)
    pc = vc["params"]
    last = f"conv_{len(cnn.options['channels']) - 1}"
    c = cnn.options["channels"][-1]
    pc[last]["kernel"][..., 2] = pc[last]["kernel"][..., 0]
    pc[last]["bias"][2] = pc[last]["bias"][0]
    norm = last.replace("conv", "norm")
    for tree in (pc.get(norm, {}), vc.get("batch_stats", {}).get(norm, {})):
        for leaf in tree.values():
            leaf[2] = leaf[0]
    fc = pc["fc_0"]["kernel"].reshape(-1, c, pc["fc_0"]["kernel"].shape[-1])  # NHWC flatten: channel fastest
    fc[:, 2] = fc[:, 0]
    inc, out = m.unit_weight_features(vc, last)
    assert inc.shape[0] == c
    assert [list(c_) for c_ in m.cluster_members(m.weight_symmetry_clusters(inc, out).labels)] == [[0, 2]]
    with pytest.raises(InputError, match="layer="):
        m.unit_weight_features(vc, "block_0")


def test_unit_weight_features_on_a_wrapped_model_with_its_partition():
    """Any model: a plain-JAX MLP with arbitrary names; its inferred partition says which
    entries are a unit's. A planted clone pair (incoming column, bias, outgoing row) is found."""
    rng = np.random.default_rng(3)
    params = {"a": {"w": rng.normal(size=(5, 6)).astype(np.float32),
                    "c": rng.normal(size=(6,)).astype(np.float32)},
              "z": rng.normal(size=(6, 3)).astype(np.float32)}
    params["a"]["w"][:, 4] = params["a"]["w"][:, 1]
    params["a"]["c"][4] = params["a"]["c"][1]
    params["z"][4] = params["z"][1]

    def net(p, x):
        return jnp.tanh(x @ p["a"]["w"] + p["a"]["c"]) @ p["z"]

    model = pdx.models.from_function(net, params, jnp.ones((2, 5)))
    variables = model.init()
    part = pdx.manifolds.unit_partition(model, variables)
    (layer,) = part.layers
    inc, out = m.unit_weight_features(variables, layer, part)
    assert inc.shape == (6, 5 + 1) and out.shape == (6, 3)
    assert [list(c) for c in m.cluster_members(m.weight_symmetry_clusters(inc, out).labels)] == [[1, 4]]

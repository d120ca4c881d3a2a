"""unit_metrics / make_unit_metrics_fn on contract models.

Oracles: an independent NumPy forward + backward pass of a hand-built MLP (float64) followed by
NumPy statements of the metric formulas; a hand-built interleaved expansion of an MLP (exact
clones: R^2 = 1 forward and backward); a trace counter in the model's apply (no retracing).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

m = pdx.metrics
DEAD = "dead_frac@1e-07,0.95"
SAT = "saturated_frac@0.0001,0.99"


def _init(model, x, seed):
    """Random variables with the model's structure (shapes from eval_shape: no compilation)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    def leaf(path, s):
        if getattr(path[-1], "key", None) == "var":  # batch-norm running variance stays positive
            return np.ones(s.shape, np.float32)
        return (0.4 * rng.normal(size=s.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def _mlp(widths=(16, 16)):
    return pdx.models.create("mlp", widths=widths, norm="none", dropout=0.0, num_outputs=5)


def _np_forward_backward(p, x, y, mask):
    """Hidden activations h_i, pre-activations z_i and dL/dh_i of a ReLU MLP, masked mean CE."""
    h, hs, zs = np.asarray(x, np.float64), [], []
    layers = sorted(k for k in p if k.startswith("dense_"))
    for k in layers:
        z = h @ p[k]["kernel"] + p[k]["bias"]
        h = np.maximum(z, 0)
        zs.append(z)
        hs.append(h)
    logits = h @ p["out"]["kernel"] + p["out"]["bias"]
    masked = np.where(mask, logits, -1e30)
    e = np.exp(masked - masked.max(1, keepdims=True))
    prob = e / e.sum(1, keepdims=True)
    b = x.shape[0]
    loss = -np.mean(np.log(prob[np.arange(b), y]))
    d = (prob - np.eye(logits.shape[1])[y]) / b
    gs = [None] * len(layers)
    dh = d @ p["out"]["kernel"].T
    for i in reversed(range(len(layers))):
        gs[i] = dh
        dh = (dh * (zs[i] > 0)) @ p[layers[i]]["kernel"].T
    return hs, zs, gs, logits, loss


def _np_metrics(h, g, z):
    a = np.abs(h)
    s = a.mean(0)
    norms = np.linalg.norm(h, axis=0)
    hn = np.divide(h, norms, out=np.zeros_like(h), where=norms > 0)
    c = np.triu(hn.T @ hn, 1)
    sv = np.linalg.svd(h, compute_uv=False)
    sv = sv[sv > 1e-5 * sv.max()]
    p = sv / sv.sum()
    hc = h - h.mean(0)
    lam = np.linalg.svd(hc, compute_uv=False) ** 2
    return {
        DEAD: np.mean((a < 1e-7).mean(0) > 0.95),
        "dormant_frac@0.1": np.mean(s / (s.mean() + 1e-9) <= 0.1),
        SAT: np.mean((np.abs(g) / np.maximum(s, 1e-12) < 1e-4).mean(0) > 0.99),
        "linearised_frac@0.9": np.mean((z > 0).mean(0) >= 0.9),
        "frozen_frac@0.01,0.99": np.mean((z <= 0).mean(0) > 0.99),
        "duplicate_frac@0.95": np.mean((c > 0.95).any(1)),
        "effective_rank": np.exp(-np.sum(p * np.log(p))),
        "stable_rank": lam.sum() ** 2 / np.sum(lam**2),
    }


def _planted_params(model, seed, n_in):
    v = _init(model, jnp.zeros((1, n_in)), seed)
    p = v["params"]
    p["dense_0"]["kernel"][:, 0] = 0.0
    p["dense_0"]["bias"][0] = -1.0  # hidden_0 unit 0: dead
    p["dense_0"]["kernel"][:, 6] = p["dense_0"]["kernel"][:, 5]
    p["dense_0"]["bias"][6] = p["dense_0"]["bias"][5]  # hidden_0 units 5, 6: clones
    p["dense_0"]["bias"][1] = 10.0  # hidden_0 unit 1: always on (linearised)
    p["out"]["kernel"][3] = 0.0  # hidden_1 unit 3: no path to the loss (saturated)
    p["dense_1"]["bias"][3] = 10.0
    return v


def test_matches_numpy_forward_backward_and_formulas():
    model = _mlp()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12)).astype(np.float32)
    y = rng.integers(0, 5, size=64)
    mask = np.array([True, True, False, True, True])
    y[y == 2] = 0
    v = _planted_params(model, 0, 12)
    res = m.unit_metrics(model, v, (x, y), class_mask=mask)
    hs, zs, gs, logits, loss = _np_forward_backward(v["params"], x, y, mask)
    assert res["loss"]["output"] == pytest.approx(loss, rel=1e-5)
    for i, layer in enumerate(["hidden_0", "hidden_1"]):
        want = _np_metrics(hs[i], gs[i], zs[i])
        for name, value in want.items():
            assert res[name][layer] == pytest.approx(value, rel=2e-3, abs=1e-6), (name, layer)
    # the planted units are there
    assert res[DEAD]["hidden_0"] >= 1 / 16 and res["duplicate_frac@0.95"]["hidden_0"] >= 1 / 16
    assert res[SAT]["hidden_1"] >= 1 / 16 and res["clone_clusters@0.95"]["hidden_0"] >= 1
    acc = np.mean(np.argmax(logits, 1) == y)
    assert res["accuracy"]["output"] == pytest.approx(acc)
    dz0 = (gs[0] * (zs[0] > 0))
    assert res["grad_norm"]["dense_0"] == pytest.approx(
        np.sqrt(np.sum((x.astype(np.float64).T @ dz0) ** 2) + np.sum(dz0.sum(0) ** 2)), rel=1e-4)


def _expand_mlp(p, factor=2):
    """Hand-built interleaved expansion (unit k*E + c is clone c of base unit k), weights / E on
    the expanded input side: the wide network computes the same function with exact clones."""
    layers = sorted(k for k in p if k.startswith("dense_"))
    q = {}
    for i, k in enumerate(layers):
        w = np.repeat(p[k]["kernel"], factor, axis=1)
        if i > 0:
            w = np.repeat(w, factor, axis=0) / factor
        q[k] = {"kernel": w, "bias": np.repeat(p[k]["bias"], factor)}
    q["out"] = {"kernel": np.repeat(p["out"]["kernel"], factor, axis=0) / factor, "bias": p["out"]["bias"]}
    return q


def test_exact_clones_give_r2_one_forward_and_backward():
    base = _mlp((6,))
    wide = _mlp((12,))
    x = jax.random.normal(jax.random.PRNGKey(1), (40, 7))
    y = jnp.arange(40) % 5
    pb = _init(base, x, 2)["params"]
    vw = {"params": _expand_mlp(pb)}
    part = m.interleaved_partition(12, 2)
    res = m.unit_metrics(wide, vw, (x, y), partitions={"hidden_0": part})
    for name in ("clone_r2_fwd", "clone_r2_bwd", "clone_r2_std_fwd", "clone_r2_std_bwd"):
        assert res[name]["hidden_0"] == pytest.approx(1.0, abs=1e-5), name
    # every live unit is in a clone cluster of size 2
    assert res["clone_cluster_frac@0.95"]["hidden_0"] == pytest.approx(1.0 - res[DEAD]["hidden_0"])
    assert res["largest_clone_cluster@0.95"]["hidden_0"] == 2.0
    out_base = base.apply({"params": pb}, x).logits
    np.testing.assert_allclose(wide.apply(vw, x).logits, out_base, rtol=1e-5, atol=1e-5)
    vr = _init(wide, x, 3)  # independent units
    res_r = m.unit_metrics(wide, vr, (x, y), partitions={"hidden_0": part})
    assert abs(res_r["clone_r2_fwd"]["hidden_0"]) < 0.5 and abs(res_r["clone_r2_bwd"]["hidden_0"]) < 0.5


class _Counting:
    """A contract model whose apply counts Python-side traces."""

    def __init__(self, model):
        self.model, self.traces = model, 0
        self.layer_kinds, self.activation = model.layer_kinds, model.activation

    def apply(self, *args, **kwargs):
        self.traces += 1
        return self.model.apply(*args, **kwargs)


def test_no_retrace_across_calls_and_vmap_over_seeds():
    model = _Counting(_mlp((8,)))
    x = jax.random.normal(jax.random.PRNGKey(0), (32, 12))
    y = jnp.arange(32) % 5
    mask = jnp.array([True, True, False, True, True])
    f = m.make_unit_metrics_fn(model, dormant_taus=(0.1,), max_rows=16)
    seeds = [_init(model.model, x, s) for s in range(3)]
    first = f(seeds[0], x, y, mask)
    n = model.traces
    assert n > 0
    outs = [f(v, x, y, jnp.logical_not(mask).at[0].set(True)) for v in seeds[1:]]
    assert model.traces == n  # new variables and a new mask value: no retrace
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *seeds)
    batched = jax.vmap(f, in_axes=(0, None, None, None))(stacked, x, y, mask)
    for s, v in enumerate(seeds):
        single = first if s == 0 else f(v, x, y, mask)
        for name in ("effective_rank@rows=16", DEAD, "loss", "grad_norm"):
            for layer, value in single[name].items():
                np.testing.assert_allclose(batched[name][layer][s], value, rtol=1e-4, atol=1e-6)
    assert outs[0]["loss"]["output"].shape == ()


def test_cached_names_listed_degenerate_layers_and_bad_options():
    model = _Counting(_mlp((8,)))
    x = jnp.ones((16, 12))
    v = _init(model.model, x, 0)
    init = jax.tree.map(lambda a: a - 1.0, v["params"])
    opts = dict(init_params=init, prev_params=v["params"], partitions={"hidden_0": m.interleaved_partition(8, 2)})
    r1 = m.unit_metrics(model, v, (x, jnp.zeros(16, int)), **opts)
    n = model.traces
    zero = jax.tree.map(jnp.zeros_like, v)  # all-zero network: every layer is all zeros
    r0 = m.unit_metrics(model, zero, (x, jnp.ones(16, int)), **opts)
    assert model.traces == n  # cached: compiled once for the model, options and shapes
    # every listed name is produced with these options (the per-image reading: conv/token layers only)
    assert set(r1) == set(m.METRIC_NAMES) - {"low_activity_frac_per_image@0.01"}
    assert len(m.describe_metrics().splitlines()) == len(m.METRIC_NAMES)
    assert r1["dist_prev"]["all"] == 0.0
    n_params = sum(a.size for a in jax.tree.leaves(v["params"]))
    assert r1["dist_init"]["all"] == pytest.approx(np.sqrt(n_params), rel=1e-5)
    assert all(np.isfinite(val) for per in r0.values() for val in per.values())
    assert r0[DEAD]["hidden_0"] == 1.0 and r0["effective_rank"]["hidden_0"] == 0.0
    assert r0["clone_r2_fwd"]["hidden_0"] == 1.0 and r0["stable_rank"]["hidden_0"] == 0.0
    with pytest.raises(InputError, match="dead_fracc"):
        m.make_unit_metrics_fn(model, dead_fracc=0.9)
    with pytest.raises(InputError, match="loss="):
        m.make_unit_metrics_fn(model, loss="hinge")
    with pytest.raises(InputError, match="partitions has layer"):
        m.unit_metrics(model, v, (x, jnp.zeros(16, int)), partitions={"hidden_9": np.zeros(8, int)})


def test_flatten_layouts():
    a = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    flat = np.asarray(m.flatten_units(a, "conv"))
    assert flat.shape == (24, 5) and np.all(flat[7] == a[0, 1, 3])  # row = (b, y, x), channels last
    np.testing.assert_allclose(m.flatten_units(a, "conv", pool=True), a.mean(axis=(1, 2)))
    t = a.reshape(2, 12, 5)
    assert np.all(np.asarray(m.flatten_units(t, "tokens"))[13] == t[1, 1])
    np.testing.assert_allclose(m.flatten_units(t, "tokens", pool=True), t.mean(1))
    with pytest.raises(InputError, match="'conv' layer"):
        m.flatten_units(t, "conv")
    with pytest.raises(InputError, match="layer kind"):
        m.flatten_units(t, "seq")


def test_conv_layers_flatten_positions_as_samples():
    cnn = pdx.models.create("cnn", channels=(4,), fc_widths=(), norm="none", dropout=0.0)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 8, 8, 3))
    y = jnp.arange(6) % 10
    v = _init(cnn, x, 1)
    res = m.unit_metrics(cnn, v, (x, y), loss="mse")
    out = cnn.apply(v, x)
    pooled = jax.jit(lambda a: m.metrics_from_arrays(
        {"conv_0": a}, layer_kinds=cnn.layer_kinds, options=m.MetricOptions(pool=True)))(out.activations["conv_0"])
    a = np.asarray(out.activations["conv_0"], np.float64)
    flat = a.reshape(-1, a.shape[-1])  # (B*H*W, C)
    s = np.abs(flat).mean(0)
    assert res["dormant_frac@0.1"]["conv_0"] == pytest.approx(np.mean(s / (s.mean() + 1e-9) <= 0.1))
    sv = np.linalg.svd(flat, compute_uv=False)
    p = sv / sv.sum()
    assert res["effective_rank"]["conv_0"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=2e-3)
    sp = np.linalg.svd(a.mean(axis=(1, 2)), compute_uv=False)
    pp = sp / sp.sum()
    assert pooled["effective_rank"]["conv_0"] == pytest.approx(np.exp(-np.sum(pp * np.log(pp))), rel=2e-3)
    target = np.eye(10)[np.asarray(y)]
    assert res["loss"]["output"] == pytest.approx(np.mean((np.asarray(out.logits) - target) ** 2), rel=1e-5)



@pytest.mark.slow
def test_vit_token_layers():
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 8, 8, 3))
    y = jnp.arange(6) % 10
    vit = pdx.models.create("vit", preset="tiny", dropout=0.0, attention_dropout=0.0)
    vv = _init(vit, x, 2)
    rv = m.unit_metrics(vit, vv, (x, y))
    assert set(rv["effective_rank"]) == set(vit.layer_kinds)
    assert "block_0" not in rv["frozen_frac@0.01,0.99"] and "block_0_mlp" in rv["frozen_frac@0.01,0.99"]
    assert all(np.isfinite(val) for per in rv.values() for val in per.values())
    a = np.asarray(vit.apply(vv, x).activations["block_0_mlp"], np.float64)
    s = np.abs(a.reshape(-1, a.shape[-1])).mean(0)  # (B*T, D): every token is a sample
    assert rv["dormant_frac@0.1"]["block_0_mlp"] == pytest.approx(np.mean(s / (s.mean() + 1e-9) <= 0.1))

"""ReDo, shrink & perturb, head/full reset; every intervention under jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError


def _mlp(rng, sizes):
    params = {}
    names = [f"dense_{i}" for i in range(len(sizes) - 2)] + ["out"]
    for n, a, b in zip(names, sizes[:-1], sizes[1:]):
        params[n] = {"kernel": jnp.asarray(rng.standard_normal((a, b)), jnp.float32),
                     "bias": jnp.asarray(rng.standard_normal(b), jnp.float32)}
    return params


def _adam_state(params, rng):
    adam = optax.adam(1e-3)
    g = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32), params)
    return adam.update(g, adam.init(params), params)[1]


def _dormant_reference(h, tau):
    s = np.abs(h.reshape(-1, h.shape[-1])).mean(axis=0)
    return s / (s.mean() + 1e-9) <= tau


def test_redo_reinitialises_exactly_the_dormant_units():
    rng = np.random.default_rng(0)
    params = _mlp(rng, [4, 8, 6, 3])
    h0 = np.abs(rng.standard_normal((16, 8))).astype(np.float32)
    h0[:, 2] = 0.0
    h0[:, 5] *= 0.01  # small but not zero: dormant by score
    h0[:, 7] *= 0.3  # reduced but above tau
    h1 = np.abs(rng.standard_normal((16, 6))).astype(np.float32)
    h1[:, 0] = 0.0
    acts = {"hidden_0": jnp.asarray(h0), "hidden_1": jnp.asarray(h1)}
    tau = 0.1
    want0, want1 = _dormant_reference(h0, tau), _dormant_reference(h1, tau)
    assert want0.tolist() == [False, False, True, False, False, True, False, False] and want1.sum() == 1
    opt = _adam_state(params, rng)
    iv = pdx.optim.make_intervention("redo", tau=tau, every=10)
    state = iv.init(params, None)
    apply = jax.jit(iv.apply)
    same, opt_same, _ = apply(params, opt, state, acts, 8, jax.random.PRNGKey(0))  # step 8: (8+1) % 10 != 0
    for a, b in zip(jax.tree_util.tree_leaves((same, opt_same)), jax.tree_util.tree_leaves((params, opt))):
        np.testing.assert_array_equal(a, b)
    new, new_opt, state = apply(params, opt, state, acts, 9, jax.random.PRNGKey(0))
    for name, want, rows in (("dense_0", want0, slice(None)), ("dense_1", want1, ~want0)):
        # (rows of dense_1 fed by dense_0's dormant units were zeroed as outgoing weights)
        changed = np.any(np.asarray(new[name]["kernel"])[rows] != np.asarray(params[name]["kernel"])[rows], axis=0)
        np.testing.assert_array_equal(changed, want)
        np.testing.assert_array_equal(np.asarray(new[name]["bias"]) != np.asarray(params[name]["bias"]), want)
        bound = 1 / np.sqrt(params[name]["kernel"].shape[0])
        assert np.all(np.abs(np.asarray(new[name]["kernel"])[:, want]) <= bound)  # PyTorch default init
        np.testing.assert_array_equal(np.asarray(new_opt[0].mu[name]["kernel"])[:, want], 0.0)
        np.testing.assert_array_equal(np.asarray(new_opt[0].nu[name]["kernel"])[rows][:, ~want],
                                      np.asarray(opt[0].nu[name]["kernel"])[rows][:, ~want])
    out_rows_zero = np.all(np.asarray(new["out"]["kernel"]) == 0, axis=1)
    np.testing.assert_array_equal(out_rows_zero, want1)
    # outgoing rows of dense_0's dormant units are zero except where dense_1 re-drew its own column
    k1 = np.asarray(new["dense_1"]["kernel"])
    np.testing.assert_array_equal(k1[np.ix_(want0, ~want1)], 0.0)
    np.testing.assert_array_equal(np.asarray(new_opt[0].mu["dense_1"]["kernel"])[want0], 0.0)
    assert int(state["dense_0"]["recycled"]) == 2 and int(state["dense_1"]["recycled"]) == 1


def test_redo_on_cnn_layout_channels_and_flatten():
    rng = np.random.default_rng(1)
    params = {"conv_0": {"kernel": jnp.asarray(rng.standard_normal((3, 3, 2, 4)), jnp.float32),
                         "bias": jnp.ones(4, jnp.float32)},
              "fc_0": {"kernel": jnp.asarray(rng.standard_normal((2 * 2 * 4, 5)), jnp.float32),
                       "bias": jnp.ones(5, jnp.float32)},
              "out": {"kernel": jnp.asarray(rng.standard_normal((5, 3)), jnp.float32), "bias": jnp.zeros(3)}}
    layers = pdx.optim.unit_layers(params)
    assert [(l.name, l.next_name, l.next_kind) for l in layers] == [("conv_0", "fc_0", "flatten"),
                                                                    ("fc_0", "out", "dense")]
    c0 = np.abs(rng.standard_normal((6, 4, 4, 4))).astype(np.float32)
    c0[..., 1] = 0.0
    f0 = np.abs(rng.standard_normal((6, 5))).astype(np.float32)
    iv = pdx.optim.make_intervention("redo", tau=0.1, every=1)
    new, _, _ = jax.jit(iv.apply)(params, (), iv.init(params, None), {"conv_0": c0, "fc_0": f0}, 0,
                                  jax.random.PRNGKey(3))
    changed = np.any(np.asarray(new["conv_0"]["kernel"]) != np.asarray(params["conv_0"]["kernel"]), axis=(0, 1, 2))
    np.testing.assert_array_equal(changed, [False, True, False, False])
    rows = np.arange(16) % 4 == 1  # NHWC flatten: channel fastest
    np.testing.assert_array_equal(np.all(np.asarray(new["fc_0"]["kernel"]) == 0, axis=1), rows)


def test_shrink_perturb_schedule_and_formula():
    rng = np.random.default_rng(2)
    params = _mlp(rng, [3, 4, 2])
    ones = lambda k: jax.tree_util.tree_map(jnp.ones_like, params)  # noqa: E731 - deterministic "fresh init"
    iv = pdx.optim.make_intervention("shrink_perturb", shrink=0.5, sigma=0.1, every=3, init_fn=ones)
    apply = jax.jit(iv.apply)
    p1, _, _ = apply(params, (), {}, None, 1, jax.random.PRNGKey(0))
    p2, _, _ = apply(params, (), {}, None, 2, jax.random.PRNGKey(0))
    for a, b, c in zip(*(jax.tree_util.tree_leaves(t) for t in (params, p1, p2))):
        np.testing.assert_array_equal(b, a)
        np.testing.assert_allclose(c, 0.5 * np.asarray(a) + 0.1, rtol=1e-6)
    ts = pdx.optim.make_intervention("shrink_perturb", shrink=0.5, sigma=0.0, at_task_start=True)
    q, _, _ = ts.apply(params, (), {}, None, 2, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(q["out"]["kernel"], params["out"]["kernel"])
    q, _, _ = ts.on_task_start(params, (), {}, jax.random.PRNGKey(0))
    np.testing.assert_allclose(q["out"]["kernel"], 0.5 * np.asarray(params["out"]["kernel"]), rtol=1e-6)


def test_head_reset_with_python_and_traced_flags():
    rng = np.random.default_rng(3)
    params = _mlp(rng, [3, 4, 2])
    opt = _adam_state(params, rng)
    iv = pdx.optim.make_intervention("head_reset")
    apply = jax.jit(iv.apply)
    for flag in (False, True, jnp.bool_(False), jnp.bool_(True)):
        p, o, _ = apply(params, opt, {}, None, 0, jax.random.PRNGKey(0), flag)
        zero = bool(flag)
        assert np.all(np.asarray(p["out"]["kernel"]) == 0) == zero and np.all(np.asarray(p["out"]["bias"]) == 0) == zero
        np.testing.assert_array_equal(p["dense_0"]["kernel"], params["dense_0"]["kernel"])
        np.testing.assert_array_equal(o[0].mu["out"]["kernel"], opt[0].mu["out"]["kernel"])  # state kept
    iv2 = pdx.optim.make_intervention("head_reset", reset_opt_state=True)
    _, o, _ = iv2.on_task_start(params, opt, {}, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(o[0].mu["out"]["kernel"], 0.0)
    np.testing.assert_array_equal(o[0].mu["dense_0"]["kernel"], opt[0].mu["dense_0"]["kernel"])


def test_full_reset_reinitialises_params_and_optimizer():
    rng = np.random.default_rng(4)
    params = _mlp(rng, [3, 4, 2])
    adam = optax.adam(1e-3)
    opt = _adam_state(params, rng)
    iv = pdx.optim.make_intervention("full_reset", optimizer=adam)
    p, o, _ = iv.on_task_start(params, opt, {}, jax.random.PRNGKey(5))
    assert int(o[0].count) == 0 and np.all(np.asarray(o[0].mu["out"]["kernel"]) == 0)
    assert np.all(np.abs(np.asarray(p["dense_0"]["kernel"])) <= 1 / np.sqrt(3))
    assert not np.allclose(p["dense_0"]["kernel"], params["dense_0"]["kernel"])
    p2, _, _ = iv.apply(params, opt, {}, None, 0, jax.random.PRNGKey(5), False)
    np.testing.assert_array_equal(p2["out"]["bias"], params["out"]["bias"])


def test_torch_default_like_bounds_and_norms():
    params = {"dense_0": {"kernel": jnp.zeros((50, 20)), "bias": jnp.zeros(20)},
              "norm_0": {"scale": jnp.zeros(20), "bias": jnp.ones(20)}, "cls": jnp.zeros((1, 1, 8))}
    f = pdx.optim.torch_default_like(params, jax.random.PRNGKey(0))
    k = np.asarray(f["dense_0"]["kernel"])
    assert np.abs(k).max() <= 1 / np.sqrt(50) and np.abs(k).max() > 0.9 / np.sqrt(50)
    np.testing.assert_array_equal(f["norm_0"]["scale"], 1.0)
    np.testing.assert_array_equal(f["norm_0"]["bias"], 0.0)
    assert 0 < np.abs(np.asarray(f["cls"])).max() < 0.2


INTERVENTION_OPTS = {"none": {}, "shrink_perturb": {}, "cbp": {"maturity_threshold": 0, "replacement_rate": 0.2},
                     "redo": {"every": 1}, "head_reset": {}, "full_reset": {"optimizer": optax.adam(1e-3)}}


@pytest.mark.parametrize("name", sorted(INTERVENTION_OPTS))
def test_every_intervention_runs_under_jit_and_vmap(name):
    assert set(INTERVENTION_OPTS) == set(pdx.optim.INTERVENTIONS)
    rng = np.random.default_rng(5)
    params = _mlp(rng, [4, 6, 5, 3])
    opt = optax.adam(1e-3).init(params)
    iv = pdx.optim.make_intervention(name, **INTERVENTION_OPTS[name])
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    stack = lambda t: jax.tree_util.tree_map(lambda a: jnp.stack([a] * 3), t)  # noqa: E731
    states = jax.vmap(iv.init, in_axes=(0, 0))(stack(params), keys)
    acts = {"hidden_0": jnp.asarray(np.abs(rng.standard_normal((3, 8, 6))), jnp.float32),
            "hidden_1": jnp.asarray(np.abs(rng.standard_normal((3, 8, 5))), jnp.float32)}
    f = jax.jit(jax.vmap(iv.apply, in_axes=(0, 0, 0, 0, None, 0, None)))
    p, o, s = f(stack(params), stack(opt), states, acts, jnp.int32(7), keys, jnp.bool_(True))
    assert jax.tree_util.tree_structure(p) == jax.tree_util.tree_structure(stack(params))
    assert jax.tree_util.tree_structure(s) == jax.tree_util.tree_structure(states)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(p))


def test_bad_intervention_input():
    with pytest.raises(InputError, match="'dropout'"):
        pdx.optim.make_intervention("dropout")
    with pytest.raises(InputError, match="'rate'"):
        pdx.optim.make_intervention("cbp", rate=0.1)
    with pytest.raises(InputError, match="utility='mean'"):
        pdx.optim.make_intervention("cbp", utility="mean")
    with pytest.raises(InputError, match="not mlp"):
        pdx.optim.make_intervention("redo").init({"block_0": {}, "out": {}}, None)

"""Continual backprop on hand-built MLPs: replacement rate, maturity, zeroed outgoing weights,
function preserved by the bias correction, optimiser moments cleared."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plasticity_dynamics as pdx


def _mlp(rng, sizes, bias=0.0, scale=1.0):
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1])):
        params[f"dense_{i}"] = {"kernel": jnp.asarray(scale * rng.standard_normal((a, b)) / np.sqrt(a), jnp.float32),
                                "bias": jnp.full((b,), bias, jnp.float32)}
    params["out"] = {"kernel": jnp.asarray(rng.standard_normal(sizes[-2:]) / np.sqrt(sizes[-2]), jnp.float32),
                     "bias": jnp.zeros(sizes[-1], jnp.float32)}
    return params


def _forward(params, x):
    """ReLU MLP written for the tests: logits and {"hidden_i": post-activation}."""
    acts, h, i = {}, x, 0
    while f"dense_{i}" in params:
        h = jax.nn.relu(h @ params[f"dense_{i}"]["kernel"] + params[f"dense_{i}"]["bias"])
        acts[f"hidden_{i}"] = h
        i += 1
    return h @ params["out"]["kernel"] + params["out"]["bias"], acts


def _run_cbp(iv, params, steps, in_dim, key=jax.random.PRNGKey(0)):
    state = iv.init(params, key)

    def body(carry, t):
        p, s = carry
        x = jax.random.normal(jax.random.fold_in(key, t), (8, in_dim))
        _, acts = _forward(p, x)
        new, _, s = iv.apply(p, (), s, acts, t, jax.random.fold_in(jax.random.PRNGKey(1), t))
        changed = jnp.any(new["dense_0"]["kernel"] != p["dense_0"]["kernel"], axis=0)
        row_zero = jnp.all(new["out"]["kernel"] == 0, axis=1)
        return (new, s), (changed, jnp.any(changed & ~row_zero))

    (params, state), (changed, bad) = jax.jit(lambda c: jax.lax.scan(body, c, jnp.arange(steps)))((params, state))
    return params, state, np.asarray(changed), np.asarray(bad)


def test_replacement_rate_and_maturity():
    rate, maturity, width, steps = 0.01, 15, 20, 1500
    params = _mlp(np.random.default_rng(0), [6, width, 3])
    iv = pdx.optim.make_intervention("cbp", replacement_rate=rate, maturity_threshold=maturity, decay=0.9)
    _, state, changed, bad = _run_cbp(iv, params, steps, 6)
    assert not bad.any()  # every replaced unit has zero outgoing weights
    age = np.zeros(width, int)
    expected = 0.0
    for t in range(steps):
        age += 1
        expected += rate * (age > maturity).sum()
        assert np.all(age[changed[t]] > maturity), t  # only mature units are replaced
        age[changed[t]] = 0
    total = changed.sum()
    assert abs(total - expected) <= 1.0 and total > 100
    assert int(state["dense_0"]["replaced"]) == total


def test_min_one_per_step_parity_replaces_one_unit_every_step():
    params = _mlp(np.random.default_rng(1), [6, 10, 3])
    iv = pdx.optim.make_intervention("cbp", replacement_rate=1e-4, maturity_threshold=5, min_one_per_step=True)
    _, _, changed, bad = _run_cbp(iv, params, 40, 6)
    per_step = changed.sum(axis=1)
    assert not bad.any()
    np.testing.assert_array_equal(per_step[:5], 0)
    np.testing.assert_array_equal(per_step[5:], 1)


@pytest.mark.parametrize("utility", ["contribution", "adaptable_contribution"])
def test_replacement_keeps_the_function_via_bias_correction(utility):
    rng = np.random.default_rng(2)
    params = _mlp(rng, [5, 8, 6, 3], bias=1.0, scale=0.3)  # other units alive and varying
    consts = {"dense_0": 0.7, "dense_1": 0.3}
    small = 1e-2 if utility == "contribution" else 1.0  # "contribution": the constant units must score lowest
    # Input feature 0 is always 1; unit 0 of each layer reads only that feature (dense_0) or has
    # constant input (dense_1 reads unit 0 of dense_0): its relu output is a constant c.
    params["dense_0"]["kernel"] = params["dense_0"]["kernel"].at[:, 0].set(0.0).at[0, 0].set(consts["dense_0"])
    params["dense_0"]["bias"] = params["dense_0"]["bias"].at[0].set(0.0)
    params["dense_1"]["kernel"] = params["dense_1"]["kernel"].at[:, 0].set(0.0).at[0, 0].set(small)
    params["dense_1"]["bias"] = params["dense_1"]["bias"].at[0].set(consts["dense_1"] - small * consts["dense_0"])
    params["dense_1"]["kernel"] = params["dense_1"]["kernel"].at[0, 1:].set(0.5 * small)  # non-trivial correction
    params["out"]["kernel"] = params["out"]["kernel"].at[0, :].set(jnp.asarray([0.4, -0.2, 0.1]) * small)
    adam = optax.adam(1e-3)
    opt_state = adam.init(params)
    g = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32), params)
    _, opt_state = adam.update(g, opt_state, params)
    iv = pdx.optim.make_intervention("cbp", replacement_rate=1e-4, maturity_threshold=4, decay=0.9,
                                     utility=utility, min_one_per_step=True)
    state = iv.init(params, None)
    apply = jax.jit(iv.apply)
    fwd = jax.jit(_forward)
    x_eval = jnp.asarray(rng.standard_normal((32, 5)), jnp.float32).at[:, 0].set(1.0)
    for t in range(5):
        x = jnp.asarray(rng.standard_normal((16, 5)), jnp.float32).at[:, 0].set(1.0)
        _, acts = fwd(params, x)
        before = fwd(params, x_eval)[0]
        new, new_opt, state = apply(params, opt_state, state, acts, t, jax.random.PRNGKey(t))
        if t < 4:
            for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(params)):
                np.testing.assert_array_equal(a, b)  # immature: nothing replaced
        params, opt_state_prev, opt_state = new, opt_state, new_opt
    # step 4: unit 0 of both layers was replaced (age 5 > 4), and the function is unchanged
    for name in consts:
        assert float(params[name]["bias"][0]) == 0.0 and abs(float(params[name]["kernel"][0, 0])) < 1.0
        assert int(state[name]["age"][0]) == 0 and int(state[name]["replaced"]) == 1
    np.testing.assert_array_equal(params["dense_1"]["kernel"][0, 1:], 0.0)  # [0, 0]: incoming of a new unit
    np.testing.assert_array_equal(params["out"]["kernel"][0], 0.0)
    np.testing.assert_allclose(fwd(params, x_eval)[0], before, rtol=1e-5, atol=1e-5)
    # the output bias received exactly W_out[0, :] * mean activation (0.3) of the replaced unit
    np.testing.assert_allclose(params["out"]["bias"], 0.3 * np.array([0.4, -0.2, 0.1]) * small, rtol=1e-5)
    # Adam moments of the replaced entries are zero, all others untouched
    mu, mu_prev = opt_state[0].mu, opt_state_prev[0].mu
    np.testing.assert_array_equal(mu["dense_0"]["kernel"][:, 0], 0.0)
    np.testing.assert_array_equal(opt_state[0].nu["dense_1"]["bias"][0], 0.0)
    np.testing.assert_array_equal(mu["out"]["kernel"][0], 0.0)
    np.testing.assert_array_equal(mu["dense_0"]["kernel"][:, 1:], mu_prev["dense_0"]["kernel"][:, 1:])
    np.testing.assert_array_equal(mu["out"]["bias"], mu_prev["out"]["bias"])
    assert int(opt_state[0].count) == int(opt_state_prev[0].count)

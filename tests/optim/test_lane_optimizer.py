"""lane_optimizer (values as traced scalars, one per vmapped lane) is make_optimizer: same state
tree, same updates bit for bit, for every optimiser the engine builds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticity_dynamics.optim import lane_hypers, lane_optimizer, make_optimizer, reseed_noise

CASES = [
    dict(name="sgd", lr=0.1),
    dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3),
    dict(name="adam", lr=1e-3, weight_decay=1e-2),
    dict(name="rmsprop", lr=1e-2, momentum=0.5),
    dict(name="noisy_sgd", lr=0.05, noise_sigma0=0.1, noise_decay=0.9, weight_decay=1e-4),
]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_lane_optimizer_is_make_optimizer(kw):
    kw = dict(kw)
    name, lr = kw.pop("name"), kw.pop("lr")
    ref = make_optimizer(name, lr, **kw)
    hypers = lane_hypers(name, lr, **kw)
    flags = dict(use_momentum=kw.get("momentum", 0.0) > 0, use_weight_decay=kw.get("weight_decay", 0.0) > 0)
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.arange(4.0)}
    grads = jax.tree_util.tree_map(lambda p: jnp.cos(3.0 * p), params)
    s_ref = reseed_noise(ref.init(params), jax.random.PRNGKey(5))
    s_lane = reseed_noise(lane_optimizer(name, hypers, **flags).init(params), jax.random.PRNGKey(5))
    assert jax.tree_util.tree_structure(s_ref) == jax.tree_util.tree_structure(s_lane)

    @jax.jit
    def lane_update(h, g, s, p):  # the values arrive traced, as in a vmapped lane
        return lane_optimizer(name, h, **flags).update(g, s, p)

    h = {k: jnp.float32(v) for k, v in hypers.items()}
    for _ in range(3):
        u_ref, s_ref = jax.jit(ref.update)(grads, s_ref, params)
        u_lane, s_lane = lane_update(h, grads, s_lane, params)
        for a, b in zip(jax.tree_util.tree_leaves((u_ref, s_ref)), jax.tree_util.tree_leaves((u_lane, s_lane))):
            np.testing.assert_array_equal(a, b)

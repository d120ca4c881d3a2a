"""Optimisers against NumPy re-implementations of the PyTorch rules; noisy-SGD noise statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError


def _scan_updates(tx, grads, steps, state=None):
    state = tx.init(grads) if state is None else state

    def body(s, _):
        u, s = tx.update(grads, s)
        return s, u

    _, us = jax.jit(lambda s: jax.lax.scan(body, s, None, length=steps))(state)
    return us


@pytest.fixture(scope="module")
def grads():
    rng = np.random.default_rng(0)
    return {"a": jnp.asarray(rng.standard_normal((40, 50)), jnp.float32), "b": jnp.zeros(10, jnp.float32),
            "c": jnp.ones(3, jnp.float32)}


def test_noise_has_scale_sigma_norm_per_tensor(grads):
    sigma0, steps = 0.05, 100
    us = _scan_updates(pdx.optim.noisy_sgd_noise(sigma0, 1.0, jax.random.PRNGKey(1)), grads, steps)
    g = np.asarray(grads["a"], np.float64)
    z = (np.asarray(us["a"], np.float64) - g) / (sigma0 * np.linalg.norm(g))
    n = z.size  # 200,000 standard normals if the scale is right
    assert abs(z.std() - 1.0) < 5 / np.sqrt(2 * n)  # CLT: sd of the sample sd is 1/sqrt(2n)
    assert abs(z.mean()) < 5 / np.sqrt(n)
    r = np.corrcoef(z[0].ravel(), z[1].ravel())[0, 1]
    assert abs(r) < 5 / np.sqrt(z[0].size)  # fresh noise every step
    zc = (np.asarray(us["c"]) - 1.0) / (sigma0 * np.sqrt(3.0))  # per-tensor norm, not the global one
    assert abs(zc.std() - 1.0) < 5 / np.sqrt(2 * zc.size)
    np.testing.assert_array_equal(np.asarray(us["b"]), 0.0)  # zero gradient tensor: no noise


def test_noise_decays_as_lambda_to_the_t(grads):
    sigma0, lam = 0.1, 0.8
    us = _scan_updates(pdx.optim.noisy_sgd_noise(sigma0, lam, jax.random.PRNGKey(2)), grads, 8)
    g = np.asarray(grads["a"], np.float64)
    for t in range(8):
        z = (np.asarray(us["a"][t], np.float64) - g) / (sigma0 * lam ** t * np.linalg.norm(g))
        assert abs(z.std() - 1.0) < 5 / np.sqrt(2 * z.size), t


def test_lambda_zero_adds_noise_on_the_first_step_only(grads):
    us = _scan_updates(pdx.optim.noisy_sgd_noise(0.01, 0.0), grads, 5)
    assert not np.allclose(np.asarray(us["a"][0]), np.asarray(grads["a"]))
    for t in range(1, 5):
        np.testing.assert_array_equal(np.asarray(us["a"][t]), np.asarray(grads["a"]))
    tx = pdx.optim.make_optimizer("noisy_sgd", 0.1, noise_sigma0=0.01, noise_decay=0.0)
    us = _scan_updates(tx, grads, 3)
    np.testing.assert_allclose(np.asarray(us["a"][1:]), -0.1 * np.asarray(grads["a"])[None].repeat(2, 0), rtol=1e-6)


def test_reseed_gives_each_seed_its_own_noise(grads):
    tx = pdx.optim.make_optimizer("noisy_sgd", 0.1, noise_sigma0=0.1, noise_decay=1.0)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    states = jax.jit(jax.vmap(lambda k: pdx.optim.reseed_noise(tx.init(grads), k)))(keys)
    us, _ = jax.jit(jax.vmap(lambda s: tx.update(grads, s)))(states)
    a = np.asarray(us["a"])
    assert not np.allclose(a[0], a[1]) and not np.allclose(a[1], a[2])
    _, s1 = jax.jit(tx.update)(grads, tx.init(grads))
    fresh = pdx.optim.reset_state(tx, grads, s1)
    noise = fresh[0]
    assert int(noise.count) == 0 and not np.array_equal(np.asarray(noise.key), np.asarray(s1[0].key))


def _run(tx, params, grads_seq):
    state = tx.init(params)
    out = []
    for g in grads_seq:
        u, state = tx.update(g, state, params)
        params = optax.apply_updates(params, u)
        out.append(np.asarray(params["w"], np.float64))
    return out


def _seq(n=5, shape=(4, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [{"w": jnp.asarray(rng.standard_normal(shape), jnp.float32)} for _ in range(n)]


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_coupled_wd_matches_pytorch_rule(nesterov):
    lr, mom, wd = 0.1, 0.9, 0.01
    p0 = np.random.default_rng(9).standard_normal((4, 3))
    seq = _seq()
    ours = _run(pdx.optim.make_optimizer("sgd", lr, momentum=mom, weight_decay=wd, nesterov=nesterov),
                {"w": jnp.asarray(p0, jnp.float32)}, seq)
    p, buf = p0.copy(), None
    for t, g in enumerate(seq):
        d = np.asarray(g["w"], np.float64) + wd * p
        buf = d if buf is None else mom * buf + d
        p = p - lr * ((d + mom * buf) if nesterov else buf)
        np.testing.assert_allclose(ours[t], p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("coupled", [True, False])
def test_adam_matches_pytorch_adam_and_adamw(coupled):
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.1
    p0 = np.random.default_rng(8).standard_normal((4, 3))
    seq = _seq(seed=1)
    ours = _run(pdx.optim.make_optimizer("adam", lr, weight_decay=wd, coupled_weight_decay=coupled),
                {"w": jnp.asarray(p0, jnp.float32)}, seq)
    p, m, v = p0.copy(), 0.0, 0.0
    for t, g in enumerate(seq, start=1):
        d = np.asarray(g["w"], np.float64) + (wd * p if coupled else 0.0)
        m, v = b1 * m + (1 - b1) * d, b2 * v + (1 - b2) * d ** 2
        step = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        p = p - lr * (step + (0.0 if coupled else wd * p))
        np.testing.assert_allclose(ours[t - 1], p, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mom", [0.0, 0.5])
def test_rmsprop_matches_pytorch_rule(mom):
    lr, a, eps = 1e-2, 0.99, 1e-8
    p0 = np.random.default_rng(7).standard_normal((4, 3))
    seq = _seq(seed=2)
    ours = _run(pdx.optim.make_optimizer("rmsprop", lr, momentum=mom), {"w": jnp.asarray(p0, jnp.float32)}, seq)
    p, v, buf = p0.copy(), 0.0, 0.0
    for t, g in enumerate(seq):
        g = np.asarray(g["w"], np.float64)
        v = a * v + (1 - a) * g ** 2
        buf = mom * buf + g / (np.sqrt(v) + eps)
        p = p - lr * buf
        np.testing.assert_allclose(ours[t], p, rtol=1e-4, atol=1e-5)


def test_bad_optimizer_input():
    with pytest.raises(InputError, match="'adamw'"):
        pdx.optim.make_optimizer("adamw", 1e-3)
    with pytest.raises(InputError, match="optim.lr=0"):
        pdx.optim.make_optimizer("sgd", 0)
    with pytest.raises(InputError, match="noisy_sgd"):
        pdx.optim.make_optimizer("adam", 1e-3, noise_sigma0=0.01)
    with pytest.raises(InputError, match="noise_decay=1.5"):
        pdx.optim.make_optimizer("noisy_sgd", 1e-3, noise_decay=1.5)
    with pytest.raises(InputError, match="optim.momentum=1.0"):
        pdx.optim.make_optimizer("sgd", 1e-3, momentum=1.0)

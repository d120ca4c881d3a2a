"""HVP, batched HVP, Gauss-Newton product and dense Hessian against dense float64 oracles."""

import jax
import jax.numpy as jnp
import numpy as np

from _curvature_testkit import (dense_hessian64, flat64, mlp_apply, mlp_params, mse_loss,
                                normal_data, rows64, unflat)

import plasticity_dynamics as pdx

curv = pdx.curvature
hvp_jit = jax.jit(curv.hvp, static_argnums=0)  # also checks that hvp is jit-able


def _setup(seed=0, din=5, h=7, dout=3, n=16):
    params = mlp_params(seed, din, h, dout)
    x, y = normal_data(seed + 100, (n, din), (n, dout))
    return params, x, y


def _scale(h):
    return np.max(np.abs(np.linalg.eigvalsh(h)))


def test_hvp_equals_dense_hessian_times_v():
    params, x, y = _setup()
    make = mse_loss()
    h64 = dense_hessian64(make, params, x, y)
    rng = np.random.default_rng(0)
    loss = make(x, y)
    for _ in range(3):
        v = rng.standard_normal(h64.shape[0])
        got = flat64(hvp_jit(loss, params, unflat(v, params)))
        want = h64 @ v
        assert np.max(np.abs(got - want)) <= 1e-5 * _scale(h64) * np.linalg.norm(v)


def test_batched_hvp_matches_dense_columns_with_and_without_chunks():
    params, x, y = _setup(1)
    make = mse_loss()
    h64 = dense_hessian64(make, params, x, y)
    rng = np.random.default_rng(1)
    vs = rng.standard_normal((6, h64.shape[0]))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[unflat(v, params) for v in vs])
    loss = make(x, y)
    for bs in (None, 4):
        out = jax.jit(lambda p, v: curv.batched_hvp(loss, p, v, batch_size=bs))(params, stacked)
        got = rows64(out)
        assert np.allclose(got, vs @ h64, atol=1e-5 * _scale(h64) * 10)


def test_dense_hessian_matches_float64_oracle():
    params, x, y = _setup(2)
    make = mse_loss()
    h64 = dense_hessian64(make, params, x, y)
    h = np.asarray(curv.dense_hessian(make(x, y), params, batch_size=16), np.float64)
    assert h.shape == h64.shape
    assert np.max(np.abs(h - h64)) <= 1e-5 * _scale(h64)


def test_quadratic_and_linear_regression_closed_forms():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((9, 9))
    a = a + a.T
    b = rng.standard_normal(9)
    quad = lambda p: 0.5 * p["x"] @ jnp.asarray(a, jnp.float32) @ p["x"] + jnp.asarray(b, jnp.float32) @ p["x"]  # noqa: E731
    p = {"x": jnp.asarray(rng.standard_normal(9), jnp.float32)}
    h = np.asarray(curv.dense_hessian(quad, p), np.float64)
    assert np.allclose(h, a, atol=1e-5 * np.abs(a).max())
    # least squares L = |X w + c - y|^2 / (2N): H = [X 1]^T [X 1] / N, independent of w
    xs = rng.standard_normal((20, 4))
    ys = rng.standard_normal(20)
    ls = lambda q: 0.5 * jnp.mean((jnp.asarray(xs, jnp.float32) @ q["w"] + q["c"] - jnp.asarray(ys, jnp.float32)) ** 2)  # noqa: E731
    q = {"c": jnp.float32(0.3), "w": jnp.asarray(rng.standard_normal(4), jnp.float32)}
    design = np.hstack([np.ones((20, 1)), xs])  # flat order: c, then w
    want = design.T @ design / 20
    assert np.allclose(np.asarray(curv.dense_hessian(ls, q)), want, atol=1e-5 * np.abs(want).max())
    v = rng.standard_normal(5)
    got = flat64(hvp_jit(ls, q, unflat(v, q)))
    assert np.allclose(got, want @ v, atol=1e-5 * np.abs(want).max() * np.abs(v).sum())


def test_gauss_newton_product_equals_dense_jt_hl_j():
    params, x, _ = _setup(4, n=6)
    labels = jnp.array([0, 2, 1, 1, 0, 2])

    def output_fn(p):
        return mlp_apply(p, x)

    def loss_of_output(z):
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(z) * jax.nn.one_hot(labels, 3), axis=-1))

    # dense oracle in float64: J (outputs x params) and H_l (outputs x outputs)
    with jax.enable_x64(True):
        leaves, treedef = jax.tree.flatten(params)
        shapes = [a.shape for a in leaves]
        x64 = jnp.asarray(np.asarray(x, np.float64))

        def f(vec):
            parts, i = [], 0
            for sh in shapes:
                s = int(np.prod(sh))
                parts.append(vec[i:i + s].reshape(sh))
                i += s
            return mlp_apply(treedef.unflatten(parts), x64).ravel()

        def lo(zf):
            z = zf.reshape(6, 3)
            return -jnp.mean(jnp.sum(jax.nn.log_softmax(z) * jax.nn.one_hot(labels, 3), axis=-1))

        theta = jnp.asarray(flat64(params))
        jac = np.asarray(jax.jit(jax.jacfwd(f))(theta))
        hl = np.asarray(jax.jit(jax.hessian(lo))(f(theta)))
    g64 = jac.T @ hl @ jac
    rng = np.random.default_rng(4)
    gnvp = jax.jit(lambda p, v: curv.gnvp(output_fn, loss_of_output, p, v))
    for _ in range(3):
        v = rng.standard_normal(g64.shape[0])
        got = flat64(gnvp(params, unflat(v, params)))
        assert np.max(np.abs(got - g64 @ v)) <= 1e-5 * np.abs(g64).max() * np.abs(v).sum()
    # and GN is PSD for cross-entropy, while the Hessian of this tanh net need not be
    assert np.linalg.eigvalsh(g64).min() > -1e-10

"""Finite-time Lyapunov exponents of the normal dynamics against closed forms and against the
explicit product of dense update-map Jacobians along the same trajectory (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from _curvature_testkit import ClonePairManifold, CoordinateManifold, flat64, mlp_apply, mlp_params, normal_data, projector_matrix

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

curv = pdx.curvature
RNG = np.random.default_rng(3)
LAM = np.array([-0.5, 0.3, 1.0, 2.5, 4.0])
_Q, _ = np.linalg.qr(RNG.standard_normal((5, 5)))
A = np.zeros((8, 8))
A[:5, :5] = _Q @ np.diag(LAM) @ _Q.T
A[5:, 5:] = np.diag([1.0, 2.0, 3.0])
MASK = {"x": np.r_[np.ones(5), np.zeros(3)]}


def test_quadratic_sgd_exponents_are_log_abs_one_minus_eta_lambda():
    with jax.enable_x64(True):
        a = jnp.asarray(A)
        man = CoordinateManifold(MASK, {"x": jnp.zeros(8)})
        man.mask = {"x": jnp.asarray(MASK["x"])}
        eta = 0.3
        step = lambda p, t: {"x": p["x"] - eta * (a @ p["x"])}  # noqa: E731
        r = curv.normal_lyapunov(step, {"x": jnp.asarray(RNG.standard_normal(8))}, man, k=5, steps=7)
        want = np.sort(np.log(np.abs(1 - eta * LAM)))[::-1]
        assert r.method == "lanczos" and r.steps == 7
        assert np.allclose(r.exponents, want, atol=1e-9)
        assert np.allclose(r.growth, np.exp(7 * want), rtol=1e-8)
        # the top direction grows by exactly growth[0]; linear dynamics: measured == linear
        top = jax.tree.map(lambda a: a[0], r.directions)
        g = curv.normal_growth(step, {"x": jnp.asarray(RNG.standard_normal(8))}, man, top, steps=7, eps=1e-3)
        assert g.linear.shape == (8,) and np.isclose(g.linear[-1], r.growth[0], rtol=1e-8)
        assert np.allclose(g.measured, g.linear, rtol=1e-8)
        # the jit-able twin, vmapped over two start points (linear map: same exponents)
        fn = curv.normal_lyapunov_fn(step, k=5, steps=7)
        starts = {"x": jnp.asarray(RNG.standard_normal((2, 8)))}
        data = jax.vmap(lambda st: fn(st, man))(starts)
        assert np.allclose(np.asarray(data.exponents), np.stack([want, want]), atol=1e-9)
        # k above the normal dimension: NaN past it
        r6 = curv.normal_lyapunov(step, {"x": jnp.zeros(8)}, man, k=6, steps=3)
        assert np.isnan(r6.exponents[5]) and np.allclose(r6.exponents[:5], want, atol=1e-9)


def test_tanh_mlp_momentum_matches_product_of_dense_update_jacobians():
    """SGD with heavy-ball momentum on a tanh MLP started on a clone manifold: the exponents
    equal (1/T) log sigma_i(P_N Pi_p J_{T-1} ... J_0 E_p P_N), J_t the dense Jacobian of step t
    on the augmented (params, momentum) vector at the trajectory's own points and batches."""
    with jax.enable_x64(True):
        p0 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), mlp_params(4, 3, 4, 2))
        p0 = {**p0, "w1": p0["w1"].at[:, 1].set(p0["w1"][:, 0]), "b1": p0["b1"].at[1].set(p0["b1"][0]),
              "w2": p0["w2"].at[1].set(p0["w2"][0])}
        man = ClonePairManifold([(0, 1)], 3, 2)
        xs = jnp.asarray(np.stack([np.asarray(a, np.float64) for a in normal_data(5, *[(6, 3)] * 6)]))
        ys = jnp.asarray(np.stack([np.asarray(a, np.float64) for a in normal_data(6, *[(6, 2)] * 6)]))
        opt = optax.sgd(0.2, momentum=0.8)
        T = 6

        def loss(p, x, y):
            return 0.5 * jnp.mean(jnp.sum((mlp_apply(p, x) - y) ** 2, -1))

        def step_fn(st, t):
            g = jax.grad(loss)(st["params"], xs[t], ys[t])
            u, o = opt.update(g, st["opt"], st["params"])
            return {"params": optax.apply_updates(st["params"], u), "opt": o}

        state = {"params": p0, "opt": opt.init(p0)}
        r = curv.normal_lyapunov(step_fn, state, man, k=4, steps=T)
        # oracle: dense Jacobians of the flattened (params, trace) step along the trajectory
        leaves, treedef = jax.tree.flatten(state)
        sizes = [x.size for x in leaves]

        def unflat(v):
            parts, i = [], 0
            for x, s in zip(leaves, sizes):
                parts.append(v[i:i + s].reshape(x.shape))
                i += s
            return treedef.unflatten(parts)

        def flat_step(v, t):
            return jnp.concatenate([x.ravel() for x in jax.tree.leaves(step_fn(unflat(v), t))])

        @jax.jit
        def oracle(v):  # product of the T dense step Jacobians, and the end point
            def body(c, t):
                v, prod = c
                return (flat_step(v, t), jax.jacobian(flat_step)(v, t) @ prod), None

            return jax.lax.scan(body, (v, jnp.eye(v.size)), jnp.arange(T))[0]

        v = jnp.concatenate([x.ravel() for x in leaves])
        n_all = v.size
        v, prod = oracle(v)
        prod = np.asarray(prod, np.float64)
        # params occupy the leaves of state["params"]; jax orders "opt" before "params"
        n_p = flat64(p0).size
        idx = np.arange(n_all - n_p, n_all)
        assert np.allclose(np.asarray(v)[idx], flat64(jax.tree.map(np.asarray, r.final_state["params"])))
        pn = projector_matrix(man.normal, mlp_params(4, 3, 4, 2))
        block = pn @ prod[np.ix_(idx, idx)] @ pn
        sig = np.linalg.svd(block, compute_uv=False)[:4]
        assert np.allclose(r.exponents, np.log(sig) / T, atol=1e-8)


def test_qr_mode_approaches_lanczos_on_long_windows_and_errors_are_one_line():
    with jax.enable_x64(True):
        a = jnp.asarray(A)
        man = CoordinateManifold(MASK, {"x": jnp.zeros(8)})
        man.mask = {"x": jnp.asarray(MASK["x"])}
        step = lambda p, t: p - 0.3 * (a @ p)  # noqa: E731  (a bare array state works too)
        man_flat = CoordinateManifold({"x": MASK["x"]}, None)
        man_flat.normal = lambda v: v * jnp.asarray(MASK["x"])
        want = np.sort(np.log(np.abs(1 - 0.3 * LAM)))[::-1]
        q = curv.normal_lyapunov(step, jnp.asarray(RNG.standard_normal(8)), man_flat, k=3, steps=200,
                                 method="qr", reortho_every=5)
        assert q.method == "qr"
        assert np.allclose(q.exponents, want[:3], atol=0.02)  # O(1/T) transient
    with pytest.raises(InputError, match="steps=0"):
        curv.normal_lyapunov(step, jnp.zeros(8), man_flat, k=2, steps=0)
    with pytest.raises(InputError, match="reortho_every=0"):
        curv.normal_lyapunov(step, jnp.zeros(8), man_flat, k=2, steps=3, reortho_every=0)
    with pytest.raises(InputError, match="method='svd'"):
        curv.normal_lyapunov(step, jnp.zeros(8), man_flat, k=2, steps=3, method="svd")

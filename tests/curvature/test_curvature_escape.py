"""Escape experiments: measured growth of the distance to the manifold vs the prediction."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from _curvature_testkit import ClonePairManifold, CoordinateManifold, mlp_params, mse_loss, normal_data

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

curv = pdx.curvature

NORMAL = [-1.0, 0.5, 2.0, 1.0]
TANGENT = [3.0, 0.2, 1.0]


def quad(p, a):
    return 0.5 * p["x"] @ a @ p["x"]


def _setup(seed=1):
    rng = np.random.default_rng(seed)
    dn, dt = len(NORMAL), len(TANGENT)
    qn, _ = np.linalg.qr(rng.standard_normal((dn, dn)))
    qt, _ = np.linalg.qr(rng.standard_normal((dt, dt)))
    a = np.zeros((dn + dt, dn + dt))
    a[:dn, :dn] = qn @ np.diag(NORMAL) @ qn.T
    a[dn:, dn:] = qt @ np.diag(TANGENT) @ qt.T
    params = {"x": jnp.asarray(np.r_[np.zeros(dn), rng.standard_normal(dt)], jnp.float32)}
    man = CoordinateManifold({"x": np.r_[np.ones(dn), np.zeros(dt)]}, params)
    return jnp.asarray(a, jnp.float32), params, man


A, POINT, MAN = _setup()
SGD = optax.sgd(0.1)
MOMENTUM = optax.sgd(0.05, momentum=0.9)


def test_sgd_escape_rate_on_a_quadratic_matches_the_prediction():
    """The normal part evolves as d' = (I - eta A_NN) d; the mode lambda = -1 grows by 1.1."""
    res = curv.escape(quad, SGD, POINT, MAN, "normal", eps=1e-4, steps=80, args=(A,))
    assert abs(res.predicted_rate - 1.1) <= 1e-5
    assert abs(np.log(res.fitted_rate) / np.log(res.predicted_rate) - 1) <= 0.03
    assert res.distances.shape == (81,) and abs(res.distances[0] - 1e-4) <= 1e-9
    assert res.distances[-1] > 100 * res.distances[0]
    # along the unstable eigenvector the growth is a pure exponential from step 0
    eig = curv.escape(quad, SGD, POINT, MAN, "eigenvector", eps=1e-4, steps=40, args=(A,),
                      fit_window=(0, 41))
    assert abs(np.log(eig.fitted_rate) / np.log(1.1) - 1) <= 1e-3
    assert np.allclose(eig.distances, 1e-4 * 1.1 ** np.arange(41), rtol=1e-3)


def test_momentum_escape_rate_matches_the_heavy_ball_root():
    res = curv.escape(quad, MOMENTUM, POINT, MAN, "normal", eps=1e-4, steps=120, args=(A,))
    lam = np.array(NORMAL)
    roots = np.concatenate([np.roots([1, -(1.9 - 0.05 * l), 0.9]) for l in lam])
    assert abs(res.predicted_rate - np.max(np.abs(roots))) <= 1e-4
    assert abs(np.log(res.fitted_rate) / np.log(res.predicted_rate) - 1) <= 0.05


def test_random_direction_keeps_its_tangent_part_and_a_pytree_direction_is_projected():
    res = curv.escape(quad, SGD, POINT, MAN, "random", eps=1e-4, steps=30, args=(A,), predict=False)
    assert res.predicted_rate is None
    assert 0 < res.distances[0] < 1e-4  # only the normal part of the unit perturbation counts
    tangent_only = {"x": jnp.asarray(np.r_[np.zeros(4), np.ones(3)], jnp.float32)}
    with pytest.raises(InputError, match="normal"):
        curv.escape(quad, SGD, POINT, MAN, tangent_only, args=(A,))
    with pytest.raises(InputError, match="direction"):
        curv.escape(quad, SGD, POINT, MAN, "sideways", args=(A,))


def test_cloned_tanh_pair_escape_near_a_critical_point_matches_the_linearisation():
    """Clone pair on a tanh MLP trained (on the manifold, which GD never leaves) close to a
    critical point, where the normal block is a saddle. Near a critical point the point hardly
    moves along M during the escape, so the distance grows at the normal radius of the SGD
    Jacobian. (Far from a critical point the first step's ratio still matches, but the rate
    drifts as the point slides along M and the normal curvature changes.)"""
    din, h, dout = 3, 4, 2
    man = ClonePairManifold([(0, 1)], din, dout)
    x, y = normal_data(3, (16, din), (16, dout))
    loss = mse_loss()(x, y)
    opt = optax.sgd(0.2)

    @jax.jit
    def train(p):
        def one(c, _):
            p, s = c
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(one, (p, opt.init(p)), None, length=2000)[0][0]

    params = train(man.project(mlp_params(2, din, h, dout, scale=2.0)))
    assert float(man.distance(params)) == 0.0  # invariance: GD stayed on the manifold
    spec = curv.normal_spectrum(loss, params, man, k=2)
    assert spec.verdict == "saddle"
    res = curv.escape(loss, opt, params, man, "eigenvector", eps=1e-4, steps=60)
    assert abs(res.predicted_rate - (1 - 0.2 * spec.eigenvalues[0])) <= 1e-4
    assert abs(np.log(res.fitted_rate) / np.log(res.predicted_rate) - 1) <= 0.03

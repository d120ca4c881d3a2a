"""Update-map Jacobian against central finite differences of a NumPy float64 re-implementation
of one optimiser step, and its normal spectral radius against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from _curvature_testkit import CoordinateManifold

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

curv = pdx.curvature
D = 6
RNG = np.random.default_rng(0)
_a = RNG.standard_normal((D, D))
A = (_a + _a.T) / 2
B = RNG.standard_normal(D)
C = np.abs(RNG.standard_normal(D))


def loss_jax(p):
    """Quadratic + quartic: L = 1/2 x^T A x + b^T x + 1/4 sum c x^4 (Hessian varies with x)."""
    x = p["x"]
    return 0.5 * x @ jnp.asarray(A, jnp.float32) @ x + jnp.asarray(B, jnp.float32) @ x \
        + 0.25 * jnp.sum(jnp.asarray(C, jnp.float32) * x ** 4)


def grad_np(x):
    return A @ x + B + C * x ** 3


LR, BETA, B1, B2, EPS = 0.05, 0.9, 0.9, 0.999, 1e-8


def step_np(kind, x, state, count):
    """One step in float64 NumPy, written from the optax definitions (not calling optax)."""
    g = grad_np(x)
    if kind == "sgd":
        return x - LR * g, []
    if kind == "momentum":  # optax.trace: m' = g + beta m; x' = x - lr m'
        m = g + BETA * state[0]
        return x - LR * m, [m]
    mu = B1 * state[0] + (1 - B1) * g
    nu = B2 * state[1] + (1 - B2) * g * g
    t = count + 1
    mhat, vhat = mu / (1 - B1 ** t), nu / (1 - B2 ** t)
    return x - LR * mhat / (np.sqrt(vhat) + EPS), [mu, nu]


OPTS = {"sgd": optax.sgd(LR), "momentum": optax.sgd(LR, momentum=BETA),
        "adam": optax.adam(LR, b1=B1, b2=B2, eps=EPS)}


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
def test_jacobian_matches_central_finite_differences(kind, seed=0):
    """J v against central differences of the float64 step along random directions v. Adam's
    step depends on 1 / sqrt(nu) with nu ~ (1 - b2) g^2 (1e-7 .. 1e-3 here): an absolute
    perturbation of nu of size h = 1e-5 can exceed nu itself (or turn it negative), so the nu
    block of v is relative (scaled by nu), keeping every difference inside the map's domain
    at any starting point."""
    rng = np.random.default_rng(seed)  # the test's own draws: the same point whatever ran before
    opt = OPTS[kind]
    params = {"x": jnp.asarray(rng.standard_normal(D) * 0.5, jnp.float32)}
    state = opt.init(params)
    for _ in range(3):  # move away from the fresh state so Adam's nu > 0 everywhere
        upd, state = opt.update(jax.grad(loss_jax)(params), state, params)
        params = optax.apply_updates(params, upd)
    jac = jax.jit(lambda p, s, v: curv.update_map_jacobian(loss_jax, opt, p, s).matvec(v))
    x = np.asarray(params["x"], np.float64)
    if kind == "sgd":
        st = []
    elif kind == "momentum":
        st = [np.asarray(state[0].trace["x"], np.float64)]
    else:
        st = [np.asarray(state[0].mu["x"], np.float64), np.asarray(state[0].nu["x"], np.float64)]
    count = 3
    dim = D * (1 + len(st))
    h = 1e-5  # central FD error: h^2 |F'''| / 6 + eps64 |F| / h, about 1e-10 here
    for i in range(3):
        v = rng.standard_normal(dim)
        if kind == "adam":
            v[-D:] *= st[1]  # relative perturbation of nu (docstring)
        vs = np.split(v, 1 + len(st))

        def f(sign):
            xn, sn = step_np(kind, x + sign * h * vs[0], [s + sign * h * d for s, d in zip(st, vs[1:])], count)
            return np.concatenate([xn] + sn)

        fd = (f(1) - f(-1)) / (2 * h)
        got = np.asarray(jac(params, state, jnp.asarray(v, jnp.float32)), np.float64)
        assert np.allclose(got, fd, rtol=1e-4, atol=1e-4 * np.abs(fd).max()), (kind, got, fd)
    # the un-perturbed step agrees too
    nxt = curv.update_map_jacobian(loss_jax, opt, params, state).next_params["x"]
    assert np.allclose(np.asarray(nxt), step_np(kind, x, st, count)[0], atol=1e-5)


def _quad_on_manifold(normal_eigs, tangent_eigs, seed=1):
    rng = np.random.default_rng(seed)
    dn, dt = len(normal_eigs), len(tangent_eigs)
    qn, _ = np.linalg.qr(rng.standard_normal((dn, dn)))
    qt, _ = np.linalg.qr(rng.standard_normal((dt, dt)))
    a = np.zeros((dn + dt, dn + dt))
    a[:dn, :dn] = qn @ np.diag(normal_eigs) @ qn.T
    a[dn:, dn:] = qt @ np.diag(tangent_eigs) @ qt.T
    params = {"x": jnp.asarray(np.r_[np.zeros(dn), rng.standard_normal(dt)], jnp.float32)}
    man = CoordinateManifold({"x": np.r_[np.ones(dn), np.zeros(dt)]}, params)
    return jnp.asarray(a, jnp.float32), params, man


def quad(p, a):
    return 0.5 * p["x"] @ a @ p["x"]


NORMAL = [-1.0, 0.5, 2.0, 1.0]
TANGENT = [-4.0, 3.0, 0.2]  # would dominate the radius if the restriction leaked


def test_sgd_and_momentum_normal_radius_match_closed_forms():
    a, params, man = _quad_on_manifold(NORMAL, TANGENT)
    lam = np.array(NORMAL)
    sgd_opt = optax.sgd(0.1)
    st = sgd_opt.init(params)
    sgd = curv.update_map_radius(quad, sgd_opt, params, st, man, args=(a,), num_iters=8)
    assert abs(sgd.radius - np.max(np.abs(1 - 0.1 * lam))) <= 1e-5
    # J = I - eta H on the full space
    full = curv.update_map_radius(quad, sgd_opt, params, st, None, args=(a,), num_iters=7)
    assert abs(full.radius - np.max(np.abs(1 - 0.1 * np.r_[lam, TANGENT]))) <= 1e-5
    pw = curv.update_map_radius(quad, sgd_opt, params, st, man, args=(a,), num_iters=200,
                                method="power")
    assert abs(pw.radius - 1.1) <= 2e-3
    # heavy ball: roots of z^2 - (1 + beta - eta lam) z + beta = 0 for each normal lam
    opt = optax.sgd(0.1, momentum=0.9)
    mom = curv.update_map_radius(quad, opt, params, opt.init(params), man, args=(a,), num_iters=8)
    roots = np.concatenate([np.roots([1, -(1.9 - 0.1 * l), 0.9]) for l in lam])
    assert abs(mom.radius - np.max(np.abs(roots))) <= 1e-4


def test_adam_at_zero_second_moment_is_undefined_without_eps_root():
    """On the manifold the normal gradient is exactly 0, so after the first step nu = 0 there:
    d sqrt(nu) is infinite and the JVP is NaN. With eps_root > 0 the linearisation of the
    smoothed map exists; at mu = nu = 0 and count 0 each normal eigen-coordinate (lam) obeys
    (dx, dmu, dnu) -> [[1 - lr lam / c, -lr b1 / (c (1 - b1)), 0], [(1 - b1) lam, b1, 0],
    [0, 0, b2]] with c = sqrt(eps_root) + eps."""
    a, params, man = _quad_on_manifold(NORMAL, TANGENT)
    bad = optax.adam(1e-3)
    with pytest.raises(InputError, match="eps_root"):
        curv.update_map_radius(quad, bad, params, bad.init(params), man, args=(a,), num_iters=4)
    lr, b1, b2, eps, eps_root = 1e-3, 0.9, 0.999, 1e-2, 1e-4
    ok = optax.adam(lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    got = curv.update_map_radius(quad, ok, params, ok.init(params), man, args=(a,), num_iters=12)
    c = np.sqrt(eps_root) + eps
    radius = max(max(np.abs(np.linalg.eigvals(np.array(
        [[1 - lr * l / c, -lr * b1 / (c * (1 - b1))], [(1 - b1) * l, b1]])))) for l in NORMAL)
    assert abs(got.radius - max(radius, b2)) <= 1e-4 * got.radius

"""normal_spectrum: dense twins, Krylov convergence, closed-form cases and verdicts."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from _curvature_testkit import (ClonePairManifold, CoordinateManifold, clone_normal_basis,
                                clone_projector_explicit, dense_hessian64, flat64, mlp_params,
                                mse_loss, normal_block_eigs, normal_data, projector_matrix, rows64)

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

curv = pdx.curvature


def _clone_net(seed, din, h, dout, npairs, n=32):
    """Tanh MLP put on the clone-pair manifold (pairs (0,1), (2,3), ...) by averaging."""
    pairs = [(2 * i, 2 * i + 1) for i in range(npairs)]
    man = ClonePairManifold(pairs, din, dout)
    params = man.project(mlp_params(seed, din, h, dout))
    x, y = normal_data(seed + 1, (n, din), (n, dout))
    return params, man, pairs, x, y


TRACES = []
_H64 = {}
_PN = {}


def twin_h64(twin):
    """P_N H P_N of the twin network, float64 (kept aside by the fixture)."""
    return _H64[id(twin[1])]


@pytest.fixture(scope="module")
def twin():
    """~2k-parameter net (20 -> 64 -> 5, 1669 params), 12 clone pairs: normal_dim 312.

    The loss records its traces in TRACES (used by the no-retrace test)."""
    params, man, pairs, x, y = _clone_net(0, 20, 64, 5, 12)
    make = mse_loss()
    h64 = dense_hessian64(make, params, x, y)
    pn = clone_projector_explicit(pairs, 20, 64, 5)
    # the hand-written projector and the test manifold agree (checks the test kit itself)
    assert np.allclose(projector_matrix(man.normal, params), pn, atol=1e-6)
    assert np.isclose(np.trace(pn), man.normal_dim)
    basis = clone_normal_basis(pn)
    _H64[id(man)] = pn @ h64 @ pn
    _PN[id(man)] = pn
    base = make(x, y)

    def loss(p):
        TRACES.append(1)
        return base(p)

    return params, man, loss, normal_block_eigs(h64, basis)


def test_dense_route_matches_numpy_eigh_of_projected_hessian(twin):
    params, man, loss, oracle = twin
    spec = curv.normal_spectrum(loss, params, man, k=4, method="dense")
    scale = np.abs(oracle).max()
    want = np.concatenate([oracle[:4], oracle[-4:]])
    assert spec.method == "dense" and spec.normal_dim == man.normal_dim == oracle.size
    assert np.max(np.abs(spec.eigenvalues - want)) <= 1e-4 * scale
    assert np.max(spec.residuals) <= 1e-4 * scale
    assert spec.num_hvps == man.normal_dim + 1 + 2 * 4  # block, atol, explicit residuals
    # eigenvectors are unit, normal, and eigenvectors of the oracle's block
    vec = rows64(spec.eigenvectors)
    assert vec.shape == (8, flat64(params).size)
    assert np.allclose(np.linalg.norm(vec, axis=1), 1, atol=1e-5)
    pnhp = twin_h64(twin)  # P_N H P_N: eigenvectors in N satisfy it with their eigenvalues
    assert np.allclose(vec @ pnhp, vec * spec.eigenvalues[:, None], atol=1e-4 * scale)
    assert np.allclose(vec @ _PN[id(man)], vec, atol=1e-6)  # they lie in N


@pytest.mark.filterwarnings("ignore::plasticity_dynamics.errors.ConvergenceWarning")
def test_lanczos_full_depth_is_exact_and_lobpcg_finds_both_ends(twin):
    # (lobpcg stops at a relative residual of 1e-4 of the shifted operator, which the
    # warning flags against the much tighter verdict tolerance; the eigenvalues are checked)
    params, man, loss, oracle = twin
    scale = np.abs(oracle).max()
    full = curv.normal_spectrum(loss, params, man, k=3, method="lanczos", num_iters=man.normal_dim)
    want = np.concatenate([oracle[:3], oracle[-3:]])
    assert np.max(np.abs(full.eigenvalues - want)) <= 1e-4 * scale
    lob = curv.normal_spectrum(loss, params, man, k=3, method="lobpcg", num_iters=200)
    assert lob.method == "lobpcg"
    assert np.max(np.abs(lob.eigenvalues - want)) <= 1e-4 * scale
    assert full.verdict == lob.verdict == curv.classify(oracle, 1e-6 * scale)


def test_lanczos_error_decreases_with_depth(twin):
    """One Lanczos run of depth 64 on P_N H P_N: its leading m x m tridiagonal block is the
    depth-m run, so the extreme-eigenvalue error can be read off at every m."""
    params, man, loss, oracle = twin
    scale = np.abs(oracle).max()
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    @jax.jit
    def run(v0):
        op = lambda x: jax.flatten_util.ravel_pytree(curv.normal_hvp(loss, params, man, unravel(x)))[0]  # noqa: E731
        return curv.lanczos(op, v0, 64)

    v0 = jax.flatten_util.ravel_pytree(man.normal(unravel(jnp.asarray(
        np.random.default_rng(0).standard_normal(flat.size), jnp.float32))))[0]
    res = run(v0)
    assert int(res.depth) == 64
    depths = [2, 4, 8, 16, 32, 64]
    errs = []
    for m in depths:
        theta, _, _ = curv.lanczos_ritz(curv.LanczosResult(res.alphas[:m], res.betas[:m], res.basis[:m], m))
        errs.append(max(abs(theta[0] - oracle[0]), abs(theta[-1] - oracle[-1])) / scale)
    errs = np.array(errs)
    # extreme Ritz values move monotonically outwards with depth (interlacing), so the error
    # never grows (up to float32 rounding) and falls by orders of magnitude over the sweep
    assert np.all(np.diff(errs) <= 1e-5), errs
    assert errs[-1] <= 1e-3 * errs[0] and errs[-1] <= 1e-4, errs
    # Paige's residual estimates equal explicit residuals computed with the float64 oracle
    theta, coeffs, est = curv.lanczos_ritz(res)
    y = np.asarray(res.basis, np.float64).T @ coeffs[:, [0, -1]]
    h64 = twin_h64(twin)
    r = np.linalg.norm(h64 @ y - y * theta[[0, -1]], axis=0)
    assert np.allclose(est[[0, -1]], r, atol=1e-4 * scale)


def test_auto_method_and_no_retrace_on_new_params(twin):
    params, man, loss, oracle = twin
    scale = np.abs(oracle).max()
    s1 = curv.normal_spectrum(loss, params, man, k=2)
    assert s1.method == "lanczos"  # normal_dim 312 > DENSE_MAX_NORMAL_DIM: Lanczos is cheaper
    assert np.allclose(s1.eigenvalues, oracle[[0, 1, -2, -1]], atol=1e-4 * scale)
    assert s1.num_hvps < 100  # 60 Lanczos steps + 4 residuals + 1, not 312 dense columns
    n1 = len(TRACES)
    # a new point of the same manifold, same loss and manifold objects: compiled kernel reused
    params2 = man.project(jax.tree.map(lambda a: a * 1.1, params))
    s2 = curv.normal_spectrum(loss, params2, man, k=2)
    assert len(TRACES) == n1, "second call with the same loss and manifold objects retraced"
    assert not np.allclose(s1.eigenvalues, s2.eigenvalues)
    # by cost: the dense block for a tiny normal space, or when every eigenvalue is asked for
    a, p, m = _quadratic([1.0, 2.0, 3.0], [1.0] * 4)
    assert curv.normal_spectrum(quad_loss, p, m, k=1, args=(a,)).method == "dense"
    a, p, m = _quadratic(list(np.linspace(1, 2, 40)), [1.0] * 4)
    assert curv.normal_spectrum(quad_loss, p, m, k=20, args=(a,)).method == "dense"
    assert curv.normal_spectrum(quad_loss, p, m, k=2, args=(a,)).method == "lanczos"


def quad_loss(p, a):
    return 0.5 * p["x"] @ a @ p["x"]


_MANIFOLDS = {}


def _quadratic(eigs_normal, eigs_tangent, seed=0):
    """L = 1/2 theta^T A theta with A block diagonal: A_NN has the given eigenvalues.

    Returns (A as a float32 array, params, manifold); the loss is ``quad_loss(p, A)``. The
    manifold object is shared per size so compiled kernels are reused across cases.
    """
    rng = np.random.default_rng(seed)

    def rot(e):
        q, _ = np.linalg.qr(rng.standard_normal((len(e), len(e))))
        return q @ np.diag(e) @ q.T

    dn, dt = len(eigs_normal), len(eigs_tangent)
    a = np.zeros((dn + dt, dn + dt))
    a[:dn, :dn] = rot(eigs_normal)
    a[dn:, dn:] = rot(eigs_tangent)
    params = {"x": jnp.asarray(np.r_[np.zeros(dn), rng.standard_normal(dt)], jnp.float32)}
    if (dn, dt) not in _MANIFOLDS:
        _MANIFOLDS[dn, dt] = CoordinateManifold({"x": np.r_[np.ones(dn), np.zeros(dt)]}, params)
    return jnp.asarray(a, jnp.float32), params, _MANIFOLDS[dn, dt]


@pytest.mark.parametrize("normal,verdict", [
    ([1.0, 2.0, 0.5, 3.0, 1.5, 0.7], "stable"),
    ([-1.0, -2.0, -0.5, -3.0, -1.5, -0.7], "unstable"),
    ([-1.0, 2.0, 0.5, 3.0, 1.5, 0.7], "saddle"),
    ([0.0, 2.0, 0.5, 3.0, 1.5, 0.7], "degenerate"),  # PSD with a null direction: undecided
    ([0.0] * 6, "degenerate"),
])
def test_quadratic_closed_form_verdicts(normal, verdict):
    tangent = [-5.0, 4.0, 1.0, -2.0] * 5  # tangent curvature must not leak into the verdict
    a, params, man = _quadratic(normal, tangent)
    for method in ("dense", "lanczos"):
        s = curv.normal_spectrum(quad_loss, params, man, k=6, method=method, args=(a,))
        assert s.verdict == verdict, (method, s.eigenvalues)
        assert np.allclose(s.eigenvalues, np.sort(normal), atol=1e-5 * max(1.0, np.abs(normal).max()))


def test_linear_regression_normal_block_is_submatrix_of_xtx():
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((40, 12))
    ys = rng.standard_normal(40)
    xf, yf = jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32)
    loss = lambda p: 0.5 * jnp.mean((xf @ p["w"] - yf) ** 2)  # noqa: E731
    mask = np.zeros(12); mask[[1, 4, 5, 9]] = 1  # noqa: E702
    params = {"w": jnp.asarray(rng.standard_normal(12), jnp.float32)}
    man = CoordinateManifold({"w": mask}, params)
    h = xs.T @ xs / 40
    want = np.linalg.eigvalsh(h[np.ix_(mask > 0, mask > 0)])
    s = curv.normal_spectrum(loss, params, man, k=2, method="dense")
    assert np.allclose(s.eigenvalues, want, rtol=1e-5)
    assert s.verdict == "stable"


def test_cloned_relu_pair_is_a_saddle_with_closed_form_eigenvalues():
    """Two ReLU units with identical incoming (w, c) and outgoing weight v, scalar output.

    For a normal direction u = (dw, -dw, dc, -dc, dv, -dv) the output's first-order change
    cancels between the clones, so the Gauss-Newton part vanishes and only the residual term
    r * d2f[u, u] remains. With relu'' = 0 a.e., d2f[u, u] = 2 sum_clones dv_j relu'(z) (dw_j.x
    + dc_j) = 4 dv relu'(z) (dw.x + dc). In the orthonormal coordinates p = sqrt2 (dw, dc),
    q = sqrt2 dv the quadratic form is 2 q (p . g) with g = mean_n r_n relu'(z_n) [x_n, 1]:
    the normal block is [[0, g], [g^T, 0]] with eigenvalues +-|g| and zeros. So the pair is a
    saddle whenever g != 0, i.e. whenever the clones' incoming-weight gradient v g is nonzero
    (any non-critical point). Other units' coordinates do not enter the normal block.
    """
    rng = np.random.default_rng(11)
    din, n = 3, 24
    x = rng.standard_normal((n, din))
    y = rng.standard_normal(n)
    w = rng.standard_normal(din); c = 0.2; v = 0.8  # noqa: E702
    w_other = rng.standard_normal(din)
    params = {"w1": jnp.asarray(np.stack([w, w, w_other], 1), jnp.float32),
              "b1": jnp.asarray([c, c, -0.1], jnp.float32),
              "w2": jnp.asarray([[v], [v], [0.5]], jnp.float32),
              "b2": jnp.asarray([0.05], jnp.float32)}
    xf, yf = jnp.asarray(x, jnp.float32), jnp.asarray(y[:, None], jnp.float32)

    def loss(p):
        out = jax.nn.relu(xf @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return 0.5 * jnp.mean((out - yf) ** 2)

    z = x @ w + c
    h = np.maximum(x @ np.stack([w, w, w_other], 1) + np.array([c, c, -0.1]), 0)
    r = h @ np.array([v, v, 0.5]) + 0.05 - y
    g = np.mean((r * (z > 0))[:, None] * np.c_[x, np.ones(n)], axis=0)
    man = ClonePairManifold([(0, 1)], din, 1)
    s = curv.normal_spectrum(loss, params, man, k=1)
    assert s.method == "dense" and s.verdict == "saddle"
    assert np.allclose(s.eigenvalues, [-np.linalg.norm(g), np.linalg.norm(g)], rtol=1e-4)


def test_dead_relu_unit_has_an_exactly_zero_normal_block():
    """A unit whose pre-activation is negative on every input (bias -50): relu' = 0 and h = 0
    in a neighbourhood, so every second derivative involving its incoming weights, bias or
    outgoing weights vanishes exactly: the frozen manifold's normal block is 0 -> degenerate."""
    params = mlp_params(3, 4, 5, 2)
    params["b1"] = params["b1"].at[2].set(-50.0)
    x, y = normal_data(4, (16, 4), (16, 2))
    loss = mse_loss(jax.nn.relu)(x, y)
    mask = {"w1": np.zeros((4, 5)), "b1": np.zeros(5), "w2": np.zeros((5, 2)), "b2": np.zeros(2)}
    mask["w1"][:, 2] = 1; mask["b1"][2] = 1; mask["w2"][2] = 1  # noqa: E702
    man = CoordinateManifold(mask, params)
    for method in ("dense", "lanczos"):
        s = curv.normal_spectrum(loss, params, man, k=2, method=method)
        assert s.verdict == "degenerate"
        # lanczos: H v = 0 exactly, so the recursion stops at depth 1 with a zero Ritz value;
        # dense: a random orthonormal basis of N leaves only rounding (< 1e-12)
        assert np.max(np.abs(s.eigenvalues)) <= (0.0 if method == "lanczos" else 1e-12)
    # control, same loss and manifold objects (no recompile): revive the unit (bias +50, so
    # it is linear on every input) and its block is no longer zero
    alive = dict(params, b1=params["b1"].at[2].set(50.0))
    assert np.abs(curv.normal_spectrum(loss, alive, man, k=2, method="dense").eigenvalues).max() > 1e-3


def test_model_zoo_mlp_with_a_toolkit_frozen_manifold():
    """pdx.models mlp (preset tiny, batch norm in eval mode) and pdx.manifolds.frozen, which is
    a pytree: it travels as a traced argument. Oracle: jax.hessian of the flattened loss,
    restricted to the frozen coordinates, eigh in float64 NumPy."""
    models = pytest.importorskip("plasticity_dynamics.models")
    manifolds = pytest.importorskip("plasticity_dynamics.manifolds")
    if not (hasattr(models, "create") and hasattr(manifolds, "frozen")):
        pytest.skip("pdx.models.create / pdx.manifolds.frozen not available")
    model = models.create("mlp", preset="tiny")
    x, = normal_data(9, (8, 6))
    variables = model.init(jax.random.PRNGKey(0), x)
    labels = jnp.arange(8) % model.options["num_outputs"]

    def loss(p, x, labels):
        logits = model.apply({**variables, "params": p}, x).logits
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    params = variables["params"]
    man = manifolds.frozen({"hidden_0": [1, 4, 7]}, params)
    assert isinstance(man, curv.ManifoldLike)
    s = curv.normal_spectrum(loss, params, man, k=3, args=(x, labels))
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    mask = np.asarray(jax.flatten_util.ravel_pytree(man.normal(unravel(jnp.ones_like(flat))))[0]) > 0.5
    assert mask.sum() == man.normal_dim == s.normal_dim
    h = np.asarray(jax.jit(jax.hessian(lambda f: loss(unravel(f), x, labels)))(flat), np.float64)
    want = np.linalg.eigvalsh(((h + h.T) / 2)[np.ix_(mask, mask)])
    scale = np.abs(want).max()
    assert np.allclose(s.eigenvalues, np.r_[want[:3], want[-3:]], atol=1e-4 * scale)
    assert s.verdict == curv.classify(want, s.tolerance)


def test_bad_input_raises_one_line_input_error():
    a, params, man = _quadratic([1.0, 2.0], [1.0])
    loss = lambda p: quad_loss(p, a)  # noqa: E731
    with pytest.raises(InputError, match="method"):
        curv.normal_spectrum(loss, params, man, method="qr")
    with pytest.raises(InputError, match="k="):
        curv.normal_spectrum(loss, params, man, k=0)
    with pytest.raises(InputError, match="lobpcg"):
        curv.normal_spectrum(loss, params, man, k=1, method="lobpcg")
    empty = CoordinateManifold({"x": np.zeros(3)}, params)
    with pytest.raises(InputError, match="normal_dim"):
        curv.normal_spectrum(loss, params, empty)

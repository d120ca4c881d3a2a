"""normal_spectrum_fn: one compile whatever normal_dim, vmap over seeds, the full Hessian.

Compiles are counted with jax.monitoring backend-compile events (by kernel name), not by
reading the code; the oracles are float64 NumPy eigensolves of jax.hessian.
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from _curvature_testkit import mlp_params, mse_loss, normal_data

import plasticity_dynamics as pdx
from plasticity_dynamics.runtime import CompileLog

curv = pdx.curvature


@pytest.fixture(scope="module")
def zoo():
    """Model-zoo MLP (preset tiny) with a cross-entropy loss taking the batch as args."""
    model = pdx.models.create("mlp", preset="tiny")
    x, = normal_data(9, (8, 6))
    variables = model.init(jax.random.PRNGKey(0), x)
    labels = jnp.arange(8) % model.options["num_outputs"]
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss(p, x, labels):
        logits = model.apply({**rest, "params": p}, x).logits
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    return model, variables["params"], loss, x, labels


def _oracle(loss, params, man, *args):
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    h = np.asarray(jax.jit(jax.hessian(lambda f: loss(unravel(f), *args)))(flat), np.float64)
    h = (h + h.T) / 2
    if man is None:
        return np.linalg.eigvalsh(h)
    mask = np.asarray(jax.flatten_util.ravel_pytree(man.normal(unravel(jnp.ones_like(flat))))[0]) > 0.5
    return np.linalg.eigvalsh(h[np.ix_(mask, mask)])


def test_ten_frozen_sets_compile_the_kernel_once(zoo):
    """10 checkpoints whose frozen sets (and normal_dim) all differ: one compile, right values."""
    model, params, loss, x, labels = zoo
    layer = "hidden_0"
    units = model.options.get("width", None) or params["dense_0"]["bias"].shape[0]
    rng = np.random.default_rng(0)
    fn = curv.normal_spectrum_fn(loss, k=2, method="lanczos")
    dims, checked = set(), 0
    with CompileLog() as counter:
        for i in range(10):
            chosen = rng.choice(units, size=1 + i % 5, replace=False)
            p = jax.tree.map(lambda a: a * (1 + 0.01 * i), params)  # another point too
            man = pdx.manifolds.frozen({layer: chosen}, p)
            dims.add(man.normal_dim)
            data = fn(p, man, x, labels)
            assert int(data.normal_dim) == man.normal_dim
            if i in (0, 7):  # value check against the dense oracle at two of them
                want = _oracle(loss, p, man, x, labels)
                got = np.asarray(data.eigenvalues)[np.asarray(data.valid)]
                ref = np.r_[want[:2], want[-2:]] if want.size > 4 else want
                assert np.allclose(got, ref, atol=1e-4 * np.abs(want).max())
                checked += 1
    assert len(dims) >= 4 and checked == 2
    assert counter.count("normal_spectrum_kernel") == 1, counter.names


def test_vmap_over_seeds_equals_separate_calls(zoo):
    model, params, loss, x, labels = zoo
    units = params["dense_0"]["bias"].shape[0]
    rng = np.random.default_rng(1)
    ps, mans, xs = [], [], []
    for s in range(4):
        p = jax.tree.map(lambda a: a + 0.05 * jnp.asarray(rng.standard_normal(a.shape), a.dtype), params)
        ps.append(p)
        mans.append(pdx.manifolds.frozen({"hidden_0": rng.choice(units, size=s + 1, replace=False)}, p))
        xs.append(x + 0.1 * s)
    fn = curv.normal_spectrum_fn(loss, k=2, method="lanczos")
    stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)  # noqa: E731
    batched = jax.vmap(fn)(stack(ps), stack(mans), jnp.stack(xs), jnp.stack([labels] * 4))
    for s in range(4):
        one = fn(ps[s], mans[s], xs[s], labels)
        v1, vb = np.asarray(one.valid), np.asarray(batched.valid[s])
        assert np.array_equal(v1, vb)
        a, b = np.asarray(one.eigenvalues)[v1], np.asarray(batched.eigenvalues[s])[vb]
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(a).max()), (s, a, b)
        assert int(batched.normal_dim[s]) == mans[s].normal_dim


def test_full_hessian_top_k_is_one_call_and_residuals_are_explicit():
    params = mlp_params(2, 5, 7, 3)
    x, y = normal_data(3, (16, 5), (16, 3))
    make = mse_loss()
    loss = lambda p, x, y: make(x, y)(p)  # noqa: E731
    want = _oracle(loss, params, None, x, y)
    scale = np.abs(want).max()
    s = curv.normal_spectrum(loss, params, None, k=3, args=(x, y))
    assert s.normal_dim == want.size and s.method == "lanczos"
    assert np.allclose(s.eigenvalues, np.r_[want[:3], want[-3:]], atol=1e-5 * scale)
    # the reported residuals are ||H y - lambda y|| of the returned vectors (float64 oracle)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    h = np.asarray(jax.jit(jax.hessian(lambda f: loss(unravel(f), x, y)))(flat), np.float64)
    vec = np.concatenate([np.asarray(a, np.float64).reshape(6, -1) for a in jax.tree.leaves(s.eigenvectors)], 1)
    r = np.linalg.norm(vec @ h - vec * s.eigenvalues[:, None], axis=1)
    assert np.allclose(s.residuals, r, atol=1e-5 * scale)
    # the dense route (every eigenvalue asked for) agrees
    d = curv.normal_spectrum(loss, params, None, k=want.size, args=(x, y))
    assert d.method == "dense" and np.allclose(d.eigenvalues, want, atol=1e-5 * scale)


def test_function_runs_inside_a_user_jit_and_dense_bucket_masks_padding(zoo):
    model, params, loss, x, labels = zoo
    man = pdx.manifolds.frozen({"hidden_0": [1, 3]}, params)
    fn = curv.normal_spectrum_fn(loss, k=2, method="dense", num_iters=64)
    lo = jax.jit(lambda p, m, x, y: fn(p, m, x, y).eigenvalues[0])(params, man, x, labels)
    want = _oracle(loss, params, man, x, labels)
    assert np.isclose(float(lo), want[0], atol=1e-4 * np.abs(want).max())
    small = curv.normal_spectrum_fn(loss, k=2, method="dense", num_iters=4)(params, man, x, labels)
    assert not bool(small.ok)  # normal_dim > bucket: flagged, not silently wrong


def _count_loops(jaxpr, names=("while", "scan")):
    """How many loop equations (``while``, ``scan``) a jaxpr holds, nested jaxprs included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name in names
        for value in eqn.params.values():
            for sub in (value if isinstance(value, (tuple, list)) else (value,)):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    n += _count_loops(sub, names)
    return n


def test_unrolled_lanczos_equals_the_loop_and_auto_unrolls_conv_losses_on_cpu():
    """``loop="unroll"`` (straight-line Lanczos and residuals, for XLA:CPU convolution
    gradients) gives the loop's eigenvalues and the dense float64 oracle's; ``auto`` unrolls a
    convolutional loss on CPU (no while loop left in the kernel) and keeps the loop for an MLP."""
    model = pdx.models.create("cnn", preset="tiny", norm="none", dropout=0.0)
    x, = normal_data(3, (4, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    labels = jnp.arange(4) % 10

    def loss(p, x, labels):
        return pdx.losses.masked_loss(model.apply({"params": p}, x).logits, labels)[0]

    params = variables["params"]
    man = pdx.manifolds.frozen({"conv_0": [0, 1]}, params)
    expected = _oracle(loss, params, man, x, labels)
    out = {}
    for loop in ("scan", "unroll", "auto"):
        fn = curv.normal_spectrum_fn(loss, k=1, method="lanczos", num_iters=16, loop=loop)
        if loop != "auto":  # auto is the unrolled program on CPU: its jaxpr is checked below
            res = fn(params, man, x, labels)
            out[loop] = np.asarray(res.eigenvalues)[np.asarray(res.valid)]
        whiles = _count_loops(jax.make_jaxpr(lambda p, m, a, b: fn(p, m, a, b))(params, man, x, labels))
        unrolled = loop == "unroll" or (loop == "auto" and jax.default_backend() == "cpu")
        assert (whiles == 0) == unrolled, (loop, whiles)
    scale = np.abs(expected).max()
    for loop, vals in out.items():
        assert np.allclose(vals, out["scan"], rtol=1e-4, atol=1e-5 * scale), (loop, vals, out["scan"])
        assert np.allclose(vals[-1], expected[-1], rtol=1e-3), (loop, vals, expected[-1])
    mlp_model, mlp_params_, mlp_loss, mx, ml = _zoo_like()
    fn = curv.normal_spectrum_fn(mlp_loss, k=2, method="lanczos", num_iters=12)
    assert _count_loops(jax.make_jaxpr(lambda p, a, b: fn(p, None, a, b))(mlp_params_, mx, ml)) > 0
    with pytest.raises(pdx.errors.InputError, match="loop"):
        curv.normal_spectrum_fn(loss, loop="python")


def _zoo_like():
    model = pdx.models.create("mlp", preset="tiny", norm="none", dropout=0.0)
    x, = normal_data(9, (8, 6))
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    labels = jnp.arange(8) % 10

    def loss(p, x, labels):
        return pdx.losses.masked_loss(model.apply({"params": p}, x).logits, labels)[0]

    return model, params, loss, x, labels

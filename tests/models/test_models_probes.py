"""Probes: jax.grad w.r.t. the probes equals central finite differences of the loss w.r.t. a
perturbation added to that monitored layer (re-running apply with probes = +-eps * direction).

Run in float64 (jax.enable_x64 locally; the variables are cast to float64). Error bound of the
central difference for a C^3 loss: |FD - g.d| <= eps^2/6 * max|d^3 L/dt^3| + 2 u |L| / eps
(u = 2^-53); with eps = 1e-5, |L| ~ 3 and third directional derivatives <= 1e3 on these tiny
nets this is <= 2e-8 + 1e-10, so we assert 1e-7 absolute (+1e-6 relative). Smooth activations
(tanh / gelu / elu) keep the loss C^3 (no ReLU kinks to straddle); batch norm runs in train mode
and dropout is on with a fixed rng, so both code paths are differentiated as the trainer sees them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

EPS = 1e-5
CASES = [
    ("mlp", dict(activation="tanh", norm="batch", dropout=0.2), (4, 40)),
    ("cnn", dict(activation="elu", norm="layer", dropout=0.1), (4, 8, 8, 1)),
    ("resnet18", dict(activation="tanh", norm="batch", stages=(1, 1)), (4, 8, 8, 3)),
    ("vit", dict(activation="gelu", norm="batch"), (4, 8, 8, 1)),
]


@pytest.mark.parametrize("family,options,shape", CASES, ids=[c[0] for c in CASES])
def test_probe_gradient_matches_finite_differences(family, options, shape):
    model = pdx.models.create(family, preset="tiny", **options)
    key = jax.random.PRNGKey(0)
    kinit, kdrop = jax.random.split(key)
    rs = np.random.default_rng(0)
    x = rs.standard_normal(shape).astype(np.float32)
    y = rs.integers(0, 10, shape[0])
    variables = model.init(kinit, x)
    rng = kdrop

    with jax.enable_x64(True):
        v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        shapes = jax.eval_shape(lambda v: model.apply(v, x, train=True, rng=rng).activations, v64)
        zeros = {k: jnp.zeros(s.shape, jnp.float64) for k, s in shapes.items()}

        def loss_fn(probes):
            logits = model.apply(v64, x, train=True, rng=rng, probes=probes).logits
            logp = jax.nn.log_softmax(logits)
            return -jnp.mean(logp[jnp.arange(len(y)), y])

        # One compilation per family: the FD evaluations reuse the value of value_and_grad.
        value_and_grad = jax.jit(jax.value_and_grad(loss_fn))

        def loss(probes):
            return value_and_grad(probes)[0]

        grads = value_and_grad(zeros)[1]
        assert set(grads) == set(model.layer_kinds)
        L0 = float(loss(zeros))
        rs = np.random.default_rng(0)
        worst = 0.0
        for name, z in sorted(zeros.items()):
            g = np.asarray(grads[name])
            assert g.shape == z.shape and np.abs(g).max() > 0, name
            # Two coordinate directions e_i (the largest-gradient entry and a random one) and
            # one dense random unit direction.
            flat_i = [int(np.argmax(np.abs(g))), int(rs.integers(g.size))]
            dirs = []
            for i in flat_i:
                e = np.zeros(g.size)
                e[i] = 1.0
                dirs.append(e.reshape(g.shape))
            d = rs.standard_normal(g.shape)
            dirs.append(d / np.linalg.norm(d))
            for d in dirs:
                plus = {**zeros, name: jnp.asarray(EPS * d)}
                minus = {**zeros, name: jnp.asarray(-EPS * d)}
                fd = (float(loss(plus)) - float(loss(minus))) / (2 * EPS)
                exact = float(np.sum(g * d))
                tol = 1e-7 + 1e-6 * abs(exact) + 4 * np.finfo(np.float64).eps * abs(L0) / EPS
                assert abs(fd - exact) <= tol, (name, fd, exact)
                worst = max(worst, abs(fd - exact) / tol)
        print(f"{family}: worst |FD - grad| / tol = {worst:.3g}")


def test_probes_are_added_to_the_recorded_activation():
    model = pdx.models.create("mlp", preset="tiny", norm="none", dropout=0.0, activation="relu")
    x = np.ones((4, 40), np.float32)
    v = model.init(jax.random.PRNGKey(0), x)
    base = model.apply(v, x)
    probe = {"hidden_1": jnp.full((4, 16), 0.5)}
    out = model.apply(v, x, probes=probe)
    np.testing.assert_allclose(np.asarray(out.activations["hidden_1"]),
                               np.asarray(base.activations["hidden_1"]) + 0.5, rtol=1e-6)
    # preactivation unchanged, logits shifted by 0.5 * column sums of the output kernel
    np.testing.assert_allclose(np.asarray(out.preactivations["hidden_1"]),
                               np.asarray(base.preactivations["hidden_1"]), rtol=1e-6)
    shift = 0.5 * np.asarray(v["params"]["out"]["kernel"]).sum(0)
    np.testing.assert_allclose(np.asarray(out.logits - base.logits), np.broadcast_to(shift, (4, 10)),
                               rtol=1e-4, atol=1e-5)


def test_bad_probes_raise():
    model = pdx.models.create("mlp", preset="tiny", dropout=0.0)
    x = np.ones((4, 40), np.float32)
    v = model.init(jax.random.PRNGKey(0), x)
    with pytest.raises(InputError, match="hidden_7"):
        model.apply(v, x, probes={"hidden_7": jnp.zeros((4, 16))})
    with pytest.raises(InputError, match=r"\(4, 3\)"):
        model.apply(v, x, probes={"hidden_0": jnp.zeros((4, 3))})

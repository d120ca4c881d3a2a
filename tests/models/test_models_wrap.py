"""Any JAX model (issue 17): planted-structure tests on networks written here, independently
of the zoo (plain-JAX MLP with tanh, plain-JAX CNN with a flatten, Flax NNX MLP with LayerNorm,
Equinox MLP). For each: the planted frozen/dead unit and clone pair are detected exactly,
expansion x2 preserves outputs to 1e-5 relative, and the normal spectrum at the cloned
(expanded) point matches a dense float64 oracle built from the definition of the normal space
(orthogonal complement of the block-constant directions) and a float64 Hessian of a loss
written from the raw network."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

from _models_planted import BUILDERS, normal_basis

NAMES = list(BUILDERS)


def _first_layer(model, kernel):
    return next(name for name, spec in model.layout.layers.items()
                if any(path == kernel for path, _ in spec.incoming))


@pytest.fixture(scope="module", params=NAMES)
def planted(request):
    pytest.importorskip("equinox") if request.param == "equinox_mlp" else None
    return request.param, BUILDERS[request.param]()


def test_planted_units_detected_exactly(planted):
    name, (model, params, x, y, loss, info) = planted
    variables = model.init()
    det = pdx.manifolds.detect(model, variables, (x, y))
    layer = _first_layer(model, info["kernel"])
    group = model.layout.layers[layer].group
    assert {k: list(v) for k, v in det.frozen_units.items()} == {layer: [info["frozen"]]}
    want_dead = {layer: [info["frozen"]]} if info["dead"] else {}
    assert {k: list(v) for k, v in det.dead_units.items() if len(v)} == want_dead
    clusters = {g: [b.tolist() for b in det.partition.blocks(g) if b.size > 1]
                for g in det.partition.groups}
    assert clusters == {g: ([list(info["clones"])] if g == group else [])
                        for g in det.partition.groups}


def test_expansion_preserves_outputs(planted):
    name, (model, params, x, y, loss, info) = planted
    variables = model.init()
    wide_model, wide, part = pdx.manifolds.expand(model, variables, 2)
    base = np.asarray(model.apply(variables, x).logits)
    got = np.asarray(wide_model.apply(wide, x).logits)
    assert np.linalg.norm(got - base) <= 1e-5 * np.linalg.norm(base)
    raw = np.asarray(loss(wide["params"], x, y))  # the raw network on the wide params too
    assert abs(raw - float(loss(params, x, y))) <= 1e-5 * abs(raw)
    for g in part.groups:
        assert part.block_sizes(g).tolist() == [2] * (part.units(g) // 2)


@pytest.mark.parametrize("name", [n if n == "plain_mlp" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in NAMES])
def test_normal_spectrum_matches_dense_float64_oracle(name):
    if name == "equinox_mlp":
        pytest.importorskip("equinox")
    model, params, x, y, loss, info = BUILDERS[name]()
    wide_model, wide, part = pdx.manifolds.expand(model, model.init(), 2)
    wp = wide["params"]
    manifold = pdx.manifolds.cloned(part, wp)
    spec = pdx.curvature.normal_spectrum(loss, wp, manifold, k=3, method="dense", args=(x, y))
    q = normal_basis(part, wp)
    assert q.shape[1] == manifold.normal_dim
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), wp)
        flat, unravel = ravel_pytree(p64)
        x64 = jnp.asarray(x, jnp.float64)
        hess = np.asarray(jax.hessian(lambda f: loss(unravel(f), x64, y))(flat))
    want = np.linalg.eigvalsh(q.T @ hess @ q)
    want = np.concatenate([want[:3], want[-3:]])
    scale = np.abs(want).max()
    np.testing.assert_allclose(spec.eigenvalues, want, atol=2e-4 * scale)


def test_unit_metrics_run_on_wrapped_model(planted):
    name, (model, params, x, y, loss, info) = planted
    out = pdx.metrics.unit_metrics(model, model.init(), (x, y))
    layer = _first_layer(model, info["kernel"])
    frozen = next(v for k, v in out.items() if k.startswith("frozen_frac"))
    assert set(frozen) == set(model.layer_kinds)
    # one planted frozen unit in the first layer (the clones are not frozen)
    width = pdx.manifolds.unit_partition(model, model.init()).units(model.layout.layers[layer].group)
    assert frozen[layer] == pytest.approx(1 / width)


def test_probes_are_gradients_wrt_activations():
    model, params, x, y, loss, info = BUILDERS["plain_mlp"]()
    variables = model.init()
    out = model.apply(variables, x)
    probes = {k: jnp.zeros_like(v) for k, v in out.activations.items()}

    def f(pr):
        return model.apply(variables, x, probes=pr).logits.sum()

    g = jax.grad(f)(probes)
    # oracle: dL/dh1 for L = sum(logits) through the raw network, h1 = tanh(x alpha + beta)
    h1 = jnp.tanh(x @ params["alpha"] + params["beta"])
    d1 = jax.grad(lambda h: (jnp.tanh(h @ params["gamma"] + params["delta"])
                             @ params["omega"]).sum())(h1)
    np.testing.assert_allclose(g["alpha"], d1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.preactivations["alpha"], x @ params["alpha"] + params["beta"],
                               rtol=1e-5, atol=1e-6)


def test_unsupported_primitive_is_one_line_naming_it_and_the_parameter():
    p = {"w": jnp.ones((4, 4)), "v": jnp.ones((4, 2))}

    def net(q, x):
        h = jnp.tanh(x @ q["w"])
        h = jnp.sort(h, axis=-1)  # moves units: no layout can be proven
        return h @ q["v"]

    with pytest.raises(InputError) as err:
        pdx.models.from_function(net, p, jnp.ones((3, 4)))
    msg = str(err.value)
    assert "\n" not in msg and "'sort'" in msg and "w" in msg and "layout" in msg


def test_declared_layout_gives_the_same_partition_as_inference():
    model, params, x, y, loss, info = BUILDERS["plain_mlp"]()
    declared = pdx.models.from_function(model.apply_fn, params, x, layout=model.layout)
    a = pdx.manifolds.unit_partition(model, model.init())
    b = pdx.manifolds.unit_partition(declared, declared.init())
    assert a.leaves == b.leaves and a.layers == b.layers
    bad = model.layout._replace(leaves={**model.layout.leaves, ("params", "nope"): ()})
    with pytest.raises(InputError, match="nope"):
        pdx.models.from_function(model.apply_fn, params, x, layout=bad)


def test_from_flax_linen_with_batch_norm_statistics():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(6, name="enc")(x)
            h = nn.BatchNorm(use_running_average=True, name="bn")(h)
            return nn.Dense(3, name="dec")(nn.relu(h))

    x = jax.random.normal(jax.random.PRNGKey(1), (8, 4))
    net = Net()
    variables = net.init(jax.random.PRNGKey(0), x)
    model = pdx.models.from_flax(net, variables, x)
    part = pdx.manifolds.unit_partition(model, model.init())
    g = part.layers["enc"].group
    want = {("params", "enc", "kernel"): ((1, g, "out"),),
            ("params", "enc", "bias"): ((0, g, "out"),),
            ("params", "bn", "scale"): ((0, g, "out"),), ("params", "bn", "bias"): ((0, g, "out"),),
            ("batch_stats", "bn", "mean"): ((0, g, "out"),),
            ("batch_stats", "bn", "var"): ((0, g, "out"),),
            ("params", "dec", "kernel"): ((0, g, "in"),), ("params", "dec", "bias"): ()}
    assert {p: tuple(tuple(s) for s in v) for p, v in part.leaves.items()} == want
    assert sorted(p for p, _ in part.layers["enc"].incoming) == sorted(
        p for p in want if p[0] == "params" and p[1] in ("enc", "bn"))
    out = model.apply(model.init(), x)
    np.testing.assert_allclose(out.logits, net.apply(variables, x), rtol=1e-6, atol=1e-6)
    p, st = variables["params"], variables["batch_stats"]
    z = ((x @ p["enc"]["kernel"] + p["enc"]["bias"] - st["bn"]["mean"])
         / jnp.sqrt(st["bn"]["var"] + 1e-5) * p["bn"]["scale"] + p["bn"]["bias"])
    np.testing.assert_allclose(out.preactivations["enc"], z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.activations["enc"], jnp.maximum(z, 0), rtol=1e-5, atol=1e-6)


def test_channels_first_flatten_is_refused_naming_reshape():
    p = {"k": jnp.ones((3, 3, 1, 4)), "d": jnp.ones((4 * 5 * 5, 2))}

    def net(q, x):
        h = jax.nn.relu(jax.lax.conv_general_dilated(x, q["k"], (1, 1), "SAME",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC")))
        h = h.transpose(0, 3, 1, 2)  # NCHW: units are no longer the fastest axis
        return h.reshape(h.shape[0], -1) @ q["d"]

    with pytest.raises(InputError) as err:
        pdx.models.from_function(net, p, jnp.ones((2, 5, 5, 1)))
    assert "'reshape'" in str(err.value) and "k" in str(err.value)


def test_probes_and_shapes_are_checked():
    model, params, x, y, loss, info = BUILDERS["plain_mlp"]()
    with pytest.raises(InputError, match="probes key"):
        model.apply(model.init(), x, probes={"nope": jnp.zeros((16, 8))})
    with pytest.raises(InputError, match="shape"):
        model.apply(model.init(), x, probes={"alpha": jnp.zeros((3, 3))})
    with pytest.raises(InputError, match="does not fit"):
        model.init(None, jnp.ones((4, 7)))
    out = model.apply(model.init(), x[:4])  # another batch size: traced again, same layers
    assert list(out.activations) == list(model.layer_kinds)

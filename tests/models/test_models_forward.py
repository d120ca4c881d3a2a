"""Every family x norm x (some) activations: init, train/eval forward, shapes, finite values,
one SGD step that lowers the training loss, batch-norm state handling, monitored layers,
parameter names, dropout and determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

B = 4
SHAPES = {"mlp": (B, 40), "cnn": (B, 8, 8, 1), "resnet18": (B, 8, 8, 3), "vit": (B, 8, 8, 1)}

# (family, norm, activation, extra options): every family x norm, activations spread over them
# (all eight are checked in test_models_activations), the norm_affine / norm_after_activation
# switches. ResNet runs with stages (1, 1) here to keep compile time down (one identity-shortcut
# block and one projection-shortcut block); the full tiny ResNet-18 (8 blocks) is run and
# differentiated in the probe tests and the NumPy oracle tests.
CASES = [
    ("mlp", "none", "relu", {}), ("mlp", "batch", "tanh", {}), ("mlp", "layer", "gelu", {}),
    ("mlp", "batch", "leaky_relu", {"norm_after_activation": True}),
    ("mlp", "layer", "selu", {"norm_affine": False}),
    ("cnn", "none", "relu", {}), ("cnn", "batch", "tanh", {}),
    ("cnn", "layer", "elu", {"norm_after_activation": True}),
    ("resnet18", "none", "leaky_relu", {"stages": (1, 1)}),
    ("resnet18", "batch", "relu", {"stages": (1, 1)}),
    ("resnet18", "layer", "selu", {"stages": (1, 1), "norm_affine": False}),
    ("vit", "none", "relu", {}), ("vit", "batch", "gelu", {}),
    ("vit", "layer", "sigmoid", {"norm_affine": False}),
]

EXPECTED_KINDS = {
    "mlp": {"hidden_0": "dense", "hidden_1": "dense"},
    "cnn": {"conv_0": "conv", "conv_1": "conv", "fc_0": "dense"},
    "resnet18": {"stem": "conv", "layer1_block0": "conv", "layer2_block0": "conv"},
    "vit": {"block_0_mlp": "tokens", "block_0": "tokens"},
}
EXPECTED_PRE = {
    "mlp": {"hidden_0", "hidden_1"},
    "cnn": {"conv_0", "conv_1", "fc_0"},
    "resnet18": set(EXPECTED_KINDS["resnet18"]),
    "vit": {"block_0_mlp"},
}
NDIM = {"dense": 2, "conv": 4, "tokens": 3}


def tree_equal(a, b):
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(np.asarray(u), np.asarray(w))
        for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def data(family, seed=0):
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(kx, SHAPES[family]), jax.random.randint(ky, (B,), 0, 10)


def case_id(case):
    fam, norm, act, extra = case
    return "-".join([fam, norm, act] + [f"{k}={v}" for k, v in extra.items()])


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_forward_train_eval_and_sgd_step(case):
    family, norm, act, extra = case
    model = pdx.models.create(family, preset="tiny", norm=norm, activation=act, **extra)
    assert model.activation == act and model.name == family
    x, y = data(family)
    variables = model.init(jax.random.PRNGKey(1), x)
    rng = jax.random.PRNGKey(2)

    def loss_fn(params, variables):
        out = model.apply({**variables, "params": params}, x, train=True, rng=rng)
        loss = optax.softmax_cross_entropy_with_integer_labels(out.logits, y).mean()
        return loss, out

    phi = pdx.models.activation_fn(act)

    @jax.jit
    def run(params):
        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, variables)
        eval_out = model.apply({**variables, "params": params}, x, train=False)
        phi_z = {name: phi(z) for name, z in eval_out.preactivations.items()}
        return loss, out, grads, eval_out, phi_z

    loss, out, grads, eval_out, phi_z = run(variables["params"])
    grads = jax.tree.map(np.asarray, grads)
    gnorm2 = sum(float(np.sum(g.astype(np.float64) ** 2)) for g in jax.tree.leaves(grads))
    lr = np.float32(0.1 / max(np.sqrt(gnorm2), 1.0))
    stepped = jax.tree.map(lambda p, g: np.asarray(p) - lr * g, variables["params"], grads)
    loss_after = run(stepped)[0]

    for o in (out, eval_out):
        assert o.logits.shape == (B, 10) and o.logits.dtype == jnp.float32
        assert np.isfinite(np.asarray(o.logits)).all()
        # (jit returns dicts with sorted keys, so only layer_kinds has a guaranteed order)
        assert set(o.activations) == set(EXPECTED_KINDS[family])
        assert set(o.preactivations) == EXPECTED_PRE[family]
        for name, a in o.activations.items():
            assert a.ndim == NDIM[model.layer_kinds[name]] and a.shape[0] == B
            assert np.isfinite(np.asarray(a)).all()
            if name in o.preactivations:
                assert o.preactivations[name].shape == a.shape
        assert jax.tree.structure(o.variables) == jax.tree.structure(variables)
    assert list(model.layer_kinds.items()) == list(EXPECTED_KINDS[family].items())
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert gnorm2 > 0
    # First order: L(p - lr g) = L - lr |g|^2 + O(lr^2); the step is small enough to decrease it.
    assert float(loss_after) < float(loss), (float(loss), float(loss_after))

    # The activation function links preactivations and activations (ViT/ResNet: for the keys
    # that have a preactivation, act(z) is exactly the recorded value).
    for name, a in phi_z.items():
        np.testing.assert_allclose(np.asarray(a), np.asarray(eval_out.activations[name]),
                                   rtol=1e-5, atol=1e-6)

    if norm == "batch":
        assert set(variables) == {"params", "batch_stats"}
        before, after = variables["batch_stats"], out.variables["batch_stats"]
        changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                               before, after)
        assert all(jax.tree.leaves(changed)), changed
        assert tree_equal(eval_out.variables, variables)
        assert tree_equal(out.variables["params"], variables["params"])
    else:
        assert set(variables) == {"params"}
        assert tree_equal(out.variables, variables)


def shapes_of(model, shape):
    """Variables as ShapeDtypeStructs (traces init without compiling it)."""
    return jax.eval_shape(lambda k, x: model.module.init({"params": k}, x, train=False),
                          jax.random.PRNGKey(0), jnp.zeros(shape))


def test_param_names_follow_contract():
    k = jax.random.PRNGKey(0)
    x = jnp.zeros(SHAPES["mlp"])
    v = shapes_of(pdx.models.create("mlp", "tiny"), SHAPES["mlp"])
    assert set(v["params"]) == {"dense_0", "norm_0", "dense_1", "norm_1", "out"}
    assert v["params"]["dense_0"]["kernel"].shape == (40, 16)
    assert v["params"]["out"]["kernel"].shape == (16, 10)
    assert set(v["params"]["norm_0"]) == {"scale", "bias"}
    assert set(v["batch_stats"]) == {"norm_0", "norm_1"}
    assert set(v["batch_stats"]["norm_0"]) == {"mean", "var"}
    v = shapes_of(pdx.models.create("mlp", "tiny", norm_affine=False), SHAPES["mlp"])
    assert set(v["params"]) == {"dense_0", "dense_1", "out"}

    v = shapes_of(pdx.models.create("cnn", "tiny", norm="layer"), SHAPES["cnn"])
    p = v["params"]
    assert set(p) == {"conv_0", "norm_0", "conv_1", "norm_1", "fc_0", "out"}
    assert p["conv_0"]["kernel"].shape == (3, 3, 1, 4) and p["conv_0"]["bias"].shape == (4,)
    assert p["conv_1"]["kernel"].shape == (3, 3, 4, 8)
    assert p["fc_0"]["kernel"].shape == (2 * 2 * 8, 16)

    for norm in ("batch", "none"):
        v = shapes_of(pdx.models.create("resnet18", "tiny", norm=norm), SHAPES["resnet18"])
        p = v["params"]
        blocks = {f"layer{s}_block{b}" for s in range(1, 5) for b in range(2)}
        assert set(p) == {"stem_conv", "out"} | blocks | ({"stem_norm"} if norm == "batch" else set())
        assert p["stem_conv"]["kernel"].shape == (3, 3, 3, 4)
        assert ("bias" in p["stem_conv"]) == (norm == "none")
        assert "shortcut_conv" not in p["layer1_block0"]
        for s in (2, 3, 4):
            blk = p[f"layer{s}_block0"]
            assert blk["shortcut_conv"]["kernel"].shape == (1, 1, 4 * 2 ** (s - 2), 4 * 2 ** (s - 1))
            assert "shortcut_conv" not in p[f"layer{s}_block1"]
        want = {"conv1", "conv2"} | ({"norm1", "norm2"} if norm == "batch" else set())
        assert set(p["layer1_block1"]) == want

    v = shapes_of(pdx.models.create("vit", "tiny"), SHAPES["vit"])
    p = v["params"]
    assert set(p) == {"patch_embed", "cls_token", "pos_embed", "block_0", "final_norm", "out"}
    assert p["patch_embed"]["kernel"].shape == (4 * 4 * 1, 16)
    assert p["cls_token"].shape == (1, 1, 16) and p["pos_embed"].shape == (1, 5, 16)
    blk = p["block_0"]
    assert set(blk) == {"norm1", "attn", "norm2", "mlp_fc1", "mlp_fc2"}
    assert set(blk["attn"]) == {"query", "key", "value", "proj"}
    for d in blk["attn"].values():
        assert d["kernel"].shape == (16, 16) and d["bias"].shape == (16,)
    assert blk["mlp_fc1"]["kernel"].shape == (16, 64) and blk["mlp_fc2"]["kernel"].shape == (64, 16)


def test_mlp_flattens_any_input_and_vit_takes_other_sizes():
    k = jax.random.PRNGKey(0)
    m = pdx.models.create("mlp", "tiny", norm="none", dropout=0.0)
    x = jax.random.normal(k, (B, 8, 8, 1))
    v = m.init(k, x)
    assert v["params"]["dense_0"]["kernel"].shape == (64, 16)
    np.testing.assert_allclose(np.asarray(m.apply(v, x).logits),
                               np.asarray(m.apply(v, x.reshape(B, 64)).logits), rtol=1e-6)
    vit = pdx.models.create("vit", "tiny", patch_size=2)
    xv = jnp.zeros((2, 6, 10, 3))
    out = vit.apply(vit.init(k, xv), xv)
    assert out.logits.shape == (2, 10) and out.activations["block_0"].shape == (2, 1 + 15, 16)
    cnn = pdx.models.create("cnn", "tiny")
    xc = jnp.zeros((2, 8, 8))   # (B, H, W) gets a channel axis
    assert cnn.apply(cnn.init(k, xc), xc).logits.shape == (2, 10)


def test_dropout_needs_rng_in_train_mode_only():
    k = jax.random.PRNGKey(0)
    x, _ = data("mlp")
    m = pdx.models.create("mlp", "tiny", norm="none", dropout=0.5)
    v = m.init(k, x)
    with pytest.raises(InputError, match="rng"):
        m.apply(v, x, train=True)
    eval_logits = np.asarray(m.apply(v, x).logits)
    np.testing.assert_array_equal(np.asarray(m.apply(v, x, rng=k).logits), eval_logits)
    a = np.asarray(m.apply(v, x, train=True, rng=jax.random.PRNGKey(1)).logits)
    a2 = np.asarray(m.apply(v, x, train=True, rng=jax.random.PRNGKey(1)).logits)
    b = np.asarray(m.apply(v, x, train=True, rng=jax.random.PRNGKey(2)).logits)
    np.testing.assert_array_equal(a, a2)
    assert not np.allclose(a, b) and not np.allclose(a, eval_logits)
    # Dropout acts after the recorded activation: recorded hidden units match eval mode.
    o = m.apply(v, x, train=True, rng=k)
    np.testing.assert_allclose(np.asarray(o.activations["hidden_0"]),
                               np.asarray(m.apply(v, x).activations["hidden_0"]), rtol=1e-6)
    # No dropout: train mode needs no rng.
    m0 = pdx.models.create("mlp", "tiny", norm="none", dropout=0.0)
    m0.apply(m0.init(k, x), x, train=True)
    vit = pdx.models.create("vit", "tiny", dropout=0.0, attention_dropout=0.1)
    xv, _ = data("vit")
    with pytest.raises(InputError, match="attention_dropout=0.1"):
        vit.apply(vit.init(k, xv), xv, train=True)


def test_dropout_rate_statistics():
    # Inverted dropout: zero fraction ~ rate (5 binomial standard errors over the 640 units
    # read out); survivors scaled by 1/(1 - rate).
    k = jax.random.PRNGKey(3)
    m = pdx.models.create("mlp", "tiny", norm="none", dropout=0.5, widths=(16,), activation="linear")
    x = jax.random.normal(k, (64, 40))
    v = m.init(k, x)
    # out = dropout(h) W + b; recover the dropped vector via a one-hot readout W = I.
    v["params"]["out"] = {"kernel": jnp.eye(16, 10), "bias": jnp.zeros(10)}
    o = m.apply(v, x, train=True, rng=k)
    h = np.asarray(o.activations["hidden_0"])[:, :10]
    d = np.asarray(o.logits)
    zero = np.isclose(d, 0.0, atol=1e-7)
    frac = zero.mean()
    assert abs(frac - 0.5) < 5 * np.sqrt(0.25 / zero.size)
    np.testing.assert_allclose(d[~zero], 2.0 * h[~zero], rtol=1e-5)


def test_same_key_same_variables_and_different_key_differs():
    for family in ("mlp", "cnn", "resnet18", "vit"):
        x, _ = data(family)
        a = pdx.models.create(family, "tiny").init(jax.random.PRNGKey(7), x)
        b = pdx.models.create(family, "tiny").init(jax.random.PRNGKey(7), x)
        c = pdx.models.create(family, "tiny").init(jax.random.PRNGKey(8), x)
        assert jax.tree.structure(a) == jax.tree.structure(b)
        for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(w))
        assert not np.array_equal(np.asarray(a["params"]["out"]["kernel"]),
                                  np.asarray(c["params"]["out"]["kernel"]))


def test_model_is_hashable_and_jit_static():
    m1 = pdx.models.create("mlp", "tiny", widths=[16, 16])
    m2 = pdx.models.create("mlp", "tiny")
    assert m1 == m2 and hash(m1) == hash(m2)
    assert m1 != pdx.models.create("mlp", "tiny", activation="tanh")
    x, _ = data("mlp")
    v = m1.init(jax.random.PRNGKey(0), x)
    f = jax.jit(lambda model, v, x: model.apply(v, x).logits, static_argnums=0)
    np.testing.assert_allclose(np.asarray(f(m1, v, x)), np.asarray(m2.apply(v, x).logits),
                               rtol=1e-6)
    g = jax.jit(m1.apply, static_argnames="train")
    out = g(v, x, train=True, rng=jax.random.PRNGKey(0))
    assert out.logits.shape == (B, 10)


def test_frozen_dict_variables_keep_their_type():
    from flax.core import freeze

    m = pdx.models.create("mlp", "tiny")
    x, _ = data("mlp")
    v = freeze(m.init(jax.random.PRNGKey(0), x))
    out = m.apply(v, x, train=True, rng=jax.random.PRNGKey(0))
    assert jax.tree.structure(out.variables) == jax.tree.structure(v)

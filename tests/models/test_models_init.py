"""Initialisation statistics against the closed forms of PAPER.md 5.1.

For n i.i.d. draws, the sample mean of w^2 has standard error sqrt(Var(w^2) / n); we accept
|mean(w^2) - sigma^2| <= 5 standard errors (two-sided normal tail 6e-7 per check).
- U(-b, b): sigma^2 = b^2/3, Var(w^2) = b^4/5 - b^4/9 = 4 b^4/45; also P(|w| < b/2) = 1/2.
- N(0, s^2): Var(w^2) = 2 s^4.
- Normal truncated at +-2 std, rescaled to std s: Var(w^2) <= 2 s^4 (lighter tails), |w| <= 2 s/0.8796.
"""

import math

import jax
import numpy as np

import plasticity_dynamics as pdx

KEY = jax.random.PRNGKey(0)


def check_uniform(w, fan_in, what):
    w = np.asarray(w, np.float64).ravel()
    n, b = w.size, 1.0 / math.sqrt(fan_in)
    assert np.abs(w).max() <= b * (1 + 1e-6), what
    se = math.sqrt(4 * b**4 / 45 / n)
    assert abs(np.mean(w**2) - b**2 / 3) <= 5 * se, (what, np.mean(w**2), b**2 / 3)
    assert abs(np.mean(w) - 0.0) <= 5 * b / math.sqrt(3 * n), what
    assert abs(np.mean(np.abs(w) < b / 2) - 0.5) <= 5 * math.sqrt(0.25 / n), what


def check_normal(w, std, what, trunc=False):
    w = np.asarray(w, np.float64).ravel()
    n = w.size
    se = math.sqrt(2 * std**4 / n)
    assert abs(np.mean(w**2) - std**2) <= 5 * se, (what, np.mean(w**2), std**2)
    assert abs(np.mean(w)) <= 5 * std / math.sqrt(n), what
    if trunc:
        assert np.abs(w).max() <= 2 * std / 0.87962566103423978 * (1 + 1e-6), what


def test_mlp_paper_init_is_pytorch_default():
    model = pdx.models.create("mlp")               # paper: 5 x 128 on mnist1d-like (B, 40)
    p = model.init(KEY, np.zeros((2, 40), np.float32))["params"]
    fan_in = 40
    for i in range(5):
        check_uniform(p[f"dense_{i}"]["kernel"], fan_in, f"dense_{i}.kernel")
        b = np.asarray(p[f"dense_{i}"]["bias"])
        assert np.abs(b).max() <= 1 / math.sqrt(fan_in) and np.std(b) > 0
        np.testing.assert_array_equal(np.asarray(p[f"norm_{i}"]["scale"]), 1.0)
        np.testing.assert_array_equal(np.asarray(p[f"norm_{i}"]["bias"]), 0.0)
        fan_in = 128
    check_uniform(p["out"]["kernel"], 128, "out.kernel")
    # biases of all layers pooled: 5 * 128 + 10 draws, bounds differ only for dense_0
    check_uniform(np.concatenate([np.asarray(p[f"dense_{i}"]["bias"]) for i in range(1, 5)]),
                  128, "biases")


def test_cnn_init_is_pytorch_default():
    # Same configuration and input shape as the oracle test (its init compiles once).
    model = pdx.models.create("cnn", "tiny", activation="elu", norm="layer")
    p = model.init(KEY, np.zeros((2, 9, 9, 2), np.float32))["params"]
    cin = 2
    for i, ch in enumerate((4, 8)):
        check_uniform(p[f"conv_{i}"]["kernel"], 9 * cin, f"conv_{i}")
        assert np.abs(np.asarray(p[f"conv_{i}"]["bias"])).max() <= 1 / math.sqrt(9 * cin)
        cin = ch
    check_uniform(p["fc_0"]["kernel"], 2 * 2 * 8, "fc_0")   # 9x9 -> 4x4 -> 2x2 x 8 channels


def test_resnet_convs_are_kaiming_normal_fan_out():
    # tiny (base 4 -> stage 4 has 32 channels); same configuration as the oracle test, so the
    # compiled init is shared when both run in one process.
    model = pdx.models.create("resnet18", "tiny", norm="batch")
    p = model.init(KEY, np.zeros((2, 8, 8, 3), np.float32))["params"]
    for name in ("layer3_block1", "layer4_block0", "layer4_block1"):
        k = np.asarray(p[name]["conv2"]["kernel"])
        check_normal(k, math.sqrt(2.0 / (9 * k.shape[-1])), f"{name}.conv2")
        assert "bias" not in p[name]["conv2"]
    np.testing.assert_array_equal(np.asarray(p["layer4_block0"]["norm2"]["scale"]), 1.0)
    np.testing.assert_array_equal(np.asarray(p["layer4_block0"]["norm2"]["bias"]), 0.0)


def test_vit_trunc_normal_and_zero_biases():
    model = pdx.models.create("vit", "small")          # dim 64, patch 4, hidden 256
    p = model.init(KEY, np.zeros((2, 8, 8, 1), np.float32))["params"]
    blk = p["block_0"]
    for w, name in [(blk["mlp_fc1"]["kernel"], "mlp_fc1"), (blk["mlp_fc2"]["kernel"], "mlp_fc2"),
                    (np.concatenate([np.asarray(blk["attn"][n]["kernel"]).ravel()
                                     for n in ("query", "key", "value", "proj")]), "attn")]:
        check_normal(w, 0.02, name, trunc=True)
    for sub in ("query", "key", "value", "proj"):
        np.testing.assert_array_equal(np.asarray(blk["attn"][sub]["bias"]), 0.0)
    np.testing.assert_array_equal(np.asarray(blk["mlp_fc1"]["bias"]), 0.0)
    np.testing.assert_array_equal(np.asarray(p["out"]["bias"]), 0.0)
    pos = np.asarray(p["pos_embed"])
    assert pos.shape == (1, 5, 64)
    check_normal(np.concatenate([pos.ravel(), np.asarray(p["cls_token"]).ravel()]), 0.02,
                 "pos+cls", trunc=True)


def count(tree):
    return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(tree))


def shapes(model, shape):
    return jax.eval_shape(lambda k, x: model.module.init({"params": k}, x, train=False),
                          KEY, np.zeros(shape, np.float32))


def test_paper_sizes_parameter_counts():
    # CIFAR ResNet-18 (3x3 stem, no max-pool, 10 classes): the well-known 11,173,962 parameters.
    assert count(shapes(pdx.models.create("resnet18"), (1, 32, 32, 3))["params"]) == 11_173_962
    # ViT on 32x32x3, patch 8 -> 16 tokens + CLS; hand count from PAPER.md 5.1 sizes.
    d, hdn, t = 384, 1536, 17
    block = 2 * 2 * d + 4 * (d * d + d) + (d * hdn + hdn) + (hdn * d + d)
    want = (8 * 8 * 3 * d + d) + d + t * d + 6 * block + 2 * d + (d * 10 + 10)
    assert count(shapes(pdx.models.create("vit"), (1, 32, 32, 3))["params"]) == want
    # CNN on 32x32x3: convs 3->64->128->256, pools 32->16->8->4, FC 4*4*256 -> 512 -> 10.
    conv = lambda a, b: 9 * a * b + b + 2 * b   # noqa: E731  (kernel, bias, BN scale+bias)
    want = conv(3, 64) + conv(64, 128) + conv(128, 256) + (4096 * 512 + 512) + (512 * 10 + 10)
    assert count(shapes(pdx.models.create("cnn"), (1, 32, 32, 3))["params"]) == want
    # MLP on 28x28 inputs: 784 -> 5 x 128 (+ BN) -> 10.
    want = (784 * 128 + 128) + 4 * (128 * 128 + 128) + 5 * 256 + (128 * 10 + 10)
    assert count(shapes(pdx.models.create("mlp"), (1, 28, 28, 1))["params"]) == want

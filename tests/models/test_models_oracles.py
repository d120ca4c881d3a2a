"""Each family against an independent float64 NumPy re-implementation written here from the
contract (layer order, padding, pooling, flatten order, attention head layout, norms).
All parameters and running statistics are replaced by random values so that every weight,
norm scale/bias and batch statistic matters. Tolerance: float32 forward vs float64 oracle,
relative 1e-4 of the output scale (a few hundred float32 roundings of O(1) sums)."""

import math

import jax
import numpy as np
import pytest

import plasticity_dynamics as pdx

EPS = 1e-5
erf = np.vectorize(math.erf)
ACT = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "gelu": lambda z: 0.5 * z * (1.0 + erf(z / math.sqrt(2.0))),
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
}


def randomize(variables, seed):
    """Same tree, random float32 values; running variances positive."""
    rs = np.random.default_rng(seed)

    def draw(path, a):
        names = [getattr(p, "key", "") for p in path]
        if names[-1] == "var":
            return rs.uniform(0.5, 1.5, a.shape).astype(np.float32)
        return (0.5 * rs.standard_normal(a.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, variables)


def to64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def close(got, want):
    want = np.asarray(want)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-4,
                               atol=1e-4 * max(1.0, np.abs(want).max()))


def dense(p, h):
    return h @ p["kernel"] + (p["bias"] if "bias" in p else 0.0)


def batchnorm(h, p, stats, train):
    axes = tuple(range(h.ndim - 1))
    if train:
        mean, var = h.mean(axes), h.var(axes)
    else:
        mean, var = stats["mean"], stats["var"]
    out = (h - mean) / np.sqrt(var + EPS)
    return out * p["scale"] + p["bias"], (mean, var)


def layernorm(h, p):
    mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    return (h - mean) / np.sqrt(var + EPS) * p["scale"] + p["bias"]


def groupnorm1(h, p):
    mean, var = h.mean((1, 2, 3), keepdims=True), h.var((1, 2, 3), keepdims=True)
    return (h - mean) / np.sqrt(var + EPS) * p["scale"] + p["bias"]


def conv(x, p, stride=1):
    """NHWC cross-correlation, kernel (k, k, cin, cout), zero padding k // 2 (PyTorch)."""
    w = p["kernel"]
    k = w.shape[0]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (x.shape[1] + 2 * pad - k) // stride + 1
    wo = (x.shape[2] + 2 * pad - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(k):
        for j in range(k):
            patch = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out += patch @ w[i, j]
    return out + (p["bias"] if "bias" in p else 0.0)


def maxpool2(x):
    b, h, w, c = x.shape
    x = x[:, :2 * (h // 2), :2 * (w // 2)]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@pytest.mark.parametrize("after", [False, True], ids=["norm-act", "act-norm"])
def test_mlp_train_mode_with_batch_stats(after):
    model = pdx.models.create("mlp", "tiny", activation="tanh", norm="batch", dropout=0.0,
                              norm_after_activation=after)
    x = np.random.default_rng(1).standard_normal((4, 5, 8)).astype(np.float32)
    v = randomize(model.init(jax.random.PRNGKey(0), x), 2)
    out = model.apply(v, x, train=True)
    P, S = to64(v["params"]), to64(v["batch_stats"])
    h = x.reshape(4, -1).astype(np.float64)
    for i in range(2):
        z = dense(P[f"dense_{i}"], h)
        if after:
            pre = z
            a = np.tanh(z)
            h, (m, s2) = batchnorm(a, P[f"norm_{i}"], None, True)
        else:
            pre, (m, s2) = batchnorm(z, P[f"norm_{i}"], None, True)
            a = h = np.tanh(pre)
        close(out.preactivations[f"hidden_{i}"], pre)
        close(out.activations[f"hidden_{i}"], a)
        close(out.variables["batch_stats"][f"norm_{i}"]["mean"], 0.9 * S[f"norm_{i}"]["mean"] + 0.1 * m)
        close(out.variables["batch_stats"][f"norm_{i}"]["var"], 0.9 * S[f"norm_{i}"]["var"] + 0.1 * s2)
    close(out.logits, dense(P["out"], h))


def test_cnn_groupnorm_pooling_and_flatten_order():
    model = pdx.models.create("cnn", "tiny", activation="elu", norm="layer")
    x = np.random.default_rng(1).standard_normal((2, 9, 9, 2)).astype(np.float32)  # 9 -> 4 -> 2
    v = randomize(model.init(jax.random.PRNGKey(0), x), 3)
    out = model.apply(v, x)
    P = to64(v["params"])
    h = x.astype(np.float64)
    for i in range(2):
        z = groupnorm1(conv(h, P[f"conv_{i}"]), P[f"norm_{i}"])
        close(out.preactivations[f"conv_{i}"], z)
        h = ACT["elu"](z)
        close(out.activations[f"conv_{i}"], h)
        h = maxpool2(h)
    assert h.shape == (2, 2, 2, 8)
    flat = np.stack([h[:, r, c, ch] for r in range(2) for c in range(2) for ch in range(8)], 1)
    z = dense(P["fc_0"], flat)
    close(out.activations["fc_0"], ACT["elu"](z))
    close(out.logits, dense(P["out"], ACT["elu"](z)))


def test_resnet18_blocks_strides_and_shortcuts():
    model = pdx.models.create("resnet18", "tiny", norm="batch")
    x = np.random.default_rng(1).standard_normal((2, 8, 8, 3)).astype(np.float32)
    v = randomize(model.init(jax.random.PRNGKey(0), x), 4)
    out = model.apply(v, x)
    P, S = to64(v["params"]), to64(v["batch_stats"])
    relu = ACT["relu"]

    def bn(h, name, p=P, s=S):
        return batchnorm(h, p[name], s[name], False)[0]

    z = bn(conv(x.astype(np.float64), P["stem_conv"]), "stem_norm")
    h = relu(z)
    close(out.activations["stem"], h)
    for s in range(1, 5):
        for b in range(2):
            name = f"layer{s}_block{b}"
            p, st = P[name], S[name]
            stride = 2 if (s > 1 and b == 0) else 1
            y = relu(bn(conv(h, p["conv1"], stride), "norm1", p, st))
            y = bn(conv(y, p["conv2"]), "norm2", p, st)
            sc = bn(conv(h, p["shortcut_conv"], stride), "shortcut_norm", p, st) \
                if "shortcut_conv" in p else h
            z = y + sc
            h = relu(z)
            close(out.preactivations[name], z)
            close(out.activations[name], h)
    assert h.shape == (2, 1, 1, 32)
    close(out.logits, dense(P["out"], h.mean(axis=(1, 2))))


def test_vit_patches_heads_and_blocks():
    model = pdx.models.create("vit", "tiny", depth=2, heads=4, norm="layer")
    x = np.random.default_rng(1).standard_normal((2, 8, 12, 3)).astype(np.float32)
    v = randomize(model.init(jax.random.PRNGKey(0), x), 5)
    out = model.apply(v, x)
    P = to64(v["params"])
    p, dim, heads = 4, 16, 4
    hd = dim // heads
    patches = np.stack([x[:, r * p:(r + 1) * p, c * p:(c + 1) * p, :].reshape(2, -1)
                        for r in range(2) for c in range(3)], axis=1).astype(np.float64)
    h = dense(P["patch_embed"], patches)
    h = np.concatenate([np.broadcast_to(P["cls_token"], (2, 1, dim)), h], 1) + P["pos_embed"]
    for i in range(2):
        bp = P[f"block_{i}"]
        a = layernorm(h, bp["norm1"])
        q, k, val = (dense(bp["attn"][n], a) for n in ("query", "key", "value"))
        heads_out = []
        for hh in range(heads):
            sl = slice(hh * hd, (hh + 1) * hd)
            logits = q[..., sl] @ np.swapaxes(k[..., sl], 1, 2) / math.sqrt(hd)
            w = np.exp(logits - logits.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            heads_out.append(w @ val[..., sl])
        h = h + dense(bp["attn"]["proj"], np.concatenate(heads_out, -1))
        z = dense(bp["mlp_fc1"], layernorm(h, bp["norm2"]))
        m = ACT["gelu"](z)
        close(out.preactivations[f"block_{i}_mlp"], z)
        close(out.activations[f"block_{i}_mlp"], m)
        h = h + dense(bp["mlp_fc2"], m)
        close(out.activations[f"block_{i}"], h)
    close(out.logits, dense(P["out"], layernorm(h, P["final_norm"])[:, 0]))

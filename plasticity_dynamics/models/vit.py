"""Vision Transformer (paper Appendix B.1.3: 8x8 patches, dim 384, depth 6, 6 heads, MLP ratio
4, GELU, LayerNorm, dropout 0.1 and attention dropout 0.1; Dosovitskiy et al. 2021).

Patches: (B, H, W, C) -> (B, T, p*p*C), T = (H/p)(W/p), patches in row-major order, each patch
flattened as (row, col, channel) with channel fastest; ``patch_embed`` Dense -> (B, T, dim).
Prepend ``cls_token`` (1, 1, dim), add ``pos_embed`` (1, T+1, dim), dropout.
Pre-norm block ``block_{i}``:
    x = x + dropout(attn(norm1(x)))
    x = x + dropout(mlp_fc2(dropout(act(mlp_fc1(norm2(x))))))
Attention (written out so head duplication can rely on the layout): ``attn/query``, ``key``,
``value``, ``proj`` are Dense (dim, dim) with bias; head h uses features [h*hd, (h+1)*hd),
hd = dim / heads; weights softmax(q_h k_h^T / sqrt(hd)) over keys, attention dropout on the
weights, heads concatenated in the same order, then ``proj``.
Head: ``final_norm`` -> CLS token (index 0) -> ``out``.
Monitored: ``block_{i}_mlp`` (post-activation MLP hidden units, before dropout, with
preactivation; kind "tokens") and ``block_{i}`` (block output = residual stream; kind "tokens").
norm: "layer" = LayerNorm, "batch" = BatchNorm over the feature axis of (B, T, D), "none".
Init: all Dense kernels, cls_token and pos_embed truncated normal std 0.02 (patch_embed too,
as a Dense); biases zero; norm scale 1, bias 0.
Cost per image: about depth * (12 T dim^2 + 2 T^2 dim) multiply-adds (mlp_ratio 4).
Fails: H or W not divisible by patch_size -> InputError.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..errors import InputError
from .activations import activation_fn
from .layers import Dropout, apply_norm, as_images, make_norm, record, trunc_normal_init

DEFAULTS = dict(patch_size=8, dim=384, depth=6, heads=6, mlp_ratio=4.0, activation="gelu",
                norm="layer", dropout=0.1, attention_dropout=0.1)

trunc_normal = trunc_normal_init(0.02)
zeros = nn.initializers.zeros


def hidden_width(options: dict) -> int:
    """Width of the MLP sub-block: int(dim * mlp_ratio)."""
    return int(options["dim"] * options["mlp_ratio"])


def layer_kinds(options: dict) -> dict:
    kinds = {}
    for i in range(options["depth"]):
        kinds[f"block_{i}_mlp"] = "tokens"
        kinds[f"block_{i}"] = "tokens"
    return kinds


def _dense(features, name):
    return nn.Dense(features, kernel_init=trunc_normal, bias_init=zeros, name=name)


def patchify(x, p: int):
    """(B, H, W, C) -> (B, (H/p)(W/p), p*p*C), patch-major row order, channel fastest."""
    b, h, w, c = x.shape
    if h % p or w % p:
        raise InputError(f"image size {h}x{w} is not divisible by patch_size={p}")
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


class Attention(nn.Module):
    dim: int
    heads: int
    attention_dropout: float

    @nn.compact
    def __call__(self, x, train: bool = False):
        """x (B, T, dim) -> (B, T, dim). Cost O(B (4 T dim^2 + 2 T^2 dim))."""
        b, t, _ = x.shape
        hd = self.dim // self.heads
        split = lambda y: y.reshape(b, t, self.heads, hd)  # noqa: E731
        q = split(_dense(self.dim, "query")(x))
        k = split(_dense(self.dim, "key")(x))
        v = split(_dense(self.dim, "value")(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        weights = jax.nn.softmax(logits, axis=-1)
        weights = Dropout(self.attention_dropout, deterministic=not train)(weights)
        y = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, self.dim)
        return _dense(self.dim, "proj")(y)


class Block(nn.Module):
    dim: int
    heads: int
    hidden: int
    activation: str
    norm: str
    norm_affine: bool
    dropout: float
    attention_dropout: float

    @nn.compact
    def __call__(self, x, train: bool = False, mlp_probe=None):
        """x (B, T, dim) -> (output (B, T, dim), MLP hidden h (B, T, hidden) with ``mlp_probe``
        added, its preactivation z)."""
        norm = lambda name: make_norm(self.norm, affine=self.norm_affine, train=train,  # noqa
                                      conv=False, name=name)
        drop = Dropout(self.dropout, deterministic=not train)
        y = Attention(self.dim, self.heads, self.attention_dropout, name="attn")(
            apply_norm(norm("norm1"), x), train)
        x = x + drop(y)
        z = _dense(self.hidden, "mlp_fc1")(apply_norm(norm("norm2"), x))
        hidden = activation_fn(self.activation)(z)
        if mlp_probe is not None:
            hidden = hidden + mlp_probe
        y = _dense(self.dim, "mlp_fc2")(drop(hidden))
        return x + drop(y), hidden, z


class ViT(nn.Module):
    patch_size: int
    dim: int
    depth: int
    heads: int
    hidden: int
    num_outputs: int
    activation: str
    norm: str
    norm_affine: bool
    dropout: float
    attention_dropout: float

    @nn.compact
    def __call__(self, x, train: bool = False, probes=None):
        h = patchify(as_images(x, "vit"), self.patch_size)
        h = _dense(self.dim, "patch_embed")(h)
        b, t, _ = h.shape
        cls = self.param("cls_token", trunc_normal, (1, 1, self.dim))
        pos = self.param("pos_embed", trunc_normal, (1, t + 1, self.dim))
        if pos.shape[1] != t + 1:
            raise InputError(f"x.shape={tuple(x.shape)} gives {t} patches but pos_embed was "
                             f"initialised for {pos.shape[1] - 1}")
        h = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.dim)), h], axis=1) + pos
        h = Dropout(self.dropout, deterministic=not train)(h)
        acts, pre = {}, {}
        for i in range(self.depth):
            mlp_name = f"block_{i}_mlp"
            mlp_probe = None
            if probes is not None and mlp_name in probes:
                mlp_probe = probes[mlp_name]
                want = (b, t + 1, self.hidden)
                if tuple(mlp_probe.shape) != want:
                    raise InputError(f"probes[{mlp_name!r}].shape={tuple(mlp_probe.shape)} must "
                                     f"equal the activation shape {want}")
            h, hidden, z = Block(self.dim, self.heads, self.hidden, self.activation, self.norm,
                                 self.norm_affine, self.dropout, self.attention_dropout,
                                 name=f"block_{i}")(h, train, mlp_probe)
            record(mlp_name, hidden, None, acts, z, pre)
            h = record(f"block_{i}", h, probes, acts)
        h = apply_norm(make_norm(self.norm, affine=self.norm_affine, train=train, conv=False,
                                 name="final_norm"), h)
        logits = _dense(self.num_outputs, "out")(h[:, 0])
        return logits, acts, pre


def build(options: dict) -> ViT:
    return ViT(patch_size=options["patch_size"], dim=options["dim"], depth=options["depth"],
               heads=options["heads"], hidden=hidden_width(options),
               num_outputs=options["num_outputs"], activation=options["activation"],
               norm=options["norm"], norm_affine=options["norm_affine"],
               dropout=options["dropout"], attention_dropout=options["attention_dropout"])

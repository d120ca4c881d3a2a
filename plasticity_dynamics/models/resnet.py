"""ResNet-18, CIFAR style (paper Appendix B.1.3: [2, 2, 2, 2] basic blocks, base 64 channels
doubling per stage, ReLU, BatchNorm, dropout 0.1 before the head; He et al. 2016).

Stem: ``stem_conv`` (3x3, stride 1, no max-pool) -> ``stem_norm`` -> act, monitored "stem".
Stage s = 1..len(stages) has ``stages[s-1]`` basic blocks ``layer{s}_block{b}`` with
base_channels * 2**(s-1) channels; the first block of stages s >= 2 has stride 2.
Block: conv1 (3x3, stride) -> norm1 -> act -> conv2 (3x3) -> norm2; shortcut = identity, or
``shortcut_conv`` (1x1, stride) -> ``shortcut_norm`` when the shape changes; output
act(norm2(...) + shortcut), monitored "layer{s}_block{b}" (kind "conv") with preactivation =
that sum. Global average pool -> dropout -> ``out``.
Convs have a bias only when norm == "none". Init: convs Kaiming-normal, fan_out, gain sqrt(2)
(untruncated, PyTorch ``kaiming_normal_(mode="fan_out")``); conv biases and the ``out`` layer
PyTorch default U(+-1/sqrt(fan_in)); norm scale 1, bias 0.
Cost: about 0.56 G multiply-adds per 32x32 image at base 64 (standard CIFAR ResNet-18).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from .activations import activation_fn
from .layers import (Dropout, apply_norm, as_images, kaiming_normal_fan_out, make_norm, record,
                     torch_default_conv, torch_default_dense)

DEFAULTS = dict(base_channels=64, stages=(2, 2, 2, 2), activation="relu", norm="batch",
                dropout=0.1)


def layer_kinds(options: dict) -> dict:
    kinds = {"stem": "conv"}
    for s, n in enumerate(options["stages"], start=1):
        kinds.update({f"layer{s}_block{b}": "conv" for b in range(n)})
    return kinds


class BasicBlock(nn.Module):
    features: int
    stride: int
    activation: str
    norm: str
    norm_affine: bool

    def _conv(self, x, name, kernel, stride):
        return torch_default_conv(self.features, x.shape[-1], name=name, kernel=kernel,
                                  stride=stride, use_bias=self.norm == "none",
                                  kernel_init=kaiming_normal_fan_out)(x)

    def _norm(self, x, name, train):
        return apply_norm(make_norm(self.norm, affine=self.norm_affine, train=train, conv=True,
                                    name=name), x)

    @nn.compact
    def __call__(self, x, train: bool = False):
        """x (B, H, W, C_in) -> (output, preactivation), both (B, H', W', features)."""
        act = activation_fn(self.activation)
        y = act(self._norm(self._conv(x, "conv1", 3, self.stride), "norm1", train))
        y = self._norm(self._conv(y, "conv2", 3, 1), "norm2", train)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = self._norm(self._conv(x, "shortcut_conv", 1, self.stride), "shortcut_norm",
                                  train)
        z = y + shortcut
        return act(z), z


class ResNet18(nn.Module):
    base_channels: int
    stages: Sequence[int]
    num_outputs: int
    activation: str
    norm: str
    norm_affine: bool
    dropout: float

    @nn.compact
    def __call__(self, x, train: bool = False, probes=None):
        act = activation_fn(self.activation)
        h = as_images(x, "resnet18")
        acts, pre = {}, {}
        h = torch_default_conv(self.base_channels, h.shape[-1], name="stem_conv",
                               use_bias=self.norm == "none",
                               kernel_init=kaiming_normal_fan_out)(h)
        z = apply_norm(make_norm(self.norm, affine=self.norm_affine, train=train, conv=True,
                                 name="stem_norm"), h)
        h = record("stem", act(z), probes, acts, z, pre)
        for s, n_blocks in enumerate(self.stages, start=1):
            features = self.base_channels * 2 ** (s - 1)
            for b in range(n_blocks):
                stride = 2 if (s > 1 and b == 0) else 1
                name = f"layer{s}_block{b}"
                out, z = BasicBlock(features, stride, self.activation, self.norm,
                                    self.norm_affine, name=name)(h, train)
                h = record(name, out, probes, acts, z, pre)
        h = jnp.mean(h, axis=(1, 2))
        h = Dropout(self.dropout, deterministic=not train)(h)
        logits = torch_default_dense(self.num_outputs, h.shape[-1], name="out")(h)
        return logits, acts, pre


def build(options: dict) -> ResNet18:
    return ResNet18(base_channels=options["base_channels"], stages=tuple(options["stages"]),
                    num_outputs=options["num_outputs"], activation=options["activation"],
                    norm=options["norm"], norm_affine=options["norm_affine"],
                    dropout=options["dropout"])

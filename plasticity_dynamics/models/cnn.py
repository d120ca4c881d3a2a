"""Plain convolutional network (paper Appendix B.1.3: 3 conv layers [64, 128, 256], 3x3,
stride 1, padding 1, each followed by 2x2 max-pool; one FC layer of 512; ReLU, BatchNorm,
dropout 0.1 in the FC part only; PyTorch default init).

Per conv layer i: ``conv_{i}`` -> ``norm_{i}`` -> act -> 2x2 max-pool (stride 2, floor);
``norm_after_activation`` swaps norm and act. Then flatten in NHWC order (channel fastest, so
interleaved channel clones stay adjacent), per FC layer j: ``fc_{j}`` -> act -> dropout (no
norm in the FC part); then ``out``.
Monitored: ``conv_{i}`` (activation output before pooling; kind "conv", (B, H, W, C)) and
``fc_{j}`` (kind "dense"), each with its preactivation.
Inputs (B, H, W, C) or (B, H, W); each pooled map must keep H, W >= 1 (else InputError).
Init: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 9 C_in for convs.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from ..errors import InputError
from .activations import activation_fn
from .layers import (Dropout, apply_norm, as_images, make_norm, record, torch_default_conv,
                     torch_default_dense)

DEFAULTS = dict(channels=(64, 128, 256), fc_widths=(512,), activation="relu", norm="batch",
                dropout=0.1)


def layer_kinds(options: dict) -> dict:
    kinds = {f"conv_{i}": "conv" for i in range(len(options["channels"]))}
    kinds.update({f"fc_{j}": "dense" for j in range(len(options["fc_widths"]))})
    return kinds


class CNN(nn.Module):
    channels: Sequence[int]
    fc_widths: Sequence[int]
    num_outputs: int
    activation: str
    norm: str
    norm_affine: bool
    norm_after_activation: bool
    dropout: float

    @nn.compact
    def __call__(self, x, train: bool = False, probes=None):
        act = activation_fn(self.activation)
        h = as_images(x, "cnn")
        acts, pre = {}, {}
        for i, ch in enumerate(self.channels):
            if h.shape[1] < 2 or h.shape[2] < 2:
                raise InputError(f"x.shape={tuple(x.shape)} is too small for {len(self.channels)} "
                                 "conv+2x2-pool layers; need H, W >= 2**len(channels)")
            h = torch_default_conv(ch, h.shape[-1], name=f"conv_{i}")(h)
            norm = make_norm(self.norm, affine=self.norm_affine, train=train, conv=True,
                             name=f"norm_{i}")
            if self.norm_after_activation:
                z = h
                h = record(f"conv_{i}", act(z), probes, acts, z, pre)
                h = apply_norm(norm, h)
            else:
                z = apply_norm(norm, h)
                h = record(f"conv_{i}", act(z), probes, acts, z, pre)
            h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")
        h = h.reshape((h.shape[0], -1))
        for j, width in enumerate(self.fc_widths):
            z = torch_default_dense(width, h.shape[-1], name=f"fc_{j}")(h)
            h = record(f"fc_{j}", act(z), probes, acts, z, pre)
            h = Dropout(self.dropout, deterministic=not train)(h)
        logits = torch_default_dense(self.num_outputs, h.shape[-1], name="out")(h)
        return logits, acts, pre


def build(options: dict) -> CNN:
    return CNN(channels=tuple(options["channels"]), fc_widths=tuple(options["fc_widths"]),
               num_outputs=options["num_outputs"], activation=options["activation"],
               norm=options["norm"], norm_affine=options["norm_affine"],
               norm_after_activation=options["norm_after_activation"],
               dropout=options["dropout"])

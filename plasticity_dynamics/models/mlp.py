"""Multi-layer perceptron (paper Appendix B.1.3: 5 x 128, ReLU, BatchNorm before the
activation, dropout 0.2, PyTorch default init).

Per hidden layer i: ``dense_{i}`` -> ``norm_{i}`` -> act -> dropout (``norm_after_activation``
swaps norm and act); then ``out``. Monitored ``hidden_{i}`` = the activation output (before the
norm when ``norm_after_activation``, before dropout), kind "dense"; its preactivation is the
activation's input. Inputs of any shape (B, ...) are flattened to (B, D) in C order.
Init: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch nn.Linear default).
Cost of a forward pass: O(B * sum_i w_{i-1} w_i) flops.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from .activations import activation_fn
from .layers import Dropout, apply_norm, make_norm, record, torch_default_dense

DEFAULTS = dict(widths=(128,) * 5, activation="relu", norm="batch", dropout=0.2)


def layer_kinds(options: dict) -> dict:
    return {f"hidden_{i}": "dense" for i in range(len(options["widths"]))}


class MLP(nn.Module):
    widths: Sequence[int]
    num_outputs: int
    activation: str
    norm: str
    norm_affine: bool
    norm_after_activation: bool
    dropout: float

    @nn.compact
    def __call__(self, x, train: bool = False, probes=None):
        act = activation_fn(self.activation)
        h = jnp.asarray(x, jnp.float32).reshape((x.shape[0], -1))
        acts, pre = {}, {}
        for i, width in enumerate(self.widths):
            h = torch_default_dense(width, h.shape[-1], name=f"dense_{i}")(h)
            norm = make_norm(self.norm, affine=self.norm_affine, train=train, conv=False,
                             name=f"norm_{i}")
            if self.norm_after_activation:
                z = h
                h = record(f"hidden_{i}", act(z), probes, acts, z, pre)
                h = apply_norm(norm, h)
            else:
                z = apply_norm(norm, h)
                h = record(f"hidden_{i}", act(z), probes, acts, z, pre)
            h = Dropout(self.dropout, deterministic=not train)(h)
        logits = torch_default_dense(self.num_outputs, h.shape[-1], name="out")(h)
        return logits, acts, pre


def build(options: dict) -> MLP:
    return MLP(widths=tuple(options["widths"]), num_outputs=options["num_outputs"],
               activation=options["activation"], norm=options["norm"],
               norm_affine=options["norm_affine"],
               norm_after_activation=options["norm_after_activation"],
               dropout=options["dropout"])

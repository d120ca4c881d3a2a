"""Shared building blocks of the model zoo: initialisers, normalisation layers, probes.

- ``torch_default_dense`` / ``torch_default_conv``: PyTorch's default ``nn.Linear`` / ``nn.Conv2d``
  initialisation, weights and biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (PyTorch's
  ``kaiming_uniform_(a=sqrt(5))`` reduces to this bound); fan_in = in_features or k*k*C_in.
- ``make_norm(kind, ...)``: "batch" = ``nn.BatchNorm`` (momentum 0.9 i.e. PyTorch momentum 0.1,
  eps 1e-5, statistics over every axis but the last); "layer" = ``nn.LayerNorm`` (eps 1e-5) for
  vectors and tokens, ``nn.GroupNorm(num_groups=1)`` (eps 1e-5) for conv maps; "none" = identity.
  ``affine=False`` drops the "scale"/"bias" params.
- ``record``: adds a probe to a monitored activation and stores it (see contract.Output).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..errors import InputError

NORMS = ("none", "batch", "layer")
NORM_EPS = 1e-5
BN_MOMENTUM = 0.9


# Every random draw below is made on a flat vector and reshaped: on XLA:CPU a threefry draw of a
# 4-D shape compiles about 10x slower than the same number of values drawn flat (measured
# ~1.5 s vs ~0.1 s per (3, 3, 4, 8) kernel), which dominated model-init compile times.


def _size(shape) -> int:
    return int(math.prod(shape))


def uniform_init(bound: float):
    """Initializer drawing i.i.d. U(-bound, bound) (any shape)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, (_size(shape),), dtype, -bound, bound).reshape(shape)

    return init


def kaiming_normal_fan_out(key, shape, dtype=jnp.float32):
    """N(0, 2 / fan_out), fan_out = prod(shape[:-2]) * shape[-1] (conv kernels (kh, kw, cin,
    cout) as in PyTorch ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``); untruncated."""
    fan_out = _size(shape[:-2]) * shape[-1]
    std = math.sqrt(2.0 / fan_out)
    return std * jax.random.normal(key, (_size(shape),), dtype).reshape(shape)


# Standard deviation of a standard normal truncated to [-2, 2].
_TRUNC2_STD = 0.87962566103423978


def trunc_normal_init(std: float):
    """Normal truncated at +-2 standard deviations of the underlying normal, rescaled so the
    standard deviation is exactly ``std`` (the convention of ``jax.nn.initializers.truncated_normal``)."""

    def init(key, shape, dtype=jnp.float32):
        z = jax.random.truncated_normal(key, -2.0, 2.0, (_size(shape),), dtype)
        return (std / _TRUNC2_STD) * z.reshape(shape)

    return init


class Dropout(nn.Module):
    """Inverted dropout (zero with probability ``rate``, scale survivors by 1/(1-rate)); the
    mask comes from the "dropout" rng collection, drawn flat. Identity when deterministic or
    rate == 0. ``rate`` may be a traced scalar (one value per vmapped lane, ``Model.apply(...,
    rates=...)``): the mask is then always drawn, and a rate of 0 keeps every unit (x / 1)."""

    rate: Any
    deterministic: bool

    @nn.compact
    def __call__(self, x):
        if self.deterministic or (isinstance(self.rate, (int, float)) and self.rate == 0.0):
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (_size(x.shape),))
        return jnp.where(mask.reshape(x.shape), x / keep, jnp.zeros_like(x))


def torch_default_dense(features: int, fan_in: int, name: str, use_bias: bool = True) -> nn.Dense:
    """``nn.Dense`` with PyTorch's default init for ``nn.Linear(fan_in, features)``."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Dense(features, use_bias=use_bias, kernel_init=uniform_init(bound),
                    bias_init=uniform_init(bound), name=name)


def torch_default_conv(features: int, cin: int, name: str, kernel: int = 3, stride: int = 1,
                       use_bias: bool = True, kernel_init=None) -> nn.Conv:
    """3x3 (or kxk) ``nn.Conv``, padding k//2 as in PyTorch, PyTorch default init unless
    ``kernel_init`` is given (the bias always keeps the PyTorch default)."""
    bound = 1.0 / math.sqrt(cin * kernel * kernel)
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), use_bias=use_bias,
                   kernel_init=kernel_init or uniform_init(bound),
                   bias_init=uniform_init(bound), name=name)


def make_norm(kind: str, *, affine: bool, train: bool, conv: bool, name: str):
    """Return the normalisation module for ``kind`` or ``None`` for "none".

    conv=True selects GroupNorm(1) for "layer" (inputs (B, H, W, C)); otherwise LayerNorm over
    the last axis. BatchNorm normalises the last axis over all other axes (so (B, T, D) tokens
    get BatchNorm1d over the feature axis).
    """
    if kind == "none":
        return None
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=NORM_EPS,
                            use_bias=affine, use_scale=affine, name=name)
    if kind == "layer":
        if conv:
            return nn.GroupNorm(num_groups=1, epsilon=NORM_EPS, use_bias=affine, use_scale=affine,
                                name=name)
        return nn.LayerNorm(epsilon=NORM_EPS, use_bias=affine, use_scale=affine, name=name)
    raise InputError(f"norm={kind!r} is not one of: {', '.join(NORMS)}")


def apply_norm(module, x):
    return x if module is None else module(x)


def record(name: str, h, probes, acts: dict, z=None, preacts: dict | None = None):
    """Add ``probes[name]`` (if given) to ``h``, store it in ``acts[name]`` (and ``z`` in
    ``preacts[name]``), and return the probed ``h`` so the rest of the network uses it."""
    if probes is not None and name in probes:
        p = probes[name]
        if tuple(p.shape) != tuple(h.shape):
            raise InputError(f"probes[{name!r}].shape={tuple(p.shape)} must equal the activation "
                             f"shape {tuple(h.shape)}")
        h = h + p
    acts[name] = h
    if z is not None and preacts is not None:
        preacts[name] = z
    return h


def as_images(x, family: str):
    """Return ``x`` as float32 (B, H, W, C); (B, H, W) gets a channel axis; else InputError."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise InputError(f"x.shape={tuple(x.shape)} must be (B, H, W, C) or (B, H, W) images "
                         f"for {family}")
    return x

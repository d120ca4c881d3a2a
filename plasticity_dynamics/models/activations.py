"""Element-wise activation functions and their closed-form derivatives.

``activation_fn(name)`` returns ``phi``; ``activation_derivative(name)`` returns ``phi'``
written out in closed form (not obtained by autodiff), so frozen-unit tests and the
theory module can evaluate ``phi'(z)`` on stored preactivations without a backward pass.
Both act element-wise on arrays of any shape and cost O(size).

Conventions at kinks (measure-zero points; tests avoid them): ``relu'(0) = 0``,
``leaky_relu'(0) = 0.01``, ``elu'(0) = 1``, ``selu'(0) = scale * alpha``. The unused branch of
elu/selu is evaluated on ``min(z, 0)`` so that neither value nor gradient overflows for large z.

Definitions (Klambauer et al. 2017 for SELU; Hendrycks & Gimpel 2016 for exact GELU):
- relu(z) = max(z, 0)
- leaky_relu(z) = z if z > 0 else 0.01 z
- tanh, sigmoid(z) = 1 / (1 + exp(-z))
- gelu(z) = z Phi(z), Phi the standard normal CDF (exact erf form, not the tanh approximation)
- elu(z) = z if z > 0 else exp(z) - 1
- selu(z) = scale * (z if z > 0 else alpha (exp(z) - 1)), alpha = 1.6732632..., scale = 1.0507009...
- linear(z) = z
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from ..errors import check_choice

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "elu", "selu", "linear")

LEAKY_SLOPE = 0.01
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _relu(z):
    return jnp.maximum(z, 0.0)


def _leaky_relu(z):
    return jnp.where(z > 0, z, LEAKY_SLOPE * z)


def _sigmoid(z):
    return jax.nn.sigmoid(z)


def _gelu(z):
    return 0.5 * z * (1.0 + erf(z * _INV_SQRT2))


def _elu(z):
    return jnp.where(z > 0, z, jnp.expm1(jnp.minimum(z, 0.0)))


def _selu(z):
    return SELU_SCALE * jnp.where(z > 0, z, SELU_ALPHA * jnp.expm1(jnp.minimum(z, 0.0)))


def _linear(z):
    return z


_FNS: dict[str, Callable] = {
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "tanh": jnp.tanh,
    "sigmoid": _sigmoid,
    "gelu": _gelu,
    "elu": _elu,
    "selu": _selu,
    "linear": _linear,
}


def _d_relu(z):
    return (z > 0).astype(jnp.result_type(z, jnp.float32))


def _d_leaky_relu(z):
    return jnp.where(z > 0, 1.0, LEAKY_SLOPE).astype(jnp.result_type(z, jnp.float32))


def _d_tanh(z):
    t = jnp.tanh(z)
    return 1.0 - t * t


def _d_sigmoid(z):
    s = jax.nn.sigmoid(z)
    return s * (1.0 - s)


def _d_gelu(z):
    cdf = 0.5 * (1.0 + erf(z * _INV_SQRT2))
    pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * z * z)
    return cdf + z * pdf


def _d_elu(z):
    return jnp.where(z > 0, 1.0, jnp.exp(jnp.minimum(z, 0.0)))


def _d_selu(z):
    return SELU_SCALE * jnp.where(z > 0, 1.0, SELU_ALPHA * jnp.exp(jnp.minimum(z, 0.0)))


def _d_linear(z):
    return jnp.ones_like(z, dtype=jnp.result_type(z, jnp.float32))


_DERIVS: dict[str, Callable] = {
    "relu": _d_relu,
    "leaky_relu": _d_leaky_relu,
    "tanh": _d_tanh,
    "sigmoid": _d_sigmoid,
    "gelu": _d_gelu,
    "elu": _d_elu,
    "selu": _d_selu,
    "linear": _d_linear,
}


def activation_fn(name: str) -> Callable:
    """Return the element-wise activation ``phi`` called ``name`` (one of ACTIVATIONS).

    Raises InputError for an unknown name.
    """
    check_choice("activation", name, ACTIVATIONS)
    return _FNS[name]


def activation_derivative(name: str) -> Callable:
    """Return the closed-form derivative ``phi'`` of activation ``name`` (element-wise).

    Raises InputError for an unknown name.
    """
    check_choice("activation", name, ACTIVATIONS)
    return _DERIVS[name]

"""Float64 NumPy table of the eight activations and their derivatives, and activation specs.

The theory package keeps its own table (it must not import ``plasticity_dynamics.models``):
every function here maps a float64 array to a float64 array of the same shape, is accurate to
a few ulps in relative terms over the whole real line (no cancellation in the saturated tails),
and never overflows. Constants follow the usual library definitions (JAX, PyTorch):

=========== ============================================ ===================================
name        φ(u)                                         φ'(u)
=========== ============================================ ===================================
relu        max(u, 0)                                    1{u > 0}
leaky_relu  u if u > 0 else 0.01 u                       1 if u > 0 else 0.01
tanh        tanh u                                       sech² u
sigmoid     1 / (1 + e^{-u})                             σ(u)(1 − σ(u))
gelu        u Φ(u)   (exact erf form, not the tanh one)  Φ(u) + u ϕ(u)
elu         u if u > 0 else e^u − 1   (α = 1)            1 if u > 0 else e^u
selu        λ (u if u > 0 else α(e^u − 1))               λ (1 if u > 0 else α e^u)
linear      u                                            1
=========== ============================================ ===================================

with selu's λ = 1.0507009873554804934, α = 1.6732632423543772848 (Klambauer et al., 2017).
The derivative at a kink takes the right-hand value for leaky_relu/elu/selu and 0 for relu
(JAX's convention); it is a null set for every Gaussian expectation computed here.

An *activation spec* is either a name or a modulation ``(name, a, b)`` meaning the function
ψ(z) = φ(a z + b) of a standard Gaussian z: a pre-activation with mean ``b`` and standard
deviation ``a`` (``a > 0``). :func:`resolve` turns either form into a :class:`Spec`.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Callable, NamedTuple

import numpy as np

from plasticity_dynamics.errors import InputError, check_choice

SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
LEAKY_SLOPE = 0.01

_erfc_obj = np.frompyfunc(math.erfc, 1, 1)


def normal_cdf(x):
    """Φ(x) for a float64 array, relatively accurate in both tails (via erfc); 0.15 µs/entry."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * np.asarray(_erfc_obj(-x / math.sqrt(2.0)), dtype=np.float64)


def normal_pdf(x):
    """ϕ(x) = exp(−x²/2)/√(2π) for a float64 array."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _relu(u):
    return np.maximum(u, 0.0)


def _relu_d(u):
    return (u > 0).astype(np.float64)


def _leaky(u):
    return np.where(u > 0, u, LEAKY_SLOPE * u)


def _leaky_d(u):
    return np.where(u > 0, 1.0, LEAKY_SLOPE)


def _tanh_d(u):
    e = np.exp(-2.0 * np.abs(u))
    return 4.0 * e / (1.0 + e) ** 2


def _sigmoid(u):
    e = np.exp(-np.abs(u))
    return np.where(u >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _sigmoid_d(u):
    e = np.exp(-np.abs(u))
    return e / (1.0 + e) ** 2


def _gelu(u):
    return u * normal_cdf(u)


def _gelu_d(u):
    return normal_cdf(u) + u * normal_pdf(u)


def _elu(u):
    return np.where(u > 0, u, np.expm1(np.minimum(u, 0.0)))


def _elu_d(u):
    return np.where(u > 0, 1.0, np.exp(np.minimum(u, 0.0)))


def _selu(u):
    return SELU_LAMBDA * np.where(u > 0, u, SELU_ALPHA * np.expm1(np.minimum(u, 0.0)))


def _selu_d(u):
    return SELU_LAMBDA * np.where(u > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(u, 0.0)))


def _linear(u):
    return np.array(u, dtype=np.float64, copy=True)


def _linear_d(u):
    return np.ones_like(u, dtype=np.float64)


class Activation(NamedTuple):
    """One activation: float64 ``fn`` and ``deriv`` (array -> array), and its ``kinks``.

    ``kinks`` lists the points u where φ or one of its first two derivatives jumps; quadrature
    rules put panel edges there so every panel sees a smooth integrand.
    """

    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    deriv: Callable[[np.ndarray], np.ndarray]
    kinks: tuple[float, ...]


ACTIVATIONS = MappingProxyType(
    {
        "relu": Activation("relu", _relu, _relu_d, (0.0,)),
        "leaky_relu": Activation("leaky_relu", _leaky, _leaky_d, (0.0,)),
        "tanh": Activation("tanh", np.tanh, _tanh_d, ()),
        "sigmoid": Activation("sigmoid", _sigmoid, _sigmoid_d, ()),
        "gelu": Activation("gelu", _gelu, _gelu_d, ()),
        "elu": Activation("elu", _elu, _elu_d, (0.0,)),
        "selu": Activation("selu", _selu, _selu_d, (0.0,)),
        "linear": Activation("linear", _linear, _linear_d, ()),
    }
)
"""Read-only mapping name -> :class:`Activation` (float64 NumPy, see the module table)."""


class Spec(NamedTuple):
    """A resolved activation spec: ψ(z) = φ(a z + b) with φ = ACTIVATIONS[name], a > 0."""

    name: str
    a: float
    b: float

    @property
    def act(self) -> Activation:
        return ACTIVATIONS[self.name]

    def psi(self, z):
        """ψ(z) = φ(a z + b), float64, same shape as z."""
        return self.act.fn(self.a * np.asarray(z, dtype=np.float64) + self.b)

    def dpsi(self, z):
        """ψ'(z) = a φ'(a z + b) (chain-rule factor a included)."""
        return self.a * self.act.deriv(self.a * np.asarray(z, dtype=np.float64) + self.b)


def resolve(act) -> Spec:
    """Turn ``"name"`` or ``(name, a, b)`` into a :class:`Spec`; InputError on anything else.

    ``a`` (gain, the pre-activation standard deviation) must be finite and > 0; ``b`` (bias, the
    pre-activation mean) finite. A negative gain is not accepted: φ(−|a|z + b) has the same
    Gaussian law as φ(|a|z + b), with Hermite coefficients (−1)^k times those for |a|.
    """
    if isinstance(act, Spec):
        return act
    if isinstance(act, str):
        check_choice("activation", act, ACTIVATIONS)
        return Spec(act, 1.0, 0.0)
    if isinstance(act, (tuple, list)) and len(act) == 3:
        name, a, b = act
        check_choice("activation", name, ACTIVATIONS)
        try:
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            raise InputError(f"activation={act!r}: gain a and bias b must be numbers") from None
        if not (math.isfinite(a) and a > 0):
            raise InputError(f"activation gain a={a!r} must be finite and > 0")
        if not math.isfinite(b):
            raise InputError(f"activation bias b={b!r} must be finite")
        return Spec(name, a, b)
    raise InputError(
        f"activation={act!r} must be a name ({', '.join(ACTIVATIONS)}) or a (name, a, b) tuple"
    )

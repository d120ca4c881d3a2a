"""How a monitored layer's output becomes a samples x units matrix.

Every unit diagnostic works on a 2-D array ``h`` of shape (samples, units). A model says,
through ``model.layer_kinds``, how each monitored output is laid out:

- ``"dense"``  (B, D)        -> (B, D)
- ``"conv"``   (B, H, W, C)  -> (B*H*W, C)   each spatial position is a sample (the paper's
  ``flatten_activations``), or (B, C) with ``pool=True`` (mean over H, W per example)
- ``"tokens"`` (B, T, D)     -> (B*T, D)     each token is a sample, or (B, D) with
  ``pool=True`` (mean over tokens per example)

Reference: arXiv 2510.00304, Appendix B.1.2 (PAPER.md section 4, "how H, G are formed").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError, check_choice

LAYER_KINDS = ("dense", "conv", "tokens")
_RANK = {"dense": 2, "conv": 4, "tokens": 3}


def as_float(x) -> jnp.ndarray:
    """``x`` as a JAX float array: float32 for integer, bool and half inputs, else unchanged."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating) or jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.float32)
    return x


def check_matrix(name: str, h) -> jnp.ndarray:
    """Return ``h`` as a float (samples, units) array; InputError unless it is 2-D and non-empty,
    and, when ``h`` is concrete (called outside jit), unless every entry is finite: a NaN or Inf
    would otherwise give a silently wrong rank or fraction. Inside jit no check is possible; the
    training engine stops on a non-finite loss first."""
    h = as_float(h)
    if h.ndim != 2 or h.shape[0] == 0 or h.shape[1] == 0:
        raise InputError(f"{name} has shape {tuple(h.shape)}; expected a non-empty (samples, units) matrix")
    check_finite(name, h)
    return h


def check_finite(name: str, a) -> None:
    """InputError naming the first non-finite entry of a concrete array; no-op on tracers."""
    if isinstance(a, jax.core.Tracer):
        return
    arr = np.asarray(a)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise InputError(f"{name} contains {arr[where]} at index {where}; metrics need finite values")


def flatten_units(a, kind: str, *, pool: bool = False) -> jnp.ndarray:
    """Flatten one monitored layer output ``a`` of the given ``kind`` to (samples, units).

    Shapes: dense (B, D); conv (B, H, W, C); tokens (B, T, D). Units are always the last axis
    (channels-last). With ``pool=True`` conv maps and token sequences are averaged per example
    first, giving (B, units). Cost: a reshape (free) or one mean. Raises InputError for an
    unknown kind or an array whose rank does not match the kind.
    """
    check_choice("layer kind", kind, LAYER_KINDS)
    a = as_float(a)
    if a.ndim != _RANK[kind]:
        raise InputError(
            f"a {kind!r} layer output has shape {tuple(a.shape)}; expected {_RANK[kind]} dimensions"
        )
    if kind == "dense":
        return a
    if pool:
        return jnp.mean(a, axis=tuple(range(1, a.ndim - 1)))
    return a.reshape(-1, a.shape[-1])

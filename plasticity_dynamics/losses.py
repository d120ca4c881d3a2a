"""The one loss of the toolkit: cross-entropy restricted to a task's classes, or squared error.

Used by the training step, the unit metrics (gradients with respect to activations), the
curvature examples and the experiments, so every "loss" in the package is the same function.
It imports nothing of the package but its errors, so every layer can use it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .errors import InputError

#: Logit given to excluded classes: exp(MASKED - max) is exactly 0 in float32, with no inf
#: (so gradients and soft targets stay finite).
MASKED = -1e30


def masked_loss(logits, y, class_mask=None, kind: str = "xent"):
    """(mean loss, accuracy) of a batch.

    logits (B, K). ``kind``:
    - "xent": cross-entropy with the softmax restricted to ``class_mask`` (K,) bool (None: all
      classes; PAPER.md 5.3). y int labels (B,) or target distributions (B, K). Accuracy is the
      argmax over the allowed classes against y (or against y's argmax).
    - "mse": squared error on the outputs in ``class_mask`` (None: all), averaged over the batch
      and those outputs. y (B,) with K = 1, (B, K) targets, or int labels (B,) one-hot encoded
      when K > 1. Accuracy 0.
    Cost: O(B K). Pure; jit/vmap/grad-safe.
    """
    logits = jnp.asarray(logits)
    k = logits.shape[-1]
    mask = jnp.ones((k,), bool) if class_mask is None else jnp.asarray(class_mask, bool)
    if kind == "xent":
        masked = jnp.where(mask, logits, jnp.asarray(MASKED, logits.dtype))
        logp = jax.nn.log_softmax(masked, axis=-1)
        pred = jnp.argmax(masked, axis=-1)
        if y.ndim == logits.ndim:  # target distributions
            nll = -jnp.sum(jnp.where(mask, y * logp, 0.0), axis=-1)
            label = jnp.argmax(y, axis=-1)
        else:
            label = y.astype(jnp.int32)
            nll = -jnp.take_along_axis(logp, label[:, None], axis=-1)[:, 0]
        return jnp.mean(nll), jnp.mean(pred == label).astype(logits.dtype)
    if kind == "mse":
        if y.size == logits.size:
            target = y.reshape(logits.shape).astype(logits.dtype)
        elif y.ndim == 1 and jnp.issubdtype(y.dtype, jnp.integer):
            target = jax.nn.one_hot(y, k, dtype=logits.dtype)
        else:
            raise InputError(f"mse targets of shape {tuple(y.shape)} do not fit logits of shape {tuple(logits.shape)}")
        err = jnp.where(mask, (logits - target) ** 2, 0.0)
        return jnp.sum(err) / (logits.shape[0] * jnp.maximum(jnp.sum(mask), 1)), jnp.zeros((), logits.dtype)
    raise InputError(f"loss={kind!r} is not one of: xent, mse")


__all__ = ["MASKED", "masked_loss"]

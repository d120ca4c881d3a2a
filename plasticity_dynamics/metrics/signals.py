"""Per-layer parameter signals and accuracy: weight and gradient norms, distances, accuracy.

"Layer" here means a top-level entry of the params dict (``dense_0``, ``conv_1``, ``out``,
``layer2_block1`` ...; every leaf below it is included) plus ``"all"`` for the whole tree.
Everything is jit- and vmap-able and returns float32 scalars. The paper does not measure
these (PAPER.md section 9); weight magnitude is Dohare et al. 2024's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..errors import InputError


def _sq(tree):
    return sum((jnp.sum(jnp.square(jnp.asarray(x, jnp.float32))) for x in jax.tree.leaves(tree)), jnp.float32(0.0))


def _size(tree):
    return sum(int(jnp.size(x)) for x in jax.tree.leaves(tree))


def _layers(tree):
    if not isinstance(tree, dict):
        raise InputError(f"expected a params dict of layers, got {type(tree).__name__}")
    return sorted(tree)


def param_norms(params) -> dict:
    """{layer: L2 norm of its parameters, "all": global L2 norm}. Use on gradients for grad norms."""
    out = {k: jnp.sqrt(_sq(params[k])) for k in _layers(params)}
    out["all"] = jnp.sqrt(_sq(params))
    return out


def param_abs_mean(params) -> dict:
    """{layer: mean |w| over its parameters, "all": mean |w| over every parameter} (Dohare et al.)."""
    def absmean(tree):
        n = _size(tree)
        total = sum((jnp.sum(jnp.abs(jnp.asarray(x, jnp.float32))) for x in jax.tree.leaves(tree)), jnp.float32(0.0))
        return total / max(n, 1)

    out = {k: absmean(params[k]) for k in _layers(params)}
    out["all"] = absmean(params)
    return out


def param_distance(params, reference) -> dict:
    """{layer: ||params - reference||_2, "all": global distance}. Trees must have equal structure
    (e.g. reference = parameters at initialisation, or at the previous record)."""
    if jax.tree.structure(params) != jax.tree.structure(reference):
        raise InputError("reference parameters do not have the structure of params")
    diff = jax.tree.map(lambda a, b: jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32), params, reference)
    return param_norms(diff)


def accuracy(logits, labels) -> jnp.ndarray:
    """Fraction of rows whose argmax over all logits equals the label (the authors' online
    accuracy: argmax over all outputs even when the loss is masked). logits (B, K), labels (B,)."""
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise InputError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)}; expected (B, K) and (B,)")
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def masked_accuracy(logits, labels, class_mask) -> jnp.ndarray:
    """Accuracy with the argmax restricted to the classes where ``class_mask`` (K,) is true
    (the current task's classes in a class-split stream)."""
    logits = jnp.asarray(logits)
    class_mask = jnp.asarray(class_mask)
    if class_mask.shape != logits.shape[-1:]:
        raise InputError(f"class_mask has shape {tuple(class_mask.shape)}; expected ({logits.shape[-1]},)")
    masked = jnp.where(class_mask.astype(bool), logits, -jnp.inf)
    return accuracy(masked, labels)

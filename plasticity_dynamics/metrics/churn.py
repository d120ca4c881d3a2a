"""Churn: how much one update moves the outputs on data it was not computed on.

C-CHAIN (Tang, Obando-Ceron, Castro, Courville & Berseth, "Mitigating plasticity loss in
continual reinforcement learning by reducing churn", ICML 2025) takes the definition of its
predecessor CHAIN (Tang & Berseth, "Improving deep reinforcement learning by reducing the chain
effect of value and policy churn", NeurIPS 2024; after Schaul et al., "The phenomenon of policy
churn", NeurIPS 2022): the churn of an update ``theta -> theta'`` is the change of the network's
outputs on a reference batch *not used for the update*,
``C(theta, theta') = E_{x ~ B_ref} | f_theta'(x) - f_theta(x) |`` (value churn, averaged over
the reference batch; for a policy, the change of the action distribution, policy churn; Schaul
et al. count changed greedy actions). The variants here, for logits ``(B, C)``:

- ``abs`` (default, C-CHAIN's value churn): ``mean_{b, c} |f'(x_b)_c - f(x_b)_c|``;
- ``l2``: ``mean_b ||f'(x_b) - f(x_b)||_2`` (this toolkit's variant);
- ``kl``: ``mean_b KL(softmax f(x_b) || softmax f'(x_b))`` (policy churn of a softmax policy; the
  direction old || new is this toolkit's choice);
- ``flip``: ``mean_b 1[argmax f'(x_b) != argmax f(x_b)]`` (fraction of changed predictions, the
  greedy-action churn of Schaul et al.).

- ``sq``: ``mean_{b, c} (f'(x_b)_c - f(x_b)_c)^2`` (LoP-NeurIPS's regression churn).

LoP-NeurIPS (the loss-of-plasticity study in the public repository gracebml/LoP-NeurIPS, file
``lop/metrics/ntk_churn.py``, read 2026-12; it credits C-CHAIN's squared policy-churn term)
records, after an update and in eval mode on a held-out reference batch, either the mean
squared output change over examples and outputs (``sq`` here) or, for classification,
``KL(softmax f || softmax f')`` summed over classes and averaged over the batch, which is
``kl`` here (same direction, old || new). Its eNTK readings are in
:func:`plasticity_dynamics.curvature.ntk_spectrum` (``effective_rank_sv``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ..errors import InputError, check_choice

CHURN_KINDS = ("abs", "l2", "sq", "kl", "flip")


def churn(fn: Callable, params_before, params_after, x, *, kind: str = "abs") -> jax.Array:
    """Churn of the update ``params_before -> params_after`` on the reference batch ``x``.

    Args:
      fn: ``fn(params, x) -> outputs (B, C)`` (logits; any trailing shape is flattened).
      params_before, params_after: pytrees of the same structure.
      x: a reference batch that was *not* used for the update (C-CHAIN's out-of-batch data).
      kind: ``abs`` (default), ``l2``, ``sq``, ``kl`` or ``flip`` (module docstring for formulas).
    Returns:
      float32 scalar. Jit-able (``kind`` static). Cost: two forward passes.
    Raises InputError for an unknown kind or outputs that are not at least 2-D ``(B, ...)``.
    """
    check_choice("kind", kind, CHURN_KINDS)
    a = fn(params_before, x)
    b = fn(params_after, x)
    if a.ndim < 2:
        raise InputError(f"fn(params, x) must return outputs of shape (B, C), got shape {a.shape}")
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    if kind == "abs":
        return jnp.mean(jnp.abs(b - a))
    if kind == "l2":
        return jnp.mean(jnp.linalg.norm(b - a, axis=-1))
    if kind == "sq":
        return jnp.mean(jnp.square(b - a))
    if kind == "kl":
        la, lb = jax.nn.log_softmax(a, -1), jax.nn.log_softmax(b, -1)
        return jnp.mean(jnp.sum(jnp.exp(la) * (la - lb), axis=-1))
    return jnp.mean((jnp.argmax(a, -1) != jnp.argmax(b, -1)).astype(jnp.float32))


__all__ = ["churn", "CHURN_KINDS"]

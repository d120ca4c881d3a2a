"""The one training loop of the toolkit: a ``lax.scan`` of a step map over global step indices.

Everything that trains (the engine's chunks, the cloning runs, the invariance and curvature
experiments, escape runs, the notebooks) writes only its step ``step(carry, t) -> (carry, out)``
and runs it with :func:`run_steps`, so step indexing, skipped steps and stacked outputs are
defined once. It imports only JAX, so every layer of the package can use it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def run_steps(step: Callable[[Any, jax.Array], tuple[Any, Any]], carry, length: int, *, start=0,
              valid=None):
    """Run ``step`` for global steps ``t = start, ..., start + length - 1`` in one ``lax.scan``.

    Args:
      step: pure ``(carry, t) -> (carry, out)``; ``t`` is a traced int32 scalar (the global
        step index, which keys batches and randomness).
      carry: the state (any pytree). length: static number of scanned steps.
      start: int or traced int scalar, the global index of the first step.
      valid: optional int or traced int scalar <= ``length``: only the first ``valid`` steps run;
        the rest leave ``carry`` unchanged and output zeros. A ``lax.cond`` skips them (under
        ``vmap`` with an unbatched ``valid`` nothing is computed for them), so one compiled
        program serves every chunk length up to ``length``.
    Returns:
      ``(carry, outs)`` with every leaf of ``outs`` stacked on a leading ``(length,)`` axis.
    Cost: ``valid`` (default ``length``) step evaluations; one trace of ``step``.
    """

    def body(c, i):
        t = jnp.asarray(start, jnp.int32) + i
        if valid is None:
            return step(c, t)

        def skip(c_):
            shapes = jax.eval_shape(step, c_, t)[1]
            return c_, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        return jax.lax.cond(i < valid, lambda c_: step(c_, t), skip, c)

    return jax.lax.scan(body, carry, jnp.arange(length, dtype=jnp.int32))


__all__ = ["run_steps"]

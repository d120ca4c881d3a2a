"""The one training loop of the toolkit: a ``lax.scan`` of a step map over global step indices.

Everything that trains (the engine's chunks, the cloning runs, the invariance and curvature
experiments, escape runs, the notebooks) writes only its step ``step(carry, t) -> (carry, out)``
and runs it with :func:`run_steps`, so step indexing, skipped steps and stacked outputs are
defined once. It imports only JAX, so every layer of the package can use it.

XLA:CPU runs a convolution inside a loop body (``while``, so ``scan`` and ``fori_loop``)
several times slower than the same convolution at the top level of a program
(jax-ml/jax#12868; measured here on a training step vmapped over 2 lanes: small CNN 31 vs
6-7 ms a step, small ResNet-18 80 vs 18 ms; dense-only models are not affected). So
:func:`straight_line_preferred` tells a caller when to write its steps as straight-line code
(``run_steps(..., unroll=True)`` over a short block) and drive the blocks from the host
(:func:`run_blocks`), one compiled block program serving every block.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def run_steps(step: Callable[[Any, jax.Array], tuple[Any, Any]], carry, length: int, *, start=0,
              valid=None, unroll: bool = False):
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
      unroll: static; trace the ``length`` steps as straight-line code (no loop: the XLA:CPU
        convolution slowdown above does not apply; trace and compile time grow with
        ``length``, so keep it short and drive blocks with :func:`run_blocks`). Not with ``valid``.
    Returns:
      ``(carry, outs)`` with every leaf of ``outs`` stacked on a leading ``(length,)`` axis.
    Cost: ``valid`` (default ``length``) step evaluations; one trace of ``step``.
    """

    if unroll:
        if valid is not None:
            raise ValueError("run_steps: unroll=True runs every step; valid= is for the scanned loop")
        outs = []
        for i in range(length):
            carry, out = step(carry, jnp.asarray(start, jnp.int32) + i)
            outs.append(out)
        return carry, jax.tree_util.tree_map(lambda *o: jnp.stack(o), *outs)

    def body(c, i):
        t = jnp.asarray(start, jnp.int32) + i
        if valid is None:
            return step(c, t)

        def skip(c_):
            shapes = jax.eval_shape(step, c_, t)[1]
            return c_, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        return jax.lax.cond(i < valid, lambda c_: step(c_, t), skip, c)

    return jax.lax.scan(body, carry, jnp.arange(length, dtype=jnp.int32))


def run_blocks(block_program: Callable[[Any, Any], tuple[Any, Any]], carry, length: int, block: int, *,
               start=0):
    """Run ``length`` steps from the host as ``length // block`` calls of a compiled program of
    ``block`` steps: ``carry, out = block_program(carry, t0)`` for ``t0 = start, start + block, ...``
    (``t0`` passed as an int32 scalar, so one compilation serves every block).

    Returns ``(carry, outs)`` with the blocks' outputs concatenated along their leading (step)
    axis, as :func:`run_steps` stacks them. ``length`` must be a multiple of ``block``.
    Cost: ``length // block`` dispatches; the steps themselves as in ``block_program``.
    """
    if block < 1 or length % block:
        raise ValueError(f"run_blocks: length {length} is not a positive multiple of block {block}")
    outs = []
    for t0 in range(int(start), int(start) + length, block):
        carry, out = block_program(carry, jnp.int32(t0))
        outs.append(out)
    return carry, jax.tree_util.tree_map(lambda *o: jnp.concatenate(o), *outs)


def has_conv(jaxpr) -> bool:
    """Whether a (closed) jaxpr or any jaxpr nested in its equations holds a convolution."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            return True
        for value in eqn.params.values():
            for sub in (value if isinstance(value, (tuple, list)) else (value,)):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    if has_conv(sub):
                        return True
    return False


def straight_line_preferred(fn: Callable, *args) -> bool:
    """Whether ``fn(*args)`` should run as straight-line code rather than in a loop body: on
    XLA:CPU when it holds a convolution (see the module docstring). Traces ``fn`` once on the
    shapes of ``args`` (pytrees of arrays or ``jax.ShapeDtypeStruct``); computes nothing."""
    if jax.default_backend() != "cpu":
        return False
    spec = jax.tree_util.tree_map(lambda a: a if isinstance(a, jax.ShapeDtypeStruct)
                                  else jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), args)
    return has_conv(jax.make_jaxpr(fn)(*spec))


def block_length(length: int, most: int = 4) -> int:
    """The largest divisor of ``length`` that is at most ``most``: the block of a straight-line
    :func:`run_blocks` drive (4 steps: past 2, a block runs no faster, and compile time grows
    with it)."""
    return max(b for b in range(1, min(most, length) + 1) if length % b == 0)


__all__ = ["run_steps", "run_blocks", "straight_line_preferred", "has_conv", "block_length"]

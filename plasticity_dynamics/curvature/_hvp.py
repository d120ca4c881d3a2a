"""Hessian-vector products, Gauss-Newton products and dense Hessians of tiny networks.

All functions take ``loss_fn(params) -> scalar`` (close over the batch) and work on pytrees.
Reference: Pearlmutter (1994), "Fast exact multiplication by the Hessian"; Schraudolph (2002)
for the Gauss-Newton product.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ._protocol import PyTree, _ById


def hvp(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> PyTree:
    """Hessian-vector product ``H(params) v`` by forward-over-reverse differentiation.

    Args:
      loss_fn: scalar loss of a params pytree.
      params, v: pytrees of the same structure.
    Returns:
      ``H v`` with the structure of ``params``.
    Cost: one JVP of the gradient, about 2-4 gradient evaluations, memory of one gradient.
    Failure modes: non-differentiable points (ReLU at exactly 0) use JAX's convention
    (relu'(0) = 0); NaN in ``loss_fn`` propagates.
    """
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def batched_hvp(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, vs: PyTree,
                *, batch_size: int | None = None) -> PyTree:
    """``H v`` for a stack of vectors ``vs`` (leaves with a leading axis of size k).

    ``batch_size=None`` vmaps all k at once (memory of k HVPs); an integer processes
    ``batch_size`` vectors at a time with ``lax.map`` (bounded memory).
    Cost: k HVPs; the gradient's linearisation is shared across the batch.
    """
    fn = lambda v: hvp(loss_fn, params, v)  # noqa: E731
    if batch_size is None:
        return jax.vmap(fn)(vs)
    return jax.lax.map(fn, vs, batch_size=batch_size)


def gnvp(output_fn: Callable[[PyTree], PyTree], loss_of_output: Callable[[PyTree], jax.Array],
         params: PyTree, v: PyTree) -> PyTree:
    """Generalised Gauss-Newton product ``G v = J^T H_l J v`` for ``L = l(f(params))``.

    Args:
      output_fn: ``f(params)`` -> network outputs (array or pytree, e.g. logits ``(B, C)``).
      loss_of_output: ``l(outputs) -> scalar`` (e.g. mean cross-entropy against fixed labels).
      params, v: pytrees of the same structure.
    Returns:
      ``J^T H_l J v`` (structure of ``params``). It is positive semi-definite whenever ``l``
      is convex in the outputs (cross-entropy, squared error), and equals the Hessian for
      linear ``f`` (e.g. linear regression).
    Cost: one JVP of f, one HVP of l (in output space), one VJP of f: about one HVP.
    """
    out, jv = jax.jvp(output_fn, (params,), (v,))
    hjv = jax.jvp(jax.grad(loss_of_output), (out,), (jv,))[1]
    _, vjp = jax.vjp(output_fn, params)
    return vjp(hjv)[0]


def dense_hessian(loss_fn: Callable[[PyTree], jax.Array], params: PyTree,
                  *, batch_size: int | None = 256) -> jax.Array:
    """The dense Hessian ``(n, n)`` of ``loss_fn`` over ``ravel_pytree(params)`` order.

    Built column by column from HVPs (forward-over-reverse), ``batch_size`` columns at a
    time. Meant for tiny networks (test oracles and the small normal-space path).
    Cost: n HVPs and n^2 floats of memory (n = 23k parameters is already 2 GB in float32).
    Returns the raw float matrix in the params dtype; symmetrise it (``(H + H.T) / 2``) before
    an eigensolve, since rounding makes it asymmetric at the level of the dtype's epsilon.
    """
    n = ravel_pytree(params)[0].shape[0]
    return _dense_kernel(params, loss=_ById(loss_fn), batch_size=min(batch_size or n, n))


@partial(jax.jit, static_argnames=("loss", "batch_size"))
def _dense_kernel(params, *, loss, batch_size):
    flat, unravel = ravel_pytree(params)

    def column(e):
        return ravel_pytree(hvp(loss.obj, params, unravel(e)))[0]

    cols = jax.lax.map(column, jnp.eye(flat.shape[0], dtype=flat.dtype), batch_size=batch_size)
    return cols.T

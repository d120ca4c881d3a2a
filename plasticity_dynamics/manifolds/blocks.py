"""Block averaging along one unit axis: the building block of every cloning projector.

A unit axis of a leaf has length ``outer * units`` (units fastest; ``outer`` > 1 only for the
NHWC flatten conv -> dense). Averaging over the blocks of the group's partition is done on the
(outer, units) view with one of three exact implementations, chosen per axis:

- ``"interleaved"``: blocks are k*E .. k*E + E - 1 (what ``expand`` makes): reshape (K, E),
  mean, broadcast. O(size), no gathers, fastest to compile.
- ``"dense"``: units <= ``DENSE_MAX``: multiply by the (units, units) averaging matrix.
  O(size * units) flops but compiles several times faster than gathers on XLA:CPU.
- ``"gather"``: any partition of a large group: gather the members of each block (padded to
  the largest block), sum, divide, gather back. O(size * largest block / mean block size).

``AxisMeta`` (static, hashable) says how; ``AxisOp`` (arrays, a pytree) holds what is needed.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

DENSE_MAX = 256


class AxisMeta(NamedTuple):
    """Static description of one unit axis: axis index, outer copies, units, mode, factor E
    (interleaved mode only, else 0)."""

    axis: int
    outer: int
    units: int
    mode: str
    factor: int


class AxisOp(NamedTuple):
    """Arrays of one unit axis (unused fields None): averaging ``matrix`` (units, units);
    ``gather`` (K * smax,) padded member indices (padding = units), ``ids`` (units,) block of
    each unit, ``counts`` (K,) block sizes."""

    matrix: Optional[jax.Array] = None
    gather: Optional[jax.Array] = None
    ids: Optional[jax.Array] = None
    counts: Optional[jax.Array] = None


def make_axis(ids, axis: int, size: int) -> tuple:
    """(AxisMeta, AxisOp) for canonical block ids (units,) of a group on an axis of length
    ``size`` (a multiple of units). Host-side NumPy."""
    ids = np.asarray(ids, np.int64)
    u = ids.size
    k = int(ids.max()) + 1 if u else 0
    outer = size // max(u, 1)
    e = u // max(k, 1)
    if k and e * k == u and np.array_equal(ids, np.arange(u) // e):
        return AxisMeta(axis, outer, u, "interleaved", e), AxisOp()
    if u <= DENSE_MAX:
        same = (ids[:, None] == ids[None, :]).astype(np.float32)
        return AxisMeta(axis, outer, u, "dense", 0), AxisOp(
            matrix=jnp.asarray(same / same.sum(axis=1, keepdims=True)))
    counts = np.bincount(ids, minlength=k)
    smax = int(counts.max())
    order = np.argsort(ids, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gather = np.full((k, smax), u, np.int64)
    gather[ids[order], np.arange(u) - starts[ids[order]]] = order
    return AxisMeta(axis, outer, u, "gather", 0), AxisOp(
        gather=jnp.asarray(gather.reshape(-1), jnp.int32), ids=jnp.asarray(ids, jnp.int32),
        counts=jnp.asarray(counts, jnp.float32))


def block_mean(x, meta: AxisMeta, op: AxisOp):
    """Replace every entry of ``x`` by the mean of its block along ``meta.axis``."""
    x = jnp.asarray(x)
    a = meta.axis
    shape = x.shape
    # (before, outer, units, after) view; the unit axis is index a + 1
    y = x.reshape(shape[:a] + (meta.outer, meta.units) + shape[a + 1:])
    if meta.mode == "interleaved":
        e = meta.factor
        z = y.reshape(shape[:a] + (meta.outer, meta.units // e, e) + shape[a + 1:])
        z = jnp.broadcast_to(jnp.mean(z, axis=a + 2, keepdims=True), z.shape)
        return z.reshape(shape)
    if meta.mode == "dense":
        z = jnp.tensordot(y, op.matrix.astype(y.dtype), axes=([a + 1], [0]),
                          precision=jax.lax.Precision.HIGHEST)
        return jnp.moveaxis(z, -1, a + 1).reshape(shape)
    k = op.counts.shape[0]
    ym = jnp.moveaxis(y, a + 1, 0)
    g = jnp.take(ym, op.gather, axis=0, mode="fill", fill_value=0)
    s = g.reshape((k, op.gather.shape[0] // k) + ym.shape[1:]).sum(axis=1)
    s = s / op.counts.reshape((-1,) + (1,) * (s.ndim - 1)).astype(s.dtype)
    return jnp.moveaxis(jnp.take(s, op.ids, axis=0), 0, a + 1).reshape(shape)


def partition_axis(partition, spec, size: int) -> tuple:
    """(AxisMeta, AxisOp) of a partition's group on one leaf axis (see :func:`make_axis`)."""
    partition.axis_ids(spec, size)  # validates the length
    return make_axis(partition.groups[spec.group], spec.axis, size)


__all__ = ["AxisMeta", "AxisOp", "DENSE_MAX", "block_mean", "make_axis", "partition_axis"]

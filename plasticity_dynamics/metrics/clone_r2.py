"""Cloning R^2: how well a layer is explained by block means of a unit partition.

A partition of one layer's units is an int array (units,) giving each unit's block id in
[0, units). After function-preserving expansion by a factor E (PAPER.md section 5.4) the clones
of base unit k sit at indices k*E + c, c = 0..E-1: :func:`interleaved_partition` builds that.

``h`` has shape (samples, units): forward activations, or backward signals dL/dh (the paper
reports both, per layer, and averages over layers x {forward, backward}).

- :func:`clone_r2` (default, the clean definition): R^2 = 1 - within-block variance / total
  variance, with m_i the layer mean of sample i, m_{i,b} the mean of block b in sample i and B
  the number of non-empty blocks, pooled over the N samples:
      within = sum_{i,j} (h_ij - m_{i,b(j)})^2 / (N (units - B)),
      total  = sum_{i,j} (h_ij - m_i)^2       / (N (units - 1)).
  Both are unbiased variances, so R^2 = 1 for exact clones and about 0 (either sign) for
  independent units. ``adjusted=False`` drops the degrees-of-freedom factors (plain
  1 - SS_res/SS_tot), which gives about (B-1)/(units-1) for independent units (0.5 at E = 2).
  A layer constant across units in every sample (nothing to explain, zero residuals), or a
  partition into singletons, gives 1; never NaN.
- :func:`clone_r2_std_ratio` (the authors' code, a named parity option): 1 - mean over samples
  and non-singleton blocks of std_over_block / (std_over_all_units_of_the_sample + 1e-10), with
  unbiased (ddof=1) standard deviations, as in PyTorch's ``std``.

Cost: O(samples x units) with segment sums; jit- and vmap-able (the partition may be traced).
Reference: arXiv 2510.00304, App. B.1.2 (PAPER.md section 4, "Cloning R^2").
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError, check_positive
from .layout import check_matrix


def interleaved_partition(units: int, factor: int) -> np.ndarray:
    """Partition (units,) for the interleaved clone layout: unit k*factor + c is in block k."""
    check_positive("units", units, integer=True)
    check_positive("factor", factor, integer=True)
    if units % factor:
        raise InputError(f"units={units} is not a multiple of factor={factor}")
    return np.arange(units, dtype=np.int32) // factor


def _check_partition(partition, units: int) -> jnp.ndarray:
    if isinstance(partition, (np.ndarray, list, tuple)):
        p = np.asarray(partition)
        if p.shape != (units,) or not np.issubdtype(p.dtype, np.integer):
            raise InputError(f"partition has shape {p.shape} and dtype {p.dtype}; expected ({units},) integers")
        if p.size and (p.min() < 0 or p.max() >= units):
            raise InputError(f"partition block ids lie in [{p.min()}, {p.max()}]; expected ids in [0, {units})")
    p = jnp.asarray(partition)
    if p.shape != (units,):
        raise InputError(f"partition has shape {tuple(p.shape)}; expected ({units},)")
    return p.astype(jnp.int32)


def _block_stats(h, p):
    """Per-sample block sums and counts: (samples, units) sums indexed by block id, (units,) counts."""
    d = h.shape[1]
    counts = jax.ops.segment_sum(jnp.ones(d, h.dtype), p, num_segments=d)
    sums = jax.ops.segment_sum(h.T, p, num_segments=d).T
    return sums, counts


def clone_r2(h, partition, *, adjusted: bool = True) -> jnp.ndarray:
    """Variance-ratio R^2 of the block-mean predictor (see module docstring). Scalar <= 1."""
    h = check_matrix("h", h)
    return _clone_r2(h, _check_partition(partition, h.shape[1]), bool(adjusted))


@functools.partial(jax.jit, static_argnums=2)
def _clone_r2(h, p, adjusted):
    d = h.shape[1]
    sums, counts = _block_stats(h, p)
    block_mean = sums / jnp.maximum(counts, 1.0)
    resid = h - block_mean[:, p]
    total = h - jnp.mean(h, axis=1, keepdims=True)
    ss_res = jnp.sum(resid * resid)
    ss_tot = jnp.sum(total * total)
    if adjusted:
        dof_res = d - jnp.sum(counts > 0)
        ss_res = jnp.where(dof_res > 0, ss_res / jnp.maximum(dof_res, 1), 0.0)
        ss_tot = ss_tot / max(d - 1, 1)
    return jnp.where(ss_tot > 0, 1.0 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0), 1.0)


def clone_r2_std_ratio(h, partition) -> jnp.ndarray:
    """The authors' std-ratio R^2 (parity option, see module docstring). Scalar.

    Singleton blocks are left out of the mean (their unbiased std is undefined); with no block of
    two or more units the result is 1.
    """
    h = check_matrix("h", h)
    return _clone_r2_std_ratio(h, _check_partition(partition, h.shape[1]))


@jax.jit
def _clone_r2_std_ratio(h, p):
    d = h.shape[1]
    sums, counts = _block_stats(h, p)
    block_mean = sums / jnp.maximum(counts, 1.0)
    resid = h - block_mean[:, p]
    ss_block = jax.ops.segment_sum((resid * resid).T, p, num_segments=d).T  # (samples, blocks)
    std_block = jnp.sqrt(ss_block / jnp.maximum(counts - 1.0, 1.0))
    dev = h - jnp.mean(h, axis=1, keepdims=True)
    std_all = jnp.sqrt(jnp.sum(dev * dev, axis=1, keepdims=True) / max(d - 1, 1))
    ratio = std_block / (std_all + 1e-10)
    valid = counts > 1
    n_valid = jnp.sum(valid)
    mean_ratio = jnp.sum(jnp.where(valid[None, :], ratio, 0.0)) / jnp.maximum(n_valid * h.shape[0], 1)
    return 1.0 - mean_ratio

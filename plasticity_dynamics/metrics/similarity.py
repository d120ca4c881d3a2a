"""Duplicate units and clone clusters from activation similarity.

``h`` has shape (samples, units). Similarities are between unit columns:

- uncentred cosine (the paper's): h_j / ||h_j|| dotted with h_k / ||h_k||;
- Pearson: the same after subtracting each column's mean.

A zero (or, for Pearson, constant) column normalises to zero and is never a duplicate. Cost:
one (units x units) Gram matrix, O(samples x units^2), computed at HIGHEST matmul precision
(so TPUs/GPUs do not silently use bf16/TF32). Clusters add O(units^2) per label-propagation
round, at most log2-many rounds in practice (pointer jumping), bounded by ``units`` rounds.

Reference: arXiv 2510.00304, App. B.1.2 (PAPER.md section 4, "Duplicate fraction").
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError, check_range
from .layout import check_matrix

_HIGHEST = jax.lax.Precision.HIGHEST


def cosine_similarity(h, *, centred: bool = False) -> jnp.ndarray:
    """(units, units) matrix of cosine similarities between the columns of ``h``.

    ``centred=True`` subtracts column means first (Pearson correlation). Zero columns give
    zero rows/columns (their diagonal entry is 0 too).
    """
    return _cosine(check_matrix("h", h), bool(centred))


@functools.partial(jax.jit, static_argnums=1)
def _cosine(h, centred):
    if centred:
        h = h - jnp.mean(h, axis=0, keepdims=True)
    norm = jnp.sqrt(jnp.sum(h * h, axis=0))
    hn = h / jnp.where(norm > 0, norm, 1.0)
    return jnp.matmul(hn.T, hn, precision=_HIGHEST)


def cosine_from_gram(g) -> jnp.ndarray:
    """Cosine similarities (units, units) from a Gram matrix g = h^T h (zero columns give zero
    rows and columns), so one Gram matrix serves both similarities and ranks."""
    norm = jnp.sqrt(jnp.maximum(jnp.diagonal(g), 0.0))
    inv = jnp.where(norm > 0, 1.0 / jnp.where(norm > 0, norm, 1.0), 0.0)
    return jnp.clip(g * inv[:, None] * inv[None, :], -1.0, 1.0)


def upper_any_above(c, threshold) -> jnp.ndarray:
    """Mask (units,): some k > j has c[j, k] > threshold (the paper's upper-triangular count).
    A row maximum over the upper triangle, with no boolean (units, units) intermediate (see
    :func:`connected_components` for the XLA:CPU boolean-op crash)."""
    d = c.shape[0]
    upper = jnp.arange(d)[:, None] < jnp.arange(d)[None, :]
    return jnp.max(jnp.where(upper, c, -jnp.inf), axis=1, initial=-jnp.inf) > threshold


def duplicate_units(h, threshold: float = 0.95, *, centred: bool = False) -> jnp.ndarray:
    """Mask (units,): unit j marked iff some k > j has similarity > threshold.

    The paper's upper-triangular counting: in a duplicate pair only the lower-index unit is
    marked, so a cluster of m equal units contributes m - 1.
    """
    check_range("threshold", threshold, -1.0, 1.0, high_inclusive=True)
    return upper_any_above(cosine_similarity(h, centred=centred), threshold)


def duplicate_fraction(h, threshold: float = 0.95) -> jnp.ndarray:
    """Fraction of units with a later unit at uncentred cosine > threshold (paper: 0.95; 0.98
    for bit flipping)."""
    return jnp.mean(duplicate_units(h, threshold, centred=False))


def duplicate_fraction_pearson(h, threshold: float = 0.95) -> jnp.ndarray:
    """As :func:`duplicate_fraction` with Pearson correlation (mean-centred columns)."""
    return jnp.mean(duplicate_units(h, threshold, centred=True))


@jax.jit
def connected_components(adjacency) -> jnp.ndarray:
    """Component labels (n,) of an undirected graph given a boolean (n, n) adjacency matrix.

    Each node gets the smallest node index of its component. Min-label propagation with pointer
    jumping inside a ``lax.while_loop``; labels only decrease and always name a node of the same
    component, so the loop stops at the exact components. Jit- and vmap-able. Any numeric or
    boolean dtype is accepted (non-zero = edge).

    The graph is symmetrised in uint8, not bool: XLA:CPU in jaxlib 0.10.2 crashes (segfault) on
    fused boolean element-wise ops such as ``a | a.T | eye`` from about 833 nodes on.
    """
    a = _as_uint8(adjacency)
    n = a.shape[0]
    a = a | a.T | jnp.eye(n, dtype=jnp.uint8)
    big = jnp.iinfo(jnp.int32).max

    def step(labels):
        nb = jnp.min(jnp.where(a != 0, labels[None, :], big), axis=1)
        nb = jnp.minimum(labels, nb)
        return nb[nb]

    def cond(state):
        old, new = state
        return jnp.any(old != new)

    def body(state):
        _, new = state
        return new, step(new)

    labels0 = jnp.arange(n, dtype=jnp.int32)
    _, labels = jax.lax.while_loop(cond, body, (labels0, step(labels0)))
    return labels


def _as_uint8(mask) -> jnp.ndarray:
    """``mask != 0`` as uint8 (0/1), avoiding boolean element-wise chains (see
    :func:`connected_components`)."""
    mask = jnp.asarray(mask)
    if mask.dtype == jnp.uint8:
        return mask
    if mask.dtype == jnp.bool_:
        return mask.astype(jnp.uint8)
    return (mask != 0).astype(jnp.uint8)


class CloneClusters(NamedTuple):
    """Clusters of units: connected components of the thresholded similarity graph.

    labels: (units,) int32, the smallest unit index of the unit's cluster.
    sizes: (units,) int32, size of the unit's cluster (1 = not in a clone cluster).
    in_cluster: (units,) bool, sizes > 1.
    num_clusters: scalar int32, number of clusters with at least two units.
    largest: scalar int32, size of the largest cluster (1 when there is none).
    """

    labels: jnp.ndarray
    sizes: jnp.ndarray
    in_cluster: jnp.ndarray
    num_clusters: jnp.ndarray
    largest: jnp.ndarray


@jax.jit
def clusters_from_adjacency(adjacency) -> CloneClusters:
    """:class:`CloneClusters` of the graph with the given (units, units) adjacency (bool or
    0/1 integers; self-loops are ignored)."""
    labels = connected_components(adjacency)
    n = labels.shape[0]
    counts = jnp.zeros(n, jnp.int32).at[labels].add(1)
    sizes = counts[labels]
    return CloneClusters(
        labels=labels,
        sizes=sizes,
        in_cluster=sizes > 1,
        num_clusters=jnp.sum(counts > 1).astype(jnp.int32),
        largest=jnp.max(counts).astype(jnp.int32),
    )


def clone_clusters(h, threshold: float = 0.95, *, centred: bool = False) -> CloneClusters:
    """Clone clusters of a layer: units linked when their cosine similarity exceeds threshold.

    Unlike :func:`duplicate_fraction` (pairs, upper-triangular counting), this returns every unit
    of every cluster and the cluster sizes; linking is transitive (a chain a~b~c is one cluster).
    ``centred=True`` uses Pearson correlation. Zero columns are never linked.
    """
    check_range("threshold", threshold, -1.0, 1.0, high_inclusive=True)
    return clusters_above(cosine_similarity(h, centred=centred), threshold)


def clusters_above(c, threshold) -> CloneClusters:
    """Clusters of the graph linking units with similarity c > threshold (uint8 adjacency)."""
    return clusters_from_adjacency((c > threshold).astype(jnp.uint8))


def cluster_members(labels) -> list[np.ndarray]:
    """Host-side list of the clusters with >= 2 units, each a sorted int array of unit indices,
    ordered by smallest member. ``labels`` as returned in :class:`CloneClusters`."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError(f"labels has shape {labels.shape}; expected (units,)")
    out = []
    for lab in np.unique(labels):
        members = np.flatnonzero(labels == lab)
        if members.size > 1:
            out.append(members)
    return out

"""Exact weight-symmetry clusters: units that are clones in parameter space.

Two units of a layer are weight-symmetric when everything that enters them (incoming weights,
bias, per-unit norm parameters and statistics) and everything that leaves them (their outgoing
weights) is equal within a tolerance. Such units compute the same function and receive equal
gradients forever under SGD/Adam: they sit on the cloning manifold M_D of arXiv 2510.00304
(Theorem 2.1). Function-preserving expansion (PAPER.md section 5.4) produces them: outgoing
weights are W/E for every clone, so they are equal too.

:func:`weight_symmetry_clusters` works on plain (units, features) matrices;
:func:`unit_weight_features` builds those matrices for a layer of any model from its unit
partition (the one layout path: ``pdx.manifolds.unit_partition``).
Cost: O(units^2 x features) comparisons in a ``lax.map`` (memory O(units x features)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..errors import InputError, check_positive
from .similarity import CloneClusters, clusters_from_adjacency


def _chebyshev_close(f, tol):
    """(units, units) uint8 0/1: max_k |f_ik - f_jk| <= tol (uint8, not bool: see
    :func:`~.similarity.connected_components`)."""
    if f.shape[1] == 0:
        return jnp.ones((f.shape[0], f.shape[0]), jnp.uint8)
    return jax.lax.map(lambda row: (jnp.max(jnp.abs(f - row[None, :]), axis=1) <= tol).astype(jnp.uint8), f)


def weight_symmetry_clusters(incoming, outgoing=None, *, rtol: float = 1e-5, atol: float = 0.0) -> CloneClusters:
    """Clusters of units whose incoming and outgoing parameter vectors are equal within tolerance.

    incoming: (units, a) every parameter entering unit j in row j (weights, bias, norm scale ...).
    outgoing: (units, b) every weight leaving unit j in row j, or None.
    Units j, k are linked iff max|in_j - in_k| <= atol + rtol * max|in| and the same holds for
    the outgoing rows (each block against its own scale); clusters are the connected
    components of that graph (see :class:`~.similarity.CloneClusters`). Jit-able.
    """
    check_positive("rtol", rtol, allow_zero=True)
    check_positive("atol", atol, allow_zero=True)
    incoming = jnp.asarray(incoming, jnp.float32)
    if incoming.ndim != 2:
        raise InputError(f"incoming has shape {tuple(incoming.shape)}; expected (units, features)")
    if outgoing is not None:
        outgoing = jnp.asarray(outgoing, jnp.float32)
        if outgoing.ndim != 2 or outgoing.shape[0] != incoming.shape[0]:
            raise InputError(
                f"outgoing has shape {tuple(outgoing.shape)}; expected ({incoming.shape[0]}, features)"
            )
    return _symmetry_clusters(incoming, outgoing, rtol, atol)


@jax.jit
def _symmetry_clusters(incoming, outgoing, rtol, atol):
    adj = _chebyshev_close(incoming, atol + rtol * jnp.max(jnp.abs(incoming), initial=0.0))
    if outgoing is not None:
        adj = adj & _chebyshev_close(outgoing, atol + rtol * jnp.max(jnp.abs(outgoing), initial=0.0))
    return clusters_from_adjacency(adj)


def unit_weight_features(variables, layer: str, partition=None):
    """(incoming, outgoing) parameter matrices of one layer's units, from its unit partition.

    variables: the model's variables dict (``params`` and optional ``batch_stats``) or params.
    layer: a layer of ``partition.layers`` (mlp ``hidden_{i}``, cnn ``conv_{i}`` / ``fc_{j}``,
        resnet18 ``stem`` / ``layer{s}_block{b}``, ...; a wrapped model's inferred names).
    partition: the network's ``pdx.manifolds.Partition`` (``unit_partition(model,
        variables)``); default: that of the mlp or cnn zoo model rebuilt from the shapes.
    Incoming rows (units, F_in): every entry the unit owns in its group ("out" axes: kernel
    column, bias, norm parameters and running statistics; for a group shared by several layers,
    a residual stream, those of all of them); outgoing rows (units, F_out): the weights that
    read the unit ("in" axes; after an NHWC flatten the rows r with r % units == unit), None
    when nothing reads it. Cost: one gather per leaf of the group.
    """
    from ..manifolds import unit_partition  # lazy: a sibling layer, needed only here
    from ..manifolds.partition import collection_paths

    if partition is None:
        partition = unit_partition(None, variables)
    if layer not in partition.layers:
        raise InputError(f"layer={layer!r} is not one of: {', '.join(partition.layers)}")
    group = partition.layers[layer].group
    units = partition.units(group)
    parts = {"out": [], "in": []}
    for path, leaf in collection_paths(variables):
        for spec in partition.specs(path):
            if spec.group != group:
                continue
            k = jnp.moveaxis(jnp.asarray(leaf), spec.axis, 0)
            k = k.reshape((k.shape[0] // units, units, -1))  # (outer, units, rest): unit fastest
            parts[spec.role].append(jnp.moveaxis(k, 1, 0).reshape(units, -1))
    incoming = jnp.concatenate(parts["out"], axis=1)
    outgoing = jnp.concatenate(parts["in"], axis=1) if parts["in"] else None
    return incoming, outgoing

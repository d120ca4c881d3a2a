"""Exact weight-symmetry clusters: units that are clones in parameter space.

Two units of a layer are weight-symmetric when everything that enters them (incoming weights,
bias, per-unit norm parameters and statistics) and everything that leaves them (their outgoing
weights) is equal within a tolerance. Such units compute the same function and receive equal
gradients forever under SGD/Adam: they sit on the cloning manifold M_D of arXiv 2510.00304
(Theorem 2.1). Function-preserving expansion (PAPER.md section 5.4) produces them: outgoing
weights are W/E for every clone, so they are equal too.

:func:`weight_symmetry_clusters` works on plain (units, features) matrices;
:func:`unit_weight_features` builds those matrices for a monitored layer of the ``mlp`` and
``cnn`` families from the parameter names of the model contract.
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


def _unit_rows(kernel, axis):
    """Move the unit axis of a kernel to the front and flatten the rest: (units, -1)."""
    k = jnp.moveaxis(jnp.asarray(kernel), axis, 0)
    return k.reshape(k.shape[0], -1)


def _incoming(params, stats, module, norm):
    parts = [_unit_rows(params[module]["kernel"], -1)]
    if "bias" in params[module]:
        parts.append(params[module]["bias"][:, None])
    for tree in (params, stats):
        if norm in tree:
            parts += [jnp.asarray(v).reshape(-1, 1) for _, v in sorted(tree[norm].items())]
    return jnp.concatenate(parts, axis=1)


def _outgoing(params, module, units):
    kernel = jnp.asarray(params[module]["kernel"])
    if kernel.ndim == 4:  # conv -> conv: (kh, kw, units, cout)
        return _unit_rows(kernel, 2)
    if kernel.shape[0] == units:  # dense -> dense
        return kernel
    # conv -> dense after an NHWC flatten: channel is the fastest axis of the input index
    k = kernel.reshape(-1, units, kernel.shape[-1])
    return _unit_rows(k, 1)


def unit_weight_features(variables, layer: str):
    """(incoming, outgoing) parameter matrices of a monitored ``mlp`` or ``cnn`` layer.

    variables: the model's variables dict (``params`` and optional ``batch_stats``).
    layer: ``hidden_{i}`` (mlp), ``conv_{i}`` or ``fc_{j}`` (cnn), per the model contract.
    Incoming rows hold the kernel column, bias, and the unit's norm parameters and running
    statistics; outgoing rows hold the unit's weights in the next layer (``out`` after the last).
    """
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    prefix, _, idx = layer.rpartition("_")
    if not idx.isdigit() or prefix not in ("hidden", "conv", "fc"):
        raise InputError(f"layer={layer!r} is not one of: hidden_<i> (mlp), conv_<i>, fc_<j> (cnn)")
    i = int(idx)
    module = {"hidden": "dense", "conv": "conv", "fc": "fc"}[prefix] + f"_{i}"
    if module not in params:
        raise InputError(f"layer={layer!r}: parameters {module!r} not found; have {sorted(params)}")
    norm = f"norm_{i}" if prefix in ("hidden", "conv") else None
    incoming = _incoming(params, stats, module, norm)
    units = incoming.shape[0]
    candidates = {
        "hidden": [f"dense_{i + 1}", "out"],
        "conv": [f"conv_{i + 1}", "fc_0", "out"],
        "fc": [f"fc_{i + 1}", "out"],
    }[prefix]
    nxt = next((m for m in candidates if m in params), None)
    outgoing = None if nxt is None else _outgoing(params, nxt, units)
    return incoming, outgoing

"""The manifold protocol curvature code is written against, and small shared helpers.

Curvature never imports :mod:`plasticity_dynamics.manifolds`; it only needs an object that
behaves like :class:`ManifoldLike`. Any object with these members works (structural typing),
including the ``Manifold`` objects of ``pdx.manifolds`` and small hand-built ones in tests.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

PyTree = Any


@runtime_checkable
class ManifoldLike(Protocol):
    """An affine invariant manifold M seen through its projectors.

    Members (all pure, jit-able, pytree in -> pytree out with the structure of ``params``):

    - ``project(params)``: the point of M nearest to ``params`` (affine projection).
    - ``tangent(v)``: orthogonal projector P_T onto the tangent space T_θM (linear in ``v``).
    - ``normal(v)``: orthogonal projector P_N = I - P_T onto the normal space N_θM (linear).
    - ``distance(params)``: scalar, ``||params - project(params)||``.
    - ``leakage(grad)``: scalar, the size of the normal part of a gradient (0 on an LoP manifold).
    - ``normal_dim``: int, the dimension of N_θM (the rank of ``normal``).
    """

    normal_dim: int

    def project(self, params: PyTree) -> PyTree: ...

    def tangent(self, v: PyTree) -> PyTree: ...

    def normal(self, v: PyTree) -> PyTree: ...

    def distance(self, params: PyTree) -> jax.Array: ...

    def leakage(self, grad: PyTree) -> jax.Array: ...


class _ById:
    """Hash and compare an object by identity, so it can be a static jit argument.

    Lets jit reuse a compiled kernel when the *same* loss function and manifold objects are
    passed again (no retrace along a trajectory), whether or not they are hashable.
    """

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _ById) and other.obj is self.obj


def flat_operator(fn: Callable[[PyTree], PyTree], params: PyTree):
    """Turn a linear pytree map into a map on flat vectors of ``ravel_pytree(params)``.

    Returns ``(matvec, unravel, n)`` where ``matvec: (n,) -> (n,)``.
    """
    flat, unravel = ravel_pytree(params)

    def matvec(x):
        return ravel_pytree(fn(unravel(x)))[0]

    return matvec, unravel, flat.shape[0]


def tree_unstack(flat_rows: jax.Array, unravel) -> PyTree:
    """``(k, n)`` rows -> pytree whose leaves have a leading axis of size k."""
    return jax.vmap(unravel)(flat_rows)


_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic, float, int, bool)


def manifold_args(manifold):
    """Split a manifold into ``(static, dynamic)`` kernel arguments.

    A manifold registered as a pytree of arrays (as ``pdx.manifolds.Manifold`` is) travels as
    a traced argument, so a *new* manifold of the same structure (another checkpoint, another
    set of frozen units of the same layers) reuses the compiled kernel. Anything else is a
    static argument compared by identity. ``None`` stays ``(None, None)``.
    """
    if manifold is None:
        return None, None
    leaves, treedef = jax.tree.flatten(manifold)
    is_node = not (len(leaves) == 1 and leaves[0] is manifold)
    if is_node and all(isinstance(x, _ARRAY_TYPES) for x in leaves):
        try:
            hash(treedef)
            return None, manifold
        except TypeError:  # unhashable aux data: cannot key a jit cache on it
            pass
    return _ById(manifold), None


def resolve_manifold(static, dynamic):
    """The manifold object inside a kernel (see :func:`manifold_args`)."""
    return static.obj if static is not None else dynamic


def keyed_kernel_fn(kernel: Callable) -> Callable:
    """The public form ``f(params, manifold=None, *args, key=None)`` of a randomised kernel
    ``kernel(params, man_dyn, args, key, man_static)``: jitted once (the manifold split by
    :func:`manifold_args`, ``man_static`` static), the key defaulting by :func:`default_key`."""
    jitted = jax.jit(kernel, static_argnames=("man_static",))

    def f(params, manifold=None, *args, key=None):
        man_static, man_dyn = manifold_args(manifold)
        return jitted(params, man_dyn, tuple(args), default_key(key), man_static)

    return f


def default_key(key):
    """``None`` -> the fixed key 0 (results are reproducible), otherwise ``key``.

    The default is built without a jax computation (the raw data of ``PRNGKey(0)`` for the
    default threefry implementation), so it costs no op-by-op compile outside the kernels.
    """
    if key is not None:
        return key
    if jax.config.jax_default_prng_impl == "threefry2x32":
        return np.zeros(2, np.uint32)
    return jax.random.PRNGKey(0)


def np_ravel(tree):
    """NumPy twin of ``ravel_pytree`` (same leaf order) that needs no jax computation.

    Returns ``(flat, unravel_rows)``: ``flat`` is the float vector and ``unravel_rows(rows)``
    maps ``(r, n)`` rows (or one ``(n,)`` row) to a pytree of jax arrays with a leading axis r
    (none for a single row) and the leaves' dtypes, through device_put only.
    """
    leaves, treedef = jax.tree.flatten(tree)
    arrays = [np.asarray(x) for x in leaves]
    flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0)
    offsets = np.cumsum([0] + [a.size for a in arrays])

    def unravel_rows(rows):
        rows = np.asarray(rows)
        lead = rows.shape[:-1]
        parts = [jnp.asarray(rows[..., o:o + a.size].reshape(lead + a.shape).astype(a.dtype))
                 for o, a in zip(offsets, arrays)]
        return treedef.unflatten(parts)

    return flat, unravel_rows


def float32_eps() -> float:
    return float(jnp.finfo(jnp.float32).eps)

"""Linearisation of one optimiser step on the augmented state (params, optimiser state).

One training step is the map ``F(theta, s) = (theta + u, s')`` with
``u, s' = optimizer.update(grad L(theta), s, theta)``. Its Jacobian J acts on perturbations of
the parameters *and* of the optimiser's float state (momentum trace, Adam's mu and nu); integer
leaves (step counts) are held fixed. Closed forms, for a check: SGD ``J = I - eta H``;
heavy ball (optax ``trace``: m' = g + beta m, theta' = theta - eta m') per Hessian eigenvalue
lambda has eigenvalues z solving ``z^2 - (1 + beta - eta lambda) z + beta = 0``.

On an affine invariant manifold J maps tangent perturbations to tangent ones, so the normal
part of a perturbation evolves as ``d' = P_N J P_N d``: the spectral radius of that compressed
map is the predicted per-step growth factor of normal perturbations (> 1: escape).

Where the linearisation is undefined: Adam/RMSProp divide by ``sqrt(nu_hat + eps_root) + eps``.
At a coordinate with ``nu = 0`` (a fresh state, or a coordinate whose gradient has always been
exactly zero, e.g. a dead unit's weights on a frozen manifold) the derivative of sqrt is
infinite and the JVP returns NaN (0 * inf). The true step is not differentiable there: after
one step ``sqrt(nu) ~ |dg|``, so ``m / sqrt(nu)`` behaves like ``sign(dg)`` (scale-free) for
perturbations larger than ``eps``; the linear regime covers only perturbations below ``eps``.
Use ``optax.adam(..., eps_root=e)`` with e > 0 (e.g. 1e-16) to get the linearisation of the
smoothed map (slope ``1 / (sqrt(eps_root) + eps)`` at nu = 0); :func:`update_map_radius` raises
InputError naming this when it meets non-finite values.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from ..errors import InputError, check_choice, check_positive
from ._cache import cached
from ._krylov import ArnoldiResult, arnoldi, arnoldi_ritz
from ._protocol import ManifoldLike, PyTree, default_key, manifold_args, resolve_manifold


class UpdateMapJacobian(NamedTuple):
    """The linear operator J of one optimiser step on flat augmented vectors.

    matvec: ``(dim,) -> (dim,)``, the JVP of the step (linearised once, so each call costs about
      one HVP). ravel: ``(dparams, dstate_leaves) -> (dim,)``. unravel: the inverse, where
      ``dstate_leaves`` is the list of the optimiser state's float leaves in tree order.
    dim: params size + float-state size. num_params: size of the params block (it comes first).
    next_params, next_opt_state: the un-perturbed step's result.
    normal: ``(dim,) -> (dim,)`` augmented normal projector factory: ``normal(manifold)``
      returns the projector that applies ``manifold.normal`` to the params block and to every
      params-shaped state subtree, and zeroes other float state (scalars are symmetric).
    """

    matvec: Callable
    ravel: Callable
    unravel: Callable
    dim: int
    num_params: int
    next_params: Any
    next_opt_state: Any
    normal: Callable


class GrowthFactor(NamedTuple):
    """Spectral radius of ``P_N J P_N``: radius (float), eigenvalues (complex Ritz values
    sorted by decreasing modulus), method, num_jvps, dim (size of the augmented state)."""

    radius: float
    eigenvalues: np.ndarray
    method: str
    num_jvps: int
    dim: int


def _is_float(x):
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def update_map_jacobian(loss_fn: Callable[[PyTree], jax.Array],
                        optimizer: optax.GradientTransformation, params: PyTree,
                        opt_state: PyTree) -> UpdateMapJacobian:
    """Linearise one step of ``optimizer`` on ``loss_fn`` at ``(params, opt_state)``.

    Args:
      loss_fn: scalar loss of params (close over the batch).
      optimizer: an optax GradientTransformation (``update(grads, state, params)`` is called).
      params, opt_state: the point; ``opt_state`` as returned by ``optimizer.init`` / ``update``.
    Returns:
      :class:`UpdateMapJacobian`. Jit-able (build it inside the jitted function that uses it).
    Cost: one forward+backward pass to linearise; each matvec about one HVP.
    Failure modes: NaN from Adam-type optimisers at zero second moment (module docstring).
    """
    leaves, treedef = jax.tree.flatten(opt_state)
    is_float = [_is_float(x) for x in leaves]
    float_leaves = [x for x, f in zip(leaves, is_float) if f]

    def merge(fl):
        it = iter(fl)
        return treedef.unflatten([next(it) if f else x for x, f in zip(leaves, is_float)])

    def step(p, fl):
        updates, new_state = optimizer.update(jax.grad(loss_fn)(p), merge(fl), p)
        new_leaves = jax.tree.leaves(new_state)
        return optax.apply_updates(p, updates), [x for x, f in zip(new_leaves, is_float) if f]

    (new_p, new_fl), lin = jax.linearize(step, params, float_leaves)
    flat, unravel = ravel_pytree((params, float_leaves))
    num_params = ravel_pytree(params)[0].shape[0]

    def ravel(dp, dl):
        return ravel_pytree((dp, dl))[0]

    def matvec(x):
        dp, dl = unravel(x)
        return ravel(*lin(dp, dl))

    p_def = jax.tree.structure(params)
    p_shapes = [jnp.shape(x) for x in jax.tree.leaves(params)]

    def params_like(x):
        try:
            ok = jax.tree.structure(x) == p_def
        except Exception:  # noqa: BLE001 - non-pytree nodes are simply not params-like
            return False
        return ok and [jnp.shape(y) for y in jax.tree.leaves(x)] == p_shapes

    def normal(manifold: ManifoldLike):
        def project(x):
            dp, dl = unravel(x)
            it = iter(dl)
            full = treedef.unflatten([next(it) if f else jnp.zeros(jnp.shape(z), flat.dtype)
                                      for z, f in zip(leaves, is_float)])
            proj = jax.tree.map(lambda s: manifold.normal(s) if params_like(s)
                                else jax.tree.map(jnp.zeros_like, s), full, is_leaf=params_like)
            pl = jax.tree.leaves(proj)
            return ravel(manifold.normal(dp), [x for x, f in zip(pl, is_float) if f])
        return project

    return UpdateMapJacobian(matvec, ravel, unravel, flat.shape[0], num_params, new_p,
                             merge(new_fl), normal)


class GrowthData(NamedTuple):
    """Array-only output of an :func:`update_map_radius_fn` function: ``hessenberg (m+1, m)``
    and ``depth`` (arnoldi; the small Hessenberg block is what leaves the device, its complex
    eigenvalues are taken on the host) or ``logs (m,)`` of the power-iteration growth
    (power; ``radius`` is then filled in on the device, NaN for arnoldi)."""

    hessenberg: jax.Array
    depth: jax.Array
    logs: jax.Array
    radius: jax.Array


def update_map_radius_fn(loss_fn: Callable[..., jax.Array],
                         optimizer: optax.GradientTransformation, *, num_iters: int = 40,
                         method: str = "arnoldi") -> Callable:
    """A pure function ``f(params, opt_state, manifold=None, *args, key=None) -> GrowthData``.

    Krylov (Arnoldi) or power iteration on ``P_N J P_N`` for the update map of ``optimizer``
    on ``loss_fn(params, *args)`` at ``(params, opt_state)``. jit- and vmap-able; one compile
    per shapes and manifold structure. Cost: ``num_iters`` JVPs of the step.
    """
    check_choice("method", method, ("arnoldi", "power"))
    check_positive("num_iters", num_iters, integer=True)

    def update_map_kernel(params, opt_state, man_dyn, args, key, man_static):
        jac = update_map_jacobian(lambda p: loss_fn(p, *args), optimizer, params, opt_state)
        manifold = resolve_manifold(man_static, man_dyn)
        proj = (lambda x: x) if manifold is None else jac.normal(manifold)
        op = lambda x: proj(jac.matvec(proj(x)))  # noqa: E731
        dtype = ravel_pytree(params)[0].dtype
        v0 = proj(jax.random.normal(key, (jac.dim,), jnp.float32).astype(dtype))
        if method == "arnoldi":
            res = arnoldi(op, v0, num_iters)
            return GrowthData(res.hessenberg, res.depth, jnp.zeros(num_iters, dtype),
                              jnp.asarray(jnp.nan, dtype))

        def body(_, carry):
            v, logs, i = carry
            w = op(v)
            nrm = jnp.linalg.norm(w)
            return w / jnp.where(nrm > 0, nrm, 1.0), logs.at[i].set(jnp.log(nrm)), i + 1

        v0 = v0 / jnp.linalg.norm(v0)
        _, logs, _ = jax.lax.fori_loop(0, num_iters, body, (v0, jnp.zeros(num_iters, dtype), 0))
        return GrowthData(jnp.zeros((num_iters + 1, num_iters), dtype), jnp.int32(num_iters),
                          logs, jnp.exp(jnp.mean(logs[num_iters // 2:])))

    kernel = jax.jit(update_map_kernel, static_argnames=("man_static",))

    def f(params, opt_state, manifold=None, *args, key=None):
        man_static, man_dyn = manifold_args(manifold)
        return kernel(params, opt_state, man_dyn, tuple(args), default_key(key), man_static)

    return f


def update_map_radius(loss_fn: Callable[[PyTree], jax.Array],
                      optimizer: optax.GradientTransformation, params: PyTree, opt_state: PyTree,
                      manifold: ManifoldLike | None = None, *, args: tuple = (),
                      num_iters: int = 40,
                      method: str = "arnoldi", key=None) -> GrowthFactor:
    """Predicted per-step growth factor of normal perturbations: spectral radius of P_N J P_N.

    Args:
      loss_fn: ``loss_fn(params, *args)`` -> scalar (``args`` traced: no retrace on new data).
      manifold: restrict to its augmented normal space (None: the whole augmented space).
      num_iters: Arnoldi depth or power-iteration steps (each one JVP of the step).
      method: ``arnoldi`` (Hessenberg eigenvalues in float64 NumPy; sees complex pairs, e.g.
        heavy-ball momentum) or ``power`` (radius = exp of the mean log growth over the second
        half of the iterations; converges like 1/t when the dominant eigenvalue is complex).
    Returns:
      :class:`GrowthFactor`.
    Failure modes: non-finite JVPs (Adam with nu = 0 and eps_root = 0) raise InputError.
    Reference: Golub & Van Loan §10.5 (Arnoldi).
    """
    check_choice("method", method, ("arnoldi", "power"))
    check_positive("num_iters", num_iters, integer=True)
    fn = cached(update_map_radius_fn, loss_fn, optimizer=optimizer, num_iters=num_iters,
                method=method)
    out = fn(params, opt_state, manifold, *args, key=key)
    bad = ("update-map linearisation is not finite (Adam/RMSProp at zero second moment nu: "
           "use eps_root > 0, e.g. optax.adam(lr, eps_root=1e-16))")
    if method == "arnoldi":
        hess, depth = jax.device_get((out.hessenberg, out.depth))
        if not np.all(np.isfinite(hess)):
            raise InputError(bad)
        vals = arnoldi_ritz(ArnoldiResult(hess, None, depth))
        radius = float(np.abs(vals[0])) if vals.size else 0.0
        dim = sum(int(np.size(x)) for x in jax.tree.leaves(params)) + sum(
            int(np.size(x)) for x in jax.tree.leaves(opt_state) if _is_float(x))
        return GrowthFactor(radius, vals, method, int(depth), int(dim))
    logs = np.asarray(out.logs, np.float64)
    if np.any(np.isnan(logs)) or np.any(logs == np.inf):
        raise InputError(bad)
    radius = float(np.exp(np.mean(logs[num_iters // 2:])))
    dim = sum(int(np.size(x)) for x in jax.tree.leaves(params)) + sum(
        int(np.size(x)) for x in jax.tree.leaves(opt_state) if _is_float(x))
    return GrowthFactor(radius, np.array([radius], complex), method, num_iters, int(dim))

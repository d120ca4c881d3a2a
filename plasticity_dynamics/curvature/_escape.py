"""Escape experiments: perturb a point of a manifold, train, and watch the distance grow.

The measured per-step growth factor (log-linear least squares on the distance to the manifold)
is compared with the prediction: the spectral radius of the update map's Jacobian restricted
to the normal directions (:func:`update_map_radius`). This is the empirical side of the
paper's stability discussion (PAPER.md §1.6): unstable / saddle manifolds are escaped from at a
rate set by the normal curvature and the optimiser.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from ..loop import run_steps
from ..errors import InputError, check_positive
from ._cache import cached
from ._protocol import (ManifoldLike, PyTree, default_key, float32_eps, manifold_args, np_ravel,
                        resolve_manifold)
from ._spectrum import normal_spectrum
from ._update_map import update_map_radius

DIRECTIONS = ("random", "normal", "eigenvector")


class EscapeResult(NamedTuple):
    """distances ``(steps+1,)`` (t = 0 is the perturbed point), losses ``(steps+1,)``,
    fitted_rate (per-step growth factor exp(slope)), predicted_rate (spectral radius of the
    normal update-map Jacobian, or None), fit_window ``(start, stop)`` step indices used,
    direction (unit pytree used), final_params."""

    distances: np.ndarray
    losses: np.ndarray
    fitted_rate: float
    predicted_rate: float | None
    fit_window: tuple
    direction: Any
    final_params: Any


def escape_run_fn(loss_fn: Callable[..., jax.Array], optimizer: optax.GradientTransformation, *,
                  steps: int, kind: str = "normal") -> Callable:
    """A pure function ``f(point, manifold, *args, direction=None, key=None, eps=1e-4,
    opt_state=None) -> (final_params, distances (steps+1,), losses (steps+1,), u, |u_raw|)``.

    Builds the unit direction (``kind``: ``random``, ``normal`` or ``given`` = the flat
    ``direction``, projected onto N), perturbs ``point`` by ``eps`` along it and runs ``steps``
    optimiser steps in one ``lax.scan``, recording the distance to the manifold and the loss.
    jit- and vmap-able (e.g. over seeds or directions); one compile per shapes and manifold
    structure. Cost: ``steps`` gradient steps.
    """
    check_positive("steps", steps, integer=True)

    def escape_kernel(point, man_dyn, args, direction, key, eps, opt_state, man_static):
        manifold = resolve_manifold(man_static, man_dyn)
        loss_p = lambda p: loss_fn(p, *args)  # noqa: E731
        flat, unravel = ravel_pytree(point)

        def normal(x):
            return ravel_pytree(manifold.normal(unravel(x)))[0]

        u = direction if kind == "given" else jax.random.normal(key, flat.shape, flat.dtype)
        if kind != "random":
            u = normal(u)
        nrm = jnp.linalg.norm(u)
        u = u / jnp.where(nrm > 0, nrm, 1.0)
        params = unravel(flat + eps * u)

        def one(carry, _):
            p, s = carry
            val, g = jax.value_and_grad(loss_p)(p)
            upd, s = optimizer.update(g, s, p)
            p = optax.apply_updates(p, upd)
            return (p, s), (manifold.distance(p), val)

        (p, _), (dist, losses) = run_steps(one, (params, opt_state), steps)
        d0 = manifold.distance(params)
        return (p, jnp.concatenate([d0[None], dist]), jnp.concatenate([losses, loss_p(p)[None]]),
                u, nrm)

    kernel = jax.jit(escape_kernel, static_argnames=("man_static",))

    def f(point, manifold, *args, direction=None, key=None, eps=1e-4, opt_state=None):
        man_static, man_dyn = manifold_args(manifold)
        state = optimizer.init(point) if opt_state is None else opt_state
        return kernel(point, man_dyn, tuple(args), direction, default_key(key), eps, state,
                      man_static)

    return f


def fit_growth_rate(distances, window=None, floor: float = 0.0):
    """Per-step growth factor ``exp(slope)`` of ``log d_t`` by least squares over ``window``.

    ``window=(start, stop)`` (default: the whole series); points with ``d_t <= floor`` or not
    finite are dropped. Returns ``(rate, (start, stop))``; raises InputError with < 2 points.
    """
    d = np.asarray(distances, np.float64)
    start, stop = (0, d.size) if window is None else window
    t = np.arange(start, stop)
    keep = np.isfinite(d[start:stop]) & (d[start:stop] > floor)
    if keep.sum() < 2:
        raise InputError(f"fit window={window!r} holds fewer than 2 usable distances")
    slope = np.polyfit(t[keep], np.log(d[start:stop][keep]), 1)[0]
    return float(np.exp(slope)), (int(start), int(stop))


def escape(loss_fn: Callable[[PyTree], jax.Array], optimizer: optax.GradientTransformation,
           point: PyTree, manifold: ManifoldLike, direction="normal", eps: float = 1e-4,
           steps: int = 100, key=None, *, args: tuple = (), opt_state=None, fit_window=None,
           predict: bool = True, radius_iters: int = 40) -> EscapeResult:
    """Perturb ``point`` by ``eps`` along ``direction``, train ``steps`` steps, fit the rate.

    Args:
      loss_fn: scalar loss ``loss_fn(params, *args)`` (full batch, deterministic).
      optimizer: optax GradientTransformation; its state starts at ``opt_state`` (default
        ``optimizer.init(point)``, i.e. state created at the perturbation: tied across clones).
      point: a point on ``manifold`` (it is not re-projected).
      direction: ``random`` (isotropic Gaussian in the full space, tangent part included),
        ``normal`` (Gaussian projected onto N), ``eigenvector`` (the normal-block Hessian
        eigenvector with the lowest eigenvalue, from :func:`normal_spectrum`), or a pytree
        (projected onto N). The direction is scaled to norm ``eps``.
      eps: perturbation size. steps: training steps (one ``lax.scan``).
      key: PRNG key for random directions (default ``PRNGKey(0)``).
      fit_window: ``(start, stop)`` step indices for the fit. Default: from ``steps // 4``
        (let the leading mode take over) up to the first step where the distance exceeds
        ``1e3 * eps`` (end of the linear regime), dropping distances under the float32
        rounding floor ``10 eps_f32 max|point|``.
      predict: compute the predicted rate with :func:`update_map_radius` (radius_iters JVPs).
    Returns:
      :class:`EscapeResult`.
    Cost: ``steps`` gradient steps (+ distance and loss evaluations) + ``radius_iters`` JVPs
      (+ a normal spectrum for ``eigenvector``).
    Failure modes: growth saturating (non-linear regime) or decaying into the rounding floor
      inside the window biases the fit; Adam at nu = 0 makes the prediction undefined.
    """
    check_positive("eps", eps)
    check_positive("steps", steps, integer=True)
    flat, unravel_rows = np_ravel(point)
    given = None
    if isinstance(direction, str):
        if direction not in DIRECTIONS:
            raise InputError(f"direction={direction!r} is not one of: {', '.join(DIRECTIONS)} or a pytree")
        kind = direction
        if direction == "eigenvector":
            spec = normal_spectrum(loss_fn, point, manifold, k=1, args=args)
            given = np.concatenate([np.asarray(x)[0].ravel() for x in jax.tree.leaves(spec.eigenvectors)])
            kind = "given"
    else:
        given, kind = np_ravel(direction)[0], "given"
        if given.shape != flat.shape:
            raise InputError(f"direction has {given.size} entries, params have {flat.size}")
    state0 = optimizer.init(point) if opt_state is None else opt_state
    run = cached(escape_run_fn, loss_fn, optimizer=optimizer, steps=steps, kind=kind)
    final, dist, losses, u, nrm = run(
        point, manifold, *args, direction=jnp.asarray(given, flat.dtype) if kind == "given" else None,
        key=key, eps=eps, opt_state=state0)
    if not float(nrm) > 0:
        raise InputError("direction has no component in the normal space (norm 0)")
    dist = np.asarray(dist, np.float64)
    if fit_window is None:
        over = np.nonzero(dist > 1e3 * eps)[0]
        stop = int(over[0]) if over.size else dist.size
        fit_window = (min(steps // 4, max(stop - 2, 0)), stop)
    floor = 10 * float32_eps() * float(np.max(np.abs(flat)))
    rate, window = fit_growth_rate(dist, fit_window, floor)
    predicted = None
    if predict:
        predicted = update_map_radius(loss_fn, optimizer, point, state0, manifold, args=args,
                                      num_iters=radius_iters).radius
    return EscapeResult(dist, np.asarray(losses, np.float64), rate, predicted, window,
                        unravel_rows(np.asarray(u)), final)

"""Stochastic trace and spectral-density estimates of the Hessian and of its normal block.

- Hutchinson: ``tr(A) = E[z^T A z]`` for Rademacher z (Hutchinson 1989); exact for diagonal A.
- Stochastic Lanczos quadrature (SLQ): for a unit probe v, m Lanczos steps give Gauss nodes
  theta_j and weights tau_j = (first component of the j-th Ritz vector)^2 with
  ``v^T f(A) v ~ sum_j tau_j f(theta_j)``, exact for polynomials of degree < 2m (Golub & Meurant
  2010; Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019 for network Hessians).

With a manifold, A is the normal block ``P_N H P_N`` on N (probes are projected onto N), so
traces and densities are over the normal_dim normal eigenvalues.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..errors import check_positive
from ._hvp import hvp
from ._krylov import LanczosResult, lanczos, lanczos_ritz
from ._protocol import (ManifoldLike, PyTree, _ById, bind, default_key, manifold_args,
                        resolve_manifold)


class TraceEstimate(NamedTuple):
    """estimate (float), stderr (standard error of the mean), samples ``(num_samples,)``."""

    estimate: float
    stderr: float
    samples: np.ndarray


class SpectralDensity(NamedTuple):
    """grid ``(g,)``; density ``(g,)`` (Gaussian-smoothed, integrates to about 1: multiply by
    ``dim`` for an eigenvalue count density); nodes and weights ``(probes, m)`` (Gauss
    quadrature per probe, zero weight after a Lanczos breakdown); dim (n or normal_dim);
    trace (the SLQ estimate ``dim * mean sum tau theta``); sigma (smoothing width)."""

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    dim: int
    trace: float
    sigma: float


def _ops(loss, manifold, params, args):
    flat, unravel = ravel_pytree(params)
    loss_p = bind(loss, args)

    def normal(x):
        if manifold is None:
            return x
        return ravel_pytree(manifold.normal(unravel(x)))[0]

    def op(x):
        return normal(ravel_pytree(hvp(loss_p, params, unravel(normal(x))))[0])

    return flat, normal, op


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype=dtype)


@partial(jax.jit, static_argnames=("loss", "manifold", "num_samples", "batch_size"))
def _hutch_kernel(params, args, key, man_dyn, *, loss, manifold, num_samples, batch_size):
    flat, normal, op = _ops(loss, resolve_manifold(manifold, man_dyn), params, args)
    z = _rademacher(key, (num_samples, flat.shape[0]), flat.dtype)
    return jax.lax.map(lambda v: jnp.vdot(normal(v), op(v)), z, batch_size=batch_size)


def hutchinson_trace(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, key=None,
                     num_samples: int = 32, *, manifold: ManifoldLike | None = None,
                     args: tuple = (), batch_size: int | None = 8) -> TraceEstimate:
    """Hutchinson estimate of ``tr(H)`` or, with a manifold, ``tr(P_N H P_N)``.

    ``loss_fn(params, *args)``; Rademacher probes drawn from ``key`` (default ``PRNGKey(0)``).

    Cost: num_samples HVPs. Variance: ``2 (||A||_F^2 - sum_i A_ii^2)`` per sample, so the
    estimate is exact for diagonal A and stderr shrinks like ``1/sqrt(num_samples)``.
    """
    check_positive("num_samples", num_samples, integer=True)
    man, man_dyn = manifold_args(manifold)
    s = np.asarray(_hutch_kernel(params, tuple(args), default_key(key), man_dyn,
                                 loss=_ById(loss_fn), manifold=man, num_samples=num_samples,
                                 batch_size=batch_size), np.float64)
    err = float(s.std(ddof=1) / np.sqrt(s.size)) if s.size > 1 else float("nan")
    return TraceEstimate(float(s.mean()), err, s)


@partial(jax.jit, static_argnames=("loss", "manifold", "num_iters", "num_probes"))
def _slq_kernel(params, args, key, man_dyn, *, loss, manifold, num_iters, num_probes):
    flat, normal, op = _ops(loss, resolve_manifold(manifold, man_dyn), params, args)
    z = jax.vmap(normal)(_rademacher(key, (num_probes, flat.shape[0]), flat.dtype))

    def one(v):
        res = lanczos(op, v, num_iters)
        return res.alphas, res.betas, res.depth

    a, b, d = jax.lax.map(one, z)
    return a, b, d, jnp.sum(z * z, axis=1)


def slq_density(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, key=None, *,
                num_iters: int = 30, num_probes: int = 8, manifold: ManifoldLike | None = None,
                args: tuple = (),
                grid=None, num_grid: int = 512, sigma: float | None = None) -> SpectralDensity:
    """Spectral density of H (or of the normal block) by stochastic Lanczos quadrature.

    Args:
      loss_fn: ``loss_fn(params, *args)`` -> scalar.
      num_iters: Lanczos depth m per probe (quadrature exact to degree 2m - 1).
      num_probes: Rademacher probes (projected onto N with a manifold). Each probe's weights
        are scaled by ``||probe||^2 / dim`` so the estimate of ``tr f(A) / dim`` is unbiased.
      grid: evaluation points (default ``num_grid`` points spanning the nodes +- 3 sigma).
      sigma: Gaussian smoothing width (default 1% of the node range, or 1e-3 when it is 0).
    Returns:
      :class:`SpectralDensity`.
    Cost: num_probes * m HVPs, memory (m+1) n per probe (probes run one after another).
    """
    check_positive("num_iters", num_iters, integer=True)
    check_positive("num_probes", num_probes, integer=True)
    dim = int(ravel_pytree(params)[0].shape[0]) if manifold is None else int(manifold.normal_dim)
    man, man_dyn = manifold_args(manifold)
    a, b, depth, z2 = _slq_kernel(params, tuple(args), default_key(key), man_dyn,
                                  loss=_ById(loss_fn), manifold=man, num_iters=num_iters,
                                  num_probes=num_probes)
    nodes = np.zeros((num_probes, num_iters))
    weights = np.zeros((num_probes, num_iters))
    for p in range(num_probes):  # tiny m x m eigenproblems in float64, outside jit
        res = LanczosResult(a[p], b[p], jnp.zeros((num_iters, 0)), depth[p])
        theta, coeffs, _ = lanczos_ritz(res)
        d = theta.size
        nodes[p, :d] = theta
        weights[p, :d] = coeffs[0, :] ** 2 * float(z2[p]) / dim
    used = weights > 0
    lo, hi = (nodes[used].min(), nodes[used].max()) if used.any() else (0.0, 0.0)
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 1e-3
    grid = np.linspace(lo - 3 * sigma, hi + 3 * sigma, num_grid) if grid is None else np.asarray(grid, float)
    gauss = np.exp(-0.5 * ((grid[:, None, None] - nodes[None]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    density = np.sum(gauss * weights[None], axis=(1, 2)) / num_probes
    trace = dim * float(np.sum(weights * nodes) / num_probes)
    return SpectralDensity(grid, density, nodes, weights, dim, trace, float(sigma))

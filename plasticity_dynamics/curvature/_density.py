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

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..errors import check_positive
from ._hvp import hvp
from ._cache import cached
from ._krylov import lanczos
from ._protocol import ManifoldLike, PyTree, keyed_kernel_fn, resolve_manifold
from ._spectrum import _masked_eigh


class TraceEstimate(NamedTuple):
    """estimate (float), stderr (standard error of the mean), samples ``(num_samples,)``
    (jax arrays when returned by a :func:`hutchinson_trace_fn` function)."""

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


def _ops(loss_fn, manifold, params, args):
    flat, unravel = ravel_pytree(params)

    def normal(x):
        if manifold is None:
            return x
        return ravel_pytree(manifold.normal(unravel(x)))[0]

    def op(x):
        return normal(ravel_pytree(hvp(lambda p: loss_fn(p, *args), params, unravel(normal(x))))[0])

    dim = flat.shape[0] if manifold is None else manifold.normal_dim
    return flat, normal, op, jnp.asarray(dim, flat.dtype)


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype=dtype)


def hutchinson_trace_fn(loss_fn: Callable[..., jax.Array], *, num_samples: int = 32,
                        batch_size: int | None = 8) -> Callable:
    """A pure function ``f(params, manifold=None, *args, key=None) -> TraceEstimate`` of arrays.

    Hutchinson estimate of ``tr(H)`` (``manifold=None``) or ``tr(P_N H P_N)`` for
    ``loss_fn(params, *args)``: ``samples (num_samples,)``, their mean and standard error.
    jit- and vmap-able like :func:`~._spectrum.normal_spectrum_fn` (one compile per params /
    args shapes and manifold structure; normal_dim never enters). Cost: num_samples HVPs,
    ``batch_size`` at a time.
    """
    check_positive("num_samples", num_samples, integer=True)

    def hutchinson_kernel(params, man_dyn, args, key, man_static):
        flat, normal, op, _ = _ops(loss_fn, resolve_manifold(man_static, man_dyn), params, args)
        z = _rademacher(key, (num_samples, flat.shape[0]), flat.dtype)
        s = jax.lax.map(lambda v: jnp.vdot(normal(v), op(v)), z, batch_size=batch_size)
        err = jnp.std(s, ddof=1) / jnp.sqrt(num_samples) if num_samples > 1 else jnp.nan
        return TraceEstimate(jnp.mean(s), err, s)

    return keyed_kernel_fn(hutchinson_kernel)


def hutchinson_trace(loss_fn: Callable[..., jax.Array], params: PyTree,
                     manifold: ManifoldLike | None = None, *, key=None, num_samples: int = 32,
                     args: tuple = (), batch_size: int | None = 8) -> TraceEstimate:
    """Hutchinson estimate of ``tr(H)`` or, with a manifold, ``tr(P_N H P_N)``.

    ``loss_fn(params, *args)``; Rademacher probes drawn from ``key`` (default ``PRNGKey(0)``).
    One-shot convenience on :func:`hutchinson_trace_fn` (cached per loss function).

    Cost: num_samples HVPs. Variance: ``2 (||A||_F^2 - sum_i A_ii^2)`` per sample, so the
    estimate is exact for diagonal A and stderr shrinks like ``1/sqrt(num_samples)``.
    """
    check_positive("num_samples", num_samples, integer=True)
    fn = cached(hutchinson_trace_fn, loss_fn, num_samples=num_samples, batch_size=batch_size)
    s = np.asarray(fn(params, manifold, *args, key=key).samples, np.float64)
    err = float(s.std(ddof=1) / np.sqrt(s.size)) if s.size > 1 else float("nan")
    return TraceEstimate(float(s.mean()), err, s)


class Quadrature(NamedTuple):
    """Array-only output of :func:`slq_density_fn`: Gauss nodes and weights ``(probes, m)``
    (zero weight after a Lanczos breakdown; weights scaled by ``||probe||^2 / dim``), dim (n or
    normal_dim) and the SLQ trace estimate ``dim * mean sum tau theta``."""

    nodes: jax.Array
    weights: jax.Array
    dim: jax.Array
    trace: jax.Array


def _gauss_rule(res, z2, dim):
    """Nodes and weights of one probe's Lanczos run (m x m eigh on the device, masked)."""
    m = res.alphas.shape[0]
    off = jnp.where(jnp.arange(1, m) < res.depth, res.betas[:-1], 0.0)
    t = jnp.diag(res.alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)
    theta, s = _masked_eigh(t, res.depth)
    used = jnp.arange(m) < res.depth
    return jnp.where(used, theta, 0.0), jnp.where(used, s[0, :] ** 2 * z2 / dim, 0.0)


def slq_density_fn(loss_fn: Callable[..., jax.Array], *, num_iters: int = 30,
                   num_probes: int = 8) -> Callable:
    """A pure function ``f(params, manifold=None, *args, key=None) -> Quadrature``.

    Stochastic Lanczos quadrature of H or of the normal block: ``num_probes`` Rademacher probes
    (projected onto N), m = ``num_iters`` Lanczos steps each (stopped at normal_dim, traced),
    Gauss rules from the m x m tridiagonals on the device. jit- and vmap-able; one compile per
    shapes and manifold structure. Cost: num_probes * m HVPs, memory (m+1) n per probe.
    """
    check_positive("num_iters", num_iters, integer=True)
    check_positive("num_probes", num_probes, integer=True)

    def slq_kernel(params, man_dyn, args, key, man_static):
        flat, normal, op, dim = _ops(loss_fn, resolve_manifold(man_static, man_dyn), params, args)
        z = jax.vmap(normal)(_rademacher(key, (num_probes, flat.shape[0]), flat.dtype))
        z2 = jnp.sum(z * z, axis=1)

        def one(c):
            v, w2 = c
            return _gauss_rule(lanczos(op, v, num_iters, max_depth=dim.astype(jnp.int32)), w2, dim)

        nodes, weights = jax.lax.map(one, (z, z2))
        return Quadrature(nodes, weights, dim, dim * jnp.sum(weights * nodes) / num_probes)

    return keyed_kernel_fn(slq_kernel)


def slq_density(loss_fn: Callable[..., jax.Array], params: PyTree,
                manifold: ManifoldLike | None = None, *, key=None, num_iters: int = 30,
                num_probes: int = 8, args: tuple = (), grid=None, num_grid: int = 512,
                sigma: float | None = None) -> SpectralDensity:
    """Spectral density of H (or of the normal block) by stochastic Lanczos quadrature.

    Args:
      loss_fn: ``loss_fn(params, *args)`` -> scalar.
      manifold: None (the whole space) or a manifold (the normal block, dim = normal_dim).
      num_iters: Lanczos depth m per probe (quadrature exact to degree 2m - 1).
      num_probes: Rademacher probes (projected onto N with a manifold). Each probe's weights
        are scaled by ``||probe||^2 / dim`` so the estimate of ``tr f(A) / dim`` is unbiased.
      grid: evaluation points (default ``num_grid`` points spanning the nodes +- 3 sigma).
      sigma: Gaussian smoothing width (default 1% of the node range, or 1e-3 when it is 0).
    Returns:
      :class:`SpectralDensity` (one-shot convenience on :func:`slq_density_fn`).
    Cost: num_probes * m HVPs, memory (m+1) n per probe (probes run one after another).
    """
    fn = cached(slq_density_fn, loss_fn, num_iters=num_iters, num_probes=num_probes)
    q = jax.device_get(fn(params, manifold, *args, key=key))
    nodes, weights = np.asarray(q.nodes, np.float64), np.asarray(q.weights, np.float64)
    dim = int(round(float(q.dim)))
    used = weights > 0
    lo, hi = (nodes[used].min(), nodes[used].max()) if used.any() else (0.0, 0.0)
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 1e-3
    grid = np.linspace(lo - 3 * sigma, hi + 3 * sigma, num_grid) if grid is None else np.asarray(grid, float)
    gauss = np.exp(-0.5 * ((grid[:, None, None] - nodes[None]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    density = np.sum(gauss * weights[None], axis=(1, 2)) / num_probes
    trace = dim * float(np.sum(weights * nodes) / num_probes)
    return SpectralDensity(grid, density, nodes, weights, dim, trace, float(sigma))

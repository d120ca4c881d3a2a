"""Kernel polynomial method (KPM) densities and Hutch++ traces, beside SLQ and Hutchinson.

KPM (Weiße, Wellein, Alvermann & Fehske 2006, Rev. Mod. Phys. 78, 275; Lin, Saad & Yang 2016
for spectral densities): map the spectrum of A into [-1, 1] with ``A~ = (A - c) / h``,
estimate the Chebyshev moments ``mu_j = tr T_j(A~) / dim`` with Rademacher probes (one matvec
per degree per probe, three-term recurrence), damp them with the Jackson kernel ``g_j`` (removes
Gibbs oscillations, keeps the density non-negative) and sum
``rho(x) = (g_0 mu_0 + 2 sum_j g_j mu_j T_j(x~)) / (pi h sqrt(1 - x~^2))``.
The bounds ``[c - h, c + h]`` come from ``bound_iters`` Lanczos steps on one probe: the extreme
Ritz values widened by the last residual norm ``beta_m`` and by 5% of the range, a heuristic
enclosure (Ritz values lie inside the spectrum; the margin covers the unconverged extremes).
An eigenvalue outside the bounds makes the recurrence grow: ``moments`` then exceed 1 in
modulus, which the one-shot :func:`kpm_density` reports as ``ConvergenceWarning``.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021, SOSA): with m matvecs, s = m // 3 of them sketch
``A S`` (S Rademacher), Q = orth(A S); ``tr(Q^T A Q)`` (s more matvecs) is exact on the top of
the spectrum and Hutchinson with the remaining m - 2s probes estimates the deflated rest
``tr((I - QQ^T) A (I - QQ^T))``. Error O(1/m) instead of Hutchinson's O(1/sqrt(m)) for matrices
with decaying spectra.
"""

from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConvergenceWarning, InputError, check_positive
from .. import linalg
from ._cache import cached
from ._density import TraceEstimate, _ops, _rademacher
from ._krylov import lanczos
from ._protocol import ManifoldLike, PyTree, keyed_kernel_fn, resolve_manifold
from ._spectrum import _masked_eigh


class ChebyshevMoments(NamedTuple):
    """Array-only output of :func:`kpm_density_fn`: ``moments (probes, D)`` per probe
    (``z^T T_j(A~) z / dim``, probes projected onto N), ``center`` c and ``half_width`` h of the
    spectrum map, ``dim`` (n or normal_dim) and the trace estimate ``dim * (c + h mean mu_1)``."""

    moments: jax.Array
    center: jax.Array
    half_width: jax.Array
    dim: jax.Array
    trace: jax.Array


class KPMDensity(NamedTuple):
    """grid ``(g,)``; density ``(g,)`` (integrates to about 1 over the bounds; multiply by dim
    for a count density); moments ``(D,)`` (probe mean, Jackson-undamped); damping ``(D,)``
    (Jackson g_j); bounds ``(lo, hi)``; dim; trace (KPM estimate)."""

    grid: np.ndarray
    density: np.ndarray
    moments: np.ndarray
    damping: np.ndarray
    bounds: tuple
    dim: int
    trace: float


def jackson(degree: int) -> np.ndarray:
    """Jackson damping factors ``g_j``, j = 0..D-1 (Weiße et al. 2006, eq. 71)."""
    n = degree + 1
    j = np.arange(degree)
    return ((n - j) * np.cos(np.pi * j / n) + np.sin(np.pi * j / n) / np.tan(np.pi / n)) / n


def _bounds(op, v0, iters, depth):
    res = lanczos(op, v0, iters, max_depth=depth)
    m = res.alphas.shape[0]
    off = jnp.where(jnp.arange(1, m) < res.depth, res.betas[:-1], 0.0)
    t = jnp.diag(res.alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)
    theta, _ = _masked_eigh(t, res.depth)
    lo, hi = theta[0], theta[jnp.maximum(res.depth - 1, 0)]
    pad = jnp.abs(res.betas[jnp.maximum(res.depth - 1, 0)]) + 0.05 * (hi - lo) + 1e-6 * (
        jnp.abs(hi) + jnp.abs(lo)) + 1e-12
    return lo - pad, hi + pad


def kpm_density_fn(loss_fn: Callable[..., jax.Array], *, num_iters: int = 30,
                   num_probes: int = 8, bound_iters: int = 20) -> Callable:
    """A pure function ``f(params, manifold=None, *args, key=None) -> ChebyshevMoments``.

    KPM moments of H (or of the normal block ``P_N H P_N`` on N). ``num_iters``: the Chebyshev
    degree D (D - 1 matvecs per probe, the same budget as SLQ's Lanczos depth); bound_iters
    Lanczos steps for the bounds. jit- and vmap-able; one compile per shapes and manifold
    structure. Cost: ``bound_iters + num_probes (D - 1)`` HVPs; memory 3 vectors per probe.
    """
    check_positive("num_iters", num_iters, integer=True)
    check_positive("num_probes", num_probes, integer=True)
    check_positive("bound_iters", bound_iters, integer=True)
    if num_iters < 2:
        raise InputError(f"num_iters={num_iters} must be >= 2 (Chebyshev degree)")

    def kpm_kernel(params, man_dyn, args, key, man_static):
        flat, normal, op, dim = _ops(loss_fn, resolve_manifold(man_static, man_dyn), params, args)
        kb, kz = jax.random.split(key)
        v0 = normal(_rademacher(kb, flat.shape, flat.dtype))
        lo, hi = _bounds(op, v0, bound_iters, dim.astype(jnp.int32))
        c, h = (hi + lo) / 2, (hi - lo) / 2
        z = jax.vmap(normal)(_rademacher(kz, (num_probes, flat.shape[0]), flat.dtype))

        def one(v):
            scaled = lambda x: (op(x) - c * normal(x)) / h  # noqa: E731
            t1 = scaled(v)

            def body(carry, _):
                tm, t = carry
                tn = 2 * scaled(t) - tm
                return (t, tn), jnp.vdot(v, tn)

            _, rest = jax.lax.scan(body, (v, t1), None, length=num_iters - 2)
            return jnp.concatenate([jnp.stack([jnp.vdot(v, v), jnp.vdot(v, t1)]), rest]) / dim

        mom = jax.lax.map(one, z)
        mean1 = jnp.mean(mom[:, 1])
        return ChebyshevMoments(mom, c, h, dim, dim * (c * jnp.mean(mom[:, 0]) + h * mean1))

    return keyed_kernel_fn(kpm_kernel)


def kpm_density(loss_fn: Callable[..., jax.Array], params: PyTree,
                manifold: ManifoldLike | None = None, *, key=None, num_iters: int = 30,
                num_probes: int = 8, args: tuple = (), grid=None, num_grid: int = 512,
                sigma: float | None = None, bound_iters: int = 20) -> KPMDensity:
    """Spectral density of H (or of the normal block) by the kernel polynomial method.

    Same interface as :func:`~._density.slq_density`: ``num_iters`` is the Chebyshev degree D
    (D - 1 HVPs per probe, like SLQ's Lanczos depth), ``num_probes`` Rademacher probes
    (projected onto N with a manifold; weights ``||z||^2 / dim`` as in SLQ), ``grid`` evaluation
    points (default ``num_grid`` Chebyshev-spaced points inside the bounds). ``sigma`` is
    accepted for interface compatibility and ignored: the Jackson kernel sets the resolution
    (about ``pi h / D``). Bounds from ``bound_iters`` Lanczos steps (module docstring).
    Returns :class:`KPMDensity`. Warns ConvergenceWarning when a moment exceeds 1.05 in modulus
    (an eigenvalue escaped the estimated bounds: raise ``bound_iters``).
    Cost: ``bound_iters + num_probes (D - 1)`` HVPs.
    """
    del sigma
    fn = cached(kpm_density_fn, loss_fn, num_iters=num_iters, num_probes=num_probes,
                bound_iters=bound_iters)
    q = jax.device_get(fn(params, manifold, *args, key=key))
    mom = np.asarray(q.moments, np.float64).mean(axis=0)
    c, h = float(q.center), float(q.half_width)
    dim = int(round(float(q.dim)))
    if np.max(np.abs(mom[1:]) / max(mom[0], 1e-300)) > 1.05:
        warnings.warn("kpm_density: Chebyshev moments exceed 1, an eigenvalue lies outside the "
                      f"estimated bounds [{c - h:.4g}, {c + h:.4g}]; raise bound_iters",
                      ConvergenceWarning, stacklevel=2)
    g = jackson(num_iters)
    if grid is None:
        k = np.arange(num_grid)
        grid = c + h * np.cos(np.pi * (k + 0.5) / num_grid)[::-1]
    grid = np.asarray(grid, np.float64)
    xt = np.clip((grid - c) / h, -1 + 1e-12, 1 - 1e-12)
    inside = np.abs((grid - c) / h) < 1
    tj = np.cos(np.arange(num_iters)[:, None] * np.arccos(xt)[None, :])
    coef = g * mom
    coef[1:] *= 2
    dens = (coef @ tj) / (np.pi * h * np.sqrt(1 - xt ** 2))
    dens = np.where(inside, dens, 0.0)
    return KPMDensity(grid, dens, mom, g, (c - h, c + h), dim, float(q.trace))


class _HutchPPData(NamedTuple):
    low_rank: jax.Array
    samples: jax.Array


def hutchpp_trace_fn(loss_fn: Callable[..., jax.Array], *, num_samples: int = 32,
                     batch_size: int | None = 8) -> Callable:
    """A pure function ``f(params, manifold=None, *args, key=None) -> TraceEstimate``.

    Hutch++ estimate of ``tr(H)`` or ``tr(P_N H P_N)`` with ``num_samples`` HVPs in all
    (>= 3): s = num_samples // 3 sketch products, s products for ``tr(Q^T A Q)``, and
    ``num_samples - 2 s`` Hutchinson probes of the deflated remainder. ``samples`` are
    ``tr(Q^T A Q) + g_i^T (I - QQ^T) A (I - QQ^T) g_i``: their mean is the estimate and their
    standard error the error given Q. jit- and vmap-able like :func:`hutchinson_trace_fn`.
    """
    check_positive("num_samples", num_samples, integer=True)
    if num_samples < 3:
        raise InputError(f"num_samples={num_samples} must be >= 3 for Hutch++ (sketch, "
                         "projection and residual probes)")
    s = num_samples // 3
    r = num_samples - 2 * s

    def hutchpp_kernel(params, man_dyn, args, key, man_static):
        flat, normal, op, _ = _ops(loss_fn, resolve_manifold(man_static, man_dyn), params, args)
        k1, k2 = jax.random.split(key)
        sk = jax.vmap(normal)(_rademacher(k1, (s, flat.shape[0]), flat.dtype))
        y = jax.lax.map(op, sk, batch_size=batch_size)  # (s, n): rows A s_i
        q, _ = linalg.qr(y.T)  # (n, s)
        aq = jax.lax.map(op, q.T, batch_size=batch_size)  # (s, n)
        low = jnp.sum(q.T * aq)
        g = jax.vmap(normal)(_rademacher(k2, (r, flat.shape[0]), flat.dtype))
        g = g - (g @ q) @ q.T
        samples = low + jax.lax.map(lambda v: jnp.vdot(v, op(v)), g, batch_size=batch_size)
        err = jnp.std(samples, ddof=1) / jnp.sqrt(r) if r > 1 else jnp.nan
        return TraceEstimate(jnp.mean(samples), err, samples)

    return keyed_kernel_fn(hutchpp_kernel)


def hutchpp_trace(loss_fn: Callable[..., jax.Array], params: PyTree,
                  manifold: ManifoldLike | None = None, *, key=None, num_samples: int = 32,
                  args: tuple = (), batch_size: int | None = 8) -> TraceEstimate:
    """Hutch++ estimate of ``tr(H)`` or, with a manifold, ``tr(P_N H P_N)``.

    Same interface as :func:`~._density.hutchinson_trace`; ``num_samples`` counts every HVP
    (sketch + projection + residual probes), so the two are compared at equal cost.
    Returns :class:`TraceEstimate` (``stderr`` from the residual probes, given the sketch).
    Cost: num_samples HVPs plus a QR of an ``(n, num_samples // 3)`` matrix.
    Reference: Meyer, Musco, Musco & Woodruff (2021), "Hutch++: optimal stochastic trace
    estimation", Algorithm 1.
    """
    fn = cached(hutchpp_trace_fn, loss_fn, num_samples=num_samples, batch_size=batch_size)
    out = jax.device_get(fn(params, manifold, *args, key=key))
    s = np.asarray(out.samples, np.float64)
    err = float(s.std(ddof=1) / np.sqrt(s.size)) if s.size > 1 else float("nan")
    return TraceEstimate(float(s.mean()), err, s)


__all__ = ["ChebyshevMoments", "KPMDensity", "jackson", "kpm_density", "kpm_density_fn",
           "hutchpp_trace", "hutchpp_trace_fn"]

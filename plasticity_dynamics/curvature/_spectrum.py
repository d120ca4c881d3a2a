"""Extreme eigenpairs of the Hessian restricted to a manifold's normal space, and the verdict.

The operator is ``A = P_N H P_N`` seen on N = range(P_N) only (Definition A.2 of the paper,
PAPER.md §1.6): stable if v^T H v > 0 for every nonzero normal v, unstable if < 0, saddle if
both signs occur. ``manifold=None`` means N = the whole parameter space (the top / bottom k of
the full Hessian). Three routes, all restricted to N:

- ``lanczos``: start in N, re-project every step (``P_N H P_N``), full reorthogonalisation,
  at most ``num_iters`` steps and never more than ``normal_dim`` (a traced stop).
- ``dense``: a basis of N padded to a static bucket of D = ``num_iters`` columns: the top
  left singular vectors of a projected, oversampled Gaussian sketch, the first ``normal_dim``
  of them kept (a traced column mask, the rest zero), re-projected and re-orthonormalised; the
  D x D block ``Q^T H Q`` from D HVPs; ``eigh`` with the padded rows shifted above the
  spectrum so they are never selected.
- ``lobpcg``: ``lobpcg_standard`` twice (lowest and highest end), tangent directions shifted out
  of the way so they can never be selected.

:func:`normal_spectrum_fn` builds the pure, jit- and vmap-able function (arrays out,
:class:`SpectrumData`); :func:`normal_spectrum` is the one-shot convenience with the verdict.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..errors import ConvergenceWarning, InputError, check_choice, check_positive
from .. import linalg
from ..loop import straight_line_preferred
from ._cache import cached
from ._hvp import hvp
from ._krylov import lanczos, lobpcg_lowest
from ._protocol import (ManifoldLike, PyTree, default_key, float32_eps, manifold_args,
                        resolve_manifold)

VERDICTS = ("stable", "unstable", "saddle", "degenerate")
METHODS = ("auto", "dense", "lanczos", "lobpcg")
# ``auto`` in normal_spectrum: dense when normal_dim <= this (or when 2k >= normal_dim: every
# eigenvalue is asked for), else lanczos. Lanczos stops at normal_dim, so it never needs more
# HVPs than the dense block, and the dense block adds a sketch, Gram eigensolves and padding:
# measured on XLA:CPU (benchmarks/curvature_fn.py, "crossover"), Lanczos is already faster
# at normal_dim 16.
DENSE_MAX_NORMAL_DIM = 8
DEFAULT_LANCZOS_DEPTH = 60
_OVERSAMPLE = 10


class SpectrumData(NamedTuple):
    """Array-only output of a :func:`normal_spectrum_fn` function (valid inside jit / vmap).

    eigenvalues: ``(2k,)`` the k lowest then the k highest Ritz values (ascending over the
      valid slots); NaN in invalid slots (fewer than 2k distinct eigenpairs: normal_dim < 2k).
    eigenvectors: pytree like ``params`` with a leading axis 2k (unit, in N; zero if invalid).
    residuals: ``(2k,)`` explicit ``||P_N H y - lambda y||`` of the returned vectors (2k HVPs).
    valid: ``(2k,)`` bool. num_hvps: int32, HVPs evaluated. normal_dim: int32 (traced).
    tolerance: zero threshold ``max(rtol max|lambda|, atol)`` for the verdict.
    converged: bool, every valid residual <= ``max(tolerance, 10 eps max|lambda|)`` (judged on
      the asked-for pairs only).
    ok: bool, the route could represent N: normal_dim > 0, and for ``dense`` normal_dim <= D
      with a full-rank sketch; for ``lobpcg`` 5k < normal_dim.
    """

    eigenvalues: jax.Array
    eigenvectors: Any
    residuals: jax.Array
    valid: jax.Array
    num_hvps: jax.Array
    normal_dim: jax.Array
    tolerance: jax.Array
    converged: jax.Array
    ok: jax.Array


class Spectrum(NamedTuple):
    """Extreme eigenpairs of the normal block ``P_N H P_N`` (restricted to N), on the host.

    eigenvalues: float64 ``(r,)`` ascending: the k lowest and the k highest (r <= 2k; all of
      them when normal_dim <= 2k).
    eigenvectors: pytree like ``params`` whose leaves have a leading axis r (unit norm, in N;
      device arrays, formed on the device).
    verdict: one of ``stable``, ``unstable``, ``saddle``, ``degenerate`` (see :func:`classify`).
    method: ``dense``, ``lanczos`` or ``lobpcg``.
    residuals: ``(r,)`` explicit residual norms ``||P_N H y - lambda y||`` of the returned
      vectors, every route.
    num_hvps: Hessian-vector products evaluated. wall_time: seconds, compile time included.
    tolerance: the zero threshold used for the verdict. normal_dim: dim N.
    """

    eigenvalues: np.ndarray
    eigenvectors: Any
    verdict: str
    method: str
    residuals: np.ndarray
    num_hvps: int
    wall_time: float
    tolerance: float
    normal_dim: int


def normal_hvp(loss_fn: Callable, params: PyTree, manifold: ManifoldLike | None, v: PyTree) -> PyTree:
    """``P_N H P_N v`` for ``loss_fn(params)`` (one HVP, two projections; ``manifold=None``:
    ``H v``). Jit-able."""
    if manifold is None:
        return hvp(loss_fn, params, v)
    return manifold.normal(hvp(loss_fn, params, manifold.normal(v)))


def classify(eigenvalues, tol: float) -> str:
    """Verdict from normal-block eigenvalues that include both extremes.

    An eigenvalue counts as zero when ``|lambda| <= tol``. ``degenerate`` when all of them are
    zero, or when the extremes are zero on one side (semidefinite: the sign of v^T H v along
    the null directions is not decided by second order); ``stable`` when ``lambda_min > tol``;
    ``unstable`` when ``lambda_max < -tol``; ``saddle`` when ``lambda_min < -tol`` and
    ``lambda_max > tol``.
    """
    ev = np.asarray(eigenvalues, np.float64)
    ev = ev[np.isfinite(ev)]
    if ev.size == 0 or np.max(np.abs(ev)) <= tol:
        return "degenerate"
    lo, hi = ev.min(), ev.max()
    if lo > tol:
        return "stable"
    if hi < -tol:
        return "unstable"
    if lo < -tol and hi > tol:
        return "saddle"
    return "degenerate"


# ------------------------------------------------------------------------------------------
# kernel pieces (all traced)


def _flat_ops(loss_fn, manifold, params, args):
    """(flat params, flat P_N, flat P_N H P_N, flat H, normal_dim) inside a kernel."""
    flat, unravel = ravel_pytree(params)

    def normal(x):
        if manifold is None:
            return x
        return ravel_pytree(manifold.normal(unravel(x)))[0]

    def hess(x):
        return ravel_pytree(hvp(lambda p: loss_fn(p, *args), params, unravel(x)))[0]

    def op(x):
        return normal(hess(normal(x)))

    d = flat.shape[0] if manifold is None else manifold.normal_dim
    return flat, unravel, normal, op, hess, jnp.asarray(d, jnp.int32)


def _masked_eigh(t, count):
    """Ascending eigenpairs of a symmetric (r, r) block whose first ``count`` rows/columns are
    valid and the rest zero: the padded diagonal is shifted to twice a Gershgorin bound, so
    the ``count`` valid eigenvalues come first."""
    r = t.shape[0]
    pad = jnp.arange(r) >= count
    t = jnp.where(pad[:, None] | pad[None, :], 0.0, t)
    bound = jnp.max(jnp.sum(jnp.abs(t), axis=1))
    shift = 2.0 * bound + jnp.finfo(t.dtype).tiny
    return linalg.eigh(t + jnp.diag(jnp.where(pad, shift, 0.0)))


def _select(theta, s, count, k):
    """Slots of the k lowest and k highest of the first ``count`` (valid) ascending pairs:
    ``(values (2k,), coefficient columns (r, 2k), valid (2k,))``."""
    r = theta.shape[0]
    j = jnp.arange(k)
    hi = count - k + j
    idx = jnp.clip(jnp.concatenate([j, hi]), 0, r - 1)
    valid = jnp.concatenate([j < count, hi >= k])
    return theta[idx], s[:, idx], valid


def _unroll_default(loss_fn, params, args) -> bool:
    """``loop="auto"``: unroll on XLA:CPU when the loss holds a convolution (trace time only)."""
    return straight_line_preferred(lambda p, a: loss_fn(p, *a), params, args)


def _finish(theta, coeffs, valid, basis_rows, *, flat, unravel, normal, op, hess, key, d, hvps,
            ok, rtol, atol, batch_size, unroll=False):
    """Ritz vectors on device, explicit residuals, tolerance and convergence: SpectrumData."""
    y = coeffs.T.astype(basis_rows.dtype) @ basis_rows  # (2k, n)
    y = jax.vmap(normal)(y)
    nrm = jnp.linalg.norm(y, axis=1, keepdims=True)
    y = jnp.where(valid[:, None], y / jnp.where(nrm > 0, nrm, 1.0), 0.0)
    u = jax.random.normal(key, flat.shape, flat.dtype)
    u = u / jnp.linalg.norm(u)
    # one HVP instance for the 2k residuals (P_N H P_N y) and the ||H||_F probe (H u): fewer
    # copies of the network's second derivative in the program, less compile time
    proj = jnp.arange(y.shape[0] + 1) < y.shape[0]

    def apply(c):
        x, on = c
        x = jnp.where(on, normal(x), x)
        out = hess(x)
        return jnp.where(on, normal(out), out)

    xs = (jnp.concatenate([y, u[None]]), proj)
    if unroll:  # straight-line: vmapped chunks of batch_size (default all) in a Python loop
        size = y.shape[0] + 1 if batch_size is None else batch_size
        out = jnp.concatenate([jax.vmap(apply)(jax.tree.map(lambda a, i=i: a[i:i + size], xs))
                               for i in range(0, y.shape[0] + 1, size)])
    else:
        out = jax.lax.map(apply, xs, batch_size=batch_size)
    ay, hu = out[:-1], out[-1]
    theta = theta.astype(flat.dtype)
    resid = jnp.linalg.norm(ay - theta[:, None] * y, axis=1)
    fro = jnp.sqrt(jnp.asarray(flat.shape[0], flat.dtype)) * jnp.linalg.norm(hu)
    eps = float32_eps()
    big = jnp.max(jnp.where(valid, jnp.abs(theta), 0.0))
    tol = jnp.maximum(rtol * big, 100 * eps * fro if atol is None else atol)
    worst = jnp.max(jnp.where(valid, resid, 0.0))
    converged = worst <= jnp.maximum(tol, 10 * eps * big)
    nan = jnp.asarray(jnp.nan, flat.dtype)
    return SpectrumData(jnp.where(valid, theta, nan), jax.vmap(unravel)(y),
                        jnp.where(valid, resid, nan), valid,
                        jnp.asarray(hvps, jnp.int32) + 1 + theta.shape[0], d, tol,
                        converged, ok & (d > 0))


def _orthonormalise(q, keep):
    """Symmetric (Loewdin) orthonormalisation of the kept columns of q (others stay zero):
    ``q (q^T q)^{-1/2}`` with the dropped block of the Gram matrix set to the identity."""
    gram = q.T @ q + jnp.diag(jnp.where(keep, 0.0, 1.0).astype(q.dtype))
    w, v = linalg.eigh(gram)
    inv = jnp.where(w > 0, 1.0 / jnp.sqrt(jnp.where(w > 0, w, 1.0)), 0.0)
    return jnp.where(keep[None, :], q @ (v * inv[None, :]) @ v.T, 0.0)


def _lanczos_route(params, manifold, args, key, *, loss_fn, k, m, rtol, atol, batch_size,
                   unroll=False):
    flat, unravel, normal, op, hess, d = _flat_ops(loss_fn, manifold, params, args)
    k1, k2 = jax.random.split(key)
    v0 = normal(jax.random.normal(k1, flat.shape, flat.dtype))
    res = lanczos(op, v0, m, max_depth=d, unroll=unroll)
    off = jnp.where(jnp.arange(1, m) < res.depth, res.betas[:-1], 0.0)
    t = jnp.diag(res.alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)
    theta, s = _masked_eigh(t, res.depth)
    theta, coeffs, valid = _select(theta, s, res.depth, k)
    return _finish(theta, coeffs, valid, res.basis, flat=flat, unravel=unravel, normal=normal,
                   op=op, hess=hess, key=k2, d=d, hvps=res.depth, ok=jnp.array(True), rtol=rtol,
                   atol=atol, batch_size=batch_size, unroll=unroll)


def _dense_route(params, manifold, args, key, *, loss_fn, k, m, rtol, atol, batch_size):
    flat, unravel, normal, op, hess, d = _flat_ops(loss_fn, manifold, params, args)
    k1, k2 = jax.random.split(key)
    # Oversampled sketch: with exactly d columns the sketch restricted to N is a square Gaussian
    # matrix whose last singular value is small with fair probability; D + p columns and the top
    # d left singular vectors are robust.
    sketch = jax.vmap(normal)(jax.random.normal(k1, (m + _OVERSAMPLE, flat.shape[0]), flat.dtype))
    # Top left singular vectors through the small Gram matrix (XLA:CPU's SVD / QR of a tall
    # n x (D + p) matrix cost seconds; the Gram route is matmuls and a (D + p)^2 eigh). The
    # sketch restricted to N is a well-conditioned Gaussian matrix (10 columns oversampled),
    # so squaring its condition number is harmless; two symmetric re-orthonormalisations
    # bring the kept columns to orthonormal in working precision.
    g_val, g_vec = linalg.eigh(sketch @ sketch.T)
    g_val, g_vec = g_val[::-1][:m], g_vec[:, ::-1][:, :m]
    sv = jnp.sqrt(jnp.maximum(g_val, 0.0))
    keep = jnp.arange(m) < d
    q = (g_vec.T @ sketch).T / jnp.where(keep & (sv > 0), sv, 1.0)[None, :]
    q = jnp.where(keep[None, :], jax.vmap(normal)(q.T).T, 0.0)  # re-project
    q = _orthonormalise(_orthonormalise(q, keep), keep)

    def column(c):  # padded columns skip their HVP (lax.cond; under vmap both branches run)
        qi, on = c
        return jax.lax.cond(on, op, jnp.zeros_like, qi)

    block = jax.lax.map(column, (q.T, keep), batch_size=batch_size) @ q  # Q^T A Q (rows A q_i)
    block = (block + block.T) / 2
    count = jnp.minimum(d, m)
    theta, s = _masked_eigh(block, count)
    theta, coeffs, valid = _select(theta, s, count, k)
    rank_ok = sv[jnp.clip(count - 1, 0, m - 1)] > 1e-3 * sv[0]
    return _finish(theta, coeffs, valid, q.T, flat=flat, unravel=unravel, normal=normal, op=op,
                   hess=hess, key=k2, d=d, hvps=count, ok=(d <= m) & rank_ok, rtol=rtol, atol=atol,
                   batch_size=batch_size)


def _lobpcg_route(params, manifold, args, key, *, loss_fn, k, m, rtol, atol, batch_size):
    flat, unravel, normal, op, hess, d = _flat_ops(loss_fn, manifold, params, args)
    k0, k1, k2, k3 = jax.random.split(key, 4)
    # shift s >= ||A_N||: Gershgorin bound of a short Lanczos tridiagonal plus its last beta
    pre = lanczos(op, normal(jax.random.normal(k0, flat.shape, flat.dtype)), 20)
    b = jnp.concatenate([jnp.zeros(1, flat.dtype), pre.betas])
    shift = 1.1 * (jnp.max(jnp.abs(pre.alphas) + b[:-1] + b[1:]) + pre.betas[-1]) + 1e-30

    def one_end(end):
        sign, kk = end

        def shifted(x):  # sign * A on N, +shift on T: tangent directions sit above every normal one
            xn = normal(x)
            return sign * op(xn) + shift * (x - xn)

        x0 = jax.vmap(normal, in_axes=1, out_axes=1)(
            jax.random.normal(kk, (flat.shape[0], k), flat.dtype))
        vals, vecs, iters = lobpcg_lowest(shifted, x0, shift=1.01 * shift, num_iters=m)
        return sign * vals, vecs.T, iters

    vals, vecs, iters = jax.lax.map(one_end, (jnp.array([1.0, -1.0], flat.dtype),
                                              jnp.stack([k1, k2])))
    vals, vecs = vals.reshape(-1), vecs.reshape(2 * k, -1)
    order = jnp.argsort(vals)
    eye = jnp.eye(2 * k, dtype=flat.dtype)
    return _finish(vals[order], eye[:, order], jnp.ones(2 * k, bool), vecs, flat=flat,
                   unravel=unravel, normal=normal, op=op, hess=hess, key=k3, d=d,
                   hvps=pre.depth + k * (jnp.sum(iters) + 4), ok=5 * k < d, rtol=rtol,
                   atol=atol, batch_size=batch_size)


_ROUTES = {"lanczos": _lanczos_route, "dense": _dense_route, "lobpcg": _lobpcg_route}


def normal_spectrum_fn(loss_fn: Callable[..., jax.Array], *, k: int = 5, method: str = "auto",
                       num_iters: int | None = None, rtol: float | None = None,
                       atol: float | None = None, batch_size: int | None = None,
                       loop: str = "auto") -> Callable:
    """A pure function ``f(params, manifold, *args, key=None) -> SpectrumData``.

    ``f`` returns the k lowest and k highest eigenpairs of ``P_N H P_N`` on N (``manifold=None``:
    of the full Hessian H) of ``loss_fn(params, *args)``. It is a ``jax.jit`` function: call it
    directly, inside your own ``jit``, or under ``jax.vmap`` over a leading seed axis of
    ``params``, ``manifold`` (a pytree manifold such as ``pdx.manifolds.Manifold``, stacked) and
    ``args``.

    Compiles once per (params structure and shapes, args shapes, manifold pytree structure, k,
    method, num_iters), whatever the manifold's ``normal_dim``: the normal dimension is a
    *traced* value. Lanczos stops at ``min(num_iters, normal_dim)`` steps (traced stop); the
    dense route pads N's basis to a static bucket of D = ``num_iters`` columns and masks the
    columns past ``normal_dim`` (``ok`` is False when normal_dim > D). Parameters, batch,
    masks and bases are traced arguments, never constants folded into the kernel. Ritz
    vectors are formed on the device; nothing leaves it unless the caller asks. Matmuls
    (HVPs included) run at ``highest`` precision: no TF32 / bf16 passes on accelerators.

    A manifold that is not a pytree of arrays (a hand-written ManifoldLike object) is a static
    argument compared by identity (no vmap over it).

    Args:
      loss_fn: ``loss_fn(params, *args)`` -> scalar.
      k: eigenpairs wanted at each end (static).
      method: ``lanczos``, ``dense``, ``lobpcg`` or ``auto`` (static; here: ``dense`` when the
        whole parameter space fits the bucket, n <= num_iters, else ``lanczos``; the one-shot
        :func:`normal_spectrum` knows normal_dim and picks by cost).
      num_iters: Lanczos depth (default ``max(60, 6k)``), dense bucket D (default 64) or LOBPCG
        iterations (default 100).
      rtol, atol: zero tolerance ``tol = max(rtol * max|lambda|, atol)``. Defaults:
        ``rtol = sqrt(eps_f32)`` (about 3.5e-4) and ``atol = 100 eps_f32 ||H||_F`` with
        ``||H||_F`` estimated as ``sqrt(n) ||H u||`` for one random unit u.
      batch_size: HVPs evaluated together for the dense block and the residuals (None: one
        at a time, the memory of one HVP; with ``loop="unroll"``: all 2k+1 residual HVPs at once).
      loop: how the Lanczos route runs its m steps (static): ``scan`` (one loop body, compile
        time independent of m), ``unroll`` (straight-line code: m copies of the HVP, compile
        time linear in m) or ``auto`` = ``unroll`` when the backend is CPU and ``loss_fn``
        contains a convolution, else ``scan``. XLA:CPU runs convolution gradients inside loop
        bodies about 20x slower than at top level (jax-ml/jax#12868; measured in
        ``benchmarks/curvature_fn.py``), which made ResNet-18 spectra impractical on CPU.
    Cost: lanczos ``min(m, d)`` HVPs + O(m^2 n); dense ``min(d, D)`` HVPs (padded columns skip
      theirs, except under vmap) + O(n D^2) (SVD of the sketch);
      lobpcg about 2k (iterations + 4) HVPs + 20. Every route adds 2k HVPs for the explicit
      residuals and 1 for ``atol``.
    Reference: Golub & Van Loan §10.1; Paige (1972); Definition A.2 of the paper.
    """
    check_choice("method", method, METHODS)
    check_positive("k", k, integer=True)
    if num_iters is not None:
        check_positive("num_iters", num_iters, integer=True)
    rtol = float(np.sqrt(float32_eps())) if rtol is None else float(rtol)
    atol = None if atol is None else float(atol)

    check_choice("loop", loop, ("auto", "scan", "unroll"))

    def normal_spectrum_kernel(params, man_dyn, args, key, man_static, route, m):
        manifold = resolve_manifold(man_static, man_dyn)
        extra = {}
        if route == "lanczos":
            extra["unroll"] = loop == "unroll" or (loop == "auto" and _unroll_default(loss_fn, params, args))
        with jax.default_matmul_precision("highest"):  # no TF32 / bf16 passes on accelerators
            return _ROUTES[route](params, manifold, args, key, loss_fn=loss_fn, k=k, m=m,
                                  rtol=rtol, atol=atol, batch_size=batch_size, **extra)

    kernel = jax.jit(normal_spectrum_kernel, static_argnames=("man_static", "route", "m"))

    def f(params, manifold=None, *args, key=None):
        n = sum(int(np.size(x)) for x in jax.tree.leaves(params))  # shapes only: traced is fine
        route = method
        if route == "auto":
            route = "dense" if n <= (num_iters or 64) else "lanczos"
        if num_iters is not None:
            m = num_iters
        else:
            m = {"lanczos": max(DEFAULT_LANCZOS_DEPTH, 6 * k), "dense": 64, "lobpcg": 100}[route]
        if route == "dense":
            m = min(m, n)
        man_static, man_dyn = manifold_args(manifold)
        return kernel(params, man_dyn, tuple(args), default_key(key), man_static, route, m)

    f.method, f.k, f.num_iters, f.loop = method, k, num_iters, loop
    return f


def _bucket(d: int, n: int) -> int:
    """Dense bucket for a normal dimension: the next power of two (at least 8), capped at n."""
    return int(min(n, max(8, 1 << max(int(d) - 1, 0).bit_length())))


def normal_spectrum(loss_fn: Callable[..., jax.Array], params: PyTree,
                    manifold: ManifoldLike | None = None, k: int = 5, method: str = "auto", *,
                    args: tuple = (), num_iters: int | None = None, key=None,
                    rtol: float | None = None, atol: float | None = None,
                    batch_size: int | None = None,
                    dense_max: int = DENSE_MAX_NORMAL_DIM) -> Spectrum:
    """The k lowest and k highest eigenpairs of H restricted to the normal space, and a verdict.

    One-shot convenience on top of :func:`normal_spectrum_fn` (same kernels; the constructed
    function is cached per loss function, held weakly, so passing the same ``loss_fn`` again
    with new params, new ``args`` of the same shapes and a manifold of the same structure
    reuses the compiled kernel, whatever the manifold's normal_dim).

    Args:
      loss_fn: scalar loss ``loss_fn(params, *args)``.
      params: a point on the manifold (pytree, float32 usually).
      manifold: a :class:`ManifoldLike` (``normal`` projector and ``normal_dim`` are used), or
        None for the whole parameter space (extreme eigenpairs of the full Hessian).
      k: eigenpairs wanted at each end.
      method: ``auto`` (by cost: ``dense`` when ``normal_dim <= dense_max`` or ``2k >=
        normal_dim``, i.e. every eigenvalue is asked for; else ``lanczos``), ``dense``,
        ``lanczos`` or ``lobpcg``.
      args: extra (traced) arguments of ``loss_fn``, e.g. a batch ``(x, y)``.
      num_iters: Lanczos depth (default ``max(60, 6k)``, stopped at normal_dim), LOBPCG
        iterations (default 100); the dense bucket is the next power of two >= normal_dim.
      key: PRNG key for the start vectors (default ``PRNGKey(0)``).
      rtol, atol: zero tolerance (see :func:`normal_spectrum_fn`).
      batch_size: HVPs evaluated together (dense block and residuals).
    Returns:
      :class:`Spectrum` (host eigenvalues, residuals; eigenvectors on the device).
    Failure modes: Krylov Ritz values lie inside the true spectrum, so ``saddle`` and strict
      signs found are certain, but a ``stable`` / ``unstable`` verdict from an unconverged run
      can miss an eigenvalue of the other sign beyond the Ritz extremes: check ``residuals``
      (a ConvergenceWarning is issued when an asked-for pair's residual exceeds ``tol``).
      Raises InputError for ``normal_dim`` 0, a normal_dim above the projector's rank, bad k or
      method.
    """
    t0 = time.perf_counter()
    check_choice("method", method, METHODS)
    check_positive("k", k, integer=True)
    n = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    d = n if manifold is None else int(manifold.normal_dim)
    if d <= 0:
        raise InputError(f"manifold.normal_dim={d} must be > 0 (no normal directions to analyse)")
    if method == "auto":
        method = "dense" if (d <= dense_max or 2 * k >= d) else "lanczos"
    if method == "lobpcg" and 5 * k >= d:
        raise InputError(f"method='lobpcg' needs 5*k < normal_dim, got k={k}, normal_dim={d}")
    if num_iters is not None:
        check_positive("num_iters", num_iters, integer=True)
    m = _bucket(d, n) if method == "dense" else num_iters
    fn = cached(normal_spectrum_fn, loss_fn, k=k, method=method, num_iters=m, rtol=rtol,
                atol=atol, batch_size=batch_size)
    data = fn(params, manifold, *args, key=key)
    small = jax.device_get((data.eigenvalues, data.residuals, data.valid, data.num_hvps,
                            data.tolerance, data.converged, data.ok))
    theta, resid, valid, hvps, tol, converged, ok = small
    if not ok:
        raise InputError(f"manifold.normal_dim={d} exceeds the rank of manifold.normal "
                         "(the sketched basis of the normal space is rank-deficient)")
    idx = np.flatnonzero(valid)
    theta = np.asarray(theta, np.float64)[idx]
    resid = np.asarray(resid, np.float64)[idx]
    if not converged:
        warnings.warn(f"normal_spectrum ({method}): largest residual {np.max(resid):.2e} exceeds "
                      f"tolerance {float(tol):.2e} (extreme pairs: {resid[0]:.2e}, {resid[-1]:.2e}); "
                      "raise num_iters", ConvergenceWarning, stacklevel=2)
    vecs = jax.tree.map(lambda a: a[idx], data.eigenvectors)
    return Spectrum(theta, vecs, classify(theta, float(tol)), method, resid, int(hvps),
                    time.perf_counter() - t0, float(tol), d)


__all__ = ["Spectrum", "SpectrumData", "classify", "normal_hvp", "normal_spectrum",
           "normal_spectrum_fn", "DENSE_MAX_NORMAL_DIM", "VERDICTS", "METHODS"]

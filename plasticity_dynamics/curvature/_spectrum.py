"""Extreme eigenpairs of the Hessian restricted to a manifold's normal space, and the verdict.

The operator is ``A = P_N H P_N`` seen on N = range(P_N) only (Definition A.2 of the paper,
PAPER.md §1.6): stable if v^T H v > 0 for every nonzero normal v, unstable if < 0, saddle if
both signs occur. Three routes, all restricted to N:

- ``dense``: an orthonormal basis Q (n x d) of N from a projected, oversampled Gaussian sketch
  (top d left singular vectors, re-projected and re-orthonormalised),
  the d x d block ``Q^T H Q`` from d HVPs, ``numpy.linalg.eigh`` in float64.
- ``lanczos``: start in N, re-project every step (``P_N H P_N``), full reorthogonalisation.
- ``lobpcg``: ``lobpcg_standard`` twice (lowest and highest end), tangent directions shifted out
  of the way so they can never be selected.
"""

from __future__ import annotations

import time
import warnings
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..errors import ConvergenceWarning, InputError, check_choice, check_positive
from ._hvp import hvp
from ._krylov import lanczos, lanczos_ritz, lobpcg_lowest
from ._protocol import (ManifoldLike, PyTree, _ById, bind, default_key, float32_eps,
                        manifold_args, np_ravel, resolve_manifold)

VERDICTS = ("stable", "unstable", "saddle", "degenerate")
METHODS = ("auto", "dense", "lanczos", "lobpcg")
DENSE_MAX_NORMAL_DIM = 1500
DENSE_MAX_ENTRIES = 250_000_000  # n * normal_dim floats for the dense basis (1 GB in float32)


class Spectrum(NamedTuple):
    """Extreme eigenpairs of the normal block ``P_N H P_N`` (restricted to N).

    eigenvalues: float64 ``(r,)`` ascending: the k lowest and the k highest (r <= 2k; all of
      them when normal_dim <= 2k).
    eigenvectors: pytree like ``params`` whose leaves have a leading axis r (unit norm, in N).
    verdict: one of ``stable``, ``unstable``, ``saddle``, ``degenerate`` (see :func:`classify`).
    method: ``dense``, ``lanczos`` or ``lobpcg``.
    residuals: ``(r,)`` residual norms ``||P_N H y - lambda y||``: explicit for lobpcg; Paige's
      estimate ``|beta_m s_m|`` for lanczos (equal to the explicit one up to rounding, thanks to
      full reorthogonalisation); ``||B s - lambda s||`` of the float64 eigensolve of the float32
      block ``B = Q^T H Q`` for dense.
    num_hvps: Hessian-vector products used. wall_time: seconds, compile time included.
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


def normal_hvp(loss_fn: Callable, params: PyTree, manifold: ManifoldLike, v: PyTree) -> PyTree:
    """``P_N H P_N v`` for ``loss_fn(params)`` (one HVP, two projections). Jit-able."""
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


def _flat_fns(loss, manifold, params, args):
    flat, unravel = ravel_pytree(params)
    loss_p = bind(loss, args)

    def normal(x):
        return ravel_pytree(manifold.normal(unravel(x)))[0]

    def hess(x):
        return ravel_pytree(hvp(loss_p, params, unravel(x)))[0]

    return flat, normal, hess


def _frobenius_estimate(hess, flat, key):
    u = jax.random.normal(key, flat.shape, flat.dtype)
    u = u / jnp.linalg.norm(u)
    return jnp.sqrt(jnp.asarray(flat.shape[0], flat.dtype)) * jnp.linalg.norm(hess(u))


_OVERSAMPLE = 10


@partial(jax.jit, static_argnames=("loss", "manifold", "d", "batch_size"))
def _dense_kernel(params, args, key, man_dyn, *, loss, manifold, d, batch_size):
    flat, normal, hess = _flat_fns(loss, resolve_manifold(manifold, man_dyn), params, args)
    k1, k2 = jax.random.split(key)
    # Oversampled sketch: with exactly d columns the sketch restricted to N is a square Gaussian
    # matrix whose last QR pivot is |N(0,1)|-small with fair probability (a rank-d projector then
    # looked rank-deficient); d + p columns and the top d left singular vectors are robust.
    p = _OVERSAMPLE
    sketch = jax.vmap(normal)(jax.random.normal(k1, (d + p, flat.shape[0]), flat.dtype))
    u, sv, _ = jnp.linalg.svd(sketch.T, full_matrices=False)
    q, _ = jnp.linalg.qr(jax.vmap(normal)(u[:, :d].T).T)  # re-project, re-orthonormalise
    block = jax.lax.map(hess, q.T, batch_size=batch_size) @ q  # Q^T H Q (rows H q_i)
    return q, block, sv[:d], _frobenius_estimate(hess, flat, k2)


@partial(jax.jit, static_argnames=("loss", "manifold", "num_iters"))
def _lanczos_kernel(params, args, key, man_dyn, *, loss, manifold, num_iters):
    flat, normal, hess = _flat_fns(loss, resolve_manifold(manifold, man_dyn), params, args)
    k1, k2 = jax.random.split(key)
    v0 = normal(jax.random.normal(k1, flat.shape, flat.dtype))
    res = lanczos(lambda x: normal(hess(normal(x))), v0, num_iters)
    return res, _frobenius_estimate(hess, flat, k2)


@partial(jax.jit, static_argnames=("loss", "manifold", "k", "num_iters", "batch_size"))
def _lobpcg_kernel(params, args, key, man_dyn, *, loss, manifold, k, num_iters, batch_size):
    flat, normal, hess = _flat_fns(loss, resolve_manifold(manifold, man_dyn), params, args)
    k0, k1, k2 = jax.random.split(key, 3)
    a_n = lambda x: normal(hess(normal(x)))  # noqa: E731
    # shift s >= ||A_N||: Gershgorin bound of a short Lanczos tridiagonal plus its last beta
    pre = lanczos(a_n, normal(jax.random.normal(k0, flat.shape, flat.dtype)), 20)
    b = jnp.concatenate([jnp.zeros(1, flat.dtype), pre.betas])
    shift = 1.1 * (jnp.max(jnp.abs(pre.alphas) + b[:-1] + b[1:]) + pre.betas[-1]) + 1e-30

    def one_end(args):
        sign, kk = args

        def op(x):  # sign * A on N, +shift on T: tangent directions sit above every normal one
            xn = normal(x)
            return sign * a_n(xn) + shift * (x - xn)

        x0 = jax.vmap(normal, in_axes=1, out_axes=1)(
            jax.random.normal(kk, (flat.shape[0], k), flat.dtype))
        vals, vecs, iters = lobpcg_lowest(op, x0, shift=1.01 * shift, num_iters=num_iters)
        return sign * vals, vecs.T, iters

    vals, vecs, iters = jax.lax.map(one_end, (jnp.array([1.0, -1.0], flat.dtype),
                                              jnp.stack([k1, k2])))
    vals, vecs = vals.reshape(-1), vecs.reshape(2 * k, -1)
    av = jax.lax.map(a_n, vecs, batch_size=batch_size)
    resid = jnp.linalg.norm(av - vals[:, None] * vecs, axis=1)
    return vals, vecs, resid, jnp.sum(iters), pre.depth, _frobenius_estimate(hess, flat, k2)


def _select(theta, k):
    r = theta.shape[0]
    return np.arange(r) if r <= 2 * k else np.concatenate([np.arange(k), np.arange(r - k, r)])


def normal_spectrum(loss_fn: Callable[[PyTree], jax.Array], params: PyTree,
                    manifold: ManifoldLike, k: int = 5, method: str = "auto", *,
                    args: tuple = (), num_iters: int | None = None, key=None,
                    rtol: float | None = None,
                    atol: float | None = None, batch_size: int = 64,
                    dense_max: int = DENSE_MAX_NORMAL_DIM) -> Spectrum:
    """The k lowest and k highest eigenpairs of H restricted to the normal space, and a verdict.

    Args:
      loss_fn: scalar loss ``loss_fn(params, *args)``. Passing the same function again (with
        new params, new ``args`` of the same shapes, and the same manifold object or, for a
        pytree manifold such as ``pdx.manifolds.Manifold``, one of the same structure) reuses
        the compiled kernels: no retrace along a trajectory.
      params: a point on the manifold (pytree, float32 usually).
      manifold: a :class:`ManifoldLike` (``normal`` projector and ``normal_dim`` are used).
      k: eigenpairs wanted at each end.
      args: extra (traced) arguments of ``loss_fn``, e.g. a batch ``(x, y)``.
      method: ``auto`` (dense when ``normal_dim <= dense_max`` and ``n * normal_dim`` fits in
        about 1 GB, else lanczos), ``dense``, ``lanczos`` or ``lobpcg``.
      num_iters: Lanczos depth (default ``min(normal_dim, max(60, 6 k))``) or LOBPCG iterations
        (default 100).
      key: PRNG key for the start vectors (default ``PRNGKey(0)``).
      rtol, atol: zero tolerance ``tol = max(rtol * max|lambda|, atol)``. Defaults:
        ``rtol = sqrt(eps_f32)`` (about 3.5e-4, the accuracy of float32 Ritz values of an
        ill-conditioned block) and ``atol = 100 eps_f32 ||H||_F`` with ``||H||_F`` estimated as
        ``sqrt(n) ||H u||`` for one random unit u (the rounding level of float32 HVPs).
      batch_size: HVPs evaluated together (dense path and lobpcg residuals).
    Returns:
      :class:`Spectrum`.
    Cost: dense: normal_dim HVPs, O(n d^2) for the basis, O(d^3) float64 eigh. lanczos: m HVPs +
      O(m^2 n). lobpcg: about 2 k (iterations + 2) HVPs + a 20-step Lanczos for the shift.
      Every route adds 1 HVP for ``atol``; lobpcg adds 2k for its explicit residuals.
    Failure modes: Krylov Ritz values lie inside the true spectrum, so ``saddle`` and strict
      signs found are certain, but a ``stable`` / ``unstable`` verdict from an unconverged run
      can miss an eigenvalue of the other sign beyond the Ritz extremes: check ``residuals``
      (a ConvergenceWarning is issued when they exceed ``tol``). Raises InputError for
      ``normal_dim`` 0, bad k or method.
    """
    t0 = time.perf_counter()
    check_choice("method", method, METHODS)
    check_positive("k", k, integer=True)
    d = int(manifold.normal_dim)
    if d <= 0:
        raise InputError(f"manifold.normal_dim={d} must be > 0 (no normal directions to analyse)")
    flat, unravel_rows = np_ravel(params)
    n = flat.shape[0]
    key = default_key(key)
    loss, (man, man_dyn) = _ById(loss_fn), manifold_args(manifold)
    if method == "auto":
        method = "dense" if (d <= dense_max and n * d <= DENSE_MAX_ENTRIES) else "lanczos"
    kw = dict(loss=loss, manifold=man)

    if method == "dense":
        q, block, rdiag, fro = _dense_kernel(params, tuple(args), key, man_dyn, d=d, batch_size=min(batch_size, d), **kw)
        rdiag = np.asarray(rdiag)
        if rdiag.min() <= 1e-3 * rdiag.max():
            raise InputError(f"manifold.normal_dim={d} exceeds the rank of manifold.normal "
                             f"(sketch singular values min/max = {rdiag.min() / rdiag.max():.1e})")
        b = np.asarray(block, np.float64)
        theta, s = np.linalg.eigh((b + b.T) / 2)
        idx = _select(theta, k)
        theta, s = theta[idx], s[:, idx]
        resid = np.linalg.norm(b @ s - theta * s, axis=0)  # ||Q^T H Q s - theta s||, float64
        vecs = (np.asarray(q) @ s.astype(flat.dtype)).T
        hvps = d + 1
    elif method == "lanczos":
        m = min(d, max(60, 6 * k)) if num_iters is None else int(num_iters)
        check_positive("num_iters", m, integer=True)
        res, fro = _lanczos_kernel(params, tuple(args), key, man_dyn, num_iters=m, **kw)
        theta, coeffs, resid = lanczos_ritz(res)
        idx = _select(theta, k)
        theta, resid = theta[idx], resid[idx]
        vecs = coeffs[:, idx].T.astype(flat.dtype) @ np.asarray(res.basis)[:int(res.depth)]
        hvps = int(res.depth) + 1
    else:
        if 5 * k >= d:
            raise InputError(f"method='lobpcg' needs 5*k < normal_dim, got k={k}, normal_dim={d}")
        m = 100 if num_iters is None else int(num_iters)
        check_positive("num_iters", m, integer=True)
        vals, vecs, resid, iters, pre_depth, fro = _lobpcg_kernel(
            params, tuple(args), key, man_dyn, k=k, num_iters=m, batch_size=min(batch_size, 2 * k), **kw)
        theta = np.asarray(vals, np.float64)
        order = np.argsort(theta)
        theta, vecs, resid = theta[order], np.asarray(vecs)[order], np.asarray(resid)[order]
        hvps = int(pre_depth) + 1 + k * (int(iters) + 4) + 2 * k

    eps = float32_eps()
    rtol = float(np.sqrt(eps)) if rtol is None else float(rtol)
    atol = 100 * eps * float(fro) if atol is None else float(atol)
    tol = max(rtol * float(np.max(np.abs(theta))) if len(theta) else 0.0, atol)
    if len(resid) and np.max(resid) > max(tol, 10 * eps * float(np.max(np.abs(theta)))):
        warnings.warn(f"normal_spectrum ({method}): largest residual {np.max(resid):.2e} exceeds "
                      f"tolerance {tol:.2e} (extreme pairs: {resid[0]:.2e}, {resid[-1]:.2e}); "
                      "raise num_iters", ConvergenceWarning, stacklevel=2)
    eigvecs = unravel_rows(vecs)
    return Spectrum(np.asarray(theta, np.float64), eigvecs, classify(theta, tol), method,
                    np.asarray(resid, np.float64), int(hvps), time.perf_counter() - t0, tol, d)

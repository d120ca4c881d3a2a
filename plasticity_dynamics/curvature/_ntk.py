"""The empirical neural tangent kernel (eNTK) of a batch, and its normal-space restriction.

For ``fn(params, x) -> logits (B, C)`` let J be the ``(B C, n)`` Jacobian of the flattened
logits (row-major: example b, output c is row ``b C + c``) with respect to the flattened
params. The eNTK of the batch is ``K = J J^T`` (``(B C, B C)``, positive semi-definite); with
a manifold it is the *normal eNTK* ``K_N = J P_N J^T``: how far the outputs on the batch can
still move by parameter changes normal to the manifold (the trap). J is never formed:
``K u = J (J^T u)`` is one VJP (``J^T u``) and one JVP (``J w``) of ``fn`` on the batch.

Summaries (of the returned eigenvalues, clipped at 0):

- ``effective_rank``: ``exp(-sum p_i log p_i)`` with ``p_i = lambda_i / sum lambda`` (Roy &
  Vetterli 2007), the entropy rank the metrics module uses for activations
  (:func:`plasticity_dynamics.metrics.effective_rank`; same implementation, applied here to the
  kernel's eigenvalues, i.e. to the *squared* singular values of J).
- ``effective_rank_sv``: the same entropy rank of ``sqrt(lambda_i)``, the singular values of J
  (the reading of LoP-NeurIPS, gracebml/LoP-NeurIPS ``lop/metrics/ntk_churn.py``, whose kernel
  is the per-example kernel of the summed outputs, ``(B, B)``: pass
  ``lambda p, x: fn(p, x).sum(-1, keepdims=True)`` as ``fn`` for it; its condition number divides
  by the smallest eigenvalue above 1e-12 instead of reporting a singular kernel as ``inf``).
- ``condition_number``: ``lambda_max / lambda_min`` of the returned eigenvalues (``inf`` when the
  smallest is <= ``rtol * lambda_max``, rtol = ``B C * eps(float32)``: a numerically singular
  kernel). With only the k largest returned (Lanczos route) it is ``lambda_1 / lambda_k``.

References: Jacot, Gabriel & Hongler (2018) for the NTK; C-CHAIN (Tang, Obando-Ceron, Castro,
Courville & Berseth, ICML 2025) for NTK rank and plasticity; Novak et al. (2022),
"Fast finite width neural tangent kernel", for the matrix-free products.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError, check_positive
from .. import linalg
from ..metrics.ranks import _entropy_rank
from ._cache import cached
from ._krylov import lanczos
from ._protocol import ManifoldLike, PyTree, default_key, manifold_args, resolve_manifold
from ._spectrum import _masked_eigh

#: ``ntk_spectrum`` forms K densely (B C matvecs, one ``eigh``) when B C is at most this.
DENSE_MAX_OUTPUTS = 512


class NTKData(NamedTuple):
    """Array-only output of an :func:`ntk_spectrum_fn` function: ``eigenvalues (r,)``
    descending (dense: all B C; lanczos: the k largest Ritz values, NaN in slots past the
    Krylov depth), ``trace`` (exact ``tr K`` for dense; otherwise the one-probe unbiased
    estimate ``u^T K u = ||J^T u||^2`` (``||P_N J^T u||^2`` with a manifold) for the Gaussian
    Lanczos start u), ``num_matvecs``."""

    eigenvalues: jax.Array
    trace: jax.Array
    num_matvecs: jax.Array


class NTKSpectrum(NamedTuple):
    """eNTK spectrum of a batch, on the host.

    eigenvalues: float64 ``(r,)`` descending; all ``B C`` of them (``method='dense'``) or the k
      largest (``method='lanczos'``).
    effective_rank, condition_number, effective_rank_sv: see the module docstring (of these
      eigenvalues).
    trace: ``tr K`` (dense: exact; lanczos: one-probe estimate, for the tail mass
      ``trace - sum(eigenvalues)`` the k values miss).
    method: ``dense`` or ``lanczos``. size: ``B C``. num_matvecs: products ``K u`` evaluated.
    """

    eigenvalues: np.ndarray
    effective_rank: float
    condition_number: float
    trace: float
    method: str
    size: int
    num_matvecs: int
    effective_rank_sv: float


def _ntk_ops(fn, params, x, manifold):
    """(matvec on flat (B C,) cotangents, B C, logits shape, dtype) inside a kernel."""
    out, jvp_lin = jax.linearize(lambda p: fn(p, x), params)
    _, vjp = jax.vjp(lambda p: fn(p, x), params)
    shape = out.shape

    def mv(u):
        w = vjp(u.reshape(shape).astype(out.dtype))[0]
        if manifold is not None:
            w = manifold.normal(w)
        return jvp_lin(w).reshape(-1)

    return mv, int(np.prod(shape)), shape, out.dtype


def ntk_spectrum_fn(fn: Callable[[PyTree, jax.Array], jax.Array], *, k: int | None = None,
                    method: str = "auto", num_iters: int | None = None,
                    batch_size: int | None = 64) -> Callable:
    """A pure function ``f(params, x, manifold=None, key=None) -> NTKData``.

    Eigenvalues of ``K = J J^T`` (or ``J P_N J^T``) of ``fn(params, x) -> (B, C)``. jit-able:
    params, batch and manifold (a pytree manifold) are traced; one compile per shapes and
    manifold structure.

    Args:
      fn: ``fn(params, x)`` -> logits ``(B, C)`` (any shape: it is flattened).
      k: eigenvalues wanted on the lanczos route (default 32; static).
      method: ``dense`` (K from B C matvecs, ``batch_size`` at a time, then ``eigh``),
        ``lanczos`` (k largest Ritz values of ``num_iters`` full-reorthogonalised steps, default
        ``max(3k, k + 30)``, capped at B C) or ``auto`` (dense when B C <= 512).
    Cost: dense B C (VJP + JVP) pairs + O((BC)^3); lanczos m pairs + O(m^2 BC).
    """
    if method not in ("auto", "dense", "lanczos"):
        raise InputError(f"method={method!r} is not one of: auto, dense, lanczos")
    if k is not None:
        check_positive("k", k, integer=True)
    kk = 32 if k is None else k

    def ntk_kernel(params, x, man_dyn, key, man_static, route, m):
        manifold = resolve_manifold(man_static, man_dyn)
        with jax.default_matmul_precision("highest"):
            mv, size, _, dtype = _ntk_ops(fn, params, x, manifold)
            if route == "dense":
                eye = jnp.eye(size, dtype=dtype)
                cols = jax.lax.map(mv, eye, batch_size=min(batch_size or size, size))
                kmat = (cols + cols.T) / 2
                ev = linalg.eigh(kmat)[0][::-1]
                return NTKData(ev, jnp.trace(kmat), jnp.int32(size))
            u = jax.random.normal(key, (size,), dtype)
            res = lanczos(mv, u, m)
            off = jnp.where(jnp.arange(1, m) < res.depth, res.betas[:-1], 0.0)
            t = jnp.diag(res.alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)
            theta, _ = _masked_eigh(t, res.depth)
            idx = res.depth - 1 - jnp.arange(min(kk, m))  # largest valid first
            ev = jnp.where(idx >= 0, theta[jnp.clip(idx, 0, m - 1)], jnp.nan)
            # trace probe: E[u^T K u] = tr K for standard Gaussian u (one extra matvec)
            tr = jnp.vdot(u, mv(u))
            return NTKData(ev, tr, res.depth + 1)

    kernel = jax.jit(ntk_kernel, static_argnames=("man_static", "route", "m"))

    def f(params, x, manifold=None, key=None):
        size = int(np.prod(jax.eval_shape(fn, params, x).shape))
        route = method
        if route == "auto":
            route = "dense" if size <= DENSE_MAX_OUTPUTS else "lanczos"
        m = min(num_iters or max(3 * kk, kk + 30), size)
        man_static, man_dyn = manifold_args(manifold)
        return kernel(params, x, man_dyn, default_key(key), man_static, route, m)

    f.method, f.k = method, k
    return f


def _summaries(ev: np.ndarray, size: int):
    """(effective rank of the eigenvalues, condition number, effective rank of their roots)."""
    ev = np.clip(np.asarray(ev, np.float64), 0.0, None)
    if ev.size == 0 or ev[0] <= 0:
        return 0.0, float("inf"), 0.0
    erank = float(_entropy_rank(jnp.asarray(ev, jnp.float32)))
    erank_sv = float(_entropy_rank(jnp.asarray(np.sqrt(ev), jnp.float32)))
    tol = size * float(np.finfo(np.float32).eps) * ev[0]
    cond = float(ev[0] / ev[-1]) if ev[-1] > tol else float("inf")
    return erank, cond, erank_sv


def ntk_spectrum(fn: Callable[[PyTree, jax.Array], jax.Array], params: PyTree, x,
                 *, manifold: ManifoldLike | None = None, k: int | None = None,
                 method: str = "auto", num_iters: int | None = None, key=None,
                 batch_size: int | None = 64) -> NTKSpectrum:
    """Spectrum, effective rank and condition number of the eNTK ``J J^T`` on a batch.

    Args:
      fn: ``fn(params, x) -> logits (B, C)``; J = d logits / d params (flattened, ``(B C, n)``).
      params: pytree. x: the batch (traced).
      manifold: None, or a :class:`ManifoldLike`: the normal eNTK ``J P_N J^T``.
      k: None (every eigenvalue; dense route when B C <= 512, else the 32 largest by Lanczos)
        or the number of largest eigenvalues wanted (Lanczos when k < B C and B C > 512).
      method: ``auto``, ``dense`` or ``lanczos`` (see :func:`ntk_spectrum_fn`).
      num_iters: Lanczos depth (default ``max(3k, k + 30)``, capped at B C).
      key: PRNG key of the Lanczos start vector (default ``PRNGKey(0)``); the k largest Ritz
        values are start-independent once converged.
    Returns:
      :class:`NTKSpectrum`.
    Cost: see :func:`ntk_spectrum_fn`; J is never materialised (memory: one VJP, one JVP, and
      the (m+1) x B C Lanczos basis or the (B C)^2 kernel).
    Raises InputError for a bad k / method or a non-2-D output.
    """
    if k is not None:
        check_positive("k", k, integer=True)
    shape = jax.eval_shape(fn, params, x).shape
    if len(shape) != 2:
        raise InputError(f"fn(params, x) must return logits of shape (B, C), got shape {tuple(shape)}")
    size = int(np.prod(shape))
    route = method
    if route == "auto":
        route = "dense" if size <= DENSE_MAX_OUTPUTS or (k is not None and k >= size) else "lanczos"
    ntk = cached(ntk_spectrum_fn, fn, k=k, method=route, num_iters=num_iters, batch_size=batch_size)
    data = jax.device_get(ntk(params, x, manifold, key=key))
    ev = np.asarray(data.eigenvalues, np.float64)
    ev = ev[np.isfinite(ev)]
    if route == "dense" and k is not None:
        ev = ev[:k]
    erank, cond, erank_sv = _summaries(ev, size)
    return NTKSpectrum(ev, erank, cond, float(data.trace), route, size, int(data.num_matvecs), erank_sv)


__all__ = ["NTKData", "NTKSpectrum", "ntk_spectrum", "ntk_spectrum_fn", "DENSE_MAX_OUTPUTS"]

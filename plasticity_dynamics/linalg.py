"""LAPACK-backed linear algebra that cannot deadlock XLA:CPU: the one place the library calls a
dense factorisation (eigh, QR, values-only SVD, Cholesky, triangular solves, tridiagonal
reduction).

Why. On CPU, jaxlib 0.10.2 runs a *batched* LAPACK custom call (what ``jax.vmap`` of
``jnp.linalg.eigh`` and friends lowers to) by scheduling the batch members on XLA's intra-op
thread pool and blocking its own pool thread until they finish (``jax::ParallelBatchMap``,
``BlockingCounter::Wait``). When the program holds as many independent batched calls as the pool
has threads (2 on a 2-core machine: e.g. the unit metrics of two layers vmapped over seeds),
every pool thread can block inside such a call with the batch members queued behind it: the
program never finishes, at 0 % CPU. Native stacks of hung runs (``reproduce normalisation
--scale small``, the ResNet-18's metrics; a vmapped CNN metrics program with QR + SVD) show
exactly that, in ``lapack_ssyevd_ffi`` and ``lapack_sgeqrf_ffi``; ``--xla_cpu_multi_thread_eigen
=false`` does not help. tests/reliability/test_xla_hang.py holds the reproducer.

What. Every function here is :func:`unbatched`: under ``jax.vmap`` (and ``lax.map`` with
``batch_size``) it loops over the batch with ``lax.map`` instead of batching the custom call,
so each LAPACK call sees one matrix and runs on its own thread. Nothing changes outside vmap. The
cost is the batch-level parallelism of one call (XLA still runs independent calls concurrently).

All functions take one matrix (2-D; batches come from vmap) and are not meant to be
differentiated (``custom_vmap`` has no reverse-mode rule); none of the library's callers
differentiates them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap


def unbatched(f):
    """``f`` with a vmap rule that maps it over the batch sequentially (``lax.map``): a vmapped
    call of the result lowers to a loop of single-matrix custom calls, never a batched one."""

    @custom_vmap
    def g(*args):
        return f(*args)

    @g.def_vmap
    def _rule(axis_size, in_batched, *args):
        args = tuple(a if b else jnp.broadcast_to(a, (axis_size,) + jnp.shape(a))
                     for a, b in zip(args, in_batched))
        out = jax.lax.map(lambda xs: g(*xs), args)
        return out, jax.tree.map(lambda _: True, out)

    g.__doc__ = f.__doc__
    g.__name__ = getattr(f, "__name__", "unbatched")
    return g


@unbatched
def eigh(a):
    """(eigenvalues ascending (k,), eigenvectors (k, k)) of a symmetric (k, k) matrix (syevd)."""
    return jnp.linalg.eigh(a)


@unbatched
def eigvalsh(a):
    """Eigenvalues (k,) of a symmetric (k, k) matrix, ascending, without eigenvectors: LAPACK's
    tridiagonal reduction (sytrd) and JAX's bisection on the tridiagonal matrix. On XLA:CPU
    ``jnp.linalg.eigvalsh`` runs syevd with eigenvectors; this is 1.7-2x faster at k = 512-1024
    (9.9 vs 18 ms, 53 vs 87 ms on 2 cores) with the same absolute accuracy (~eps ||a||)."""
    if a.shape[-1] == 1:
        return a[..., 0]
    _, d, e, _ = jax.lax.linalg.tridiagonal(a)
    return jnp.sort(jax.scipy.linalg.eigh_tridiagonal(d, e, eigvals_only=True))


@unbatched
def qr_r(a):
    """The (min(m, n), n) triangular factor R of a = Q R (geqrf)."""
    return jnp.linalg.qr(a, mode="r")


@unbatched
def qr(a):
    """(Q (m, k), R (k, n)), k = min(m, n): the reduced QR factorisation (geqrf + orgqr)."""
    return jnp.linalg.qr(a)


@unbatched
def svd_values(a):
    """Singular values of a matrix, descending (values-only gesdd)."""
    return jnp.linalg.svd(a, compute_uv=False)


@unbatched
def cho_solve_lower(a, b):
    """x with a x = b for a symmetric positive definite (k, k) ``a`` (potrf, two trsm)."""
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a, lower=True), b)


@unbatched
def solve_upper_triangular(r, b):
    """x with r x = b for an upper triangular (k, k) ``r`` (trsm)."""
    return jax.scipy.linalg.solve_triangular(r, b, lower=False)


__all__ = ["unbatched", "eigh", "eigvalsh", "qr_r", "qr", "svd_values", "cho_solve_lower",
           "solve_upper_triangular"]

"""Krylov eigensolvers that run inside jit: Lanczos, Arnoldi, and a LOBPCG wrapper.

The Krylov loops run in ``lax.fori_loop`` in the working dtype (float32 for networks); the
small projected eigenproblems (tridiagonal for Lanczos, Hessenberg for Arnoldi) are solved
afterwards in float64 with NumPy, outside jit, because they are tiny (m x m) and float64
removes their own rounding from the picture.

References: Lanczos (1950); Paige (1972) for the residual estimate; Golub & Van Loan,
"Matrix Computations", 4th ed., §10.1 (Lanczos, full reorthogonalisation) and §10.5
(Arnoldi); Daniel, Gragg, Kaufman & Stewart (1976) for the re-orthogonalisation criterion;
Knyazev (2001) for LOBPCG.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.sparse.linalg import lobpcg_standard

from ..errors import InputError, check_positive


class LanczosResult(NamedTuple):
    """Output of :func:`lanczos` (all jax arrays, valid inside jit).

    alphas: ``(m,)`` diagonal of the tridiagonal T.
    betas: ``(m,)``; ``betas[j]`` couples basis vectors j and j+1 (``betas[m-1]`` is the
      residual norm after the last step, used for residual estimates).
    basis: ``(m, n)`` orthonormal Lanczos vectors (rows), zero rows after a breakdown.
    depth: int scalar, number of valid steps (< m when an invariant subspace was found).
    """

    alphas: jax.Array
    betas: jax.Array
    basis: jax.Array
    depth: jax.Array


class ArnoldiResult(NamedTuple):
    """Output of :func:`arnoldi`: ``hessenberg (m+1, m)``, ``basis (m, n)``, ``depth``."""

    hessenberg: jax.Array
    basis: jax.Array
    depth: jax.Array


def _unit(v0):
    nrm = jnp.linalg.norm(v0)
    return v0 / jnp.where(nrm > 0, nrm, 1.0)


def _reorthogonalise(basis, w):
    """Classical Gram-Schmidt of w against the rows of ``basis`` (zero rows are harmless),
    with a second pass only when the first removed more than 1 - 1/sqrt(2) of w's norm
    (Daniel-Gragg-Kaufman-Stewart criterion). Each pass reads the basis twice; it is the
    memory-bound part of a Krylov step at large n. Returns (w, coefficients)."""
    h = basis @ w
    w2 = w - basis.T @ h

    def again(args):
        w2, h = args
        h2 = basis @ w2
        return w2 - basis.T @ h2, h + h2

    return jax.lax.cond(jnp.linalg.norm(w2) < 0.7071 * jnp.linalg.norm(w), again,
                        lambda args: args, (w2, h))


def _check_iters(num_iters):
    check_positive("num_iters", num_iters, integer=True)


def lanczos(matvec: Callable[[jax.Array], jax.Array], v0: jax.Array, num_iters: int,
            *, breakdown_tol: float | None = None, max_depth=None,
            unroll: bool = False) -> LanczosResult:
    """Symmetric Lanczos with full reorthogonalisation, in a ``lax.fori_loop``.

    Args:
      matvec: symmetric linear map ``(n,) -> (n,)`` (e.g. a flattened, projected HVP).
      v0: ``(n,)`` start vector (need not be normalised; must be nonzero).
      num_iters: Krylov depth m (static).
      breakdown_tol: a step whose new residual norm is below ``breakdown_tol`` times the largest
        ``||A v_j||`` seen so far ends the recursion (an invariant subspace was found); the
        remaining rows are zero and ``depth`` says how many steps are valid. Default
        ``100 * eps(dtype)``.
      max_depth: optional int (may be traced): stop after this many steps, e.g. the rank of
        the operator (a normal dimension smaller than ``num_iters``), so rounding noise past an
        exhausted subspace never enters the basis. Steps after a stop skip their matvec
        (``lax.cond``; under ``vmap`` both branches run).
      unroll: trace the m steps as straight-line code instead of a loop (static). Every step
        then evaluates its matvec (masked after a stop; no ``lax.cond`` around it). For XLA:CPU,
        where convolution gradients inside a loop or conditional body run about 20x slower
        than at top level (jax-ml/jax#12868); compile time grows linearly with m.
    Returns:
      :class:`LanczosResult`. Use :func:`lanczos_ritz` for Ritz values.
    Each step: the three-term recurrence, then one classical Gram-Schmidt pass against every
    stored vector (a second pass only when needed: DGKS criterion), which keeps the basis
    orthonormal to working precision (no spurious copies of converged Ritz values).
    Cost: m matvecs plus about 2 m^2 n flops (memory-bound: the basis is read twice per step);
    memory (m+1) n.
    Failure modes: a start vector orthogonal to an eigenvector never sees that eigenvalue;
    after a breakdown the recursion stops instead of restarting, so a depth of m = n gives the
    exact spectrum only if v0 has a component along every eigenvector (true for random v0).
    """
    _check_iters(num_iters)
    m = num_iters
    n = v0.shape[0]
    dtype = v0.dtype
    tol = 100 * float(jnp.finfo(dtype).eps) if breakdown_tol is None else breakdown_tol
    basis = jnp.zeros((m + 1, n), dtype).at[0].set(_unit(v0))
    alphas = jnp.zeros((m,), dtype)
    betas = jnp.zeros((m,), dtype)
    limit = m if max_depth is None else jnp.asarray(max_depth, jnp.int32)

    def body(j, state):
        basis, alphas, betas, depth, scale, done = state
        v = basis[j]
        if unroll:
            w = jnp.where(done, 0.0, matvec(v))
        else:
            w = jax.lax.cond(done, jnp.zeros_like, matvec, v)
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        alpha = jnp.vdot(v, w)
        prev = jnp.where(j > 0, betas[jnp.maximum(j - 1, 0)], 0.0)
        w = w - alpha * v - prev * basis[jnp.maximum(j - 1, 0)]  # three-term recurrence
        w, h = _reorthogonalise(basis, w)
        alpha = alpha + h[j]
        beta = jnp.linalg.norm(w)
        broke = done | (beta <= tol * scale)
        stop = broke | (j + 1 >= limit)
        nxt = jnp.where(stop, jnp.zeros_like(w), w / jnp.where(beta > 0, beta, 1.0))
        basis = basis.at[j + 1].set(nxt)
        alphas = alphas.at[j].set(jnp.where(done, 0.0, alpha))
        betas = betas.at[j].set(jnp.where(broke, 0.0, beta))  # kept at a max_depth stop
        depth = depth + jnp.where(done, 0, 1)
        return basis, alphas, betas, depth, scale, stop

    init = (basis, alphas, betas, jnp.int32(0), jnp.zeros((), dtype), jnp.array(False))
    if unroll:
        state = init
        for j in range(m):
            state = body(j, state)
        basis, alphas, betas, depth, _, _ = state
    else:
        basis, alphas, betas, depth, _, _ = jax.lax.fori_loop(0, m, body, init)
    return LanczosResult(alphas, betas, basis[:m], depth)


def lanczos_ritz(result: LanczosResult):
    """Ritz pairs of a Lanczos run, in float64 NumPy (call outside jit).

    Returns ``(theta, coeffs, resid_est)``: ascending Ritz values ``(d,)``, coefficient matrix
    ``(d, d)`` (Ritz vector i = ``basis[:d].T @ coeffs[:, i]``) and Paige's residual estimates
    ``|beta_d * coeffs[d-1, i]|`` (exact residual norms in exact arithmetic), d = depth.
    """
    d = int(result.depth)
    a = np.asarray(result.alphas, np.float64)[:d]
    b = np.asarray(result.betas, np.float64)[: max(d - 1, 0)]
    t = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
    theta, coeffs = np.linalg.eigh(t)
    last = float(np.asarray(result.betas, np.float64)[d - 1]) if d > 0 else 0.0
    resid = np.abs(last * coeffs[-1, :]) if d > 0 else np.zeros(0)
    return theta, coeffs, resid


def arnoldi(matvec: Callable[[jax.Array], jax.Array], v0: jax.Array, num_iters: int,
            *, breakdown_tol: float | None = None) -> ArnoldiResult:
    """Arnoldi iteration for a non-symmetric linear map, in a ``lax.fori_loop``.

    Builds an orthonormal basis of the Krylov space and the upper Hessenberg matrix
    ``H[:d, :d] = V^T A V`` whose eigenvalues (Ritz values, possibly complex) approximate the
    outer eigenvalues of A. Classical Gram-Schmidt with a conditional second pass (DGKS).
    Cost: m matvecs plus 2-4 m^2 n flops; memory (m+1) n. Breakdown handled as in
    :func:`lanczos`.
    """
    _check_iters(num_iters)
    m = num_iters
    n = v0.shape[0]
    dtype = v0.dtype
    tol = 100 * float(jnp.finfo(dtype).eps) if breakdown_tol is None else breakdown_tol
    basis = jnp.zeros((m + 1, n), dtype).at[0].set(_unit(v0))
    hess = jnp.zeros((m + 1, m), dtype)

    def body(j, state):
        basis, hess, depth, scale, done = state
        w = matvec(basis[j])
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        w, h = _reorthogonalise(basis, w)
        beta = jnp.linalg.norm(w)
        stop = done | (beta <= tol * scale)
        col = jnp.where(done, jnp.zeros_like(h), h).at[j + 1].set(jnp.where(stop, 0.0, beta))
        hess = hess.at[:, j].set(col)
        nxt = jnp.where(stop, jnp.zeros_like(w), w / jnp.where(beta > 0, beta, 1.0))
        basis = basis.at[j + 1].set(nxt)
        depth = depth + jnp.where(done, 0, 1)
        return basis, hess, depth, scale, stop

    init = (basis, hess, jnp.int32(0), jnp.zeros((), dtype), jnp.array(False))
    basis, hess, depth, _, _ = jax.lax.fori_loop(0, m, body, init)
    return ArnoldiResult(hess, basis[:m], depth)


def arnoldi_ritz(result: ArnoldiResult):
    """Ritz values of an Arnoldi run (complex, float64 NumPy), sorted by decreasing modulus."""
    d = int(result.depth)
    h = np.asarray(result.hessenberg, np.float64)[:d, :d]
    vals = np.linalg.eigvals(h) if d > 0 else np.zeros(0, complex)
    return vals[np.argsort(-np.abs(vals))]


def lobpcg_lowest(matvec: Callable[[jax.Array], jax.Array], x0: jax.Array, *, shift,
                  num_iters: int = 100, rtol: float = 1e-4):
    """Lowest k eigenpairs of a symmetric map with LOBPCG, via a spectral shift.

    ``jax.experimental.sparse.linalg.lobpcg_standard`` finds the *largest* eigenvalues and its
    convergence test assumes them nonnegative, so this runs it on ``B = shift I - A``, whose
    top eigenpairs are A's lowest: ``lambda = shift - theta_B``. ``shift`` must be an upper
    bound of A's largest eigenvalue (e.g. a Lanczos estimate plus its residual).

    Args:
      matvec: symmetric ``(n,) -> (n,)``; it is vmapped over the k columns.
      x0: ``(n, k)`` start block (linearly independent columns); requires ``5 k < n``.
      shift: float or scalar array, ``>= lambda_max(A)``.
      num_iters: maximum LOBPCG iterations (each costs k matvecs).
      rtol: stop when every residual ``||B x - theta x||`` is below ``rtol * (||B x|| + theta)``.
        (``lobpcg_standard``'s own ``tol`` is multiplied by ``10 n``, which makes its default
        meaningless for large n; this wrapper passes ``tol = rtol / (10 n)``.)
    Returns:
      ``(eigenvalues (k,) ascending, eigenvectors (n, k), iterations)``.
    Cost: (iterations + 2) k matvecs plus O(n k^2) per iteration. Jit-able.
    Failure modes: a shift below lambda_max silently returns wrong pairs; clusters of equal
    eigenvalues converge slowly.
    """
    n, k = x0.shape
    if 5 * k >= n:
        raise InputError(f"lobpcg needs 5*k < n, got k={k} for n={n}; use method='dense' or 'lanczos'")
    shift = jnp.asarray(shift, x0.dtype)
    mv = jax.vmap(matvec, in_axes=1, out_axes=1)

    def shifted(x):
        return shift * x - mv(x)

    theta, vecs, iters = lobpcg_standard(shifted, x0, m=num_iters, tol=rtol / (10.0 * n))
    return (shift - theta), vecs, iters

"""Finite-time Lyapunov exponents of the normal dynamics along a real training trajectory.

Training is the map ``s_{t+1} = F_t(s_t)`` (``step_fn(state, t)``: the batch, key and schedule
of step t are the step function's business, so the tangent dynamics see the same batches and
keys as the run). The T-step tangent propagator ``Phi_T = DF_{t0+T-1} ... DF_{t0}`` acts on
perturbations of the *whole* state. Perturbations live in the parameters: a normal params
perturbation ``d`` enters with zero tangent in every other float leaf of the state (optimiser
moments, batch statistics, ...); those leaves are propagated with it (a momentum trace built up
from d feeds back into later params), and at the end only the params part is read and
projected. Integer leaves (step counts) and PRNG keys carry no tangent. So the operator is

    A = P_N Pi_p Phi_T E_p P_N        (E_p: params -> state embedding, Pi_p: state -> params)

and the finite-time Lyapunov exponents are ``lambda_i = (1/T) log sigma_i(A)``, i.e. the log
growth per step of the i-th most amplified normal perturbation over the window. On an
invariant manifold the tangent space is carried into itself, so P_N at the end only removes
what the step pushed back into M.

Lanczos route (default): ``A^T A v`` is one JVP (``Phi_T v``) and one VJP (``Phi_T^T u``)
through a single ``jax.linearize`` of the ``lax.scan`` of T steps (the residuals of the T
steps are stored once, memory T x state; the transpose reuses them). Lanczos with full
reorthogonalisation on ``A^T A`` restricted to N (start projected, stopped at normal_dim)
gives ``sigma_i^2`` as Ritz values: with depth >= normal_dim (or converged extremes) the
exponents do not depend on the start vector.

QR route (Benettin et al. 1980; Shimada & Nagashima 1979): k tangent vectors are propagated
step by step; every ``reortho_every`` steps their projected params parts are QR-factorised,
``log |R_ii|`` accumulated and the vectors replaced by Q (the other state parts follow by the
same triangular solve). Memory k x state instead of T x state, so it serves long windows, but
the result depends on the start vectors over a transient: ``(1/T) sum log|R_ii|`` converges to
the asymptotic exponents only as O(1/T), and for finite T it is *not* ``sigma_i(A)`` (it is
the growth of a nested set of subspaces from a random start). Not the default.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..errors import InputError, check_choice, check_positive
from .. import linalg
from ._krylov import lanczos, lanczos_ritz
from ._spectrum import _masked_eigh
from ._protocol import (ManifoldLike, PyTree, _ById, default_key, manifold_args, np_ravel,
                        resolve_manifold)


class LyapunovResult(NamedTuple):
    """exponents: float64 ``(k,)`` descending, log growth per step of the k most amplified
    normal perturbations over the window (NaN past the normal dimension). growth: ``(k,)``
    ``exp(steps * exponents)`` = the singular values of the window's normal propagator.
    steps: T. method: ``lanczos`` or ``qr``. num_products: JVP+VJP pairs (lanczos) or JVP
    steps (qr). residuals: ``(k,)`` Paige residual estimates of the Ritz values of A^T A
    (lanczos; zeros for qr). final_state: the unperturbed state after T steps.
    directions: lanczos: pytree like params with a leading axis k, the unit normal start
    directions that grow most (right singular vectors of A, NaN-free zeros past the normal
    dimension); None for qr."""

    exponents: np.ndarray
    growth: np.ndarray
    steps: int
    method: str
    num_products: int
    residuals: np.ndarray
    final_state: Any
    directions: Any = None


class GrowthCurve(NamedTuple):
    """linear ``(T+1,)``: ``||P_N Pi_p Phi_t E_p v||`` for the unit direction v (the tangent
    dynamics, exact linearisation); measured ``(T+1,)``: ``||P_N (theta'_t - theta_t)|| / eps``
    for the run started at ``theta_0 + eps v`` against the unperturbed run; both 1 at t = 0."""

    linear: np.ndarray
    measured: np.ndarray
    eps: float


def _is_float(x):
    try:
        dt = jnp.result_type(x)
    except TypeError:  # pragma: no cover - exotic leaves carry no tangent
        return False
    return jnp.issubdtype(dt, jnp.inexact) and not jnp.issubdtype(dt, jax.dtypes.prng_key)


def _split_state(state):
    """(float leaves, merge(float leaves) -> state, params getter/setter on float leaves)."""
    has_params = isinstance(state, dict) and "params" in state
    leaves, treedef = jax.tree.flatten(state)
    is_float = [_is_float(x) for x in leaves]
    floats = [x for x, f in zip(leaves, is_float) if f]

    def merge(fl, like=None):
        src = leaves if like is None else jax.tree.leaves(like)
        it = iter(fl)
        return treedef.unflatten([next(it) if f else x for x, f in zip(src, is_float)])

    def floats_of(st):
        return [x for x, f in zip(jax.tree.leaves(st), is_float) if f]

    params = state["params"] if has_params else state
    return floats, merge, floats_of, params, has_params


_NOT_FINITE = ("normal_lyapunov: the tangent propagator is not finite (an Adam/RMSProp step at zero "
               "second moment nu has no derivative: use eps_root > 0, e.g. optax.adam(lr, eps_root=1e-16); "
               "or the trajectory itself diverged)")


def normal_lyapunov(step_fn: Callable[[PyTree, Any], PyTree], state: PyTree,
                    manifold: ManifoldLike | None, *, k: int, steps: int, reortho_every: int = 1,
                    method: str = "lanczos", num_iters: int | None = None, t0: int = 0,
                    key=None, args: tuple = ()) -> LyapunovResult:
    """The k leading finite-time Lyapunov exponents of the normal dynamics of ``step_fn``.

    Args:
      step_fn: ``step_fn(state, t) -> state``, one pure optimiser step (t: the step index, a
        traced int32 ``t0 + i``; use it to pick the batch / key of step t).
      state: the params pytree, or a dict with ``"params"`` (plus optimiser state etc.).
      manifold: :class:`ManifoldLike` whose ``normal`` acts on params (None: all parameters).
      k: exponents wanted (descending). steps: window length T.
      reortho_every: QR route only: steps between re-orthonormalisations (Lanczos always
        reorthogonalises fully).
      method: ``lanczos`` (default; exact definition, start-independent) or ``qr`` (Benettin;
        see the module docstring for its transient).
      num_iters: Lanczos depth (default ``min(normal_dim, max(3k, k + 20))``).
      t0: index of the first step. key: PRNG key of the start vector(s).
      args: extra arguments, ``step_fn(state, t, *args)``: traced, carrying no tangent (data,
        seeds, schedule values; e.g. ``pdx.training.replay.replay_context``), so one compile serves every
        ``args`` of equal shapes.
    Returns:
      :class:`LyapunovResult`.
    Cost: lanczos: one linearisation of T steps (memory T x state) plus ``num_iters`` JVP+VJP
      pairs through the window (each about 3 T gradient steps); qr: T k JVPs, memory k x state.
    Reference: Oseledets (1968); Benettin, Galgani, Giorgilli & Strelcyn (1980); finite-time
      exponents as singular values of the propagator, e.g. Shadden, Lekien & Marsden (2005).
    Raises InputError for bad k / steps / method / reortho_every, a zero normal dimension or a
    non-finite tangent propagator (Adam-type steps at zero second moment).
    """
    check_positive("k", k, integer=True)
    check_positive("steps", steps, integer=True)
    check_positive("reortho_every", reortho_every, integer=True)
    check_choice("method", method, ("lanczos", "qr"))
    floats, merge, floats_of, params, has_params = _split_state(state)
    flat_p = ravel_pytree(params)[0]
    n = flat_p.shape[0]
    d = n if manifold is None else int(manifold.normal_dim)
    if d <= 0:
        raise InputError(f"manifold.normal_dim={d} must be > 0 (no normal directions)")
    key = default_key(key)
    ts = t0 + np.arange(steps, dtype=np.int32)
    man_static, man_dyn = manifold_args(manifold)
    if method == "lanczos":
        m = min(d, num_iters or max(3 * k, k + 20))
        res, final = _lanczos_kernel(state, man_dyn, ts, key, tuple(args), step_fn=_ById(step_fn),
                                     man_static=man_static, m=m)
        res_np = jax.device_get(res)
        if not (np.all(np.isfinite(res_np.alphas)) and np.all(np.isfinite(res_np.betas))):
            raise InputError(_NOT_FINITE)
        theta, coeffs, resid = lanczos_ritz(res_np)
        order = np.argsort(theta)[::-1][:k]
        dd = int(res_np.depth)
        vecs = np.zeros((k, n), np.asarray(res_np.basis).dtype)
        vecs[:order.size] = (np.asarray(res_np.basis, np.float64)[:dd].T @ coeffs[:, order]).T
        _, unravel_rows = np_ravel(params)
        sig2 = np.clip(theta[order], 0.0, None)
        with np.errstate(divide="ignore"):
            expo = 0.5 * np.log(sig2) / steps
        out = np.full(k, np.nan)
        out[:expo.size] = expo
        r = np.zeros(k)
        r[:expo.size] = resid[order]
        return LyapunovResult(out, np.exp(steps * out), steps, "lanczos", int(res_np.depth), r,
                              final, unravel_rows(vecs))
    kk = min(k, d)
    logs, final = _qr_kernel(state, man_dyn, ts, key, tuple(args), step_fn=_ById(step_fn),
                             man_static=man_static, k=kk, every=reortho_every)
    if not np.all(np.isfinite(np.asarray(logs))):
        raise InputError(_NOT_FINITE)
    expo = np.sort(np.asarray(logs, np.float64) / steps)[::-1]
    out = np.full(k, np.nan)
    out[:kk] = expo
    return LyapunovResult(out, np.exp(steps * out), steps, "qr", steps * kk, np.zeros(k), final)


def normal_growth(step_fn: Callable[[PyTree, Any], PyTree], state: PyTree,
                  manifold: ManifoldLike | None, direction: PyTree, *, steps: int,
                  eps: float = 1e-6, t0: int = 0, args: tuple = ()) -> GrowthCurve:
    """Predicted (tangent-linear) and measured growth of a normal perturbation over ``steps``.

    ``direction``: params-like pytree (projected onto N and normalised; e.g. one row of
    :attr:`LyapunovResult.directions`). One ``lax.scan`` runs the unperturbed state, the state
    with params ``+ eps * v`` (other state leaves equal) and the JVP of the step on v.
    ``linear[T]`` equals ``||A v||``, i.e. ``growth[i]`` of :func:`normal_lyapunov` for its
    i-th direction; ``measured`` departs from ``linear`` once the perturbation leaves the linear
    regime. ``args``: as in :func:`normal_lyapunov`. Cost: 3 steps' worth per step (two runs and
    a JVP). Jit-compiled per call.
    """
    check_positive("steps", steps, integer=True)
    check_positive("eps", eps)
    man_static, man_dyn = manifold_args(manifold)
    lin, meas = _growth_kernel(state, man_dyn, direction, t0 + np.arange(steps, dtype=np.int32),
                               float(eps), tuple(args), step_fn=_ById(step_fn), man_static=man_static)
    lin, meas = np.asarray(lin, np.float64), np.asarray(meas, np.float64)
    return GrowthCurve(np.r_[1.0, lin], np.r_[1.0, meas], float(eps))


def _growth_impl(state, man_dyn, direction, ts, eps, args, step_fn, man_static):
    manifold = resolve_manifold(man_static, man_dyn)
    _, floats_of, normal, embed, extract, with_params, flat_p = _pieces(state, manifold)
    v = normal(ravel_pytree(direction)[0].astype(flat_p.dtype))
    v = v / jnp.linalg.norm(v)
    fl0 = floats_of(state)
    pert_fl = with_params(fl0, extract(fl0) + eps * v)
    merge0 = _split_state(state)[1]
    pert = merge0(pert_fl)

    def body(carry, t):
        st, sp, tg = carry

        def step(fl):
            out = step_fn.obj(_split_state(st)[1](fl), t, *args)
            return floats_of(out), out

        _, tg, new_st = jax.jvp(step, (floats_of(st),), (tg,), has_aux=True)
        new_sp = step_fn.obj(sp, t, *args)
        lin = jnp.linalg.norm(normal(extract(tg)))
        meas = jnp.linalg.norm(normal(extract(floats_of(new_sp)) - extract(floats_of(new_st)))) / eps
        return (new_st, new_sp, tg), (lin, meas)

    with jax.default_matmul_precision("highest"):
        _, (lin, meas) = jax.lax.scan(body, (state, pert, embed(v)), ts)
    return lin, meas


_growth_kernel = jax.jit(_growth_impl, static_argnames=("step_fn", "man_static"))


def _pieces(state0, manifold):
    """Flat params tangents <-> float-leaf tangents of the state, and the flat P_N."""
    _, merge, floats_of, params0, has_params = _split_state(state0)
    flat_p, unravel_p = ravel_pytree(params0)

    def normal(x):
        if manifold is None:
            return x
        return ravel_pytree(manifold.normal(unravel_p(x)))[0]

    zero = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), x.dtype) if _is_float(x) else x, state0)

    def embed(x):  # flat params tangent -> float-leaf tangents (zero outside params)
        p = unravel_p(x)
        return floats_of({**zero, "params": p} if has_params else p)

    def extract(fl):  # float-leaf tangents -> flat params tangent
        st = merge(fl)
        return ravel_pytree(st["params"] if has_params else st)[0]

    def with_params(fl, x):  # replace the params part of float-leaf tangents
        st = merge(fl)
        p = unravel_p(x)
        return floats_of({**st, "params": p} if has_params else p)

    return merge, floats_of, normal, embed, extract, with_params, flat_p


def _lanczos_impl(state, man_dyn, ts, key, args, step_fn, man_static, m):
    manifold = resolve_manifold(man_static, man_dyn)
    merge, floats_of, normal, embed, extract, _, flat_p = _pieces(state, manifold)
    floats = floats_of(state)

    def window(fl):
        out, _ = jax.lax.scan(lambda st, t: (step_fn.obj(st, t, *args), None), merge(fl), ts)
        return floats_of(out), out

    _, lin, final = jax.linearize(window, floats, has_aux=True)
    lin_t = jax.linear_transpose(lin, floats)

    def op(v):
        u = normal(extract(lin(embed(normal(v)))))
        return normal(extract(lin_t(embed(u))[0]))

    v0 = normal(jax.random.normal(key, flat_p.shape, flat_p.dtype))
    d = flat_p.shape[0] if manifold is None else manifold.normal_dim
    with jax.default_matmul_precision("highest"):
        res = lanczos(op, v0, m, max_depth=d)
    return res, final


_lanczos_kernel = jax.jit(_lanczos_impl, static_argnames=("step_fn", "man_static", "m"))


class LyapunovData(NamedTuple):
    """Array-only output of a :func:`normal_lyapunov_fn` function (valid inside jit / vmap):
    ``exponents (k,)`` descending (NaN past the Krylov depth), ``depth`` (Lanczos steps run,
    at most normal_dim), ``final_state``."""

    exponents: jax.Array
    depth: jax.Array
    final_state: Any


def normal_lyapunov_fn(step_fn: Callable[[PyTree, Any], PyTree], *, k: int, steps: int,
                       num_iters: int | None = None) -> Callable:
    """A pure function ``f(state, manifold=None, key=None, t0=0, args=()) -> LyapunovData``.

    The Lanczos route of :func:`normal_lyapunov` with the Ritz values taken on the device, so
    ``f`` is jit- and vmap-able (e.g. over a leading seed axis of ``state`` and of a pytree
    manifold); state, manifold, key and t0 are traced, one compile per shapes and manifold
    structure. Depth ``num_iters`` (default ``max(3k, k + 20)``), stopped at normal_dim
    (traced); ``args`` as in :func:`normal_lyapunov` (traced). Cost: as :func:`normal_lyapunov`.
    """
    check_positive("k", k, integer=True)
    check_positive("steps", steps, integer=True)
    m = num_iters or max(3 * k, k + 20)
    check_positive("num_iters", m, integer=True)
    wrapped = _ById(step_fn)

    def lyapunov_kernel(state, man_dyn, key, t0, args, man_static):
        ts = t0 + jnp.arange(steps, dtype=jnp.int32)
        res, final = _lanczos_impl(state, man_dyn, ts, key, args, wrapped, man_static, m)
        off = jnp.where(jnp.arange(1, m) < res.depth, res.betas[:-1], 0.0)
        t = jnp.diag(res.alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)
        theta, _ = _masked_eigh(t, res.depth)
        idx = res.depth - 1 - jnp.arange(k)
        top = jnp.where(idx >= 0, theta[jnp.clip(idx, 0, m - 1)], jnp.nan)
        return LyapunovData(0.5 * jnp.log(jnp.maximum(top, 0.0)) / steps, res.depth, final)

    kernel = jax.jit(lyapunov_kernel, static_argnames=("man_static",))

    def f(state, manifold=None, key=None, t0=0, args=()):
        man_static, man_dyn = manifold_args(manifold)
        return kernel(state, man_dyn, default_key(key), jnp.int32(t0), tuple(args), man_static)

    return f


def _qr_impl(state, man_dyn, ts, key, args, step_fn, man_static, k, every):
    manifold = resolve_manifold(man_static, man_dyn)
    _, floats_of, normal, embed, extract, with_params, flat_p = _pieces(state, manifold)
    q0 = jax.vmap(normal)(jax.random.normal(key, (k, flat_p.shape[0]), flat_p.dtype))
    q0, _ = linalg.qr(q0.T)
    tang = jax.vmap(embed)(q0.T)  # float-leaf tangents with a leading axis k

    def reortho(carry):
        tg, logs = carry
        p = jax.vmap(lambda x: normal(extract(x)))(tg)  # (k, n)
        q, r = linalg.qr(p.T)
        sgn = jnp.where(jnp.diag(r) < 0, -1.0, 1.0).astype(r.dtype)
        r = r * sgn[:, None]
        q = q * sgn[None, :]
        # row i of the new tangents = sum_j (R^{-T})_ij tangent_j: its params part is q_i, the
        # optimiser-state parts follow the same combination
        rinv_t = linalg.solve_upper_triangular(r, jnp.eye(k, dtype=r.dtype)).T
        tg = [jnp.tensordot(rinv_t, x, axes=1) for x in tg]
        tg = jax.vmap(with_params)(tg, q.T)
        return tg, logs + jnp.log(jnp.abs(jnp.diag(r)))

    def body(carry, i_t):
        st, tg, logs = carry
        i, t = i_t

        def step(fl):
            out = step_fn.obj(_split_state(st)[1](fl), t, *args)
            return floats_of(out), out

        _, push, new_st = jax.linearize(step, floats_of(st), has_aux=True)
        tg = jax.vmap(push)(tg)
        last = (i + 1 == ts.shape[0]) | ((i + 1) % every == 0)
        tg, logs = jax.lax.cond(last, reortho, lambda a: a, (tg, logs))
        return (new_st, tg, logs), None

    with jax.default_matmul_precision("highest"):
        (final, _, logs), _ = jax.lax.scan(body, (state, tang, jnp.zeros(k, flat_p.dtype)),
                                           (jnp.arange(ts.shape[0]), ts))
    return logs, final


_qr_kernel = jax.jit(_qr_impl, static_argnames=("step_fn", "man_static", "k", "every"))


__all__ = ["LyapunovResult", "LyapunovData", "GrowthCurve", "normal_lyapunov", "normal_lyapunov_fn",
           "normal_growth"]

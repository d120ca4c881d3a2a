"""Frozen probability P(|f'| < ε) of a unit whose pre-activation is a z + b, z ~ N(0, 1).

Which derivative. By default f' = φ'(a z + b), the activation's derivative at the unit's
pre-activation u = a z + b — *without* the chain-rule factor a. Reasons: (1) this is the factor
that gates every gradient through the unit (∂L/∂w_in = ∂L/∂h · φ'(u) · x), so it is what
"frozen" / "dead" means for a unit in a network and what the toolkit's unit metrics measure from
pre-activations; (2) a and b only describe the distribution of u (mean b, standard deviation a);
multiplying by a would make the answer depend on how that scale is split between weights and
inputs. ``include_gain=True`` gives the other reading, |a φ'(a z + b)| < ε, i.e. the derivative of
z ↦ φ(a z + b) (the quantity whose mean enters α through Stein's lemma). For relu both readings
agree whenever ε ≤ min(1, a); for tanh and sigmoid they differ (PAPER.md §2.7 leaves it open).

Method (no quadrature, no sampling). The set S_t = {u : |φ'(u)| < t} is a finite union of
intervals; its end points are located once per (activation, t) by scanning |φ'(u)| − t on a
grid over [−40, 40] with spacing 1e-3, with the zeros of φ' and the activation's kinks inserted
as extra nodes, and refined by 80 bisection steps (to float64 resolution; jumps of φ', as in
relu at 0, are located the same way). Beyond ±40 every φ' in the table is monotone, so the sign
at the grid end extends to ±∞. Then P = Σ_I P(a z + b ∈ I) with differences of Φ taken on the
side that avoids cancellation. Accuracy ~1e-15 absolute; intervals of S_t narrower than the
grid spacing that do not contain a zero of φ' can be missed (none exist for the eight tabled
activations and ε ≥ 1e-12).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from plasticity_dynamics.errors import InputError, check_positive
from plasticity_dynamics.theory.activations import ACTIVATIONS, normal_cdf, resolve

_U_MAX = 40.0
_STEP = 1e-3


def _bisect(g, lo: float, hi: float) -> float:
    glo = g(lo) < 0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if (g(mid) < 0) == glo:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@functools.lru_cache(maxsize=16)
def _scan(name: str):
    """Grid nodes (with the zeros of φ' and the kinks inserted) and |φ'| on them."""
    d = ACTIVATIONS[name].deriv
    grid = np.arange(-_U_MAX, _U_MAX + _STEP / 2, _STEP)
    dv = d(grid)
    zeros = [
        _bisect(lambda u: float(d(np.float64(u))), grid[i], grid[i + 1])
        for i in np.flatnonzero(np.sign(dv[:-1]) * np.sign(dv[1:]) < 0)
    ]
    nodes = np.unique(np.concatenate((grid, zeros, ACTIVATIONS[name].kinks)))
    mag = np.abs(d(nodes))
    nodes.setflags(write=False)
    mag.setflags(write=False)
    return nodes, mag


@functools.lru_cache(maxsize=4096)
def frozen_intervals(name: str, t: float) -> tuple[tuple[float, float], ...]:
    """Intervals (lo, hi) (possibly ±inf) whose union is {u : |φ'(u)| < t}, sorted."""
    d = ACTIVATIONS[name].deriv
    nodes, mag = _scan(name)
    inside = mag < t
    g = lambda u: abs(float(d(np.float64(u)))) - t  # noqa: E731
    out, start = [], (-math.inf if inside[0] else None)
    for i in np.flatnonzero(inside[:-1] != inside[1:]):
        edge = _bisect(g, nodes[i], nodes[i + 1])
        if inside[i]:
            out.append((start, float(edge)))
            start = None
        else:
            start = float(edge)
    if start is not None:
        out.append((start, math.inf))
    return tuple(out)


def _interval_prob(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """P(lo < Z < hi) elementwise, using upper tails where both ends are positive."""
    upper = lo > 0
    p_low = normal_cdf(hi) - normal_cdf(lo)
    p_up = normal_cdf(-lo) - normal_cdf(-hi)
    return np.where(upper, p_up, p_low)


def frozen_probability(act, a=None, b=None, eps: float = 0.01, *, include_gain: bool = False):
    """P(|f'(Z)| < eps), Z ~ N(0, 1), for a unit with pre-activation u = a Z + b.

    act: a name from ACTIVATIONS, or a modulation (name, a, b) (then leave ``a``/``b`` unset).
    a (> 0, default 1) and b (default 0) may be arrays; they broadcast and the result has their
    shape (a Python float for scalars). f' = φ'(a z + b) by default; ``include_gain=True`` uses
    a φ'(a z + b) (see the module docstring for why the default leaves a out). eps > 0, default
    0.01 as in v2 Appendix A.2. Closed forms: relu → Φ(−b/a); elu → Φ((log eps − b)/a) for
    eps ≤ 1; tanh → P(|a z + b| > arccosh(eps^{-1/2})).
    Cost: the first call per activation evaluates φ' on 80 000 grid points (≈ 5-20 ms, cached);
    each new threshold costs a vectorised comparison and a few bisections (< 1 ms, cached); then a
    few Φ evaluations per element.
    """
    if isinstance(act, (tuple, list)):
        if a is not None or b is not None:
            raise InputError(f"activation={act!r} already carries (a, b); leave a and b unset")
        spec = resolve(act)
        a, b = spec.a, spec.b
    else:
        spec = resolve(act)
        a = 1.0 if a is None else a
        b = 0.0 if b is None else b
    check_positive("eps", eps)
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    if not (np.all(np.isfinite(a_arr)) and np.all(a_arr > 0)):
        raise InputError(f"gain a={a!r} must be finite and > 0")
    if not np.all(np.isfinite(b_arr)):
        raise InputError(f"bias b={b!r} must be finite")
    a_arr, b_arr = np.broadcast_arrays(a_arr, b_arr)
    thresholds = float(eps) / a_arr if include_gain else np.full(a_arr.shape, float(eps))
    out = np.zeros(a_arr.shape)
    for t in np.unique(thresholds):
        sel = thresholds == t
        for lo, hi in frozen_intervals(spec.name, float(t)):
            zl = (lo - b_arr[sel]) / a_arr[sel]
            zh = (hi - b_arr[sel]) / a_arr[sel]
            out[sel] += _interval_prob(zl, zh)
    out = np.clip(out, 0.0, 1.0)
    return float(out) if out.ndim == 0 else out

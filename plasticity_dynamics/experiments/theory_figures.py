"""Figures A.1, A.2, A.3 of v2 Appendix A (PAPER.md §2.5, §2.7): theory validation, no training.

Each ``fig_aN(out_dir, scale="small", *, seed=0)`` writes ``fig_aN.png`` and ``fig_aN.pdf`` into
``out_dir`` (created if missing; each file written to a temporary name then renamed) and returns
``{"results": {...key numbers...}, "checks": [[claim, measured, holds], ...], "notes": [...]}``,
all JSON-serialisable, in the shape :mod:`plasticity_dynamics.experiments.registry` expects.
Scales: ``smoke`` (seconds, coarse grids), ``small`` (default, < 1 min on a 2-core CPU),
``paper`` (finer grids). Matplotlib is used through ``matplotlib.figure.Figure`` only (Agg
canvas, no pyplot, no global backend switch). ``seed`` fixes A.1's random correlation matrix;
A.2 and A.3 are deterministic and ignore it.

Choices the paper leaves open ([GAP] in PAPER.md §2.7), made here: the six activations relu,
tanh, sigmoid, gelu, selu, elu in every figure; the random target of A.1 is
:func:`~plasticity_dynamics.theory.random_correlation_matrix` with d = 8 / 32 / 128 and
rank max(2, d // 8) latent factors (strong, dense correlations); the A.1 path is the straight
line C(λ) = (1 − λ) I + λ C; A.2 sweeps relu(z + b), b ∈ [−6, 3], and tanh(a z),
a ∈ [0.1, 10^2.5]; A.3 sweeps pre-activation mean μ ∈ [−5, 3] and standard deviation
σ ∈ [0.2, 10] (log-spaced). "Frozen" is |φ'(μ + σ z)| < 0.01 (see
:func:`~plasticity_dynamics.theory.frozen_probability`; A.2 also draws the |a φ'| reading).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from plasticity_dynamics.errors import InputError, check_choice
from plasticity_dynamics.fileio import atomic_write
from plasticity_dynamics.theory import (
    correlation_path,
    decorrelation_potential,
    frozen_probability,
    gamma,
    kappa,
    kernel,
    random_correlation_matrix,
    rank_gain,
    rank_gain_bound,
)

SCALES = ("smoke", "small", "paper")
SIX = ("relu", "tanh", "sigmoid", "gelu", "selu", "elu")
EPS = 0.01


def _save(fig: Figure, out_dir, stem: str) -> list[str]:
    """``stem.png`` and ``stem.pdf`` in ``out_dir``, atomically (:mod:`pdx.fileio`)."""
    out = Path(out_dir)
    paths = []
    for ext in ("png", "pdf"):
        final = out / f"{stem}.{ext}"
        atomic_write(final, lambda fh: fig.savefig(fh, format=ext, dpi=150 if ext == "png" else None,
                                                    bbox_inches="tight"))
        paths.append(str(final))
    return paths


def _check(claim: str, measured: str, holds) -> list:
    return [claim, measured, bool(holds)]


def fig_a1(out_dir, scale: str = "small", *, seed: int = 0) -> dict:
    """Fig A.1: quartic gap vs its bound (top) and er₂ ratio vs its bound on C(λ) (bottom)."""
    check_choice("scale", scale, SCALES)
    t0 = time.perf_counter()
    n_c, d, n_lam, n_terms = {"smoke": (101, 8, 11, 64), "small": (801, 32, 41, 256),
                              "paper": (4001, 128, 201, 256)}[scale]
    rank = max(2, d // 8)
    target = random_correlation_matrix(d, seed, rank=rank)
    lam = np.linspace(0.0, 1.0, n_lam)
    path = correlation_path(target, lam)
    c = np.linspace(-1.0, 1.0, n_c)
    fig = Figure(figsize=(3.0 * len(SIX), 6.2), layout="constrained")
    axes = fig.subplots(2, len(SIX))
    res, worst_gap, worst_ratio = {}, np.inf, np.inf
    for j, name in enumerate(SIX):
        k = kernel(name, n_terms)
        g = (1.0 - k.alpha) / (1.0 + k.alpha)
        gap = c**2 - k(c) ** 2
        bound = g * c**2 * (1.0 - c**2)
        ratio = np.asarray(rank_gain(path, k))
        rbound = np.asarray(rank_gain_bound(path, k))
        worst_gap = min(worst_gap, float(np.min(gap - bound)))
        worst_ratio = min(worst_ratio, float(np.min(ratio - rbound)))
        inner = bound > 0
        moved = rbound > 1
        res[name] = {"alpha": k.alpha, "gamma": g, "kappa": kappa(name, n_terms),
                     "min_gap_minus_bound": float(np.min(gap - bound)),
                     "min_gap_over_bound": float(np.min(gap[inner] / bound[inner])),
                     "min_ratio_minus_bound": float(np.min(ratio - rbound)),
                     "min_excess_over_bound_excess": float(np.min((ratio[moved] - 1) / (rbound[moved] - 1))),
                     "ratio_at_target": float(ratio[-1]), "bound_at_target": float(rbound[-1])}
        ax = axes[0, j]
        ax.plot(c, gap, color="C0", label=r"$c^2-K_\phi(c)^2$")
        ax.plot(c, bound, color="C3", ls="--", label=r"$\gamma_\phi c^2(1-c^2)$")
        ax.set_title(f"{name}  ($\\gamma_\\phi$={g:.3f})")
        ax.set_xlabel("c")
        ax = axes[1, j]
        ax.plot(lam, ratio, color="C0", label=r"$er_2(K_\phi(C))/er_2(C)$")
        ax.plot(lam, rbound, color="C3", ls="--", label=r"$1+\gamma_\phi\Psi(C)/\|C\|_F^2$")
        ax.set_xlabel(r"$\lambda$ in $C(\lambda)=(1-\lambda)I+\lambda C_*$")
    axes[0, 0].set_ylabel("decorrelation gap")
    axes[1, 0].set_ylabel("rank ratio")
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].legend(fontsize=8)
    fig.suptitle(f"Fig A.1: gap and rank-gain bounds (d={d}, rank {rank}, seed {seed})")
    files = _save(fig, out_dir, "fig_a1")
    psi = float(decorrelation_potential(target))
    results = {"activations": res, "d": d, "rank": rank, "seed": seed, "num_c": n_c,
               "num_lambda": n_lam, "hermite_terms": n_terms, "psi_target": psi,
               "files": files, "wall_time_s": round(time.perf_counter() - t0, 3)}
    checks = [
        _check("gap c² − K(c)² ≥ γ c²(1 − c²) on [−1, 1] (Lemma A.1, v2)",
               f"min over activations and c of gap − bound = {worst_gap:.2e}", worst_gap >= -1e-12),
        _check("er₂ ratio ≥ 1 + γΨ/‖C‖² along C(λ) (Thm 3.1, v2)",
               f"min of ratio − bound = {worst_ratio:.2e}", worst_ratio >= -1e-12),
    ]
    notes = ["Activations, d, rank and the λ path are not given in the paper; chosen as in the module "
             "docstring."]
    return {"results": results, "checks": checks, "notes": notes}


def _monotone(x: np.ndarray, increasing: bool) -> bool:
    d = np.diff(x)
    return bool(np.all(d > 0) if increasing else np.all(d < 0))


def fig_a2(out_dir, scale: str = "small", *, seed: int = 0) -> dict:
    """Fig A.2: γ_φ and P(|φ'| < 0.01) for relu(z + b) over b and tanh(a z) over a."""
    check_choice("scale", scale, SCALES)
    t0 = time.perf_counter()
    m = {"smoke": 9, "small": 81, "paper": 401}[scale]
    bias = np.linspace(-6.0, 3.0, m)
    gain = np.logspace(-1.0, 2.5, m)
    g_relu = np.array([gamma(("relu", 1.0, b)) for b in bias])
    p_relu = frozen_probability("relu", 1.0, bias, EPS)
    g_tanh = np.array([gamma(("tanh", a, 0.0)) for a in gain])
    p_tanh = frozen_probability("tanh", gain, 0.0, EPS)
    p_tanh_gain = frozen_probability("tanh", gain, 0.0, EPS, include_gain=True)
    fig = Figure(figsize=(10.0, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    for col, (x, g, p, label, logx) in enumerate(
            [(bias, g_relu, p_relu, "bias b in relu(z + b)", False),
             (gain, g_tanh, p_tanh, "gain a in tanh(a z)", True)]):
        ax = axes[0, col]
        ax.plot(x, g, color="C0", label=r"$\gamma_\phi$")
        ax.set_xlabel(label)
        ax.set_ylabel(r"$\gamma_\phi$", color="C0")
        tw = ax.twinx()
        tw.plot(x, p, color="C3", ls="--", label=r"$P(|\phi'|<0.01)$")
        if col == 1:
            tw.plot(x, p_tanh_gain, color="C1", ls=":", label=r"$P(|a\phi'|<0.01)$")
            tw.legend(fontsize=8, loc="center right")
        tw.set_ylabel("frozen probability", color="C3")
        tw.set_ylim(-0.02, 1.02)
        if logx:
            ax.set_xscale("log")
        ax = axes[1, col]
        ax.plot(p, g, marker=".", color="C0")
        ax.set_xlabel(r"frozen probability $P(|\phi'|<0.01)$")
        ax.set_ylabel(r"$\gamma_\phi$")
        ax.set_title(["ReLU, bias sweep", "tanh, gain sweep"][col])
    fig.suptitle(r"Fig A.2: decorrelation strength $\gamma_\phi$ vs freezing")
    files = _save(fig, out_dir, "fig_a2")
    limit = (np.pi - 2.0) / (np.pi + 2.0)
    relu_mono = _monotone(g_relu, increasing=False)
    tanh_mono = _monotone(g_tanh, increasing=True)
    high = g_relu >= 0.5
    i_max = int(np.argmax(g_relu))
    relu = {"bias": [float(bias[0]), float(bias[-1])],
            "gamma_range": [float(g_relu.min()), float(g_relu.max())],
            "frozen_at_max_gamma": float(p_relu[i_max]),
            "min_frozen_where_gamma_ge_0.5": float(p_relu[high].min()) if high.any() else None,
            "gamma_monotone_decreasing_in_b": relu_mono}
    tanh = {"gain": [float(gain[0]), float(gain[-1])],
            "gamma_range": [float(g_tanh.min()), float(g_tanh.max())],
            "gamma_limit_sign_function": float(limit),
            "frozen_at_max_gain": float(p_tanh[-1]),
            "frozen_with_gain_factor_at_max_gain": float(p_tanh_gain[-1]),
            "gamma_monotone_increasing_in_a": tanh_mono}
    results = {"relu": relu, "tanh": tanh, "eps": EPS, "num_points": m, "files": files,
               "wall_time_s": round(time.perf_counter() - t0, 3)}
    checks = [
        _check("γ_φ strictly monotone in the ReLU bias", f"decreasing in b: {relu_mono}", relu_mono),
        _check("γ_φ strictly monotone in the tanh gain", f"increasing in a: {tanh_mono}", tanh_mono),
        _check("γ_φ → 1 requires frozen probability → 1 (ReLU)",
               f"γ = {g_relu.max():.3f} at P(frozen) = {p_relu[i_max]:.4f}", p_relu[i_max] > 0.99),
        _check("tanh: γ_φ rises with gain while units freeze",
               f"γ = {g_tanh[-1]:.3f} (limit (π−2)/(π+2) = {limit:.4f}) at P(frozen) = {p_tanh[-1]:.3f}",
               g_tanh[-1] > g_tanh[0] and p_tanh[-1] > 0.95),
    ]
    notes = ["For tanh(a z), γ_φ is bounded by (π − 2)/(π + 2) ≈ 0.222 (the sign function), so at b = 0 it does "
             "not approach 1 with the gain alone.",
             "γ_φ = (1 − α)/(1 + α) with α = (E ψ')²/Var ψ; v2 calls α 'γ(a, b)' (erratum, PAPER.md §2.7)."]
    return {"results": results, "checks": checks, "notes": notes}


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx = np.argsort(np.argsort(x)).astype(float)
    ry = np.argsort(np.argsort(y)).astype(float)
    return float(np.corrcoef(rx, ry)[0, 1])


def fig_a3(out_dir, scale: str = "small", *, seed: int = 0) -> dict:
    """Fig A.3: γ_φ vs P(|φ'(μ + σ z)| < 0.01) over a (μ, σ) grid for six activations."""
    check_choice("scale", scale, SCALES)
    t0 = time.perf_counter()
    n_mu, n_sigma = {"smoke": (5, 3), "small": (41, 10), "paper": (161, 25)}[scale]
    mu = np.linspace(-5.0, 3.0, n_mu)
    sigma = np.logspace(np.log10(0.2), 1.0, n_sigma)
    fig = Figure(figsize=(13.0, 8.0), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    res = {}
    cmap = __import__("matplotlib").colormaps["viridis"]
    for ax, name in zip(axes, SIX):
        g = np.full((n_sigma, n_mu), np.nan)
        for i, s in enumerate(sigma):
            for j, u in enumerate(mu):
                try:
                    g[i, j] = gamma((name, s, u))
                except InputError:  # numerically constant: fully frozen, γ undefined
                    pass
        p = frozen_probability(name, sigma[:, None], mu[None, :], EPS)
        for i, s in enumerate(sigma):
            ax.plot(p[i], g[i], marker=".", ms=3, lw=0.8, color=cmap(i / max(n_sigma - 1, 1)))
        ax.set_title(name)
        ax.set_xlabel(r"$P(|\phi'(\mu+\sigma z)|<0.01)$")
        ax.set_ylabel(r"$\gamma_\phi$")
        ok = np.isfinite(g)
        gv, pv = g[ok], p[ok]
        top = gv >= np.quantile(gv, 0.9)
        res[name] = {"gamma_max": float(gv.max()), "frozen_at_gamma_max": float(pv[np.argmax(gv)]),
                     "median_frozen_top_decile_gamma": float(np.median(pv[top])),
                     "spearman_gamma_frozen": _spearman(gv, pv), "num_undefined": int((~ok).sum())}
    sm = __import__("matplotlib").cm.ScalarMappable(
        cmap=cmap, norm=__import__("matplotlib").colors.LogNorm(sigma[0], sigma[-1]))
    fig.colorbar(sm, ax=list(axes), label=r"pre-activation std $\sigma$")
    fig.suptitle(r"Fig A.3: $\gamma_\phi$ vs frozen probability over pre-activation mean $\mu$ and std $\sigma$")
    files = _save(fig, out_dir, "fig_a3")
    results = {"activations": res, "mu": [float(mu[0]), float(mu[-1]), n_mu],
               "sigma": [float(sigma[0]), float(sigma[-1]), n_sigma], "eps": EPS, "files": files,
               "wall_time_s": round(time.perf_counter() - t0, 3)}
    pos = [n for n in SIX if res[n]["spearman_gamma_frozen"] > 0]
    checks = [_check(f"{n}: high γ_φ mostly requires near-total freezing",
                     f"median P(frozen) over the top γ decile = {res[n]['median_frozen_top_decile_gamma']:.2f}; "
                     f"max γ = {res[n]['gamma_max']:.3f} at P = {res[n]['frozen_at_gamma_max']:.2f}",
                     res[n]["median_frozen_top_decile_gamma"] > 0.5) for n in SIX]
    checks.append(_check("γ_φ and freezing rise together",
                         f"Spearman > 0 for {len(pos)}/6: {', '.join(pos)}", len(pos) == len(SIX)))
    notes = ["Sweep ranges and the activation list are not in the paper; chosen as in the module docstring.",
             "Grid points where ψ is numerically constant (γ undefined) are left out of the plot and counted.",
             "gelu is not monotone: near its minimum (u ≈ −0.75) or where E φ'(u) cancels "
             "(e.g. μ = −3, σ = 1.4) α = (E ψ')²/Var ψ ≈ 0 and γ_φ ≈ 1 while few units are frozen.",
             "Freezing does not imply large γ_φ: with small σ a saturated tanh/sigmoid unit is locally "
             "almost affine (γ_φ ≈ 0 at P(frozen) ≈ 1)."]
    return {"results": results, "checks": checks, "notes": notes}

"""eNTK spectrum of a ~1M-parameter MLP, dense against Lanczos; KPM vs SLQ accuracy per matvec.

Run ``python -m benchmarks.ntk [--quick] [--out PATH]``; ``main(argv)`` is callable.

1. ``pdx.curvature.ntk_spectrum`` on an MLP 256-1024-768-10 (1.05M parameters) and a batch of
   256 (K is 2560 x 2560): the dense route (K from 2560 VJP+JVP products, 64 at a time, then
   ``eigh``) against the Lanczos route (the k = 32 largest eigenvalues); relative error of the
   top k, effective rank and condition number of each, times (first call with compile apart).
   ``--quick``: 64-wide MLP on a batch of 32 (K 320 x 320).
2. Spectral densities of a synthetic symmetric operator with a Hessian-like spectrum (a bulk
   near zero of both signs plus outliers; n = 1000, dense eigenvalues known): 1-Wasserstein
   distance of the KPM and SLQ estimates (16 Rademacher probes each) to the true eigenvalue
   distribution at equal matvec budgets per probe; and the variance of Hutchinson and Hutch++
   traces at equal matvecs over 24 keys on a power-law spectrum.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import default_out, environment, environment_line, table, write_json


def _mlp(sizes, seed=0):
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    return [{"w": jnp.asarray(rng.standard_normal((a, b)) / np.sqrt(a), jnp.float32),
             "b": jnp.asarray(0.1 * rng.standard_normal(b), jnp.float32)} for a, b in zip(sizes[:-1], sizes[1:])]


def _apply(params, x):
    import jax.numpy as jnp

    for i, layer in enumerate(params):
        x = x @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            x = jnp.maximum(x, 0.0)
    return x


def ntk_rows(sizes, batch, k):
    import jax
    import jax.numpy as jnp

    import plasticity_dynamics as pdx

    params = _mlp(sizes)
    n = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((batch, sizes[0])), jnp.float32)
    rows, spectra = [], {}
    for method in ("dense", "lanczos"):
        t0 = time.perf_counter()
        s = pdx.curvature.ntk_spectrum(_apply, params, x, k=None if method == "dense" else k, method=method)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = pdx.curvature.ntk_spectrum(_apply, params, x, k=None if method == "dense" else k, method=method)
        run = time.perf_counter() - t0
        spectra[method] = s
        rows.append({"route": method, "params": n, "K size": s.size, "matvecs": s.num_matvecs,
                     "first_call_s": first, "run_s": run, "lambda_max": float(s.eigenvalues[0]),
                     "effective_rank": s.effective_rank, "condition_number": s.condition_number})
    d, lz = spectra["dense"], spectra["lanczos"]
    top = d.eigenvalues[:k]
    err = float(np.max(np.abs(lz.eigenvalues - top) / top))
    erank_topk = float(pdx.curvature._ntk._summaries(top, d.size)[0])
    rows[1]["top_k_rel_err"] = err
    rows[0]["top_k_rel_err"] = 0.0
    rows[1]["speedup"] = rows[0]["run_s"] / rows[1]["run_s"]
    extra = {"effective_rank_full": d.effective_rank, "effective_rank_of_dense_top_k": erank_topk,
             "trace_dense": d.trace, "trace_lanczos_probe": lz.trace,
             "top_k_mass_fraction": float(top.sum() / d.trace)}
    return rows, extra


def _operator(n, spectrum, seed):
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return jnp.asarray((q * spectrum) @ q.T, jnp.float32)


def density_rows(n, budgets, probes):
    import jax.numpy as jnp

    import plasticity_dynamics as pdx

    rng = np.random.default_rng(7)
    nb = int(0.7 * n)
    eigs = np.r_[rng.gamma(1.0, 0.5, nb) - 0.2, 4 + 0.5 * rng.standard_normal(n - nb - 5), [12, 15, 20, 30, 45]]
    a = _operator(n, eigs, 0)
    p = {"x": jnp.zeros(n, jnp.float32)}

    def quad(p, a):
        return 0.5 * p["x"] @ a @ p["x"]

    grid = np.linspace(eigs.min() - 2, eigs.max() + 2, 4000)
    true = np.searchsorted(np.sort(eigs), grid, side="right") / n
    rows = []
    for m in budgets:
        kp = pdx.curvature.kpm_density(quad, p, args=(a,), num_iters=m + 1, num_probes=probes, grid=grid)
        cdf = np.cumsum(kp.density) * (grid[1] - grid[0])
        w_kpm = float(np.trapezoid(np.abs(cdf - true), grid))
        sq = pdx.curvature.slq_density(quad, p, args=(a,), num_iters=m, num_probes=probes)
        nodes, w = sq.nodes.ravel(), sq.weights.ravel() / probes
        order = np.argsort(nodes)
        cdf_s = np.cumsum(w[order])[np.clip(np.searchsorted(nodes[order], grid, side="right") - 1, -1, None)]
        cdf_s = np.where(np.searchsorted(nodes[order], grid, side="right") == 0, 0.0, cdf_s)
        w_slq = float(np.trapezoid(np.abs(cdf_s - true), grid))
        rows.append({"matvecs_per_probe": m, "W1_kpm": w_kpm, "W1_slq": w_slq,
                     "kpm_over_slq": w_kpm / w_slq})
    return rows, float(eigs.max() - eigs.min())


def trace_rows(n, budgets, keys):
    import jax
    import jax.numpy as jnp

    import plasticity_dynamics as pdx

    decay = 50.0 * np.arange(1, n + 1) ** -1.5
    a = _operator(n, decay, 1)
    p = {"x": jnp.zeros(n, jnp.float32)}

    def quad(p, a):
        return 0.5 * p["x"] @ a @ p["x"]

    rows = []
    for m in budgets:
        ks = [jax.random.PRNGKey(i) for i in range(keys)]
        h = np.array([pdx.curvature.hutchinson_trace(quad, p, args=(a,), num_samples=m, key=k).estimate for k in ks])
        pp = np.array([pdx.curvature.hutchpp_trace(quad, p, args=(a,), num_samples=m, key=k).estimate for k in ks])
        rows.append({"matvecs": m, "rel_std_hutchinson": float(h.std(ddof=1) / decay.sum()),
                     "rel_std_hutchpp": float(pp.std(ddof=1) / decay.sum()),
                     "variance_ratio": float(h.var(ddof=1) / pp.var(ddof=1))})
    return rows


NTK_COLUMNS = ["route", "params", "K size", "matvecs", "first_call_s", "run_s", "speedup", "lambda_max",
               "top_k_rel_err", "effective_rank", "condition_number"]


def render(payload: dict) -> str:
    lines = ["eNTK spectrum, dense vs Lanczos (k = %d largest):" % payload["k"], "",
             table(payload["ntk"], NTK_COLUMNS), ""]
    for key, val in payload["ntk_extra"].items():
        lines.append(f"{key}: {val:.4g}")
    lines += ["", f"Spectral density, 1-Wasserstein distance to the true eigenvalue distribution (n = "
              f"{payload['density_n']}, spectrum width {payload['spectrum_width']:.3g}, "
              f"{payload['probes']} probes):", "",
              table(payload["density"], ["matvecs_per_probe", "W1_kpm", "W1_slq", "kpm_over_slq"]), "",
              f"Trace, Hutchinson vs Hutch++ at equal matvecs ({payload['keys']} keys, power-law spectrum):", "",
              table(payload["trace"], ["matvecs", "rel_std_hutchinson", "rel_std_hutchpp", "variance_ratio"])]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ntk", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64-wide MLP, batch 32; n = 300 densities (< 60 s)")
    ap.add_argument("--out", default=None, help="JSON output path (default benchmarks/results[/quick]/ntk.json)")
    args = ap.parse_args(argv)
    k = 32
    if args.quick:
        sizes, batch, dn, budgets, tb = [32, 64, 64, 10], 32, 300, [8, 16, 32], [12, 30]
    else:
        sizes, batch, dn, budgets, tb = [256, 1024, 768, 10], 256, 1000, [8, 16, 32, 64, 128], [12, 30, 60]
    ntk, extra = ntk_rows(sizes, batch, k)
    dens, width = density_rows(dn, budgets, 16)
    tr = trace_rows(dn, tb, 24)
    payload = {"benchmark": "ntk", "quick": args.quick, "k": k, "environment": environment(), "ntk": ntk,
               "ntk_extra": extra, "density": dens, "density_n": dn, "spectrum_width": width, "probes": 16,
               "trace": tr, "keys": 24}
    print(render(payload))
    print(environment_line(payload["environment"]))
    out = write_json(args.out or default_out("ntk", args.quick), payload)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()

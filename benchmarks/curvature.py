"""Curvature benchmark: HVP cost, normal-space spectra against the dense route, and 1M scale.

Run ``python -m benchmarks.curvature [--quick] [--out PATH]``; ``main(argv)`` is callable
from a test. Measures, on the machine it runs on (compile time apart from run time, medians):

1. HVP time / gradient time for MLPs of about 2k, 7k, 23k and 1M parameters (target <= 3x).
2. ``normal_spectrum`` (k lowest + k highest normal eigenpairs) against the dense route
   (the full Hessian by ``jax.hessian``, or by chunked HVP columns where ``jax.hessian``'s
   vmapped intermediates do not fit, then float64 ``numpy.linalg.eigh`` of the normal block)
   at about 2k, 7k and 23k parameters; accuracy of the Krylov eigenvalues against the dense
   ones. Target: >= 50x faster at the largest size where dense runs.
3. ``normal_spectrum`` by Lanczos alone at about 1M parameters (784 -> 1000 -> 200 -> 10 MLP on
   MNIST-sized inputs, k = 10). Target: under a minute on 2 CPU cores.

The manifold is a clone-pair manifold of the first hidden layer (units 2i and 2i+1 cloned),
built here (the toolkit's manifolds are not needed). ``--quick`` (< 60 s) runs the 2k size with
its dense twin, 7k without it, and a 250k-parameter Krylov run, one repeat each.
Writes benchmarks/results/curvature.json (quick: benchmarks/results/quick/curvature.json, or
``--out``); ``render(payload)`` gives the Markdown table and the target lines.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from benchmarks.common import default_out, environment, environment_line, table, timed, write_json

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import ConvergenceWarning
from plasticity_dynamics.losses import masked_loss

curv = pdx.curvature


class FirstLayerClones:
    """Clone pairs (2i, 2i+1) of hidden layer 0 of an MLP {w0, b0, w1, b1, ...}."""

    def __init__(self, params):
        h = params["b0"].shape[0]
        self.a, self.b = np.arange(0, h - 1, 2), np.arange(1, h, 2)
        self.normal_dim = len(self.a) * (params["w0"].shape[0] + 1 + params["w1"].shape[1])

    def tangent(self, v):
        a, b, out = self.a, self.b, dict(v)
        m0 = (v["w0"][:, a] + v["w0"][:, b]) / 2
        mb = (v["b0"][a] + v["b0"][b]) / 2
        m1 = (v["w1"][a] + v["w1"][b]) / 2
        out["w0"] = v["w0"].at[:, a].set(m0).at[:, b].set(m0)
        out["b0"] = v["b0"].at[a].set(mb).at[b].set(mb)
        out["w1"] = v["w1"].at[a].set(m1).at[b].set(m1)
        return out

    def normal(self, v):
        return jax.tree.map(lambda x, t: x - t, v, self.tangent(v))

    def project(self, p):
        return self.tangent(p)

    def distance(self, p):
        return jnp.sqrt(sum(jnp.sum(d * d) for d in jax.tree.leaves(self.normal(p))))

    def leakage(self, g):
        return self.distance(g)

    def normal_indices(self, params):
        """Flat indices (I_a, I_b) of the paired coordinates, in ravel_pytree order."""
        leaves, treedef = jax.tree.flatten(params)
        off = np.cumsum([0] + [x.size for x in leaves])
        idx = treedef.unflatten([np.arange(o, o + x.size).reshape(x.shape) for o, x in zip(off, leaves)])

        def pick(u):
            return np.concatenate([idx["w0"][:, u].T.ravel(), idx["b0"][u], idx["w1"][u].ravel()])

        return pick(self.a), pick(self.b)


def make_problem(widths, batch, seed=0):
    """MLP params (on the clone manifold), a CE loss of (params, x, y), and a batch."""
    rng = np.random.default_rng(seed)
    params = {}
    for i, (din, dout) in enumerate(zip(widths[:-1], widths[1:])):
        params[f"w{i}"] = jnp.asarray(rng.standard_normal((din, dout)) / np.sqrt(din), jnp.float32)
        params[f"b{i}"] = jnp.asarray(0.1 * rng.standard_normal(dout), jnp.float32)
    depth = len(widths) - 1
    man = FirstLayerClones(params)
    params = man.project(params)
    x = jnp.asarray(rng.standard_normal((batch, widths[0])), jnp.float32)
    y = jnp.asarray(rng.integers(0, widths[-1], batch))

    def loss(p, x, y):
        h = x
        for i in range(depth):
            h = h @ p[f"w{i}"] + p[f"b{i}"]
            if i < depth - 1:
                h = jnp.tanh(h)
        return masked_loss(h, y)[0]

    return params, man, loss, (x, y)


def hvp_vs_grad(params, loss, data, repeats):
    grad = jax.jit(jax.grad(loss))
    hvp = jax.jit(lambda p, v, x, y: curv.hvp(lambda q: loss(q, x, y), p, v))
    v = jax.tree.map(lambda a: jnp.ones_like(a) / np.sqrt(a.size), params)
    tg = timed(lambda: grad(params, *data), repeats=repeats)
    th = timed(lambda: hvp(params, v, *data), repeats=repeats)
    return {"grad_s": tg["median_s"], "hvp_s": th["median_s"], "hvp_over_grad": th["median_s"] / tg["median_s"],
            "grad_compile_s": tg["first_call_s"], "hvp_compile_s": th["first_call_s"]}


def dense_route(params, man, loss, data, k, use_jax_hessian):
    """Full Hessian, then float64 eigh of the normal block (explicit pair indices)."""
    flat, unravel = ravel_pytree(params)
    if use_jax_hessian:
        build = jax.jit(jax.hessian(lambda f, x, y: loss(unravel(f), x, y)))
        hess = lambda: build(flat, *data)  # noqa: E731
    else:
        fn = lambda p: loss(p, *data)  # noqa: E731
        hess = lambda: curv.dense_hessian(fn, params, batch_size=256)  # noqa: E731
    t0 = time.perf_counter()
    h = jax.block_until_ready(hess())
    first = time.perf_counter() - t0
    del h
    t0 = time.perf_counter()
    h = np.asarray(jax.block_until_ready(hess()))
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ia, ib = man.normal_indices(params)
    # P_N H P_N on the orthonormal basis (e_a - e_b) / sqrt(2) of N; blocks gathered in
    # float32 (the full float64 Hessian would not fit at 23k next to it), eigh in float64
    block = (h[np.ix_(ia, ia)] - h[np.ix_(ia, ib)] - h[np.ix_(ib, ia)] + h[np.ix_(ib, ib)]) / 2
    del h
    block = block.astype(np.float64)
    eigs = np.linalg.eigvalsh((block + block.T) / 2)
    eigh_s = time.perf_counter() - t0
    return eigs, {"dense_build_s": build_s, "dense_compile_s": max(first - build_s, 0.0),
                  "dense_eigh_s": eigh_s, "dense_s": build_s + eigh_s,
                  "dense_hessian": "jax.hessian" if use_jax_hessian else "hvp columns"}


def spectrum_row(name, widths, batch, k, repeats, method, dense, jax_hessian_max, num_iters=None):
    params, man, loss, data = make_problem(widths, batch)
    n = int(ravel_pytree(params)[0].size)
    row = {"size": name, "params": n, "normal_dim": man.normal_dim, "k": k}
    row.update(hvp_vs_grad(params, loss, data, max(repeats, 30)))  # cheap; sub-ms calls are noisy
    def run():
        with warnings.catch_warnings():  # unconverged inner pairs are reported in the row
            warnings.simplefilter("ignore", ConvergenceWarning)
            return curv.normal_spectrum(loss, params, man, k=k, method=method, args=data,
                                        num_iters=num_iters)

    t = timed(lambda: run().eigenvalues, repeats=repeats)
    spec = run()
    row.update({"method": spec.method, "num_iters": num_iters, "spectrum_s": t["median_s"],
                "spectrum_compile_s": max(t["first_call_s"] - t["median_s"], 0.0),
                "num_hvps": spec.num_hvps, "verdict": spec.verdict, "max_residual": float(np.max(spec.residuals)),
                "lambda_min": float(spec.eigenvalues[0]), "lambda_max": float(spec.eigenvalues[-1])})
    if dense:
        eigs, info = dense_route(params, man, loss, data, k, n <= jax_hessian_max)
        row.update(info)
        want = np.concatenate([eigs[:k], eigs[-k:]])
        err = np.abs(spec.eigenvalues - want) / np.max(np.abs(eigs))
        row["extreme_rel_err"] = float(max(err[0], err[-1]))  # lambda_min and lambda_max
        row["max_rel_err"] = float(np.max(err))  # worst of the k lowest and k highest
        row["speedup"] = info["dense_s"] / t["median_s"]
        row["dense_verdict"] = curv.classify(eigs, spec.tolerance)
    return row


COLUMNS = ["size", "params", "normal_dim", "grad_s", "hvp_s", "hvp_over_grad", "num_hvps",
           "spectrum_compile_s", "spectrum_s", "max_residual", "dense_hessian", "dense_s", "speedup",
           "extreme_rel_err", "max_rel_err", "verdict", "dense_verdict"]


def render(payload: dict) -> str:
    """Markdown table and target lines of a curvature payload."""
    lines = [table(payload["rows"], COLUMNS)]
    for key, val in payload["targets"].items():
        lines.append(f"{key}: {val:.4g}" if isinstance(val, float) else f"{key}: {val}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.curvature", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="2k (with dense) and 7k (Krylov only) sizes and a 250k Krylov run, one repeat (< 60 s)")
    ap.add_argument("--num-iters", type=int, default=None, help="Lanczos depth (default: normal_spectrum's)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output path (default benchmarks/results[/quick]/curvature.json)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 3, quick 1)")
    ap.add_argument("--no-dense-23k", action="store_true", help="skip the dense route at 23k parameters")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    k = 10
    it = args.num_iters
    rows = [spectrum_row("2k", [32, 48, 10], 128, k, repeats, "lanczos", True, 10_000, it),
            spectrum_row("7k", [32, 160, 10], 128, k, repeats, "lanczos", not args.quick, 10_000, it)]
    if not args.quick:
        rows.append(spectrum_row("23k", [32, 540, 10], 128, k, repeats, "lanczos", not args.no_dense_23k, 10_000, it))
    big = [784, 300, 50, 10] if args.quick else [784, 1000, 200, 10]
    rows.append(spectrum_row("250k" if args.quick else "1M", big, 256, k, repeats, "lanczos", False, 0, it))

    dense_rows = [r for r in rows if "speedup" in r]
    largest = max(dense_rows, key=lambda r: r["params"])
    krylov = rows[-1]
    targets = {
        "hvp_over_grad_max": max(r["hvp_over_grad"] for r in rows), "hvp_over_grad_target": 3.0,
        "speedup_at_largest_dense": largest["speedup"], "largest_dense_params": largest["params"],
        "speedup_target": 50.0,
        "krylov_params": krylov["params"], "krylov_total_s": krylov["spectrum_s"] + krylov["spectrum_compile_s"],
        "krylov_run_s": krylov["spectrum_s"], "krylov_target_s": 60.0,
    }
    payload = {"benchmark": "curvature", "quick": args.quick, "repeats": repeats, "k": k,
               "environment": environment(), "rows": rows, "targets": targets}
    print(render(payload))
    print(environment_line(payload["environment"]))
    out = write_json(args.out or default_out("curvature", args.quick), payload)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()

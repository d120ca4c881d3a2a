"""Unit-metrics speed: layer metrics at research sizes, and whole models, against NumPy float64.

Layer sizes (``metrics_from_arrays`` jitted on one layer's activations, dL/dh and
pre-activations; a trained-like ReLU layer with dead and cloned units): dense 500x128, 1000x512,
4096x1024, and tall conv maps 16384x16 (16 x 32 x 32 x 16) and 65536x64. Whole models
(``make_unit_metrics_fn``: forward + backward through probes + every layer metric): the paper's
MLP (5 x 128) and CNN on a batch of 500, trace+compile and the first call apart, then the
median of repeats, and the layer metrics alone on the same arrays.

Baseline: the same formulas in plain NumPy float64 (every row, ``numpy.linalg.svd``; Dohare's
all-positions low activity), median of repeats; NumPy has no autodiff, so it starts from the
arrays JAX produced. ``numpy_over_jax`` is the speed ratio (target >= 3 at every size) with
NumPy's BLAS on its default threads (2 on the 2-core reference machine, as JAX's XLA uses 2);
``numpy_1t_s`` times NumPy with its BLAS on 1 thread too, and ``best_numpy_over_jax`` divides
the faster of the two NumPy times (a stricter baseline: 1 thread is faster for small layers);
``max_rel_diff`` the largest disagreement of the values (a sanity check). JAX runs with
``pdx.configure_jax()``, as the command line does: its XLA CPU flag (the concurrency-optimised
scheduler off) also makes the fused per-unit counts 2-3x faster on 2 cores, and jaxlib's LAPACK
runs single-threaded (:func:`plasticity_dynamics.runtime.limit_lapack_threads`). The metrics use the
default singular-value route (:func:`plasticity_dynamics.metrics.ranks.default_route`: on CPU "qr",
"gram" for the tall conv map 65536 x 64).

    python -m benchmarks.metrics [--quick] [--layers-only] [--repeats N] [--out PATH]

``--quick``: layers 200x32 and conv 2048x8, batch 100, MLP on 8x8x3, the "small" CNN preset on
16x16x3, 3 repeats. Writes benchmarks/results/metrics.json (quick:
benchmarks/results/quick/metrics.json, or ``--out``) with environment facts; ``render(payload)``
gives the Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from .common import default_out, environment, environment_line, median_time, table, wall_times, write_json

RESULT = default_out("metrics", quick=False)
COLUMNS = ["model", "batch", "input", "layers", "compile_s", "warmup_s", "jax_total_s", "metrics_compile_s",
           "jax_metrics_s", "numpy_metrics_s", "numpy_over_jax", "numpy_1t_s", "best_numpy_over_jax", "max_rel_diff"]


# ----------------------------------------------------------------------------- NumPy baseline
def _np_layer(h, g, z, hp):
    """The layer formulas of plasticity_dynamics.metrics in plain NumPy float64 (ReLU network),
    every row, SVD by numpy.linalg.svd. ``hp``: per-image pooled conv map, or None (dense)."""
    h, g = np.asarray(h, np.float64), np.asarray(g, np.float64)
    a = np.abs(h)
    s = a.mean(0)
    out = {
        "dead_frac@1e-07,0.95": np.mean((a < 1e-7).mean(0) > 0.95),
        "never_active_frac": np.mean((h == 0).all(0)),
        "low_activity_frac@0.01": np.mean((h != 0).mean(0) < 0.01),
        "dormant_frac@0.025": np.mean(s / (s.mean() + 1e-9) <= 0.025),
        "dormant_frac@0.1": np.mean(s / (s.mean() + 1e-9) <= 0.1),
        "saturated_frac@0.0001,0.99": np.mean((np.abs(g) / np.maximum(s, 1e-12) < 1e-4).mean(0) > 0.99),
    }
    if hp is not None:
        out["low_activity_frac_per_image@0.01"] = np.mean((np.asarray(hp) != 0).mean(0) < 0.01)
    if z is not None:
        z = np.asarray(z, np.float64)
        out["linearised_frac@0.9"] = np.mean((z > 0).mean(0) >= 0.9)
        out["frozen_frac@0.01,0.99"] = np.mean((z <= 0).mean(0) > 0.99)  # ReLU: f'(z) = 0 iff z <= 0
    d = h.shape[1]
    for centred, name in ((False, "duplicate_frac@0.95"), (True, "duplicate_frac_pearson@0.95")):
        x = h - h.mean(0) if centred else h
        if centred:  # a constant column centres to rounding noise of its mean: set to zero
            x = np.where(np.abs(x).max(0) > 32 * np.finfo(np.float32).eps * np.abs(h).max(0), x, 0.0)
        n = np.linalg.norm(x, axis=0)
        xn = np.divide(x, n, out=np.zeros_like(x), where=n > 0)
        c = xn.T @ xn
        out[name] = np.mean(np.triu(c > 0.95, 1).any(1))
        if centred:
            gc = x.T @ x
            den = np.sum(gc**2)
            out["stable_rank"] = np.trace(gc) ** 2 / den if den > 0 else 0.0
        else:
            adj = c > 0.95
            labels = np.arange(d)
            for i in range(d):  # BFS connected components
                if labels[i] != i:
                    continue
                stack = [i]
                while stack:
                    j = stack.pop()
                    for k in np.flatnonzero(adj[j] & (labels > i)):
                        labels[k] = i
                        stack.append(k)
            sizes = np.bincount(labels, minlength=d)
            out["clone_cluster_frac@0.95"] = np.mean(sizes[labels] > 1)
            out["clone_clusters@0.95"] = float(np.sum(sizes > 1))
            out["largest_clone_cluster@0.95"] = float(sizes.max())
    sv = np.linalg.svd(h, compute_uv=False)
    tot = sv.sum()
    p = sv[sv > 0] / tot if tot > 0 else sv[:0]
    out["effective_rank"] = np.exp(-np.sum(p * np.log(p))) if tot > 0 else 0.0
    lam = sv**2
    out["renyi2_rank"] = lam.sum() ** 2 / np.sum(lam**2) if tot > 0 else 0.0
    out["srank@0.99"] = int(np.sum(np.cumsum(sv) < 0.99 * tot)) + 1 if tot > 0 else 0
    out["approx_rank@0.99"] = int(np.sum(np.cumsum(lam) < 0.99 * lam.sum())) + 1 if tot > 0 else 0
    out["hard_rank"] = int(np.sum(sv > max(h.shape) * np.finfo(np.float32).eps * sv[0])) if tot > 0 else 0
    return out


def _np_metrics(arrays, kinds):
    result = {}
    for layer, (a, g, z) in arrays.items():
        flat = (lambda t: t.reshape(-1, t.shape[-1])) if kinds[layer] != "dense" else (lambda t: t)
        hp = a.mean(axis=tuple(range(1, a.ndim - 1))) if kinds[layer] != "dense" else None
        for name, v in _np_layer(flat(a), flat(g), None if z is None else flat(z), hp).items():
            result.setdefault(name, {})[layer] = float(v)
    return result


def _numpy_one_thread(fn, repeats):
    """Wall times of ``fn`` with every BLAS library of the process on 1 thread (restored after)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return wall_times(fn, repeats)


def _diffs(jax_values, np_values):
    diffs = {}
    for metric, per in np_values.items():
        if metric not in jax_values:  # (an older version of the package, timed for comparison)
            continue
        for layer, v in per.items():
            ref = float(jax_values[metric][layer])
            diffs[f"{metric}/{layer}"] = abs(ref - v) / max(1.0, abs(v))
    worst = max(diffs, key=diffs.get)
    return diffs[worst], worst


# ----------------------------------------------------------------------------- one layer
LAYERS_FULL = (("dense", 500, 128), ("dense", 1000, 512), ("dense", 4096, 1024), ("conv", 16384, 16),
               ("conv", 65536, 64))
LAYERS_QUICK = (("dense", 200, 32), ("conv", 2048, 8))
LAYER_COLUMNS = ["kind", "rows", "units", "compile_s", "jax_s", "numpy_s", "numpy_over_jax", "numpy_1t_s",
                 "best_numpy_over_jax", "jax_min_s", "numpy_min_s", "min_ratio", "max_rel_diff"]


def layer_arrays(kind: str, n: int, d: int, seed: int = 0):
    """A trained-like ReLU layer (low-rank signal + noise, some dead and cloned units): activations,
    dL/dh and pre-activations; conv layers as (n / 1024, 32, 32, d) maps."""
    rng = np.random.default_rng(seed)
    r = max(1, min(n, d) // 2)
    z = (rng.normal(size=(n, r)) @ rng.normal(size=(r, d)) / np.sqrt(r) + 0.1 * rng.normal(size=(n, d)) - 0.2)
    if d > 4:
        z[:, : d // 16 + 1] = -1.0  # dead units
        z[:, -2] = z[:, -1]  # a clone pair
    z = z.astype(np.float32)
    h = np.maximum(z, 0)
    g = (rng.normal(size=(n, d)) * 1e-3).astype(np.float32)
    if kind == "conv":
        shape = (n // 1024, 32, 32, d)
        h, g, z = h.reshape(shape), g.reshape(shape), z.reshape(shape)
    return h, g, z


def measure_layer(kind: str, n: int, d: int, repeats: int) -> dict:
    """metrics_from_arrays of one (n, d) layer (jitted) against the NumPy float64 formulas."""
    import jax

    import plasticity_dynamics as pdx

    h, g, z = layer_arrays(kind, n, d)
    kinds = {"L": kind}
    f = jax.jit(lambda a, b, c: pdx.metrics.metrics_from_arrays({"L": a}, {"L": b}, {"L": c}, kinds,
                                                                activation="relu"))
    t0 = time.perf_counter()
    compiled = f.lower(h, g, z).compile()
    compile_s = time.perf_counter() - t0
    jax_values = jax.device_get(compiled(h, g, z))
    jax_t = wall_times(lambda: jax.block_until_ready(compiled(h, g, z)), repeats)
    host = {"L": (h, g, z)}
    np_values = _np_metrics(host, kinds)
    np_t = wall_times(lambda: _np_metrics(host, kinds), repeats)
    np1_s = statistics.median(_numpy_one_thread(lambda: _np_metrics(host, kinds), repeats))
    worst_diff, worst = _diffs(jax_values, np_values)
    jax_s, numpy_s = statistics.median(jax_t), statistics.median(np_t)
    return {"kind": kind, "rows": n, "units": d, "compile_s": compile_s, "jax_s": jax_s, "numpy_s": numpy_s,
            "numpy_over_jax": numpy_s / jax_s, "numpy_1t_s": np1_s, "best_numpy_over_jax": min(numpy_s, np1_s) / jax_s,
            "jax_min_s": min(jax_t), "numpy_min_s": min(np_t),
            "min_ratio": min(np_t) / min(jax_t), "max_rel_diff": worst_diff, "max_rel_diff_at": worst,
            "repeats": repeats}


# ----------------------------------------------------------------------------- one model
def measure(name: str, model, x, y, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    import plasticity_dynamics as pdx
    from plasticity_dynamics.losses import masked_loss

    m = pdx.metrics
    variables = model.init(jax.random.PRNGKey(0), x)
    f = m.make_unit_metrics_fn(model)
    t0 = time.perf_counter()
    compiled = f.lower(variables, x, y).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(f(variables, x, y))  # warm-up (dispatch cache, first execution)
    warmup_s = time.perf_counter() - t0
    total_s = median_time(lambda: jax.block_until_ready(compiled(variables, x, y)), repeats)

    # the arrays: activations, dL/dh and pre-activations of the same pass
    def arrays(v, x, y):
        shapes = jax.eval_shape(lambda v, x: model.apply(v, x).activations, v, x)
        probes = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def loss(pr):
            out = model.apply(v, x, probes=pr)
            return masked_loss(out.logits, y)[0], out

        g, out = jax.grad(loss, has_aux=True)(probes)
        return out.activations, g, out.preactivations

    acts, grads, pre = jax.block_until_ready(jax.jit(arrays)(variables, x, y))
    kinds = model.layer_kinds
    mf = jax.jit(lambda a, g, z: m.metrics_from_arrays(a, g, z, kinds, activation=model.activation))
    t0 = time.perf_counter()
    mc = mf.lower(acts, grads, pre).compile()
    metrics_compile_s = time.perf_counter() - t0
    jax.block_until_ready(mc(acts, grads, pre))
    metrics_s = median_time(lambda: jax.block_until_ready(mc(acts, grads, pre)), repeats)
    jax_values = jax.device_get(mc(acts, grads, pre))

    host = {k: (np.asarray(acts[k]), np.asarray(grads[k]), None if k not in pre else np.asarray(pre[k])) for k in acts}
    np_values = _np_metrics(host, kinds)
    numpy_s = median_time(lambda: _np_metrics(host, kinds), repeats)
    np1_s = statistics.median(_numpy_one_thread(lambda: _np_metrics(host, kinds), repeats))
    worst_diff, worst = _diffs(jax_values, np_values)
    return {
        "model": name, "batch": int(x.shape[0]), "input": "x".join(map(str, x.shape[1:])),
        "layers": len(acts), "compile_s": compile_s, "warmup_s": warmup_s, "jax_total_s": total_s,
        "metrics_compile_s": metrics_compile_s, "jax_metrics_s": metrics_s, "numpy_metrics_s": numpy_s,
        "numpy_over_jax": numpy_s / metrics_s, "numpy_1t_s": np1_s, "best_numpy_over_jax": min(numpy_s, np1_s) / metrics_s,
        "max_rel_diff": worst_diff, "max_rel_diff_at": worst,
        "repeats": repeats,
    }


def render(payload: dict) -> str:
    """Markdown tables of a metrics payload: layer metrics per size, then whole models."""
    parts = []
    if payload.get("layers"):
        parts += ["Layer metrics (`metrics_from_arrays`, jitted) vs the same formulas in NumPy float64:", "",
                  table(payload["layers"], LAYER_COLUMNS), ""]
    parts += ["Whole models (`make_unit_metrics_fn`):", "", table(payload["results"], COLUMNS)]
    return "\n".join(parts)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs and batch (seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 3)")
    parser.add_argument("--layers-only", action="store_true", help="skip the whole-model cases")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output path (default benchmarks/results[/quick]/metrics.json)")
    args = parser.parse_args(argv)

    import jax

    import plasticity_dynamics as pdx

    os.environ["PDX_NO_COMPILATION_CACHE"] = "1"  # compile_s is a real compile, not a cache load
    pdx.configure_jax()  # the settings the command line runs with (XLA CPU flag, no async dispatch)

    repeats = args.repeats or (3 if args.quick else 5)
    batch = 100 if args.quick else 500
    mlp_hw, cnn_hw = (8, 16) if args.quick else (32, 32)
    key = jax.random.PRNGKey(1)
    y = jax.random.randint(key, (batch,), 0, 10)
    cases = [
        ("mlp 5x128", pdx.models.create("mlp"), jax.random.normal(key, (batch, mlp_hw, mlp_hw, 3))),
        ("cnn " + ("small" if args.quick else "paper"), pdx.models.create("cnn", preset="small" if args.quick else None),
         jax.random.normal(key, (batch, cnn_hw, cnn_hw, 3))),
    ]
    layers = [measure_layer(kind, n, d, repeats) for kind, n, d in (LAYERS_QUICK if args.quick else LAYERS_FULL)]
    for r in layers:
        print(f"layer {r['kind']} {r['rows']}x{r['units']}: median jax {r['jax_s']:.4g} s, numpy float64 "
              f"{r['numpy_s']:.4g} s, ratio {r['numpy_over_jax']:.3g}x; min ratio {r['min_ratio']:.3g}x; against NumPy's faster "
              f"thread setting {r['best_numpy_over_jax']:.3g}x", flush=True)
    rows = [] if args.layers_only else [measure(name, model, x, y, repeats) for name, model, x in cases]
    payload = {"benchmark": "metrics", "quick": args.quick, "environment": environment(), "results": rows,
               "layers": layers,
               "notes": "times in seconds; jax_total_s = forward + backward + all layer metrics (median); "
                        "jax_metrics_s / numpy_metrics_s = layer metrics from the same arrays"}
    print(render(payload))
    print("\n" + environment_line(payload["environment"]))
    out = write_json(args.out or default_out("metrics", args.quick), payload)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()

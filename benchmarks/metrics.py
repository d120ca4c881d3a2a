"""Unit-metrics speed: ``unit_metrics`` for the paper's MLP (5 x 128) and CNN on a batch of 500.

For each model it measures, in one run:
- JAX, whole function (``make_unit_metrics_fn``: forward + backward through probes + every layer
  metric): trace+compile time apart, the first (warm-up) call apart, then the median of repeats;
- JAX, layer metrics only (``metrics_from_arrays`` jitted, on the activations, dL/dh and
  pre-activations of that batch): compile apart, median of repeats;
- NumPy baseline: the same layer formulas written in plain NumPy (float32 arrays, SVD via
  ``numpy.linalg.svd`` on the same row subsample), median of repeats. NumPy has no autodiff, so
  it starts from the arrays JAX produced; compare it with the "metrics only" column.
It also reports the largest disagreement between the JAX and NumPy values (a sanity check).

    python -m benchmarks.metrics [--quick] [--repeats N] [--out PATH]

Inputs: MLP on flattened 32x32x3 images, CNN (64-128-256 channels, FC 512) on 32x32x3, batch
500. ``--quick``: batch 100, MLP on 8x8x3, the "small" CNN preset on 16x16x3, 3 repeats.
Writes benchmarks/results/metrics.json (quick: benchmarks/results/quick/metrics.json, or
``--out``) with environment facts; ``render(payload)`` gives the Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from .common import default_out, environment, environment_line, table, write_json

RESULT = default_out("metrics", quick=False)
COLUMNS = ["model", "batch", "input", "layers", "compile_s", "warmup_s", "jax_total_s", "metrics_compile_s",
           "jax_metrics_s", "numpy_metrics_s", "numpy_over_jax", "max_rel_diff"]


# ----------------------------------------------------------------------------- NumPy baseline
def _np_layer(h, g, z, hp, rows):
    """The layer formulas of plasticity_dynamics.metrics in plain NumPy (ReLU network)."""
    a = np.abs(h)
    s = a.mean(0)
    out = {
        "dead_frac@1e-07,0.95": np.mean((a < 1e-7).mean(0) > 0.95),
        "never_active_frac": np.mean((h == 0).all(0)),
        "low_activity_frac@0.01": np.mean((np.abs(hp) > 0).mean(0) < 0.01),
        "dormant_frac@0.025": np.mean(s / (s.mean() + 1e-9) <= 0.025),
        "dormant_frac@0.1": np.mean(s / (s.mean() + 1e-9) <= 0.1),
        "saturated_frac@0.0001,0.99": np.mean((np.abs(g) / np.maximum(s, 1e-12) < 1e-4).mean(0) > 0.99),
    }
    if z is not None:
        out["linearised_frac@0.9"] = np.mean((z > 0).mean(0) >= 0.9)
        out["frozen_frac@0.01,0.99"] = np.mean((z <= 0).mean(0) > 0.99)  # ReLU: f'(z) = 0 iff z <= 0
    d = h.shape[1]
    for centred, name in ((False, "duplicate_frac@0.95"), (True, "duplicate_frac_pearson@0.95")):
        x = h - h.mean(0) if centred else h
        n = np.linalg.norm(x, axis=0)
        xn = np.divide(x, n, out=np.zeros_like(x), where=n > 0)
        c = xn.T @ xn
        out[name] = np.mean(np.triu(c > 0.95, 1).any(1))
        if not centred:
            adj = c > 0.95
            np.fill_diagonal(adj, False)
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
    sub = h[rows]
    sv = np.linalg.svd(sub, compute_uv=False)
    sv = np.where(sv > max(sub.shape) * np.finfo(np.float32).eps * sv[0], sv, 0.0) if sv[0] > 0 else sv
    tot = sv.sum()
    p = sv[sv > 0] / tot if tot > 0 else sv[:0]
    out["effective_rank"] = np.exp(-np.sum(p * np.log(p))) if tot > 0 else 0.0
    lam = sv**2
    out["renyi2_rank"] = lam.sum() ** 2 / np.sum(lam**2) if tot > 0 else 0.0
    out["srank@0.99"] = min(int(np.sum(np.cumsum(sv) < 0.99 * tot)) + 1, int(np.sum(sv > 0))) if tot > 0 else 0
    out["approx_rank@0.99"] = min(int(np.sum(np.cumsum(lam) < 0.99 * lam.sum())) + 1, int(np.sum(sv > 0))) if tot > 0 else 0
    out["hard_rank"] = int(np.sum(sv > 0))
    hc = sub - sub.mean(0)
    gram = hc.T @ hc if hc.shape[0] >= hc.shape[1] else hc @ hc.T
    den = np.sum(gram * gram)
    out["stable_rank"] = np.trace(gram) ** 2 / den if den > 0 else 0.0
    return out


def _np_metrics(arrays, kinds, rows):
    result = {}
    for layer, (a, g, z) in arrays.items():
        flat = (lambda t: t.reshape(-1, t.shape[-1])) if kinds[layer] != "dense" else (lambda t: t)
        hp = a.mean(axis=tuple(range(1, a.ndim - 1))) if kinds[layer] != "dense" else a
        for name, v in _np_layer(flat(a), flat(g), None if z is None else flat(z), hp, rows[layer]).items():
            result.setdefault(name, {})[layer] = float(v)
    return result


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------- one model
def measure(name: str, model, x, y, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    import plasticity_dynamics as pdx

    m = pdx.metrics
    variables = model.init(jax.random.PRNGKey(0), x)
    f = m.make_unit_metrics_fn(model)
    t0 = time.perf_counter()
    compiled = f.lower(variables, x, y).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(f(variables, x, y))  # warm-up (dispatch cache, first execution)
    warmup_s = time.perf_counter() - t0
    total_s = _median_time(lambda: jax.block_until_ready(compiled(variables, x, y)), repeats)

    # the arrays: activations, dL/dh and pre-activations of the same pass
    def arrays(v, x, y):
        shapes = jax.eval_shape(lambda v, x: model.apply(v, x).activations, v, x)
        probes = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def loss(pr):
            out = model.apply(v, x, probes=pr)
            logp = jax.nn.log_softmax(out.logits)
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1)), out

        g, out = jax.grad(loss, has_aux=True)(probes)
        return out.activations, g, out.preactivations

    acts, grads, pre = jax.block_until_ready(jax.jit(arrays)(variables, x, y))
    kinds = model.layer_kinds
    mf = jax.jit(lambda a, g, z: m.metrics_from_arrays(a, g, z, kinds, activation=model.activation))
    t0 = time.perf_counter()
    mc = mf.lower(acts, grads, pre).compile()
    metrics_compile_s = time.perf_counter() - t0
    jax.block_until_ready(mc(acts, grads, pre))
    metrics_s = _median_time(lambda: jax.block_until_ready(mc(acts, grads, pre)), repeats)
    jax_values = jax.device_get(mc(acts, grads, pre))

    host = {k: (np.asarray(acts[k]), np.asarray(grads[k]), None if k not in pre else np.asarray(pre[k])) for k in acts}
    rows = {}
    for k, (a, _, _) in host.items():
        n = a.shape[0] if kinds[k] == "dense" else int(np.prod(a.shape[:-1]))
        rows[k] = (np.asarray(jax.random.permutation(jax.random.PRNGKey(0), n)[:1024]) if n > 1024 else np.arange(n))
    np_values = _np_metrics(host, kinds, rows)
    numpy_s = _median_time(lambda: _np_metrics(host, kinds, rows), repeats)
    diffs = {}
    for metric, per in np_values.items():
        for layer, v in per.items():
            ref = float(jax_values[metric][layer])
            diffs[f"{metric}/{layer}"] = abs(ref - v) / max(1.0, abs(v))
    worst = max(diffs, key=diffs.get)
    return {
        "model": name, "batch": int(x.shape[0]), "input": "x".join(map(str, x.shape[1:])),
        "layers": len(acts), "compile_s": compile_s, "warmup_s": warmup_s, "jax_total_s": total_s,
        "metrics_compile_s": metrics_compile_s, "jax_metrics_s": metrics_s, "numpy_metrics_s": numpy_s,
        "numpy_over_jax": numpy_s / metrics_s, "max_rel_diff": diffs[worst], "max_rel_diff_at": worst,
        "repeats": repeats,
    }


def render(payload: dict) -> str:
    """Markdown table of a metrics payload."""
    return table(payload["results"], COLUMNS)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs and batch (seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 3)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output path (default benchmarks/results[/quick]/metrics.json)")
    args = parser.parse_args(argv)

    import jax

    import plasticity_dynamics as pdx

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
    rows = [measure(name, model, x, y, repeats) for name, model, x in cases]
    payload = {"benchmark": "metrics", "quick": args.quick, "environment": environment(), "results": rows,
               "notes": "times in seconds; jax_total_s = forward + backward + all layer metrics (median); "
                        "jax_metrics_s / numpy_metrics_s = layer metrics from the same arrays"}
    print(render(payload))
    print("\n" + environment_line(payload["environment"]))
    out = write_json(args.out or default_out("metrics", args.quick), payload)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()

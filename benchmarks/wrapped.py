"""Wrapped models (``pdx.models.from_function``): layout inference cost and unit-metrics speed.

For each zoo model (mlp, cnn, resnet18; eval mode, dropout 0) it measures, in one run:
- ``wrap_s``: ``from_function`` around ``model.apply`` (trace to a jaxpr, layout inference,
  naming the activation), median of repeats; ``infer_s``: the layout inference alone on the
  traced program (median);
- ``forward_compile_s``: the baseline, one forward pass's ``jax.jit(...).lower(...).compile()``
  of the same zoo model (median of repeats, a fresh function each time);
- ``zoo_metrics_s`` / ``wrapped_metrics_s``: ``make_unit_metrics_fn`` on the zoo model and on
  the wrapped one, same batch (median of repeats after the compiling call); ``ratio`` =
  wrapped / zoo (1.0 = same speed; the wrapped resnet also monitors the inner conv1 units, the
  zoo does not); ``max_abs_diff`` between their metric values on the layers both monitor
  (matched by equal activations).

    python -m benchmarks.wrapped [--quick] [--repeats N] [--out PATH]

Writes benchmarks/results/wrapped.json (quick: benchmarks/results/quick/wrapped.json).
"""

from __future__ import annotations

import argparse
import time

from .common import default_out, environment, environment_line, median_time, table, timed, write_json

COLUMNS = ["model", "batch", "input", "equations", "wrap_s", "infer_s", "forward_compile_s",
           "infer_over_compile", "zoo_metrics_s", "wrapped_metrics_s", "ratio", "max_abs_diff"]
SIZES = {False: dict(batch=256, repeats=5, models=(("mlp", "small", (3072,)),
                                                    ("cnn", "small", (32, 32, 3)),
                                                    ("resnet18", "tiny", (32, 32, 3)))),
         True: dict(batch=32, repeats=2, models=(("mlp", "tiny", (64,)),
                                                 ("cnn", "tiny", (16, 16, 3))))}


def measure(family, preset, shape, batch, repeats) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import plasticity_dynamics as pdx
    from plasticity_dynamics.models.infer import infer_layout
    from plasticity_dynamics.models.jaxpr_program import trace

    model = pdx.models.create(family, preset=preset, dropout=0.0)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch,) + shape), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch))
    variables = model.init(jax.random.PRNGKey(0), x)
    state = variables.get("batch_stats")

    def fn(v, xx):
        return model.apply(v if state is not None else {"params": v}, xx).logits

    wrap = lambda: pdx.models.from_function(fn, variables["params"], x, state=state)  # noqa
    wrapped = wrap()
    wrap_s = median_time(wrap, repeats)
    leaves, treedef = jax.tree_util.tree_flatten(wrapped.variables)
    prog = trace(lambda lv, xx: wrapped._call(jax.tree_util.tree_unflatten(treedef, lv), xx),
                 leaves, x)
    paths = [p for p, _ in pdx.manifolds.partition.leaf_paths(wrapped.variables)] + [("x",)]
    infer_s = median_time(lambda: infer_layout(prog, paths, len(leaves)), repeats)

    def compile_forward():
        f = jax.jit(lambda v, xx: model.apply(v, xx).logits)
        f.lower(variables, x).compile()

    forward_compile_s = median_time(compile_forward, repeats)
    zoo_fn = pdx.metrics.make_unit_metrics_fn(model)
    wrap_fn = pdx.metrics.make_unit_metrics_fn(wrapped)
    zoo = timed(lambda: zoo_fn(variables, x, y), repeats=repeats)
    wrp = timed(lambda: wrap_fn(wrapped.init(), x, y), repeats=repeats)
    a, b = jax.device_get(zoo_fn(variables, x, y)), jax.device_get(wrap_fn(wrapped.init(), x, y))
    # wrapped layer -> zoo layer with the same activation (the wrapped model also monitors
    # layers the zoo does not, e.g. resnet's inner conv1 units)
    za = model.apply(variables, x).activations
    wa = wrapped.apply(wrapped.init(), x).activations
    names = {w: next((k for k, v in za.items() if v.shape == a.shape
                      and np.allclose(v, a, rtol=1e-5, atol=1e-6)), None) for w, a in wa.items()}
    diff = 0.0
    for metric, per in b.items():
        for layer, v in per.items():
            ref = a.get(metric, {}).get(names.get(layer) or "")
            if ref is not None and np.isfinite(v) and np.isfinite(ref):
                diff = max(diff, abs(float(v) - float(ref)))
    return {"model": f"{family}/{preset}", "batch": batch, "input": "x".join(map(str, shape)),
            "equations": len(prog.eqns), "wrap_s": wrap_s, "infer_s": infer_s,
            "forward_compile_s": forward_compile_s,
            "infer_over_compile": wrap_s / forward_compile_s,
            "zoo_metrics_s": zoo["median_s"], "wrapped_metrics_s": wrp["median_s"],
            "ratio": wrp["median_s"] / zoo["median_s"], "max_abs_diff": diff}


def render(payload: dict) -> str:
    return "\n".join([
        "Layout inference (`wrap_s`: whole `from_function`; `infer_s`: inference alone) against "
        "one forward pass's compile of the same model, and `make_unit_metrics_fn` on the zoo "
        "model vs the wrapped one (medians; `ratio` = wrapped / zoo):", "",
        table(payload["rows"], COLUMNS)])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.wrapped",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny models, 2 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sizes = SIZES[args.quick]
    repeats = args.repeats or sizes["repeats"]
    rows = [measure(f, p, s, sizes["batch"], repeats) for f, p, s in sizes["models"]]
    for r in rows:
        print(f"{r['model']}: inference {r['wrap_s']:.3f} s vs forward compile "
              f"{r['forward_compile_s']:.3f} s (x{r['infer_over_compile']:.2f}); unit metrics "
              f"wrapped/zoo = {r['ratio']:.3f}")
    payload = {"benchmark": "wrapped", "quick": args.quick, "environment": environment(),
               "rows": rows}
    print(render(payload))
    print("\n" + environment_line(payload["environment"]))
    write_json(args.out or default_out("wrapped", args.quick), payload)
    return payload


if __name__ == "__main__":
    main()

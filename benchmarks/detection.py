"""Manifold detection quality: precision and recall of ``detect`` on planted structure, and its time.

For a small MLP and a small CNN (ReLU, no norm, no dropout; random weights from ``model.init``)
the benchmark builds a network whose frozen units and clone clusters are known, then asks
``pdx.manifolds.detect`` to find them after Gaussian noise of relative size eps is added:

1. Layer by layer, in forward order, on a fixed Gaussian batch: every bias is set to minus the
   median of its unit's pre-activation over the batch (every unit is active on about half the
   samples, so the unplanted network has no frozen unit); then ``k`` clone clusters (sizes 2,
   3, 2, ...) are planted (each clone copies its source's incoming kernel slice and bias; the
   source's outgoing weights are split equally among the cluster, as in a function-preserving
   expansion, so the network sits on the invariant manifold M_D), and ``k`` dead ReLU units
   (bias lowered until the unit's largest pre-activation on the batch is -9 x its largest
   magnitude before). Sources, clones and dead units are disjoint.
2. Noise: every parameter leaf gets eps * rms(leaf) * N(0, 1) added (the rms leaves out the
   planted dead biases), eps in {0, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1}; one noise draw per eps.
3. ``detect`` (frozen when f'(z) = 0 on every sample) with three clone settings:
   ``activations`` (the default: cosine similarity and norm ratio > 0.9999),
   ``activations@0.99`` (the same with threshold 0.99) and ``weights`` (weight symmetry within
   weight_rtol = 1e-5 of each leaf's scale).
4. Scores: unit-level precision/recall of the frozen units (every planted dead unit should be
   found; any other unit reported frozen is a false positive) and pair-level precision/recall of
   the clone clusters (true pairs: the unordered pairs inside each planted cluster; found pairs:
   those inside each cluster ``detect`` reports). Precision is 1 when nothing is reported.
   The centred network before planting is scored too (row ``unplanted``): anything it
   reports is a false positive.
5. Time of ``detect`` on the planted network (eps = 0): the first call apart, then medians of
   repeated calls of the wall time, of the JAX tracing + compile time inside each call
   (``jax.monitoring`` events) and of the rest. (Any part of ``detect`` that compiles on every
   call shows up as a non-zero median compile time.)

    python -m benchmarks.detection [--quick] [--repeats N] [--models mlp,cnn]
                                   [--settings activations,...] [--out PATH]

Sizes: MLP 64 -> 128-128-128 -> 10 on a batch of 512, CNN 16-32-64 channels + FC 128 on
16x16x3 images, batch 128, k = 4 per layer. ``--quick``: MLP 16 -> 32-32, CNN 8-16 + FC 32 on
8x8x3, batch 64 / 32, k = 2 per layer, eps in {0, 1e-4, 1e-2}, 1 repeat.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from .common import default_out, environment, environment_line, table, timed_split, write_json

EPSILONS = (0.0, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1)
QUICK_EPSILONS = (0.0, 1e-4, 1e-2)
# detect settings compared: name -> keyword arguments (everything else at detect's defaults)
SETTINGS = {"activations": dict(clones="activations"),
            "activations@0.99": dict(clones="activations", threshold=0.99),
            "weights": dict(clones="weights")}
SIZES = {
    False: {"mlp": dict(options=dict(widths=(128, 128, 128)), input=(64,), batch=512),
            "cnn": dict(options=dict(channels=(16, 32, 64), fc_widths=(128,)), input=(16, 16, 3),
                        batch=128),
            "k": 4, "repeats": 5},
    True: {"mlp": dict(options=dict(widths=(32, 32)), input=(16,), batch=64),
           "cnn": dict(options=dict(channels=(8, 16), fc_widths=(32,)), input=(8, 8, 3), batch=32),
           "k": 2, "repeats": 1},
}
DEAD_MARGIN = 9.0  # planted dead unit: max pre-activation = -DEAD_MARGIN * max |pre-activation| before


# ----------------------------------------------------------------------------- the networks
def _modules(family: str, options: dict) -> list:
    """(monitored layer, its params module) in forward order, then ("", "out")."""
    if family == "mlp":
        mods = [(f"hidden_{i}", f"dense_{i}") for i in range(len(options["widths"]))]
    else:
        mods = [(f"conv_{i}", f"conv_{i}") for i in range(len(options["channels"]))]
        mods += [(f"fc_{j}", f"fc_{j}") for j in range(len(options["fc_widths"]))]
    return mods + [("", "out")]


def _copy(params) -> dict:
    return {m: {n: np.array(a, np.float32) for n, a in leaf.items()} for m, leaf in params.items()}


def _preactivation(model, params, x, layer) -> np.ndarray:
    """(samples, units) pre-activations of ``layer`` (conv positions count as samples)."""
    import jax.numpy as jnp

    z = np.asarray(model.apply({"params": params}, jnp.asarray(x)).preactivations[layer])
    return z.reshape(-1, z.shape[-1])


def plant(model, params, x, k: int, rng: np.random.Generator):
    """Median-centred biases, then k clone clusters and k dead units per monitored layer
    (k = 0: the centred network alone).

    Returns (params (NumPy float32 dict), truth) with truth = {"frozen": {(layer, unit)},
    "pairs": {(layer, i, j) with i < j}, "dead_bias": [(module, unit)]}.
    """
    p = _copy(params)
    mods = _modules(model.name, model.options)
    truth = {"frozen": set(), "pairs": set(), "dead_bias": []}
    for (layer, mod), (_, nxt) in zip(mods[:-1], mods[1:]):
        z = _preactivation(model, p, x, layer)
        p[mod]["bias"] = (p[mod]["bias"] - np.median(z, axis=0)).astype(np.float32)
        units = z.shape[1]
        if k == 0:
            continue
        sizes = [2 + (i % 2) for i in range(k)]
        if k + sum(sizes) > units:
            raise ValueError(f"layer {layer} has {units} units; cannot plant {k} dead units and "
                             f"clusters of sizes {sizes}")
        order = rng.permutation(units)
        pos = 0
        kin, bias, kout = p[mod]["kernel"], p[mod]["bias"], p[nxt]["kernel"]
        rows = np.arange(kout.shape[-2])
        for size in sizes:  # clones: copy the incoming slice, split the outgoing weight equally
            cluster = np.sort(order[pos:pos + size])
            pos += size
            src, clones = cluster[0], cluster[1:]
            kin[..., clones] = kin[..., src:src + 1]
            bias[clones] = bias[src]
            out_rows = [rows[rows % units == u] for u in cluster]
            share = kout[..., out_rows[0], :] / size
            for r in out_rows:
                kout[..., r, :] = share
            truth["pairs"].update((layer, int(i), int(j)) for i, j in itertools.combinations(cluster, 2))
        z = _preactivation(model, p, x, layer)  # this layer's z after the clone copies
        for u in order[pos:pos + k]:  # dead ReLU units: a large negative bias
            bias[u] -= z[:, u].max() + DEAD_MARGIN * np.abs(z[:, u]).max() + 1e-3
            truth["frozen"].add((layer, int(u)))
            truth["dead_bias"].append((mod, int(u)))
    return p, truth


def perturb(params: dict, eps: float, dead_bias, rng: np.random.Generator) -> dict:
    """params + eps * rms(leaf) * N(0, 1) per leaf (planted dead biases left out of the rms)."""
    out = {}
    for mod, leaf in params.items():
        out[mod] = {}
        for name, a in leaf.items():
            keep = np.ones(a.shape, bool)
            if name == "bias":
                for m, u in dead_bias:
                    if m == mod:
                        keep[u] = False
            rms = float(np.sqrt(np.mean(a[keep].astype(np.float64) ** 2))) if keep.any() else 0.0
            out[mod][name] = (a + eps * rms * rng.standard_normal(a.shape)).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- scoring
def found(det, layers) -> tuple[set, set]:
    """(frozen units {(layer, unit)}, clone pairs {(layer, i, j)}) reported by a Detection."""
    frozen = {(layer, int(u)) for layer, units in det.frozen_units.items() for u in units}
    pairs = set()
    for layer in layers:
        for block in det.partition.blocks(det.partition.group_of(layer)):
            pairs.update((layer, int(i), int(j)) for i, j in itertools.combinations(block, 2))
    return frozen, pairs


def score(truth: set, got: set) -> dict:
    tp = len(truth & got)
    fp, fn = len(got) - tp, len(truth) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0}


def _label(eps: float) -> str:
    return "0" if eps == 0 else f"{eps:.0e}".replace("e-0", "e-")


# ----------------------------------------------------------------------------- one model
def measure(family: str, size: dict, k: int, repeats: int, settings=tuple(SETTINGS), epsilons=EPSILONS,
            seed: int = 0) -> dict:
    import jax
    import jax.numpy as jnp

    import plasticity_dynamics as pdx

    model = pdx.models.create(family, norm="none", dropout=0.0, **size["options"])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((size["batch"], *size["input"])).astype(np.float32)
    params = model.init(jax.random.PRNGKey(seed), jnp.asarray(x))["params"]
    centred, _ = plant(model, params, x, 0, rng)
    planted, truth = plant(model, params, x, k, rng)
    layers = [layer for layer, _ in _modules(family, model.options)[:-1]]
    xj = jnp.asarray(x)
    as_vars = lambda p: {"params": jax.tree.map(jnp.asarray, p)}  # noqa: E731

    timing = {}
    for name in settings:
        v = as_vars(planted)
        timing[name] = timed_split(lambda: pdx.manifolds.detect(model, v, xj, **SETTINGS[name]).frozen_units,
                                   repeats=repeats)

    rows = []
    cases = [("unplanted", 0.0, centred, {"frozen": set(), "pairs": set()})]
    cases += [(_label(eps), eps, perturb(planted, eps, truth["dead_bias"], rng), truth) for eps in epsilons]
    for label, eps, p, want in cases:
        v = as_vars(p)
        for name in settings:
            det = pdx.manifolds.detect(model, v, xj, **SETTINGS[name])
            got_f, got_p = found(det, layers)
            sf, sp = score(want["frozen"], got_f), score(want["pairs"], got_p)
            rows.append({"model": family, "eps": label, "setting": name,
                         "frozen_precision": sf["precision"], "frozen_recall": sf["recall"],
                         "frozen_tp_fp_fn": f"{sf['tp']}/{sf['fp']}/{sf['fn']}",
                         "pair_precision": sp["precision"], "pair_recall": sp["recall"],
                         "pair_tp_fp_fn": f"{sp['tp']}/{sp['fp']}/{sp['fn']}",
                         "cloned_relative_distance": det.evidence["cloned_relative_distance"]})
    n_params = int(sum(a.size for leaf in params.values() for a in leaf.values()))
    info = {"model": family, "options": {k_: list(v_) for k_, v_ in size["options"].items()},
            "input": "x".join(map(str, size["input"])), "batch": size["batch"], "params": n_params,
            "layers": len(layers), "k_per_layer": k, "planted_frozen": len(truth["frozen"]),
            "planted_pairs": len(truth["pairs"]), "repeats": repeats}
    for name in settings:
        info.update({f"{name}_{key}": val for key, val in timing[name].items() if key != "repeats"})
    return {"info": info, "rows": rows}


def render(payload: dict) -> str:
    """Markdown tables of a detection payload."""
    infos = [m["info"] for m in payload["models"]]
    settings = payload["settings"]
    out = ["Networks (ReLU, no norm; k dead units and k clone clusters planted per layer):", "",
           table(infos, ["model", "input", "batch", "params", "layers", "k_per_layer", "planted_frozen",
                         "planted_pairs"]), "",
           "Time of one `detect` call on the planted network, by setting: first call, then "
           "medians over the repeats of the wall time, of the JAX tracing + compile time inside "
           "the call, and of the rest (run):", ""]
    trows = [{"model": i["model"], "setting": m, **{k: i.get(f"{m}_{k}") for k in
              ("first_call_s", "first_compile_s", "median_s", "median_compile_s", "median_run_s")}}
             for i in infos for m in settings]
    out += [table(trows, ["model", "setting", "first_call_s", "first_compile_s", "median_s",
                          "median_compile_s", "median_run_s"]), ""]
    out += ["Precision / recall (tp/fp/fn) against the planted truth, by noise level eps and "
            "setting:", ""]
    rows = [r for m in payload["models"] for r in m["rows"]]
    out.append(table(rows, ["model", "eps", "setting", "frozen_precision", "frozen_recall", "frozen_tp_fp_fn",
                            "pair_precision", "pair_recall", "pair_tp_fp_fn"]))
    return "\n".join(out)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.detection", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny networks, 1 repeat")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 1)")
    ap.add_argument("--models", default="mlp,cnn", help="comma-separated subset of mlp,cnn")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of " + ",".join(SETTINGS))
    ap.add_argument("--out", default=None, help="JSON output path (default benchmarks/results[/quick]/detection.json)")
    args = ap.parse_args(argv)
    sizes = SIZES[args.quick]
    repeats = args.repeats or sizes["repeats"]
    families = [f for f in args.models.split(",") if f]
    for f in families:
        if f not in ("mlp", "cnn"):
            ap.error(f"--models: {f!r} is not one of mlp, cnn")
    settings = [m for m in args.settings.split(",") if m]
    for m in settings:
        if m not in SETTINGS:
            ap.error(f"--settings: {m!r} is not one of {', '.join(SETTINGS)}")
    epsilons = QUICK_EPSILONS if args.quick else EPSILONS
    models = [measure(f, sizes[f], sizes["k"], repeats, settings, epsilons) for f in families]
    payload = {"benchmark": "detection", "quick": args.quick, "environment": environment(),
               "epsilons": list(epsilons), "settings": settings,
               "setting_kwargs": {m: SETTINGS[m] for m in settings}, "dead_margin": DEAD_MARGIN,
               "models": models}
    print(render(payload))
    print("\n" + environment_line(payload["environment"]))
    path = write_json(args.out or default_out("detection", args.quick), payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()

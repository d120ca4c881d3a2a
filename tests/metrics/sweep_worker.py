"""Worker of test_metrics_width_sweep: call every public array function of pdx.metrics on
(rows, width) inputs, eagerly and inside jax.jit, and print one line per case.

    python tests/metrics/sweep_worker.py ROWSxWIDTH [ROWSxWIDTH ...]

Run in a subprocess: a crash (XLA:CPU segfault) kills only this process, and the test reports
the case that was running from the last line printed.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

import plasticity_dynamics as pdx

m = pdx.metrics


def calls(n: int, d: int):
    """(name, function of arrays, arrays) for every public array function."""
    rng = np.random.default_rng(n * 10007 + d)
    z = rng.normal(size=(n, d)).astype(np.float32)
    h = np.maximum(z, 0)
    if d > 2:
        h[:, 1] = h[:, 0]  # a clone pair
        h[:, 2] = 0.0  # a dead unit
    g = rng.normal(size=(n, d)).astype(np.float32) * 1e-3
    part = m.interleaved_partition(d, 1)
    adj = rng.random((d, d)) < 2.0 / max(d, 1)
    conv = h.reshape(n, 1, 1, d)
    s = np.sort(rng.random(min(n, d)).astype(np.float32))[::-1].copy()
    one = [
        ("dead_units", m.dead_units), ("dead_fraction", m.dead_fraction),
        ("never_active_units", m.never_active_units), ("never_active_fraction", m.never_active_fraction),
        ("low_activity_units", m.low_activity_units), ("low_activity_fraction", m.low_activity_fraction),
        ("dormant_scores", m.dormant_scores), ("dormant_units", m.dormant_units),
        ("dormant_fraction", m.dormant_fraction),
        ("cosine_similarity", m.cosine_similarity), ("duplicate_units", m.duplicate_units),
        ("duplicate_fraction", m.duplicate_fraction), ("duplicate_fraction_pearson", m.duplicate_fraction_pearson),
        ("clone_clusters", m.clone_clusters),
        ("singular_values", m.singular_values), ("effective_rank", m.effective_rank),
        ("renyi2_rank", m.renyi2_rank), ("stable_rank", m.stable_rank), ("srank", m.srank),
        ("approximate_rank", m.approximate_rank), ("hard_rank", m.hard_rank),
        ("unit_states", lambda x: m.unit_states(x)),
        ("flatten_units", lambda x: m.flatten_units(x.reshape(n, 1, 1, d), "conv", pool=True)),
    ]
    out = [(name, f, (h,)) for name, f in one]
    out += [
        ("linearised_units", m.linearised_units, (z,)), ("linearised_fraction", m.linearised_fraction, (z,)),
        ("frozen_units", lambda x: m.frozen_units(x, "relu"), (z,)),
        ("frozen_fraction", lambda x: m.frozen_fraction(x, "relu"), (z,)),
        ("saturated_units", m.saturated_units, (h, g)), ("saturated_fraction", m.saturated_fraction, (h, g)),
        ("connected_components", m.connected_components, (adj,)),
        ("spectrum_ranks", m.spectrum_ranks, (s,)),
        ("clone_r2", m.clone_r2, (h, part)), ("clone_r2_std_ratio", m.clone_r2_std_ratio, (h, part)),
        ("weight_symmetry_clusters", m.weight_symmetry_clusters, (h.T.copy(), g.T.copy())),
        ("metrics_from_arrays", lambda a, b, c: m.metrics_from_arrays({"L": a, "C": c}, {"L": b, "C": c},
                                                                        {"L": a}),
         (h, g, conv)),
    ]
    return out


def main(argv):
    names = None
    for spec in argv:
        if spec.startswith("only="):
            names = set(spec[5:].split(","))
            continue
        n, d = (int(v) for v in spec.split("x"))
        for name, f, args in calls(n, d):
            if names is not None and name not in names:
                continue
            for mode in ("eager", "jit"):
                print(f"START {n}x{d} {name} {mode}", flush=True)
                fn = jax.jit(f) if mode == "jit" else f
                out = jax.block_until_ready(fn(*args))
                for leaf in jax.tree.leaves(out):
                    arr = np.asarray(leaf)
                    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                        print(f"NONFINITE {n}x{d} {name} {mode}", flush=True)
                        return 3
                print(f"OK {n}x{d} {name} {mode}", flush=True)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Freeze the zoo's unit layouts as the oracle of tests/manifolds/test_manifolds_inferred_layout.py.

Run once (it was run with the hand-written walkers of manifolds/layouts.py, before they were
deleted, issue 17) from the repository root:

    python tests/manifolds/data/make_zoo_layouts.py

It writes zoo_layouts.json: for every family x norm x norm_affine x norm_after_activation of the
"tiny" preset (and, key "bare:...", the partition built from a bare params tree without the
model, as ``pdx.manifolds.frozen(units, params)`` does for mlp and cnn), the partition's groups
(name -> units, in order), leaves (path -> [[axis, group, role]]), layers (name -> group,
activation, monitored, incoming, outgoing, in order) and head_dims. Do not re-run it: the
walkers are gone, and the file is the oracle the inferred layouts are tested against (the
inference path reproduces it up to the order of a layer's incoming / outgoing pairs).
"""

from __future__ import annotations

import itertools
import json
import pathlib

import jax
import jax.numpy as jnp

import plasticity_dynamics as pdx


def cases():
    for fam in ("mlp", "cnn", "resnet18", "vit"):
        for norm, affine, after in itertools.product(("none", "batch", "layer"), (True, False),
                                                     (False, True)):
            if after and fam in ("resnet18", "vit"):
                continue
            yield fam, norm, affine, after


def example_x(family):
    return jnp.ones((2, 12)) if family == "mlp" else jnp.ones((2, 16, 16, 3))


def key(fam, norm, affine, after):
    return f"{fam}:{norm}:{int(affine)}:{int(after)}"


def snapshot(part) -> dict:
    return {
        "groups": [[g, part.units(g)] for g in part.groups],
        "leaves": [["/".join(p), [list(s) for s in specs]] for p, specs in part.leaves.items()],
        "layers": [[name, lu.group, lu.activation, lu.monitored,
                    [["/".join(p), a] for p, a in lu.incoming],
                    [["/".join(p), a] for p, a in lu.outgoing]]
                   for name, lu in part.layers.items()],
        "head_dims": sorted([g, d] for g, d in part.head_dims.items()),
    }


def main():
    out = {}
    for case in cases():
        fam, norm, affine, after = case
        model = pdx.models.create(fam, preset="tiny", norm=norm, norm_affine=affine,
                                  norm_after_activation=after)
        variables = model.init(jax.random.PRNGKey(0), example_x(fam))
        out[key(*case)] = snapshot(pdx.manifolds.unit_partition(model, variables))
        if fam in ("mlp", "cnn") and not after:
            out["bare:" + key(*case)] = snapshot(
                pdx.manifolds.unit_partition(None, variables["params"]))
    path = pathlib.Path(__file__).with_name("zoo_layouts.json")
    path.write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {len(out)} layouts to {path}")


if __name__ == "__main__":
    main()

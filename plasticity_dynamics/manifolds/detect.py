"""Find LoP manifolds in any checkpoint: frozen units (M_F) and clone clusters (M_D).

``detect(model, variables, x)`` runs the network once on a batch (training mode without dropout
by default: batch norm uses batch statistics, as when gradients are taken) and

- flags a unit of a monitored layer with an activation as **frozen** when |f'(z)| <= eps on
  at least ``frac`` of the samples (pre-activations z, f' = ``pdx.models.activation_derivative``;
  conv maps and token sequences count every position as a sample), and as **dead** when
  moreover |h| <= dead_eps on those samples (a dead ReLU: outgoing weights frozen too);
- finds **clone clusters** per unit group (see :mod:`.partition`): from activations (units u, v
  linked when, in every monitored layer of the group, their similarity exceeds ``threshold``
  and their norms agree to the same ratio; cosine, or Pearson correlation) and/or from weight
  symmetry (every parameter slice of u equals that of v within ``weight_rtol`` of the leaf's
  scale: incoming kernels, biases, norm parameters and statistics, outgoing kernels). Clusters
  are connected components of the links. Groups that no monitored layer covers (resnet
  ``.../inner``, vit ``block_i/attn``) always use weight symmetry. Frozen units are never put
  in a clone cluster (they are constant, not clones).

It returns a :class:`Detection` with a frozen :class:`~.manifold.Manifold` (through the
current params) and a cloned Manifold (partition of the clusters, through the nearest point of
M_RE cap M_CE, so ``cloned.distance(params)`` measures how far the checkpoint is from exact
cloning), plus the evidence: per frozen unit the fraction of samples frozen and dead, per
group the within-block parameter spread, the clone R^2 of each monitored layer, and the row /
column equitability residuals. ``Detection.summary()`` is JSON-serialisable.
Cost: one forward pass, O(samples * units^2) similarities per layer, O(units^2 * features)
comparisons for weight symmetry. Similarities, connected components, weight-symmetry clusters
and clone R^2 are those of ``pdx.metrics`` (one implementation each); this module adds the
partition, which gives every family's per-unit parameter slices.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from ..errors import InputError, check_choice, check_range
from ..fileio import jsonable
from .equitable import equitable_projection, equitable_residuals
from .manifold import Manifold, cloned, frozen
from .layouts import unit_partition
from .partition import Partition, collection_paths

EVIDENCE = ("activations", "weights", "both")
SIMILARITIES = ("cosine", "pearson")


@dataclasses.dataclass(frozen=True, eq=False)
class Detection:
    """Result of :func:`detect`.

    partition: the clone partition found; frozen, cloned: the two manifolds (either may be
    empty: normal_dim 0); frozen_units, dead_units: layer -> sorted unit indices;
    evidence: JSON-like dict (see :meth:`summary`).
    """

    partition: Partition
    frozen: Manifold
    cloned: Manifold
    frozen_units: dict
    dead_units: dict
    evidence: dict

    @property
    def empty(self) -> bool:
        """True when neither frozen units nor clone clusters were found."""
        return self.frozen.normal_dim == 0 and self.cloned.normal_dim == 0

    def summary(self) -> dict:
        """JSON-serialisable summary: frozen units with case and fractions, clone clusters
        with R^2 and parameter spread, normal dimensions, residuals, settings."""
        return jsonable(self.evidence)


def _activation_links(h: np.ndarray, similarity: str, threshold: float) -> np.ndarray:
    """(units, units) links: similarity > threshold and norm ratio > threshold (similarity:
    ``pdx.metrics.cosine_similarity``, centred for Pearson)."""
    from ..metrics import cosine_similarity

    centred = similarity == "pearson"
    sim = np.asarray(cosine_similarity(h, centred=centred), np.float64)
    h = h.astype(np.float64)
    if centred:
        h = h - h.mean(axis=0, keepdims=True)
    norm = np.sqrt((h * h).sum(axis=0))
    ratio = np.minimum.outer(norm, norm) / np.maximum(np.maximum.outer(norm, norm), 1e-300)
    return (sim > threshold) & (ratio > threshold) & (norm[:, None] > 0) & (norm[None, :] > 0)


def _unit_rows(partition, group, variables):
    """[(units, features) matrix per leaf touching ``group``], each scaled to max |.| = 1."""
    u = partition.units(group)
    rows = []
    for path, x in collection_paths(variables):
        for spec in partition.specs(path):
            if spec.group != group:
                continue
            x = np.asarray(x, np.float64)
            xm = np.moveaxis(x, spec.axis, 0)
            xm = xm.reshape((xm.shape[0] // u, u, -1)).transpose(1, 0, 2).reshape(u, -1)
            scale = np.abs(xm).max()
            rows.append(xm / scale if scale > 0 else xm)
    return rows


def _weight_links(partition, group, variables, rtol) -> np.ndarray:
    """(units, units) weight-symmetry links of a group, any family: the partition gives every
    parameter slice of each unit (each leaf scaled to max |.| = 1, so the tolerance is relative
    to each leaf), ``pdx.metrics.weight_symmetry_clusters`` compares them (one algorithm)."""
    from ..metrics import weight_symmetry_clusters

    rows = _unit_rows(partition, group, variables)
    if not rows:
        return np.ones((partition.units(group),) * 2, bool)
    feats = np.concatenate(rows, axis=1).astype(np.float32)
    labels = np.asarray(weight_symmetry_clusters(feats, rtol=rtol).labels)
    return labels[:, None] == labels[None, :]


def _group_spread(partition, group, params) -> float:
    """||x - block_mean_g(x)|| / ||x|| over the params leaves touching ``group`` (NumPy)."""
    ids = partition.groups[group]
    u, k = ids.size, partition.num_blocks(group)
    counts = np.bincount(ids, minlength=k)
    num = den = 0.0
    for path, x in collection_paths(params):
        for spec in partition.specs(path):
            if spec.group != group:
                continue
            x = np.asarray(x, np.float64)
            xm = np.moveaxis(x, spec.axis, 0)
            xm = xm.reshape((xm.shape[0] // u, u, -1))
            sums = np.zeros((xm.shape[0], k, xm.shape[2]))
            np.add.at(sums, (slice(None), ids), xm)
            d = xm - (sums / counts[None, :, None])[:, ids]
            num += float((d * d).sum())
            den += float((x * x).sum())
    return float(np.sqrt(num / den)) if den > 0 else 0.0


@functools.lru_cache(maxsize=64)
def _forward(model, train: bool):
    """Jitted (activations, preactivations, f'(preactivations)) of a model (cached)."""
    from ..models import activation_derivative  # models sit below manifolds

    deriv = activation_derivative(model.activation)

    def fn(variables, x):
        out = model.apply(variables, x, train=train)
        return out.activations, out.preactivations, {k: deriv(z) for k, z in
                                                     out.preactivations.items()}

    return jax.jit(fn)


def detect(model, variables, batch, *, eps: float = 1e-6, frac: float = 1.0,
           dead_eps: float = 0.0, clones: str = "activations", similarity: str = "cosine",
           threshold: float = 0.9999, weight_rtol: float = 1e-5, train: bool = True) -> Detection:
    """Detect frozen units and clone clusters in a checkpoint (see module docstring).

    model, variables: a ``pdx.models.Model`` and its variables; batch: inputs x, or (x, y), or
    a dict with "x". eps, frac: frozen when |f'(z)| <= eps on >= frac of the samples (default:
    |f'| <= 1e-6 on every sample, i.e. persistently saturated as Theorem 2.1 requires);
    dead_eps: dead when moreover |h| <= dead_eps on those samples. clones: "activations",
    "weights" or "both" (links must hold in both); similarity: "cosine" or "pearson";
    threshold: similarity (and norm ratio) threshold; weight_rtol: weight-symmetry tolerance
    relative to each leaf's largest entry. train: statistics of a training-mode pass (batch
    norm uses the batch's statistics, as when gradients are taken; dropout is switched off),
    or False for eval mode (running statistics). Raises InputError on bad options.
    """
    check_choice("clones", clones, EVIDENCE)
    check_choice("similarity", similarity, SIMILARITIES)
    check_range("threshold", threshold, -1.0, 1.0, high_inclusive=True)
    check_range("frac", frac, 0.0, 1.0, high_inclusive=True)
    for name, v in (("eps", eps), ("dead_eps", dead_eps), ("weight_rtol", weight_rtol)):
        if not isinstance(v, (int, float)) or v < 0:
            raise InputError(f"{name}={v!r} must be a number >= 0")
    x = batch.get("x") if isinstance(batch, dict) else (batch[0] if isinstance(batch, tuple)
                                                          else batch)
    if x is None or np.ndim(x) < 2:
        raise InputError("batch must be inputs x (B, ...), a tuple (x, y) or a dict with 'x'")
    if train and (model.options.get("dropout", 0) or model.options.get("attention_dropout", 0)):
        from ..models import create

        no_drop = {k: 0.0 for k in ("dropout", "attention_dropout") if k in model.options}
        run = create(model.name, **{**model.options, **no_drop})
    else:
        run = model
    from ..metrics import clone_r2, connected_components

    acts, pre, dpre = _forward(run, bool(train))(variables, x)
    part = unit_partition(model, variables)
    params = variables["params"]
    flat = {k: np.asarray(a, np.float64).reshape(-1, np.shape(a)[-1]) for k, a in acts.items()}

    frozen_units, dead_units, ev_frozen = {}, {}, {}
    for layer in model.layer_kinds:
        lu = part.layers.get(layer)
        if lu is None or not lu.activation or layer not in pre:
            continue
        small = np.abs(np.asarray(dpre[layer]).reshape(-1, flat[layer].shape[1])) <= eps
        f_frac = small.mean(axis=0)
        d_frac = ((np.abs(flat[layer]) <= dead_eps) & small).mean(axis=0)
        fz = np.flatnonzero(f_frac >= frac)
        if fz.size:
            dz = fz[d_frac[fz] >= frac]
            frozen_units[layer], dead_units[layer] = fz, dz
            ev_frozen[layer] = [{"unit": int(u), "case": "dead" if u in dz else "saturated",
                                 "frozen_fraction": float(f_frac[u]),
                                 "dead_fraction": float(d_frac[u])} for u in fz]

    monitored = {}
    for layer in model.layer_kinds:
        if layer in part.layers:
            monitored.setdefault(part.layers[layer].group, []).append(layer)
    blocks, ev_clones = {}, {}
    for g in part.groups:
        layers = monitored.get(g, [])
        use_act = bool(layers) and clones in ("activations", "both")
        use_w = not layers or clones in ("weights", "both")
        adj = np.ones((part.units(g),) * 2, bool)
        if use_act:
            for layer in layers:
                adj &= _activation_links(flat[layer], similarity, threshold)
        if use_w:
            adj &= _weight_links(part, g, variables, weight_rtol)
        for layer in layers:  # frozen units are constant, not clones
            if layer in frozen_units:
                adj[frozen_units[layer], :] = adj[:, frozen_units[layer]] = False
        labels = np.asarray(connected_components(adj))
        blocks[g] = labels
        if np.unique(labels).size < labels.size:
            ev_clones[g] = {"evidence": "+".join(n for n, on in (("activations", use_act),
                                                                 ("weights", use_w)) if on)}
    partition = part.with_blocks(blocks)
    for g, ev in ev_clones.items():
        ids = partition.groups[g]
        ev["clusters"] = [b.tolist() for b in partition.blocks(g) if b.size > 1]
        ev["spread"] = _group_spread(partition, g, params)
        ev["r2"] = {layer: float(clone_r2(flat[layer], ids)) for layer in monitored.get(g, [])}
    # Eager on purpose: the partition changes from call to call, and a fresh jit here cost a
    # compile (80-90 % of a call) every time; the projection is a few segment sums per leaf.
    reference, res = equitable_projection(partition, params), equitable_residuals(partition, params)
    clo = cloned(partition, reference)
    fro = frozen(frozen_units, params, part, dead=dead_units)
    norm = max(float(res["norm"]), 1e-300)
    evidence = {
        "frozen": ev_frozen, "clones": ev_clones,
        "frozen_normal_dim": fro.normal_dim, "cloned_normal_dim": clo.normal_dim,
        "cloned_relative_distance": float(clo.distance(params)) / norm,
        "equitable_residual": {"row": float(res["row"]) / norm,
                               "column": float(res["column"]) / norm},
        "settings": {"train": train, "eps": eps, "frac": frac, "dead_eps": dead_eps,
                     "clones": clones,
                     "similarity": similarity, "threshold": threshold,
                     "weight_rtol": weight_rtol, "samples": int(np.shape(x)[0])},
    }
    return Detection(partition, fro, clo, frozen_units, dead_units, jsonable(evidence))


__all__ = ["Detection", "detect", "EVIDENCE", "SIMILARITIES"]

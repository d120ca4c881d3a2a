"""Metric names: one options record, one table, names that carry their variant and thresholds.

A name is ``base`` or ``base@t1,t2`` with thresholds printed by ``format(t, "g")``, e.g.
``dead_frac@1e-07,0.95``, ``dormant_frac@0.025``, ``srank@0.99``. :func:`metric_table` lists
every name that :func:`~.model_metrics.unit_metrics` returns for a set of options, with its
definition, source and the layers it is reported for; :func:`describe_metrics` prints it one
line per name (the CLI's ``list metrics``).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple

from ..errors import InputError, check_positive, check_range


def metric_name(base: str, *thresholds, rows: int | None = None) -> str:
    """``base`` or ``base@t1,t2`` with each threshold formatted with ``g``; ``rows=K`` (a rank
    computed on K sampled rows) appends ``rows=K``: ``srank@0.99,rows=1024``."""
    parts = [format(float(t), "g") for t in thresholds]
    if rows is not None:
        parts.append(f"rows={int(rows)}")
    return base + "@" + ",".join(parts) if parts else base


DOHARE = "shibhansh/loss-of-plasticity"
DOHARE_MISC = f"{DOHARE}@bdfe0dd lop/utils/miscellaneous.py"
DOHARE_CIFAR = f"{DOHARE}@b1f6bed lop/incremental_cifar/post_run_analysis.py"


def partition_map(partitions):
    """{layer: block ids} from a dict, or from a ``pdx.manifolds`` Partition (duck-typed: its
    ``layers`` and ``groups``): every monitored layer gets its group's block ids."""
    if partitions is None or isinstance(partitions, Mapping):
        return partitions
    layers, groups = getattr(partitions, "layers", None), getattr(partitions, "groups", None)
    if not isinstance(layers, Mapping) or not isinstance(groups, Mapping):
        raise InputError(f"partitions={type(partitions).__name__} must be a dict {{layer: int array "
                         "(units,)}, a pdx.manifolds Partition, or None")
    return {name: groups[lu.group] for name, lu in layers.items() if getattr(lu, "monitored", True)}


@dataclasses.dataclass(frozen=True)
class MetricOptions:
    """Thresholds and switches of :func:`~.model_metrics.unit_metrics` (defaults follow the paper).

    partitions: {layer: int array (units,) of block ids} for cloning R^2 (see
    :func:`~.clone_r2.interleaved_partition`), a ``pdx.manifolds`` Partition (e.g. from
    ``expand``; its monitored layers are used), or None. pool: average conv/token outputs per
    example instead of treating positions as samples (see :mod:`.layout`). max_rows: None
    (ranks use every row, as Dohare et al.) or K to subsample K rows when a layer has more;
    the rank names then carry ``rows=K``.
    """

    dead_eps: float = 1e-7
    dead_frac: float = 0.95
    low_activity_frac: float = 0.01
    dormant_taus: tuple = (0.025, 0.1)
    linear_frac: float = 0.9
    sat_tau: float = 1e-4
    sat_frac: float = 0.99
    frozen_eps: float = 0.01
    frozen_frac: float = 0.99
    duplicate_thresholds: tuple = (0.95,)
    cluster_threshold: float = 0.95
    rank_frac: float = 0.99
    max_rows: int | None = None
    rank_seed: int = 0
    pool: bool = False
    partitions: Mapping | None = None

    def __post_init__(self):
        check_positive("dead_eps", self.dead_eps, allow_zero=True)
        for name in ("dead_frac", "sat_frac", "frozen_frac"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        for name in ("low_activity_frac", "linear_frac", "rank_frac"):
            check_range(name, getattr(self, name), 0.0, 1.0, high_inclusive=True)
        check_positive("sat_tau", self.sat_tau, allow_zero=True)
        check_positive("frozen_eps", self.frozen_eps, allow_zero=True)
        if self.max_rows is not None:
            check_positive("max_rows", self.max_rows, integer=True)
        check_positive("rank_seed", self.rank_seed, integer=True, allow_zero=True)
        check_range("cluster_threshold", self.cluster_threshold, -1.0, 1.0, high_inclusive=True)
        for name in ("dormant_taus", "duplicate_thresholds"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)) or not value:
                raise InputError(f"{name}={value!r} must be a non-empty tuple of numbers")
            object.__setattr__(self, name, tuple(value))
        for t in self.dormant_taus:
            check_positive("dormant_taus item", t, allow_zero=True)
        for t in self.duplicate_thresholds:
            check_range("duplicate_thresholds item", t, -1.0, 1.0, high_inclusive=True)
        if not isinstance(self.pool, bool):
            raise InputError(f"pool={self.pool!r} must be True or False")
        object.__setattr__(self, "partitions", partition_map(self.partitions))


class MetricInfo(NamedTuple):
    name: str
    definition: str
    source: str
    layers: str


def _rank_rows(o: MetricOptions, layers: str) -> list:
    if o.max_rows is None:
        used, sample = "rows: every row", [None]
    else:
        used = (f"rows: every row when the layer has <= {o.max_rows}, else {o.max_rows} sampled "
                f"(seed {o.rank_seed}; the name then carries rows={o.max_rows})")
        sample = [None, o.max_rows]
    res = ("cutoff: sigma below sqrt(k eps 1e-5) sigma_max (the float32 resolution of the default Gram route, "
           "k = min(N, D); 4 sqrt(max(N, D)) eps sigma_max with route='qr') count as 0")
    mr = "cutoff: sigma > sigma_max * max(N, D) * eps(float32) (numpy/torch matrix_rank tolerance)"
    out = []
    for rows in sample:
        f = o.rank_frac
        out += [
            (metric_name("effective_rank", rows=rows), f"exp(entropy of sigma/sum sigma), uncentred; {used}; {res}",
             f"paper App. B.1.2; Dohare et al. 2024, {DOHARE_MISC}:165, {DOHARE_CIFAR}:134", layers),
            (metric_name("renyi2_rank", rows=rows), f"(sum sigma^2)^2 / sum sigma^4, uncentred; {used}; {res}",
             "paper section 3 (er_2)", layers),
            (metric_name("stable_rank", rows=rows),
             f"||H~||_F^4 / tr((H~^T H~)^2), column-centred; {used}; cutoff: none (Gram traces)",
             "paper App. B.1.2", layers),
            (metric_name("srank", f, rows=rows), f"smallest k with top-k sigma >= {f:g} sum sigma; {used}; {res}",
             f"Kumar et al. 2021; Dohare et al. 2024, {DOHARE_MISC}:199, {DOHARE_CIFAR}:146 ('stable rank')",
             layers),
            (metric_name("approx_rank", f, rows=rows),
             f"smallest k with top-k sigma^2 >= {f:g} sum sigma^2; {used}; {res}",
             f"Dohare et al. 2024, {DOHARE_MISC}:182", layers),
            (metric_name("hard_rank", rows=rows), f"number of sigma above the cutoff; {used}; {mr}",
             f"numpy.linalg.matrix_rank; Dohare's {DOHARE_MISC}:158 counts every non-zero float32 sigma",
             layers),
        ]
    return out


def metric_table(options: MetricOptions | None = None) -> list[MetricInfo]:
    """Every metric name produced with ``options`` (default: the paper's), in output order."""
    o = options or MetricOptions()
    unit, pre, part = "monitored layers", "layers with a pre-activation", "layers with a partition"
    rows = [
        (metric_name("dead_frac", o.dead_eps, o.dead_frac),
         f"fraction of units with |h| < {o.dead_eps:g} on more than {o.dead_frac:g} of samples",
         "paper App. B.1.2", unit),
        ("never_active_frac", "fraction of units with h == 0 on every sample", "Dohare et al. 2024 (MNIST)", unit),
        (metric_name("low_activity_frac", o.low_activity_frac),
         f"fraction of units non-zero on fewer than {o.low_activity_frac:g} of all entries (conv/tokens: "
         "every image x position counts; rows: every sample)",
         f"Dohare et al. 2024, {DOHARE_CIFAR}:128 (mean over dims 0, 2, 3), :129 dense", unit),
        (metric_name("low_activity_frac_per_image", o.low_activity_frac),
         f"fraction of channels whose per-image spatial mean is non-zero on fewer than {o.low_activity_frac:g} "
         "of images (a channel active anywhere in an image counts as active there)",
         "per-image reading (PAPER.md section 10 table); not Dohare's code", "conv and token layers"),
    ]
    rows += [
        (metric_name("dormant_frac", t),
         f"fraction of units with ReDo score mean|h_j| / (layer mean + 1e-9) <= {t:g}", "Sokar et al. 2023 (ReDo)", unit)
        for t in o.dormant_taus
    ]
    rows += [
        (metric_name("saturated_frac", o.sat_tau, o.sat_frac),
         f"fraction of units with |g| / max(mean|h|, 1e-12) < {o.sat_tau:g} on more than {o.sat_frac:g} of samples",
         "paper App. B.1.2", unit),
        (metric_name("linearised_frac", o.linear_frac),
         f"fraction of units with pre-activation > 0 on at least {o.linear_frac:g} of samples",
         "LucMc/continual-learning", pre),
        (metric_name("frozen_frac", o.frozen_eps, o.frozen_frac),
         f"fraction of units with |f'(z)| < {o.frozen_eps:g} on more than {o.frozen_frac:g} of samples",
         "paper Thm 2.1 (M_F), section 8 item 6", pre),
    ]
    for t in o.duplicate_thresholds:
        rows += [
            (metric_name("duplicate_frac", t),
             f"fraction of units j with some k > j at uncentred cosine > {t:g} (upper-triangular)",
             "paper App. B.1.2", unit),
            (metric_name("duplicate_frac_pearson", t),
             f"as duplicate_frac with Pearson correlation > {t:g}", "variant", unit),
        ]
    c = o.cluster_threshold
    rows += [
        (metric_name("clone_cluster_frac", c),
         f"fraction of units in a cluster of >= 2 (components of cosine > {c:g})", "this toolkit", unit),
        (metric_name("clone_clusters", c), f"number of clusters of >= 2 units at cosine > {c:g}", "this toolkit", unit),
        (metric_name("largest_clone_cluster", c), f"size of the largest cluster at cosine > {c:g}", "this toolkit", unit),
    ]
    rows += _rank_rows(o, unit)
    if o.partitions:
        rows += [
            ("clone_r2_fwd", "1 - within-block / total unbiased variance of h (block-mean predictor)", "paper App. B.1.2", part),
            ("clone_r2_bwd", "as clone_r2_fwd on g = dL/dh", "paper App. B.1.2", part),
            ("clone_r2_std_fwd", "1 - mean(std over block / std over layer), ddof 1, on h", "authors' code (parity)", part),
            ("clone_r2_std_bwd", "as clone_r2_std_fwd on g = dL/dh", "authors' code (parity)", part),
        ]
    rows += [
        ("weight_norm", "L2 norm of the layer's parameters", "this toolkit", "param modules + all"),
        ("weight_abs_mean", "mean |w| of the layer's parameters", "Dohare et al. 2024", "param modules + all"),
        ("grad_norm", "L2 norm of dL/dparams on the batch", "this toolkit", "param modules + all"),
        ("dist_init", "L2 distance of the parameters from init_params (when given)", "this toolkit", "param modules + all"),
        ("dist_prev", "L2 distance from prev_params, the previous record (when given)", "this toolkit", "param modules + all"),
        ("loss", "the loss on the batch (masked cross-entropy or MSE)", "paper", "output"),
        ("accuracy", "argmax over all logits == label", "authors' code", "output"),
        ("masked_accuracy", "argmax over the class_mask logits == label", "this toolkit", "output"),
    ]
    every = "; rows: every sample (conv/tokens: every example x position unless pool=True)"
    rows = [(n, d if ("rows:" in d or layers not in (unit, pre, part)) else d + every, src, layers)
            for n, d, src, layers in rows]
    return [MetricInfo(*r) for r in rows]


METRIC_NAMES: tuple = tuple(info.name for info in metric_table(MetricOptions(partitions={"_": None})))
"""Metric names with the default thresholds (clone R^2 names appear when partitions are given)."""


def describe_metrics(options: MetricOptions | None = None) -> str:
    """One line per metric name: ``name  definition  [source; layers]`` (by default every name
    with the paper's thresholds, cloning R^2 included)."""
    table = metric_table(options or MetricOptions(partitions={"_": None}))
    width = max(len(r.name) for r in table)
    return "\n".join(f"{r.name:<{width}}  {r.definition}  [{r.source}; {r.layers}]" for r in table)

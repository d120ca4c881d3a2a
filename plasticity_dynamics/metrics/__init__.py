"""plasticity_dynamics.metrics: unit diagnostics of loss of plasticity.

Array level (h: samples x units activations of one layer, g = dL/dh, z pre-activations; all
pure, jit- and vmap-able): unit activity (:mod:`.units`), duplicates and clone clusters
(:mod:`.similarity`), exact weight symmetry (:mod:`.symmetry`), cloning R^2 (:mod:`.clone_r2`),
ranks (:mod:`.ranks`), parameter signals and accuracy (:mod:`.signals`), layouts
(:mod:`.layout`). Model level: :func:`unit_metrics` and :func:`make_unit_metrics_fn`
(:mod:`.model_metrics`); names in :mod:`.names`; unit fate tracking in :mod:`.fate`.
"""

from .churn import CHURN_KINDS, churn
from .clone_r2 import clone_r2, clone_r2_std_ratio, interleaved_partition
from .fate import STATES, UnitStates, track_fate, unit_states
from .layout import LAYER_KINDS, flatten_units
from .model_metrics import LOSSES, make_unit_metrics_fn, metrics_from_arrays, unit_metrics
from .names import METRIC_NAMES, MetricInfo, MetricOptions, describe_metrics, metric_name, metric_table
from .ranks import (
    approximate_rank,
    effective_rank,
    hard_rank,
    renyi2_rank,
    singular_values,
    LayerFactors,
    layer_factors,
    spectrum_ranks,
    srank,
    stable_rank,
)
from .signals import accuracy, masked_accuracy, param_abs_mean, param_distance, param_norms
from .similarity import (
    CloneClusters,
    clone_clusters,
    cluster_members,
    connected_components,
    cosine_similarity,
    duplicate_fraction,
    duplicate_fraction_pearson,
    duplicate_units,
)
from .symmetry import unit_weight_features, weight_symmetry_clusters
from .units import (
    dead_fraction,
    dead_units,
    dormant_fraction,
    dormant_scores,
    dormant_units,
    frozen_fraction,
    frozen_units,
    linearised_fraction,
    linearised_units,
    low_activity_fraction,
    low_activity_units,
    never_active_fraction,
    never_active_units,
    saturated_fraction,
    saturated_units,
)

__all__ = [
    "LAYER_KINDS", "LOSSES", "METRIC_NAMES", "STATES",
    "CloneClusters", "MetricInfo", "MetricOptions", "UnitStates",
    "CHURN_KINDS", "accuracy", "approximate_rank", "churn", "clone_clusters", "clone_r2", "clone_r2_std_ratio", "cluster_members",
    "connected_components", "cosine_similarity", "dead_fraction", "dead_units", "describe_metrics",
    "dormant_fraction", "dormant_scores", "dormant_units", "duplicate_fraction", "duplicate_fraction_pearson",
    "duplicate_units", "effective_rank", "flatten_units", "frozen_fraction", "frozen_units", "hard_rank",
    "interleaved_partition", "linearised_fraction", "linearised_units", "low_activity_fraction",
    "low_activity_units", "make_unit_metrics_fn", "masked_accuracy", "metric_name", "metric_table",
    "metrics_from_arrays", "never_active_fraction", "never_active_units", "param_abs_mean", "param_distance",
    "param_norms", "renyi2_rank", "saturated_fraction", "saturated_units", "singular_values", "spectrum_ranks", "LayerFactors", "layer_factors",
    "srank", "stable_rank", "track_fate", "unit_metrics", "unit_states", "unit_weight_features",
    "weight_symmetry_clusters",
]

"""plasticity_dynamics.manifolds: LoP manifolds as first-class objects.

- :mod:`.partition`: unit groups, block partitions and which tensor entries each unit owns
  (:class:`Partition`); :mod:`.layouts`: :func:`unit_partition` of any model, from its inferred
  (or declared) ``pdx.models.Layout``.
- :mod:`.blocks`: block averaging along a unit axis (the kernel of every cloning projector).
- :mod:`.manifold`: :class:`Manifold` (project, tangent, normal, distance, leakage,
  normal_dim; a jit-able pytree), :func:`cloned` (M_D(w) = w + M_BC) and :func:`frozen` (M_F).
- :mod:`.equitable`: M_RE / M_CE membership, the projection onto M_RE cap M_CE and the base
  (quotient) network with column-sum weights.
- :mod:`.expand`: function-preserving expansion of every model family (vit by head
  duplication) and optimiser-state expansion.
- :mod:`.detect`: frozen units and clone clusters of any checkpoint, with evidence.

Reference: arXiv 2510.00304, Theorem 2.1 and Appendix A (PAPER.md sections 1.3-1.5, 5.4).
"""

from .detect import Detection, detect
from .equitable import (
    base_network,
    equitable_projection,
    equitable_residuals,
    in_column_equitable,
    in_row_equitable,
)
from .expand import expand, expand_opt_state, source_map, wide_options
from .manifold import Manifold, cloned, frozen, tree_norm
from .layouts import unit_partition
from .partition import AxisSpec, LayerUnits, Partition

__all__ = [
    "AxisSpec",
    "Detection",
    "LayerUnits",
    "Manifold",
    "Partition",
    "base_network",
    "cloned",
    "detect",
    "equitable_projection",
    "equitable_residuals",
    "expand",
    "expand_opt_state",
    "frozen",
    "in_column_equitable",
    "in_row_equitable",
    "source_map",
    "tree_norm",
    "unit_partition",
    "wide_options",
]

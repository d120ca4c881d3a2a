"""Experiments: one module per paper experiment family, and the figure registry.

``pdx.experiments.reproduce(name, scale, out)`` runs a registered figure; ``figures()``
lists them (the CLI's ``list figures`` and ``reproduce``).
"""

from .analyze import analyze
from .invariance import ALL_SETTINGS, SETTINGS, invariance
from .registry import FIGURES, SCALES, Figure, figures, register, reproduce

__all__ = ["ALL_SETTINGS", "FIGURES", "SCALES", "SETTINGS", "Figure", "analyze", "figures", "invariance", "register",
           "reproduce"]

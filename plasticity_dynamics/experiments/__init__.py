"""Experiments: one module per paper experiment family, and the figure registry.

``pdx.experiments.reproduce(name, scale, out)`` runs a registered figure; ``figures()``
lists them (the CLI's ``list figures`` and ``reproduce``).
"""

from .registry import FIGURES, SCALES, Figure, figures, register, reproduce

__all__ = ["FIGURES", "SCALES", "Figure", "figures", "register", "reproduce"]

"""Registers the theory figures (A.1–A.3, PAPER.md 2.7) with the reproduce driver."""

from __future__ import annotations

from pathlib import Path

from .registry import register
from .theory_figures import fig_a1, fig_a2, fig_a3


@register("figA.1", "Fig A.1",
          "Quartic gap bound r² − K(r)² ≥ γ r²(1 − r²) and the er₂ rank-gain bound along a path of correlation matrices.")
def run_a1(scale, out_dir, data_dir=None, progress=True):
    return fig_a1(Path(out_dir) / "figures", scale)


@register("figA.2", "Fig A.2",
          "ReLU bias sweep and tanh gain sweep: decorrelation strength γ against the modulation and the frozen probability.")
def run_a2(scale, out_dir, data_dir=None, progress=True):
    return fig_a2(Path(out_dir) / "figures", scale)


@register("figA.3", "Fig A.3",
          "Six activations, sweeping pre-activation mean and scale: γ against P(|f'| < 0.01).")
def run_a3(scale, out_dir, data_dir=None, progress=True):
    return fig_a3(Path(out_dir) / "figures", scale)

"""plasticity_dynamics.plotting: figures of a run (``plot_run``) and the atomic figure writer
(``save_figure``) that every figure uses. Imports nothing above ``metrics`` (no training)."""

from .run import band, plot_run, save_figure, series, task_boundaries

__all__ = ["band", "plot_run", "save_figure", "series", "task_boundaries"]

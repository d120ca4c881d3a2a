"""plasticity_dynamics.sweep: grids of runs from one sweep file.

``load_sweep(path)`` parses and checks a sweep file (:mod:`.spec`); ``plan(spec)`` groups its
cells into compiled programs, whose cells run as vmapped lanes (:mod:`.plan`); ``run_sweep``
runs them with an executor, ``local`` or ``ray`` (:mod:`.executors`), into one sweep directory
with ``cells.csv`` and the tidy ``table.csv`` (:mod:`.run`).
"""

from .executors import EXECUTORS, cell_dir, cell_status, run_program
from .plan import LANE_KEYS, Program, describe_plan, group_cells, lane_bytes, memory_limit, plan, split_axes
from .run import run_sweep, sweep_runs, table_columns
from .spec import EXACT_MAX_LANES, SweepSpec, expand, format_value, load_sweep, parse_sweep

__all__ = [
    "EXACT_MAX_LANES",
    "EXECUTORS",
    "LANE_KEYS",
    "Program",
    "SweepSpec",
    "cell_dir",
    "cell_status",
    "describe_plan",
    "expand",
    "format_value",
    "group_cells",
    "lane_bytes",
    "load_sweep",
    "memory_limit",
    "parse_sweep",
    "plan",
    "run_program",
    "run_sweep",
    "split_axes",
    "sweep_runs",
    "table_columns",
]

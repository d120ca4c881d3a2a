"""Training engine, configuration and run directories (``pdx.train``)."""

from .config import Config, parse_override
from .engine import Components, Run, build, masked_loss, resume_config, train, train_lanes
from .replay import engine_state, run_step_fn, step_state, task_window
from .rundir import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    MetricsWriter,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    read_table,
    save_checkpoint,
)
from ..records import MetricsTable

__all__ = [
    "Config",
    "parse_override",
    "Components",
    "Run",
    "build",
    "masked_loss",
    "resume_config",
    "train",
    "train_lanes",
    "run_step_fn",
    "step_state",
    "engine_state",
    "task_window",
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "MetricsTable",
    "MetricsWriter",
    "list_checkpoints",
    "load_checkpoint",
    "read_metrics",
    "read_table",
    "save_checkpoint",
]

"""Training engine, configuration and run directories (``pdx.train``)."""

from .config import Config, parse_override
from .engine import Components, Run, build, masked_loss, train
from .rundir import (
    CorruptCheckpointError,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
)

__all__ = [
    "Config",
    "parse_override",
    "Components",
    "Run",
    "build",
    "masked_loss",
    "train",
    "CorruptCheckpointError",
    "list_checkpoints",
    "load_checkpoint",
    "read_metrics",
    "save_checkpoint",
]

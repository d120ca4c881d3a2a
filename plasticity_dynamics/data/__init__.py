"""plasticity_dynamics.data: datasets as NumPy arrays, one registry.

``load(name, data_dir=None, **opts) -> Dataset``; ``DATASETS`` maps each name to a
one-line description. Offline: mnist1d, digits, bitflip, teacher. From files in
``data_dir``: mnist, cifar10, cifar100, tinyimagenet (DatasetMissingError when absent).
``augment(key, x, pad)`` is the jit-safe random crop + flip of PAPER.md 5.2.
"""

from .augment import NORMALIZATION, augment, normalize
from .dataset import DATASETS, Dataset, load
from .files import read_idx
from .synthetic import flip_table, ltu_apply, ltu_target, teacher_apply, teacher_params

__all__ = [
    "DATASETS",
    "Dataset",
    "NORMALIZATION",
    "augment",
    "flip_table",
    "load",
    "ltu_apply",
    "ltu_target",
    "normalize",
    "read_idx",
    "teacher_apply",
    "teacher_params",
]

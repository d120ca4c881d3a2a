"""plasticity_dynamics.tasks: task streams for continual learning.

A stream gives the engine ``num_tasks``, ``num_outputs``, ``loss``, ``input_shape``,
``batch_size``, ``task_data(t)`` (same shapes for every task), the pure sampler
``sample(data, key, step) -> (x, y, class_mask)`` (``key`` fixed for the task, ``step``
counted from the task start), fixed class-balanced ``metric_batch(t)``,
``steps_per_epoch(t)`` and ``describe()``. Build one with ``make_stream(kind, dataset, **opts)``.
"""

from .base import SAMPLING, ArrayStream, TaskStream, balanced_positions, sample_indices
from .classification import (ClassSplit, PermutedInputs, PermutedLabels, RandomLabels, RandomSubsets, class_split,
                             permuted_inputs, permuted_labels, random_labels, random_subsets)
from .registry import STREAMS, make_stream
from .regression import BitFlip, DataTeacher, GaussianTeacher, bitflip, teacher

__all__ = [
    "ArrayStream",
    "BitFlip",
    "ClassSplit",
    "DataTeacher",
    "GaussianTeacher",
    "PermutedInputs",
    "PermutedLabels",
    "RandomLabels",
    "RandomSubsets",
    "SAMPLING",
    "STREAMS",
    "TaskStream",
    "balanced_positions",
    "bitflip",
    "class_split",
    "make_stream",
    "permuted_inputs",
    "permuted_labels",
    "random_labels",
    "random_subsets",
    "sample_indices",
    "teacher",
]

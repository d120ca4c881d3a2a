"""The TaskStream protocol, pure batch sampling, and fixed class-balanced metric batches.

A stream is a Python object holding static configuration; its data live in
``task_data(t)`` (a dict of arrays with the same shapes for every task, so one
compiled program serves every task) and its randomness in explicit keys.

Sampling contract (``stream.sample(data, key, step)``, pure, jit/vmap/scan safe):
``key`` is the task's data key, the SAME for every step of the task (derive it
as e.g. ``fold_in(seed_key, task)``); ``step`` counts optimiser steps from the
start of the task (0, 1, ...). Per-step randomness is ``fold_in(key, step)``.
- ``sampling="epoch"`` (default): epoch e = step // steps_per_epoch uses the
  permutation keyed by ``fold_in(key, e)``; steps_per_epoch = ceil(n / B).
  When B does not divide n the last batch of an epoch is completed with the
  first examples of the same permutation (so every example is seen at least
  once per epoch, exactly once when B divides n; this keeps B static and gives
  the PyTorch ``drop_last=False`` step count).
- ``sampling="random"``: B indices uniform with replacement at every step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..data.augment import augment as _augment
from ..errors import InputError, check_choice, check_positive

SAMPLING = ("epoch", "random")


def sample_indices(key, step, n: int, batch_size: int, sampling: str):
    """(batch_size,) int32 indices in [0, n) for training step ``step``; pure.

    Cost: "epoch" draws a permutation of n (O(n log n)) per call; "random" O(B).
    """
    k_perm, k_step = jax.random.split(key)
    step = jnp.asarray(step, jnp.int32)
    if sampling == "random":
        return jax.random.randint(jax.random.fold_in(k_step, step), (batch_size,), 0, n, dtype=jnp.int32)
    spe = -(-n // batch_size)
    epoch = step // spe
    pos = (step % spe) * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    perm = jax.random.permutation(jax.random.fold_in(k_perm, epoch), n)
    return perm[pos % n].astype(jnp.int32)


def balanced_positions(y: np.ndarray, classes, size: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of a class-balanced subset of ``y``: size // k per class (the first
    size % k classes get one more), each class capped by its count; seeded choice,
    concatenated class by class in the order of ``classes``."""
    classes = list(classes)
    base, extra = divmod(size, len(classes))
    out = []
    for j, c in enumerate(classes):
        idx = np.flatnonzero(y == c)
        q = min(base + (1 if j < extra else 0), len(idx))
        out.append(np.sort(rng.permutation(idx)[:q]))
    return np.concatenate(out).astype(np.int64)


class TaskStream:
    """Base class of every task stream (see the module docstring for the contract).

    Attributes: kind, num_tasks, num_outputs, loss ("xent" | "mse"), input_shape,
    batch_size, sampling, metric_batch_size, seed, head_zeroing (a flag the
    engine reads: zero the output layer at each task start).
    Methods: task_data(t), sample(data, key, step), metric_batch(t, split),
    steps_per_epoch(t), describe().
    """

    kind = "base"

    def __init__(self, *, num_tasks, num_outputs, loss, input_shape, batch_size, sampling, metric_batch_size,
                 seed, head_zeroing=False):
        check_positive("num_tasks", num_tasks, integer=True)
        check_positive("batch_size", batch_size, integer=True)
        check_positive("metric_batch_size", metric_batch_size, integer=True)
        check_positive("seed", seed, integer=True, allow_zero=True)
        check_choice("sampling", sampling, SAMPLING)
        self.num_tasks = int(num_tasks)
        self.num_outputs = int(num_outputs)
        self.loss = loss
        self.input_shape = tuple(int(s) for s in input_shape)
        self.batch_size = int(batch_size)
        self.sampling = sampling
        self.metric_batch_size = int(metric_batch_size)
        self.seed = int(seed)
        self.head_zeroing = bool(head_zeroing)

    def _check_task(self, t) -> int:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < self.num_tasks:
            raise InputError(f"task={t!r} is not an integer in [0, {self.num_tasks})")
        return int(t)

    def _extra(self) -> dict:
        return {}

    def describe(self) -> dict:
        """JSON-friendly summary for the run config / summary."""
        d = {"kind": self.kind, "num_tasks": self.num_tasks, "num_outputs": self.num_outputs, "loss": self.loss,
             "input_shape": list(self.input_shape), "batch_size": self.batch_size, "sampling": self.sampling,
             "metric_batch_size": self.metric_batch_size, "seed": self.seed, "head_zeroing": self.head_zeroing}
        d.update(self._extra())
        return d

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class ArrayStream(TaskStream):
    """A stream whose task data is a fixed array of examples {"x", "y", "class_mask"}.

    Subclasses set ``task_size`` (same for every task) and implement
    ``_examples(t, split) -> (x, y)`` (the task's examples in natural order: class
    by class for class splits) and ``_train_positions(t)`` (task_size positions
    into ``_examples(t, "train")``), and ``_classes(t)`` (active class ids).
    """

    task_size: int
    augment_pad: int | None = None  # None: no augmentation; else crop padding (0 = flip only)
    parity_single_class: bool = False

    def _classes(self, t) -> np.ndarray:
        return np.arange(self.num_outputs)

    def class_mask(self, t) -> np.ndarray:
        """(num_outputs,) bool: the classes the loss is restricted to in task t."""
        t = self._check_task(t)
        if self.loss == "mse":
            return np.ones(self.num_outputs, bool)
        m = np.zeros(self.num_outputs, bool)
        m[self._classes(t)] = True
        return m

    def task_data(self, t) -> dict:
        """{"x": (n,)+input_shape float32, "y": (n,) int32 or (n, out) float32, "class_mask": (out,) bool}, n = task_size."""
        t = self._check_task(t)
        x, y = self._examples(t, "train")
        pos = self._train_positions(t)
        return {"x": np.ascontiguousarray(x[pos], np.float32), "y": np.ascontiguousarray(y[pos]),
                "class_mask": self.class_mask(t)}

    def sample(self, data, key, step):
        """One training batch (x (B,...), y (B,) or (B, out), class_mask (out,)); pure in (data, key, step)."""
        n = data["y"].shape[0]
        idx = sample_indices(key, step, n, self.batch_size, self.sampling)
        x, y = data["x"][idx], data["y"][idx]
        if self.augment_pad is not None and x.ndim == 4:
            k_aug = jax.random.fold_in(jax.random.fold_in(key, 0x5EED), jnp.asarray(step, jnp.int32))
            x = _augment(k_aug, x, self.augment_pad)
        return x, y, data["class_mask"]

    def steps_per_epoch(self, t) -> int:
        """ceil(task_size / batch_size): optimiser steps of one epoch of task t."""
        self._check_task(t)
        return -(-self.task_size // self.batch_size)

    def metric_batch(self, t, split: str = "train"):
        """Fixed metric batch of task t from ``split`` ("train" | "test") as NumPy (x, y, class_mask).

        Class-balanced (``metric_batch_size`` // k per active class, capped by
        availability), unaugmented, seeded. With ``parity_single_class`` it is the
        first ``metric_batch_size`` examples of the task in natural order, as in
        the authors' code (single-class for 5-class Tiny ImageNet tasks; PAPER.md 4).
        """
        t = self._check_task(t)
        check_choice("split", split, ("train", "test"))
        x, y = self._examples(t, split)
        size = self.metric_batch_size
        if self.parity_single_class:
            pos = np.arange(min(size, len(y)))
        elif self.loss == "mse":
            pos = np.sort(np.random.default_rng([self.seed, t, 77]).permutation(len(y))[:size])
        else:
            pos = balanced_positions(y, self._classes(t), size, np.random.default_rng([self.seed, t, 78]))
        return np.asarray(x[pos], np.float32), np.asarray(y[pos]), self.class_mask(t)


def resolve_augment(augment, dataset) -> int | None:
    """None -> dataset.augment_pad if > 0 else off; False -> off; True -> dataset pad; int -> that pad."""
    if augment is None:
        return dataset.augment_pad if dataset.augment_pad > 0 else None
    if augment is False:
        return None
    if augment is True:
        return int(dataset.augment_pad)
    check_positive("augment", augment, integer=True, allow_zero=True)
    return int(augment)

"""Regression task streams: bit flipping (online, PAPER.md 5.7) and a random teacher.

bitflip: the flip sequence is precomputed (``data.flip_table``, one row of the f
flipping bits per period of T steps) into the task data, so ``sample`` is O(B)
and pure: at global step g = offset + step the flipping bits are row
min(g // T, last); the m - f other bits are Bernoulli(1/2) from fold_in(key, step);
the bias bit is 1; targets come from the LTU net (``data.ltu_apply``). Periods are
counted in optimiser steps (one sample per step at the default batch size 1; with
B > 1 all B samples of a step share the flipping bits). The table covers
``num_steps``; later steps keep the last state (no more flips).
One task by default; ``steps_per_task`` cuts the stream into tasks of that many
steps (task data then carries ``offset`` = t * steps_per_task).
Fixed metric batch: ``metric_batch_size`` (default 128, the authors' size) inputs
with *all* m bits uniform random, seeded, plus the bias bit.

teacher: targets from a fixed random 2-layer network (``data.teacher_params``), a new
teacher per task. With an int input dimension the inputs are fresh N(0, I) draws at
every step (online); with a Dataset the inputs are its training images (flattened
for the teacher) and the targets are precomputed per task.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..data.synthetic import (TEACHER_ACTIVATIONS, check_bitflip_args, flip_table, ltu_apply, ltu_target,
                              teacher_apply, teacher_params)
from ..errors import InputError, check_choice, check_positive
from .base import ArrayStream, TaskStream


class BitFlip(TaskStream):
    """Bit-flipping online regression; see the module docstring. loss "mse", 1 output."""

    kind = "bitflip"

    def __init__(self, *, m: int = 20, f: int = 15, T: int = 10000, beta: float = 0.7, target_hidden: int = 100,
                 num_steps: int = 10_000_000, steps_per_task: int | None = None, seed: int = 0,
                 batch_size: int = 1, threshold: str = "paper", metric_batch_size: int = 128):
        check_bitflip_args(m, f, T, beta, target_hidden, threshold)
        check_positive("num_steps", num_steps, integer=True)
        if steps_per_task is None:
            steps_per_task = num_steps
        check_positive("steps_per_task", steps_per_task, integer=True)
        num_tasks = -(-num_steps // steps_per_task)
        super().__init__(num_tasks=num_tasks, num_outputs=1, loss="mse", input_shape=(m + 1,),
                         batch_size=batch_size, sampling="random", metric_batch_size=metric_batch_size, seed=seed)
        self.m, self.f, self.T, self.beta = int(m), int(f), int(T), float(beta)
        self.target_hidden, self.threshold = int(target_hidden), threshold
        self.num_steps, self.steps_per_task = int(num_steps), int(steps_per_task)
        self.target = ltu_target(self.seed, self.m, self.target_hidden, self.beta, threshold)
        self.table = flip_table(self.seed, self.f, self.num_steps // self.T + 1)

    def task_data(self, t) -> dict:
        """{"flip_table": (P, f) float32, "offset": () int32, "target": LTU params}; same shapes for all t."""
        t = self._check_task(t)
        return {"flip_table": self.table, "offset": np.int32(t * self.steps_per_task),
                "target": dict(self.target)}

    def flip_bits(self, data, step):
        """(f,) flipping bits at task step ``step`` (pure)."""
        g = data["offset"] + jnp.asarray(step, jnp.int32)
        period = jnp.minimum(g // self.T, data["flip_table"].shape[0] - 1)
        return data["flip_table"][period]

    def sample(self, data, key, step):
        """(x (B, m+1) float32, y (B, 1) float32, class_mask (1,) True); pure in (data, key, step)."""
        b = self.batch_size
        flips = jnp.broadcast_to(self.flip_bits(data, step), (b, self.f))
        k = jax.random.fold_in(key, jnp.asarray(step, jnp.int32))
        rand = jax.random.bernoulli(k, 0.5, (b, self.m - self.f)).astype(jnp.float32)
        x = jnp.concatenate([flips.astype(jnp.float32), rand, jnp.ones((b, 1), jnp.float32)], axis=1)
        y = ltu_apply(data["target"], x)[:, None]
        return x, y, jnp.ones((1,), bool)

    def metric_batch(self, t, split: str = "train"):
        """Fixed batch of uniformly random inputs (all m bits random) and their targets (NumPy)."""
        t = self._check_task(t)
        check_choice("split", split, ("train", "test"))
        rng = np.random.default_rng([self.seed, t, 5 if split == "train" else 6])
        n = self.metric_batch_size
        x = np.concatenate([rng.integers(0, 2, (n, self.m)).astype(np.float32), np.ones((n, 1), np.float32)], 1)
        return x, ltu_apply(self.target, x)[:, None].astype(np.float32), np.ones(1, bool)

    def steps_per_epoch(self, t) -> int:
        """No epochs in an online stream: the task length (steps_per_task)."""
        self._check_task(t)
        return self.steps_per_task

    def _extra(self):
        return {"m": self.m, "f": self.f, "T": self.T, "beta": self.beta, "target_hidden": self.target_hidden,
                "threshold": self.threshold, "num_steps": self.num_steps, "steps_per_task": self.steps_per_task}


class GaussianTeacher(TaskStream):
    """Online regression: x ~ N(0, I_d) every step, y = teacher_t(x)."""

    kind = "teacher"

    def __init__(self, input_dim: int, *, hidden: int = 32, num_outputs: int = 1, num_tasks: int = 1,
                 activation: str = "tanh", seed: int = 0, batch_size: int = 128, metric_batch_size: int = 500):
        check_positive("input_dim", input_dim, integer=True)
        check_positive("hidden", hidden, integer=True)
        check_positive("num_outputs", num_outputs, integer=True)
        check_choice("activation", activation, TEACHER_ACTIVATIONS)
        super().__init__(num_tasks=num_tasks, num_outputs=num_outputs, loss="mse", input_shape=(input_dim,),
                         batch_size=batch_size, sampling="random", metric_batch_size=metric_batch_size, seed=seed)
        self.hidden, self.activation = int(hidden), activation

    def teacher(self, t) -> dict:
        """Teacher parameters of task t."""
        t = self._check_task(t)
        return teacher_params(self.seed * 100003 + t, self.input_shape[0], self.hidden, self.num_outputs)

    def task_data(self, t) -> dict:
        return {"teacher": self.teacher(t)}

    def sample(self, data, key, step):
        x = jax.random.normal(jax.random.fold_in(key, jnp.asarray(step, jnp.int32)),
                              (self.batch_size,) + self.input_shape, jnp.float32)
        return x, teacher_apply(data["teacher"], x, self.activation), jnp.ones((self.num_outputs,), bool)

    def metric_batch(self, t, split: str = "train"):
        t = self._check_task(t)
        check_choice("split", split, ("train", "test"))
        rng = np.random.default_rng([self.seed, t, 7 if split == "train" else 8])
        x = rng.standard_normal((self.metric_batch_size,) + self.input_shape).astype(np.float32)
        return x, teacher_apply(self.teacher(t), x, self.activation).astype(np.float32), \
            np.ones(self.num_outputs, bool)

    def steps_per_epoch(self, t) -> int:
        """Online inputs have no epochs: 1 (so epochs_per_task reads as steps)."""
        self._check_task(t)
        return 1

    def _extra(self):
        return {"input_dim": self.input_shape[0], "hidden": self.hidden, "activation": self.activation}


class DataTeacher(ArrayStream):
    """Regression on a dataset's training inputs labelled by a new random teacher per task."""

    kind = "teacher"

    def __init__(self, dataset, *, hidden: int = 32, num_outputs: int = 1, num_tasks: int = 1,
                 activation: str = "tanh", seed: int = 0, batch_size: int = 128, sampling: str = "epoch",
                 metric_batch_size: int = 500, num_examples: int | None = None):
        check_positive("hidden", hidden, integer=True)
        check_positive("num_outputs", num_outputs, integer=True)
        check_choice("activation", activation, TEACHER_ACTIVATIONS)
        super().__init__(num_tasks=num_tasks, num_outputs=num_outputs, loss="mse", input_shape=dataset.input_shape,
                         batch_size=batch_size, sampling=sampling, metric_batch_size=metric_batch_size, seed=seed)
        self.dataset, self.hidden, self.activation = dataset, int(hidden), activation
        n = len(dataset.x_train)
        if num_examples is not None:
            check_positive("num_examples", num_examples, integer=True)
            if num_examples > n:
                raise InputError(f"num_examples={num_examples!r} exceeds the {n} training examples of {dataset.name!r}")
        self.subset = np.arange(n) if num_examples is None else \
            np.sort(np.random.default_rng([self.seed, 0]).permutation(n)[:num_examples])
        self.task_size = len(self.subset)

    def teacher(self, t) -> dict:
        t = self._check_task(t)
        d = int(np.prod(self.input_shape))
        return teacher_params(self.seed * 100003 + t, d, self.hidden, self.num_outputs)

    def _examples(self, t, split):
        x = self.dataset.x_train[self.subset] if split == "train" else self.dataset.x_test
        return x, teacher_apply(self.teacher(t), x, self.activation).astype(np.float32)

    def _train_positions(self, t):
        return np.arange(self.task_size)

    def _extra(self):
        return {"dataset": self.dataset.name, "hidden": self.hidden, "activation": self.activation,
                "task_size": self.task_size}


def bitflip(m: int = 20, f: int = 15, T: int = 10000, beta: float = 0.7, target_hidden: int = 100, **opts) -> BitFlip:
    """Bit-flipping stream (PAPER.md 5.7); options: num_steps, steps_per_task, seed, batch_size (1),
    threshold ("paper": m*beta | "code": (m+1)*beta), metric_batch_size (128)."""
    return BitFlip(m=m, f=f, T=T, beta=beta, target_hidden=target_hidden, **opts)


def teacher(source, hidden: int = 32, **opts):
    """Teacher-network regression. ``source``: an int input dimension (online Gaussian inputs)
    or a Dataset (its training inputs). Options: num_outputs, num_tasks, activation, seed,
    batch_size, metric_batch_size (and sampling, num_examples with a Dataset)."""
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return GaussianTeacher(int(source), hidden=hidden, **opts)
    if hasattr(source, "x_train"):
        return DataTeacher(source, hidden=hidden, **opts)
    raise InputError(f"teacher source={source!r} must be an input dimension (int) or a Dataset")

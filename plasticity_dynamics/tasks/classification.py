"""Classification task streams: class split, random subsets, permuted inputs, permuted labels, random labels.

All keep one shared head of ``dataset.num_classes`` outputs and global class ids.
- class_split (PAPER.md 5.3): classes in a seeded shuffled order, ``classes_per_task``
  disjoint classes per task, loss masked to the task's classes; ``head_zeroing`` is a
  flag for the engine (zero output weights and biases at each task start).
  Every task is truncated to the smallest task size (a seeded random subset) so all
  tasks share one array shape; ``describe()["truncated"]`` says how many examples
  each task lost (0 when classes are equally frequent, as in CIFAR / Tiny ImageNet).
- random_subsets (Continual-ImageNet-style unlimited stream, Dohare et al. 2024): task t
  draws ``classes_per_task`` distinct classes uniformly at random with the seeded generator
  ``default_rng([seed, t, 5])`` (a pure function of (seed, t): any task can be rebuilt alone,
  so runs resume exactly; consecutive tasks may share classes), loss masked to those classes
  (a fresh head mask per task), head zeroing as class_split. Any ``num_tasks``. Every class
  contributes the same number of examples, ``examples_per_class`` (default: the smallest
  class count of the data set; a seeded subset of each class, ``default_rng([seed, t, c, 6])``),
  so every task has ``classes_per_task * examples_per_class`` balanced examples and one shape.
- permuted_inputs: a fixed random permutation of input positions per task (pixels
  keep their channels together; vectors permute features); task 0 is the identity.
- permuted_labels: a fixed random permutation of the class ids per task; task 0 identity.
- random_labels: fresh uniform random labels for every training example in every task
  (no test split).
Sizes: all streams but class_split and random_subsets use the whole training set, or a seeded subset of
``num_examples``.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, check_positive
from .base import ArrayStream, resolve_augment


def _check_classification(dataset, kind: str) -> None:
    if getattr(dataset, "task", None) != "classification":
        name = getattr(dataset, "name", dataset)
        raise InputError(f"dataset={name!r} is not a classification dataset; stream {kind!r} needs one")


class ClassSplit(ArrayStream):
    """``classes_per_task`` disjoint classes per task; see the module docstring."""

    kind = "class_split"

    def __init__(self, dataset, classes_per_task: int = 2, num_tasks: int | None = None, *, seed: int = 0,
                 head_zeroing: bool = True, batch_size: int = 128, sampling: str = "epoch",
                 metric_batch_size: int = 500, parity_single_class: bool = False, augment=None):
        _check_classification(dataset, self.kind)
        k_all = int(dataset.num_classes)
        check_positive("classes_per_task", classes_per_task, integer=True)
        if classes_per_task > k_all:
            raise InputError(f"classes_per_task={classes_per_task!r} exceeds the {k_all} classes of {dataset.name!r}")
        max_tasks = k_all // classes_per_task
        if num_tasks is None:
            num_tasks = max_tasks
        check_positive("num_tasks", num_tasks, integer=True)
        if num_tasks > max_tasks:
            raise InputError(f"num_tasks={num_tasks!r} exceeds {max_tasks} = {k_all} classes // {classes_per_task} "
                             f"classes per task")
        super().__init__(num_tasks=num_tasks, num_outputs=k_all, loss="xent", input_shape=dataset.input_shape,
                         batch_size=batch_size, sampling=sampling, metric_batch_size=metric_batch_size, seed=seed,
                         head_zeroing=head_zeroing)
        self.dataset = dataset
        self.classes_per_task = int(classes_per_task)
        self.parity_single_class = bool(parity_single_class)
        self.augment_pad = resolve_augment(augment, dataset)
        self.class_order = np.random.default_rng(self.seed).permutation(k_all)
        self.task_classes = [self.class_order[t * classes_per_task:(t + 1) * classes_per_task]
                             for t in range(self.num_tasks)]
        sizes = [len(self._natural("train", t)) for t in range(self.num_tasks)]
        if min(sizes) == 0:
            raise InputError(f"task {sizes.index(0)} of {dataset.name!r} has no training examples")
        self.task_size = min(sizes)
        self.truncated = [s - self.task_size for s in sizes]

    def _classes(self, t):
        return self.task_classes[t]

    def _natural(self, split, t) -> np.ndarray:
        y = self.dataset.y_train if split == "train" else self.dataset.y_test
        return np.concatenate([np.flatnonzero(y == c) for c in self.task_classes[t]])

    def _examples(self, t, split):
        pos = self._natural(split, t)
        ds = self.dataset
        x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
        return x[pos], y[pos]

    def _train_positions(self, t):
        n = len(self._natural("train", t))
        if n == self.task_size:
            return np.arange(n)
        return np.sort(np.random.default_rng([self.seed, t, 1]).choice(n, self.task_size, replace=False))

    def _extra(self):
        return {"dataset": self.dataset.name, "classes_per_task": self.classes_per_task,
                "task_classes": [c.tolist() for c in self.task_classes], "task_size": self.task_size,
                "truncated": self.truncated, "parity_single_class": self.parity_single_class,
                "augment_pad": self.augment_pad}


class RandomSubsets(ArrayStream):
    """``classes_per_task`` classes drawn at random for each of any number of tasks; see the module docstring.

    Cost: building task t's data is O(n_train) (one pass over the labels per drawn class).
    """

    kind = "random_subsets"

    def __init__(self, dataset, classes_per_task: int = 2, num_tasks: int = 50, *, seed: int = 0,
                 head_zeroing: bool = True, batch_size: int = 128, sampling: str = "epoch",
                 metric_batch_size: int = 500, examples_per_class: int | None = None, augment=None):
        _check_classification(dataset, self.kind)
        k_all = int(dataset.num_classes)
        check_positive("classes_per_task", classes_per_task, integer=True)
        if classes_per_task > k_all:
            raise InputError(f"classes_per_task={classes_per_task!r} exceeds the {k_all} classes of {dataset.name!r}")
        super().__init__(num_tasks=num_tasks, num_outputs=k_all, loss="xent", input_shape=dataset.input_shape,
                         batch_size=batch_size, sampling=sampling, metric_batch_size=metric_batch_size, seed=seed,
                         head_zeroing=head_zeroing)
        self.dataset = dataset
        self.classes_per_task = int(classes_per_task)
        self.augment_pad = resolve_augment(augment, dataset)
        counts = np.bincount(np.asarray(dataset.y_train), minlength=k_all)
        smallest = int(counts.min())
        if smallest == 0:
            raise InputError(f"class {int(counts.argmin())} of {dataset.name!r} has no training examples; "
                             f"random_subsets needs every class")
        if examples_per_class is None:
            examples_per_class = smallest
        check_positive("examples_per_class", examples_per_class, integer=True)
        if examples_per_class > smallest:
            raise InputError(f"examples_per_class={examples_per_class!r} exceeds {smallest}, the training examples "
                             f"of the smallest class of {dataset.name!r}")
        self.examples_per_class = int(examples_per_class)
        self.task_size = self.classes_per_task * self.examples_per_class

    def task_classes(self, t) -> np.ndarray:
        """(classes_per_task,) distinct class ids of task t, a pure function of (seed, t)."""
        t = self._check_task(t)
        k_all = self.num_outputs
        return np.random.default_rng([self.seed, t, 5]).choice(k_all, self.classes_per_task, replace=False)

    def _classes(self, t):
        return self.task_classes(t)

    def _examples(self, t, split):
        ds = self.dataset
        x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
        pos = np.concatenate([np.flatnonzero(y == c) for c in self.task_classes(t)])
        return x[pos], y[pos]

    def _train_positions(self, t):
        y = self.dataset.y_train
        out, start = [], 0
        for c in self.task_classes(t):
            n_c = int(np.sum(y == c))
            pick = np.random.default_rng([self.seed, t, int(c), 6]).choice(n_c, self.examples_per_class, replace=False)
            out.append(start + np.sort(pick))
            start += n_c
        return np.concatenate(out)

    def _extra(self):
        shown = min(self.num_tasks, 20)
        return {"dataset": self.dataset.name, "classes_per_task": self.classes_per_task,
                "examples_per_class": self.examples_per_class, "task_size": self.task_size,
                "first_task_classes": [self.task_classes(t).tolist() for t in range(shown)],
                "augment_pad": self.augment_pad}


class _WholeDataStream(ArrayStream):
    """Base of the streams that use the same (sub)set of examples in every task."""

    def __init__(self, dataset, num_tasks, *, seed, batch_size, sampling, metric_batch_size, num_examples,
                 parity_single_class=False, augment=False):
        _check_classification(dataset, self.kind)
        super().__init__(num_tasks=num_tasks, num_outputs=dataset.num_classes, loss="xent",
                         input_shape=dataset.input_shape, batch_size=batch_size, sampling=sampling,
                         metric_batch_size=metric_batch_size, seed=seed)
        self.dataset = dataset
        n = len(dataset.y_train)
        if num_examples is None:
            self.subset = np.arange(n)
        else:
            check_positive("num_examples", num_examples, integer=True)
            if num_examples > n:
                raise InputError(f"num_examples={num_examples!r} exceeds the {n} training examples of {dataset.name!r}")
            self.subset = np.sort(np.random.default_rng([self.seed, 0]).permutation(n)[:num_examples])
        self.task_size = len(self.subset)
        self.parity_single_class = bool(parity_single_class)
        self.augment_pad = resolve_augment(augment, dataset)

    def _base(self, split):
        ds = self.dataset
        if split == "train":
            return ds.x_train[self.subset], ds.y_train[self.subset]
        return ds.x_test, ds.y_test

    def _train_positions(self, t):
        return np.arange(self.task_size)

    def _extra(self):
        return {"dataset": self.dataset.name, "task_size": self.task_size, "augment_pad": self.augment_pad}


class PermutedInputs(_WholeDataStream):
    """Fixed random input permutation per task (task 0 = identity)."""

    kind = "permuted_inputs"

    def __init__(self, dataset, num_tasks: int = 10, *, seed: int = 0, batch_size: int = 128,
                 sampling: str = "epoch", metric_batch_size: int = 500, num_examples: int | None = None):
        super().__init__(dataset, num_tasks, seed=seed, batch_size=batch_size, sampling=sampling,
                         metric_batch_size=metric_batch_size, num_examples=num_examples)
        shape = self.input_shape
        self._channels = shape[-1] if len(shape) == 3 else 1
        self._positions = int(np.prod(shape)) // self._channels

    def permutation(self, t) -> np.ndarray:
        """Permutation of the input positions (H*W pixels, or D features) used by task t."""
        t = self._check_task(t)
        if t == 0:
            return np.arange(self._positions)
        return np.random.default_rng([self.seed, t, 2]).permutation(self._positions)

    def _examples(self, t, split):
        x, y = self._base(split)
        flat = x.reshape(len(x), self._positions, self._channels)[:, self.permutation(t)]
        return flat.reshape(x.shape), y


class PermutedLabels(_WholeDataStream):
    """Fixed random permutation of class ids per task (task 0 = identity)."""

    kind = "permuted_labels"

    def __init__(self, dataset, num_tasks: int = 10, *, seed: int = 0, batch_size: int = 128,
                 sampling: str = "epoch", metric_batch_size: int = 500, num_examples: int | None = None,
                 augment=False):
        super().__init__(dataset, num_tasks, seed=seed, batch_size=batch_size, sampling=sampling,
                         metric_batch_size=metric_batch_size, num_examples=num_examples, augment=augment)

    def label_permutation(self, t) -> np.ndarray:
        """(num_classes,) new label of each original class in task t."""
        t = self._check_task(t)
        if t == 0:
            return np.arange(self.num_outputs)
        return np.random.default_rng([self.seed, t, 3]).permutation(self.num_outputs)

    def _examples(self, t, split):
        x, y = self._base(split)
        return x, self.label_permutation(t)[y].astype(np.int32)


class RandomLabels(_WholeDataStream):
    """Every task relabels the training examples uniformly at random (memorisation tasks)."""

    kind = "random_labels"

    def __init__(self, dataset, num_tasks: int = 10, *, seed: int = 0, batch_size: int = 128,
                 sampling: str = "epoch", metric_batch_size: int = 500, num_examples: int | None = None,
                 augment=False):
        super().__init__(dataset, num_tasks, seed=seed, batch_size=batch_size, sampling=sampling,
                         metric_batch_size=metric_batch_size, num_examples=num_examples, augment=augment)

    def _examples(self, t, split):
        if split != "train":
            raise InputError(f"split={split!r}: random_labels has only a 'train' split")
        x, _ = self._base(split)
        y = np.random.default_rng([self.seed, t, 4]).integers(0, self.num_outputs, len(x)).astype(np.int32)
        return x, y


def class_split(dataset, classes_per_task: int, num_tasks: int | None = None, **opts) -> ClassSplit:
    """Class-split stream (PAPER.md 5.3); options: seed, head_zeroing, batch_size, sampling,
    metric_batch_size, parity_single_class, augment (None = dataset default pad)."""
    return ClassSplit(dataset, classes_per_task, num_tasks, **opts)


def random_subsets(dataset, classes_per_task: int = 2, num_tasks: int = 50, **opts) -> RandomSubsets:
    """Random-subsets stream (any number of tasks); options: seed, head_zeroing, batch_size, sampling,
    metric_batch_size, examples_per_class, augment (None = dataset default pad)."""
    return RandomSubsets(dataset, classes_per_task, num_tasks, **opts)


def permuted_inputs(dataset, num_tasks: int = 10, **opts) -> PermutedInputs:
    """Permuted-inputs stream; options: seed, batch_size, sampling, metric_batch_size, num_examples."""
    return PermutedInputs(dataset, num_tasks, **opts)


def permuted_labels(dataset, num_tasks: int = 10, **opts) -> PermutedLabels:
    """Permuted-labels stream; options: seed, batch_size, sampling, metric_batch_size, num_examples, augment."""
    return PermutedLabels(dataset, num_tasks, **opts)


def random_labels(dataset, num_tasks: int = 10, **opts) -> RandomLabels:
    """Random-labels stream; options: seed, batch_size, sampling, metric_batch_size, num_examples, augment."""
    return RandomLabels(dataset, num_tasks, **opts)

"""``make_stream(kind, dataset, **opts)`` and the :data:`STREAMS` registry."""

from __future__ import annotations

import inspect

from ..errors import InputError, check_choice
from .classification import ClassSplit, PermutedInputs, PermutedLabels, RandomLabels, RandomSubsets
from .regression import BitFlip, DataTeacher, GaussianTeacher

STREAMS: dict[str, str] = {
    "class_split": "k disjoint classes per task (seeded order), shared head, loss masked to the task's classes",
    "random_subsets": "any number of tasks, each k classes drawn at random (pure in (seed, task)), fresh head mask",
    "permuted_inputs": "same data every task under a fixed random input permutation (task 0 = identity)",
    "permuted_labels": "same data every task under a fixed random permutation of the class ids",
    "random_labels": "same inputs every task with fresh uniform random labels (memorisation)",
    "bitflip": "online bit-flipping regression, LTU target, one flipping bit inverted every T steps",
    "teacher": "regression on a fixed random teacher network (a new teacher per task)",
}


def _check_opts(kind, cls, opts, skip=()):
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self",) + tuple(skip)]
    for key in opts:
        if key not in allowed:
            raise InputError(f"option {key!r} is not accepted by stream {kind!r}; allowed: {', '.join(allowed)}")


def make_stream(kind: str, dataset=None, **opts):
    """Build the task stream ``kind`` (see :data:`STREAMS`) on ``dataset``.

    ``dataset`` is a :class:`pdx.data.Dataset` (ignored by bitflip; for teacher it
    may be None with ``input_dim=`` for Gaussian inputs, or an int input dimension).
    ``opts`` are the stream's keyword options; unknown ones raise InputError.
    """
    check_choice("tasks.kind", kind, STREAMS)
    if kind == "bitflip":
        _check_opts(kind, BitFlip, opts)
        return BitFlip(**opts)
    if kind == "teacher":
        input_dim = opts.pop("input_dim", None)
        if dataset is None or isinstance(dataset, int):
            dim = dataset if input_dim is None else input_dim
            if dim is None:
                raise InputError("stream 'teacher' needs a dataset or input_dim=<int>")
            _check_opts(kind, GaussianTeacher, opts, skip=("input_dim",))
            return GaussianTeacher(dim, **opts)
        _check_opts(kind, DataTeacher, opts, skip=("dataset",))
        return DataTeacher(dataset, **opts)
    if dataset is None:
        raise InputError(f"stream {kind!r} needs a dataset")
    cls = {"class_split": ClassSplit, "permuted_inputs": PermutedInputs, "permuted_labels": PermutedLabels,
           "random_labels": RandomLabels, "random_subsets": RandomSubsets}[kind]
    _check_opts(kind, cls, opts, skip=("dataset",))
    return cls(dataset, **opts)

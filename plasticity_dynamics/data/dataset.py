"""The :class:`Dataset` record, the dataset registry and :func:`load`.

A dataset is plain NumPy: ``x_*`` float32 (images NHWC in [0, 1] or normalised,
vectors (N, D)), ``y_*`` int32 class ids for classification or float32 targets
(N, num_outputs) for regression. Loaders live in :mod:`.offline` (generated or
bundled, no files), :mod:`.files` (standard files read from ``data_dir``) and
:mod:`.synthetic` (bit flipping, teacher network).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, check_choice


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held in NumPy arrays.

    Attributes:
      x_train, x_test: float32, (N,) + input_shape.
      y_train, y_test: int32 (N,) class ids (``task == "classification"``) or
        float32 (N, num_outputs) targets (``task == "regression"``).
      num_classes: number of classes (0 for regression).
      input_shape: shape of one example, e.g. (28, 28, 1) or (40,).
      name: registry name.
      task: "classification" or "regression".
      augment_pad: padding of the paper's random-crop augmentation for this
        dataset (PAPER.md 5.2: CIFAR 4, Tiny ImageNet 8); 0 = no augmentation.
      info: provenance (seed, files read, normalisation constants applied, ...).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple
    name: str
    task: str = "classification"
    augment_pad: int = 0
    info: dict = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        """Width of the model head: num_classes, or the target dimension for regression."""
        if self.task == "regression":
            return int(self.y_train.shape[-1])
        return int(self.num_classes)

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, task={self.task!r}, train={len(self.x_train)}, "
                f"test={len(self.x_test)}, input_shape={self.input_shape}, num_classes={self.num_classes})")


def _loaders():
    from . import files, offline, synthetic

    return {
        "mnist1d": offline.load_mnist1d,
        "digits": offline.load_digits,
        "bitflip": synthetic.load_bitflip,
        "teacher": synthetic.load_teacher,
        "mnist": files.load_mnist,
        "cifar10": files.load_cifar10,
        "cifar100": files.load_cifar100,
        "tinyimagenet": files.load_tinyimagenet,
    }


DATASETS: dict[str, str] = {
    "mnist1d": "MNIST-1D, 10 classes, 40-sample 1-D signals, generated offline (4000 train / 1000 test)",
    "digits": "scikit-learn 8x8 digits, 10 classes, 8x8x1 in [0,1], bundled (seeded 75/25 split)",
    "bitflip": "bit-flipping online regression (Dohare et al.): m bits + bias bit, LTU target net",
    "teacher": "regression on Gaussian inputs labelled by a fixed random teacher network",
    "mnist": "MNIST 28x28x1, 10 classes; IDX files (optionally .gz) in data_dir",
    "cifar10": "CIFAR-10 32x32x3, 10 classes; cifar-10-batches-py in data_dir",
    "cifar100": "CIFAR-100 32x32x3, 100 fine (or 20 coarse) classes; cifar-100-python in data_dir",
    "tinyimagenet": "Tiny ImageNet 64x64x3, 200 classes; tiny-imagenet-200 folder in data_dir (needs Pillow)",
}


def load(name: str, data_dir=None, **opts) -> Dataset:
    """Load dataset ``name`` (see :data:`DATASETS`).

    ``data_dir`` is where file datasets are read from (and the only place
    anything is ever cached); ``opts`` are the loader's keyword options, e.g.
    ``seed`` for mnist1d/digits, ``normalize`` for image files.
    Raises InputError for an unknown name or option and DatasetMissingError
    (an InputError) when a file dataset's files are not in ``data_dir``.
    """
    check_choice("data.name", name, DATASETS)
    fn = _loaders()[name]
    allowed = [p for p in inspect.signature(fn).parameters if p != "data_dir"]
    for key in opts:
        if key not in allowed:
            raise InputError(f"option {key!r} is not accepted by dataset {name!r}; allowed: {', '.join(allowed)}")
    return fn(data_dir=data_dir, **opts)

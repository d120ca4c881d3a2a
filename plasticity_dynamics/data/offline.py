"""Datasets that need no files: MNIST-1D (generated) and scikit-learn digits (bundled).

MNIST-1D (Greydanus & Steinbach 2020/2024) is generated procedurally with the
``mnist1d`` package's own ``make_dataset`` and its default arguments
(``get_dataset_args``): 5000 samples, 80/20 split, 40-sample signals. Nothing is
downloaded. ``make_dataset`` seeds NumPy's and Python's *global* RNGs; both are
saved and restored around the call so loading has no side effect. Cost: about
1 s for 5000 samples. A copy is cached as ``.npz`` only when ``data_dir`` is given.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ..errors import check_positive, check_range
from ..fileio import atomic_write
from .dataset import Dataset


def _generate_mnist1d(seed: int, num_samples: int, train_split: float):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()  # ObjectView of the package defaults
    args.seed = int(seed)
    args.num_samples = int(num_samples)
    args.train_split = float(train_split)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return (raw["x"].astype(np.float32), raw["y"].astype(np.int32),
            raw["x_test"].astype(np.float32), raw["y_test"].astype(np.int32))


def load_mnist1d(data_dir=None, *, seed: int = 42, num_samples: int = 5000, train_split: float = 0.8) -> Dataset:
    """MNIST-1D: x (N, 40) float32 (standardised by the generator), y int32 in 0..9.

    ``seed`` 42 and ``num_samples`` 5000 are the package defaults (4000 train,
    1000 test). When ``data_dir`` is given the arrays are cached there as
    ``mnist1d_seed{seed}_n{num_samples}_split{train_split}.npz`` (atomic write; an
    unwritable directory just skips the cache).
    """
    check_positive("seed", seed, integer=True, allow_zero=True)
    check_positive("num_samples", num_samples, integer=True)
    check_range("train_split", train_split, 0.0, 1.0)
    cache = None
    if data_dir is not None:
        cache = Path(data_dir) / f"mnist1d_seed{seed}_n{num_samples}_split{train_split}.npz"
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            arrays = (z["x_train"], z["y_train"], z["x_test"], z["y_test"])
    else:
        arrays = _generate_mnist1d(seed, num_samples, train_split)
        if cache is not None:
            _atomic_savez(cache, *arrays)
    xtr, ytr, xte, yte = arrays
    return Dataset(xtr, ytr, xte, yte, num_classes=10, input_shape=tuple(xtr.shape[1:]), name="mnist1d",
                   info={"seed": seed, "num_samples": num_samples, "train_split": train_split,
                         "source": "mnist1d.data.make_dataset (package default args)"})


def _atomic_savez(path: Path, xtr, ytr, xte, yte) -> None:
    try:
        atomic_write(path, lambda fh: np.savez(fh, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte))
    except OSError:
        pass  # read-only data_dir: no cache, same arrays


def load_digits(data_dir=None, *, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """scikit-learn digits: x (N, 8, 8, 1) float32 = pixel / 16 in [0, 1], y int32 in 0..9.

    1797 images; a stratified split seeded by ``seed`` puts round(test_fraction *
    n_c) images of every class c in the test set (450 test / 1347 train at 0.25).
    """
    from sklearn.datasets import load_digits as _sk_digits

    check_positive("seed", seed, integer=True, allow_zero=True)
    check_range("test_fraction", test_fraction, 0.0, 1.0)
    d = _sk_digits()
    x = (d.data.astype(np.float32) / 16.0).reshape(-1, 8, 8, 1)
    y = d.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: int(round(test_fraction * len(idx)))]] = True
    return Dataset(x[~test], y[~test], x[test], y[test], num_classes=10, input_shape=(8, 8, 1), name="digits",
                   info={"seed": seed, "test_fraction": test_fraction, "source": "sklearn.datasets.load_digits"})

"""Offline datasets: mnist1d (generated), digits (bundled), bitflip/teacher samples, the registry."""

import random

import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError


@pytest.fixture(scope="module")
def mnist1d():
    return pdx.data.load("mnist1d")


def test_mnist1d_shapes_and_classes(mnist1d):
    d = mnist1d
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    assert d.num_classes == 10 and d.input_shape == (40,) and d.task == "classification"
    assert set(np.unique(d.y_train)) == set(range(10)) and set(np.unique(d.y_test)) == set(range(10))


def test_mnist1d_matches_package_generator_and_keeps_global_rng():
    from mnist1d.data import get_dataset_args, make_dataset

    np.random.seed(123)
    random.seed(7)
    before_np, before_py = np.random.get_state()[1].copy(), random.getstate()
    ours = pdx.data.load("mnist1d", num_samples=300)
    assert np.array_equal(np.random.get_state()[1], before_np) and random.getstate() == before_py
    args = get_dataset_args()  # the package's own defaults (seed 42) with a smaller sample
    args.num_samples = 300
    ref = make_dataset(args)
    np.testing.assert_array_equal(ours.x_train, ref["x"].astype(np.float32))
    np.testing.assert_array_equal(ours.y_test, ref["y_test"])
    assert ours.x_train.shape == (240, 40)


def test_mnist1d_cache_only_in_data_dir(tmp_path):
    first = pdx.data.load("mnist1d", data_dir=tmp_path, num_samples=200, seed=3)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    second = pdx.data.load("mnist1d", data_dir=tmp_path, num_samples=200, seed=3)  # read back from the cache
    np.testing.assert_array_equal(second.x_train, first.x_train)
    np.testing.assert_array_equal(first.y_train, second.y_train)
    assert not np.array_equal(pdx.data.load("mnist1d", num_samples=200, seed=4).x_train, first.x_train)


def test_digits_split_is_stratified_seeded_and_complete():
    from sklearn.datasets import load_digits

    d = pdx.data.load("digits")
    assert d.x_train.shape[1:] == (8, 8, 1) and d.input_shape == (8, 8, 1) and d.num_classes == 10
    assert len(d.x_train) + len(d.x_test) == 1797
    assert d.x_train.min() >= 0.0 and d.x_train.max() == 1.0
    raw = load_digits()
    counts = np.bincount(raw.target, minlength=10)
    np.testing.assert_array_equal(np.bincount(d.y_test, minlength=10), np.round(0.25 * counts).astype(int))
    # Same multiset of (image, label) rows as the raw data.
    ours = np.concatenate([np.concatenate([d.x_train.reshape(-1, 64) * 16, d.y_train[:, None]], 1),
                           np.concatenate([d.x_test.reshape(-1, 64) * 16, d.y_test[:, None]], 1)])
    theirs = np.concatenate([raw.data, raw.target[:, None]], 1)
    ours, theirs = np.round(ours).astype(int), theirs.astype(int)
    np.testing.assert_array_equal(ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)])
    other = pdx.data.load("digits", seed=1)
    assert not np.array_equal(other.y_train, d.y_train)


def test_bitflip_and_teacher_datasets():
    b = pdx.data.load("bitflip", num_train=300, num_test=50, T=100)
    assert b.task == "regression" and b.x_train.shape == (300, 21) and b.y_train.shape == (300, 1)
    assert np.all(b.x_train[:, -1] == 1) and set(np.unique(b.x_train)) <= {0.0, 1.0}
    t = pdx.data.load("teacher", input_dim=5, num_train=64, num_test=8, num_outputs=2)
    assert t.x_train.shape == (64, 5) and t.y_train.shape == (64, 2) and t.num_outputs == 2


def test_registry_and_bad_input():
    assert set(pdx.data.DATASETS) == {"mnist1d", "digits", "bitflip", "teacher", "mnist", "cifar10", "cifar100",
                                      "tinyimagenet"}
    assert all("\n" not in v for v in pdx.data.DATASETS.values())
    with pytest.raises(InputError, match="'mnistt'"):
        pdx.data.load("mnistt")
    with pytest.raises(InputError, match="'colour'"):
        pdx.data.load("digits", colour=True)
    with pytest.raises(InputError, match="test_fraction"):
        pdx.data.load("digits", test_fraction=1.5)
    with pytest.raises(InputError, match="f=30"):
        pdx.data.load("bitflip", f=30)

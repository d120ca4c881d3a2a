"""File datasets: tiny fake files written in the real formats, read back; missing files."""

import gzip
import pickle
import struct

import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import DatasetMissingError, InputError


def _write_idx(path, arr, gz=False):
    arr = np.asarray(arr, np.uint8)
    raw = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def test_mnist_idx_round_trip_with_gz_in_raw_subdir(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "MNIST" / "raw"
    root.mkdir(parents=True)
    xtr, ytr = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)
    xte, yte = rng.integers(0, 256, (3, 28, 28)), rng.integers(0, 10, 3)
    _write_idx(root / "train-images-idx3-ubyte", xtr, gz=True)
    _write_idx(root / "train-labels-idx1-ubyte", ytr)
    _write_idx(root / "t10k-images-idx3-ubyte", xte)
    _write_idx(root / "t10k-labels-idx1-ubyte", yte, gz=True)
    d = pdx.data.load("mnist", data_dir=tmp_path)
    assert d.x_train.shape == (7, 28, 28, 1) and d.input_shape == (28, 28, 1) and d.num_classes == 10
    np.testing.assert_allclose(d.x_train[..., 0], xtr / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.y_test, yte)
    n = pdx.data.load("mnist", data_dir=tmp_path, normalize=True)
    np.testing.assert_allclose(n.x_test[..., 0], (xte / 255.0 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-6)


def test_mnist_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetMissingError) as e:
        pdx.data.load("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "train-images-idx3-ubyte" in msg and str(tmp_path) in msg
    with pytest.raises(DatasetMissingError, match="data_dir"):
        pdx.data.load("mnist")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rubbish")
    with pytest.raises(InputError, match="magic"):
        pdx.data.read_idx(tmp_path / "bad")


def _cifar_rows(rng, n):
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def test_cifar10_pickle_round_trip_and_normalisation(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows, labels = _cifar_rows(rng, 2), rng.integers(0, 10, 2).tolist()
        batches[name] = (rows, labels)
        with open(root / name, "wb") as f:
            pickle.dump({b"data": rows, b"labels": labels, b"batch_label": name.encode()}, f)
    d = pdx.data.load("cifar10", data_dir=tmp_path, normalize=False)
    assert d.x_train.shape == (10, 32, 32, 3) and d.x_test.shape == (2, 32, 32, 3) and d.augment_pad == 4
    rows, labels = batches["data_batch_3"]
    i, h, w, c = 1, 5, 17, 2  # example 1 of batch 3 is train example 5
    assert d.x_train[5, h, w, c] == pytest.approx(rows[i, c * 1024 + h * 32 + w] / 255.0)
    assert d.y_train[5] == labels[1]
    n = pdx.data.load("cifar10", data_dir=tmp_path)  # normalised by default
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2023, 0.1994, 0.2010])
    np.testing.assert_allclose(n.x_test, (d.x_test - mean) / std, rtol=1e-5, atol=1e-5)


def test_cifar100_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    for name, n in (("train", 4), ("test", 3)):
        with open(root / name, "wb") as f:
            pickle.dump({b"data": _cifar_rows(rng, n), b"fine_labels": [99, 0, 5, 42][:n],
                         b"coarse_labels": [19, 0, 3, 7][:n]}, f)
    fine = pdx.data.load("cifar100", data_dir=tmp_path)
    coarse = pdx.data.load("cifar100", data_dir=tmp_path, label_mode="coarse")
    assert fine.num_classes == 100 and coarse.num_classes == 20
    np.testing.assert_array_equal(fine.y_train, [99, 0, 5, 42])
    np.testing.assert_array_equal(coarse.y_test, [19, 0, 3])
    with pytest.raises(DatasetMissingError, match="cifar-10-batches-py"):
        pdx.data.load("cifar10", data_dir=tmp_path)


def test_tinyimagenet_folder_round_trip(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # sorted order gives n01 -> 0, n02 -> 1, n03 -> 2
    colours = {"n01": (200, 10, 30), "n02": (0, 128, 255), "n03": (90, 90, 90)}
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (64, 64), colours[w]).save(root / "train" / w / "images" / f"{w}_{j}.JPEG", quality=100)
    (root / "val" / "images").mkdir(parents=True)
    Image.new("L", (64, 64), 77).save(root / "val" / "images" / "val_0.JPEG", quality=100)  # greyscale file
    Image.new("RGB", (64, 64), colours["n01"]).save(root / "val" / "images" / "val_1.JPEG", quality=100)
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn03\t0\t0\t63\t63\nval_1.JPEG\tn01\t0\t0\t1\t1\n")
    d = pdx.data.load("tinyimagenet", data_dir=tmp_path, normalize=False)
    assert d.x_train.shape == (6, 64, 64, 3) and d.input_shape == (64, 64, 3) and d.num_classes == 3
    np.testing.assert_array_equal(d.y_train, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(d.y_test, [2, 0])
    np.testing.assert_allclose(d.x_train[0].mean(axis=(0, 1)), np.array(colours["n01"]) / 255.0, atol=3 / 255)
    np.testing.assert_allclose(d.x_test[0], 77 / 255.0, atol=3 / 255)  # grey -> 3 equal channels
    assert d.augment_pad == 8
    n = pdx.data.load("tinyimagenet", data_dir=tmp_path)
    np.testing.assert_allclose(n.x_test[1], (d.x_test[1] - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
                               rtol=1e-5, atol=1e-5)


def test_tinyimagenet_missing_names_files_and_dir(tmp_path):
    with pytest.raises(DatasetMissingError) as e:
        pdx.data.load("tinyimagenet", data_dir=tmp_path)
    msg = str(e.value)
    assert "val_annotations.txt" in msg and str(tmp_path) in msg and "\n" not in msg
    assert isinstance(e.value, InputError)

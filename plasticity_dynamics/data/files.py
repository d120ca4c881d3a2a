"""File datasets read from ``data_dir`` in their standard distribution formats.

- mnist: IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``),
  in ``data_dir``, ``data_dir/mnist`` or ``data_dir/MNIST/raw``.
- cifar10: ``cifar-10-batches-py/{data_batch_1..5, test_batch}`` (Python pickles).
- cifar100: ``cifar-100-python/{train, test}`` (Python pickles; fine or coarse labels).
- tinyimagenet: ``tiny-imagenet-200/train/<wnid>/images/*.JPEG`` and
  ``tiny-imagenet-200/val/val_annotations.txt`` + ``val/images/*.JPEG`` (the val split
  is the test set, as in the authors' code). Classes are the sorted wnids
  (torchvision ImageFolder order). Decoding needs Pillow; ~110k JPEGs, a thread pool.

Images become float32 in [0, 1] (NHWC); ``normalize`` then applies the channel
constants of :data:`.augment.NORMALIZATION` (default on for CIFAR and Tiny
ImageNet, off for MNIST). Memory: float32 Tiny ImageNet is ~4.9 GB.
Pickled CIFAR batches are unpickled as the dataset ships them: only point
``data_dir`` at files you trust. Missing files raise DatasetMissingError naming
the files and the directories looked in.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import DatasetMissingError, InputError, check_choice
from .augment import normalize as _normalize
from .dataset import Dataset


def _require_dir(name: str, data_dir, expected: str) -> Path:
    if data_dir is None:
        raise DatasetMissingError(f"dataset {name!r} needs data_dir: expected {expected} (no data_dir given)")
    d = Path(data_dir).expanduser()
    if not d.is_dir():
        raise DatasetMissingError(f"dataset {name!r}: data_dir {str(d)!r} is not a directory (expected {expected})")
    return d


def _first_dir_with(candidates, names) -> Path | None:
    for c in candidates:
        if all((c / n).exists() for n in names):
            return c
    return None


def _finish(name, xtr, ytr, xte, yte, num_classes, normalize, augment_pad, info) -> Dataset:
    if normalize:
        xtr, xte = _normalize(xtr, name), _normalize(xte, name)
    info = dict(info, normalized=bool(normalize))
    return Dataset(xtr, ytr.astype(np.int32), xte, yte.astype(np.int32), num_classes=num_classes,
                   input_shape=tuple(xtr.shape[1:]), name=name, augment_pad=augment_pad, info=info)


# ---------------------------------------------------------------- MNIST (IDX)

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (``.gz`` allowed); returns uint8 array of its dims."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise InputError(f"file {str(path)!r} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4: 4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise InputError(f"file {str(path)!r} holds {data.size} bytes but its header says {dims}")
    return data.reshape(dims)


def load_mnist(data_dir=None, *, normalize: bool = False) -> Dataset:
    """MNIST: x (N, 28, 28, 1) float32 in [0, 1] (or normalised), y int32 0..9."""
    expected = ", ".join(MNIST_FILES) + " (optionally .gz)"
    d = _require_dir("mnist", data_dir, expected)
    cands = [d, d / "mnist", d / "MNIST" / "raw"]
    paths = {}
    for c in cands:
        found = {n: next((c / (n + s) for s in ("", ".gz") if (c / (n + s)).exists()), None) for n in MNIST_FILES}
        if all(found.values()):
            paths = found
            break
    if not paths:
        looked = ", ".join(str(c) for c in cands)
        raise DatasetMissingError(f"dataset 'mnist': files {expected} not found in {looked}")
    xtr, ytr, xte, yte = (read_idx(paths[n]) for n in MNIST_FILES)
    to_f = lambda a: (a.astype(np.float32) / 255.0)[..., None]  # noqa: E731
    return _finish("mnist", to_f(xtr), ytr, to_f(xte), yte, 10, normalize, 0,
                   {"files": [str(p) for p in paths.values()]})


# ---------------------------------------------------------------- CIFAR (pickles)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_images(rows) -> np.ndarray:
    rows = np.asarray(rows, np.uint8)
    return (rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0)


def load_cifar10(data_dir=None, *, normalize: bool = True) -> Dataset:
    """CIFAR-10: x (N, 32, 32, 3) float32, y int32 0..9; augment_pad 4."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    expected = "cifar-10-batches-py/{" + ", ".join(names) + "}"
    d = _require_dir("cifar10", data_dir, expected)
    cands = [d / "cifar-10-batches-py", d]
    root = _first_dir_with(cands, names)
    if root is None:
        raise DatasetMissingError(f"dataset 'cifar10': files {expected} not found in {d}")
    batches = [_unpickle(root / n) for n in names]
    xtr = np.concatenate([_cifar_images(b["data"]) for b in batches[:5]])
    ytr = np.concatenate([np.asarray(b["labels"]) for b in batches[:5]])
    xte, yte = _cifar_images(batches[5]["data"]), np.asarray(batches[5]["labels"])
    return _finish("cifar10", xtr, ytr, xte, yte, 10, normalize, 4, {"dir": str(root)})


def load_cifar100(data_dir=None, *, normalize: bool = True, label_mode: str = "fine") -> Dataset:
    """CIFAR-100: x (N, 32, 32, 3) float32, y int32 (100 fine or 20 coarse classes); augment_pad 4."""
    check_choice("label_mode", label_mode, ("fine", "coarse"))
    expected = "cifar-100-python/{train, test}"
    d = _require_dir("cifar100", data_dir, expected)
    root = _first_dir_with([d / "cifar-100-python", d], ["train", "test"])
    if root is None:
        raise DatasetMissingError(f"dataset 'cifar100': files {expected} not found in {d}")
    tr, te = _unpickle(root / "train"), _unpickle(root / "test")
    key = f"{label_mode}_labels"
    ncls = 100 if label_mode == "fine" else 20
    return _finish("cifar100", _cifar_images(tr["data"]), np.asarray(tr[key]), _cifar_images(te["data"]),
                   np.asarray(te[key]), ncls, normalize, 4, {"dir": str(root), "label_mode": label_mode})


# ---------------------------------------------------------------- Tiny ImageNet (JPEG folders)


def _read_images(paths, workers: int) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow ships with matplotlib
        raise InputError("dataset 'tinyimagenet' needs Pillow (pip install pillow)") from exc

    def one(p):
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"), np.uint8)

    if not paths:
        return np.zeros((0, 64, 64, 3), np.float32)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        first = one(paths[0])
        out = np.empty((len(paths),) + first.shape, np.float32)
        out[0] = first / np.float32(255.0)
        for i, img in enumerate(pool.map(one, paths[1:]), start=1):
            out[i] = img / np.float32(255.0)
    return out


def load_tinyimagenet(data_dir=None, *, normalize: bool = True, workers: int | None = None) -> Dataset:
    """Tiny ImageNet-200: x (N, 64, 64, 3) float32, y int32 0..199 (sorted wnids); augment_pad 8.

    Train: ``train/<wnid>/images/*.JPEG`` (sorted file names, class by class);
    test: the val split listed in ``val/val_annotations.txt`` (order of that file).
    """
    expected = "tiny-imagenet-200/train/<wnid>/images/*.JPEG and tiny-imagenet-200/val/val_annotations.txt"
    d = _require_dir("tinyimagenet", data_dir, expected)
    root = _first_dir_with([d / "tiny-imagenet-200", d], ["train", "val/val_annotations.txt"])
    if root is None:
        raise DatasetMissingError(f"dataset 'tinyimagenet': files {expected} not found in {d}")
    wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not wnids:
        raise DatasetMissingError(f"dataset 'tinyimagenet': no class folders train/<wnid>/images in {root}")
    index = {w: i for i, w in enumerate(wnids)}
    tr_paths, tr_y = [], []
    for w in wnids:
        files = sorted((root / "train" / w / "images").glob("*.JPEG"))
        tr_paths += files
        tr_y += [index[w]] * len(files)
    te_paths, te_y = [], []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        if parts[1] not in index:
            raise InputError(f"tinyimagenet val_annotations.txt names class {parts[1]!r} that has no train folder")
        p = root / "val" / "images" / parts[0]
        if not p.exists():
            raise DatasetMissingError(f"dataset 'tinyimagenet': val image {parts[0]!r} not found in {p.parent}")
        te_paths.append(p)
        te_y.append(index[parts[1]])
    workers = workers or min(16, (os.cpu_count() or 2) * 2)
    xtr, xte = _read_images(tr_paths, workers), _read_images(te_paths, workers)
    return _finish("tinyimagenet", xtr, np.asarray(tr_y), xte, np.asarray(te_y), len(wnids), normalize, 8,
                   {"dir": str(root), "wnids": wnids})

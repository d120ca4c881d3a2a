"""Run directories: atomic files, the tidy metrics table and verified checkpoints.

Layout (DESIGN.md "The command line and run directories")::

    RUN_DIR/config.toml      fully resolved config
    RUN_DIR/metrics.csv      step,seed,task,layer,metric,value (tidy long format)
    RUN_DIR/checkpoints/     step_00001234.npz + step_00001234.sha256
    RUN_DIR/figures/         PNG and PDF
    RUN_DIR/summary.json

Every file is written to a temporary name in the same folder, flushed, fsynced
and renamed, so a reader (or a run killed by SIGKILL) never sees half a file.
A checkpoint counts only when its ``.sha256`` sidecar exists and matches; a
checkpoint whose bytes do not match is reported and never loaded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable

import jax
import numpy as np

from ..errors import InputError

METRIC_COLUMNS = ("step", "seed", "task", "layer", "metric", "value")
_CKPT = re.compile(r"^step_(\d{8})\.npz$")


class CorruptCheckpointError(InputError):
    """A checkpoint file whose bytes do not match its recorded checksum."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + rename (all or nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ------------------------------------------------------------------ metrics


def write_metrics(path: str | Path, rows: Iterable[tuple]) -> None:
    """Atomically (re)write the tidy metrics table."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METRIC_COLUMNS)
    for step, seed, task, layer, metric, value in rows:
        writer.writerow((int(step), int(seed), int(task), layer, metric, repr(float(value))))
    atomic_write_text(path, buf.getvalue())


def read_metrics(path: str | Path) -> list[tuple]:
    """Read ``metrics.csv`` back as a list of (step, seed, task, layer, metric, value)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"metrics file {str(path)!r} does not exist")
    rows = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if tuple(header or ()) != METRIC_COLUMNS:
            raise InputError(f"{str(path)!r} is not a metrics table (header {header!r})")
        for r in reader:
            rows.append((int(r[0]), int(r[1]), int(r[2]), r[3], r[4], float(r[5])))
    return rows


# -------------------------------------------------------------- checkpoints


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.npz"


def save_checkpoint(run_dir: str | Path, step: int, state, meta: dict | None = None) -> Path:
    """Save a pytree of arrays (leaves in flatten order) with a checksum sidecar.

    Cost: one device->host copy of the state. The tree structure is not pickled:
    :func:`load_checkpoint` needs a template with the same structure.
    """
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    meta = dict(meta or {}, step=int(step), num_leaves=len(leaves))
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    path = checkpoint_path(run_dir, step)
    atomic_write_bytes(path, data)
    atomic_write_text(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest() + "\n")
    return path


def list_checkpoints(run_dir: str | Path) -> list[int]:
    """Steps of the checkpoints present (with a sidecar), ascending; unverified."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    steps = []
    for p in folder.iterdir():
        m = _CKPT.match(p.name)
        if m and p.with_suffix(".sha256").is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


def verify_checkpoint(run_dir: str | Path, step: int) -> bytes:
    """Return the checkpoint's bytes, raising CorruptCheckpointError on a mismatch."""
    path = checkpoint_path(run_dir, step)
    data = path.read_bytes()
    expected = path.with_suffix(".sha256").read_text().strip()
    if hashlib.sha256(data).hexdigest() != expected:
        raise CorruptCheckpointError(f"checkpoint {str(path)!r} is corrupt (checksum mismatch); not loaded")
    return data


def load_checkpoint(run_dir: str | Path, step: int, template):
    """Load the checkpoint at ``step`` into the structure of ``template``.

    Raises CorruptCheckpointError when the bytes, the leaf count or a leaf shape
    do not match.
    """
    data = verify_checkpoint(run_dir, step)
    path = checkpoint_path(run_dir, step)
    try:
        with np.load(io.BytesIO(data)) as npz:
            meta = json.loads(bytes(npz["__meta__"]).decode())
            leaves = [npz[f"leaf_{i:05d}"] for i in range(meta["num_leaves"])]
    except Exception as exc:  # noqa: BLE001 - any decoding failure means corrupt
        raise CorruptCheckpointError(f"checkpoint {str(path)!r} cannot be read ({exc}); not loaded") from None
    tmpl_leaves, treedef = jax.tree_util.tree_flatten(template)
    if len(tmpl_leaves) != len(leaves):
        raise CorruptCheckpointError(
            f"checkpoint {str(path)!r} has {len(leaves)} arrays, the run's state has {len(tmpl_leaves)}"
        )
    for i, (a, b) in enumerate(zip(leaves, tmpl_leaves)):
        if tuple(a.shape) != tuple(np.shape(b)):
            raise CorruptCheckpointError(
                f"checkpoint {str(path)!r} array {i} has shape {a.shape}, expected {np.shape(b)}"
            )
    return jax.tree_util.tree_unflatten(treedef, leaves), meta


# ------------------------------------------------------------ directories


def prepare_run_dir(path: str | Path, *, force: bool, resume: bool) -> Path:
    """Check that ``path`` may be used; create nothing yet (bad input writes nothing)."""
    path = Path(path)
    if resume:
        if not (path / "config.toml").is_file():
            raise InputError(f"--resume: {str(path)!r} is not a run directory (no config.toml)")
        return path
    if path.exists():
        if not path.is_dir():
            raise InputError(f"--out {str(path)!r} exists and is not a directory")
        if any(path.iterdir()) and not force:
            raise InputError(f"--out {str(path)!r} is not empty; use --force to overwrite or --resume to continue")
    parent = path if path.exists() else _existing_parent(path)
    if not parent.is_dir():
        raise InputError(f"--out {str(path)!r} cannot be created: {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK):
        raise InputError(f"--out {str(path)!r} is not writable")
    return path


def _existing_parent(path: Path) -> Path:
    p = path.absolute()
    while not p.exists():
        p = p.parent
    return p


def clear_run_dir(path: Path) -> None:
    """Remove the files a previous run wrote (used with --force)."""
    for name in ("metrics.csv", "summary.json", "config.toml", "manifolds.json"):
        (path / name).unlink(missing_ok=True)
    for sub in ("checkpoints", "figures"):
        folder = path / sub
        if folder.is_dir():
            for p in folder.iterdir():
                if p.is_file():
                    p.unlink()

"""Run directories: atomic files, the append-only metrics table and verified checkpoints.

Layout (DESIGN.md "The command line and run directories")::

    RUN_DIR/config.toml      the config that built the run (exact TOML round trip)
    RUN_DIR/metrics.csv      step,seed,task,layer,metric,value (tidy long format, append-only)
    RUN_DIR/checkpoints/     step_00001234.npz + step_00001234.sha256
    RUN_DIR/figures/         PNG and PDF
    RUN_DIR/summary.json

Whole files are written atomically (:mod:`pdx.fileio`). ``metrics.csv`` is a log: each record
appends its rows and fsyncs (:class:`MetricsWriter`), so the bytes written over a run are
linear in its records; a run killed mid-append leaves at most one partial last line, which
:func:`metrics_cut` drops on resume. A checkpoint counts only when its ``.sha256`` sidecar
exists and matches; it stores, besides the arrays, every leaf's tree path, shape and dtype,
so a checkpoint that does not fit the state a config rebuilds is named leaf by leaf
(:class:`CheckpointMismatchError`) instead of being mistaken for a corrupt one. (Orbax was
considered: its atomic commit is per directory and carries no content checksum, so the
single-file npz with a SHA-256 sidecar stays.)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from pathlib import Path

import jax
import numpy as np

from ..errors import InputError
from ..fileio import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)
from ..records import COLUMNS, MetricsTable

METRIC_COLUMNS = COLUMNS
_HEADER = ",".join(METRIC_COLUMNS) + "\n"
_CKPT = re.compile(r"^step_(\d{8})\.npz$")


class CorruptCheckpointError(InputError):
    """A checkpoint file whose bytes do not match its recorded checksum, or cannot be read."""


class CheckpointMismatchError(InputError):
    """A readable checkpoint whose tree does not fit the state the run's config rebuilds."""


# ------------------------------------------------------------------ metrics


def format_rows(rows) -> str:
    """CSV text of metric rows (no header); values as ``repr(float)`` so they read back exactly."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for step, seed, task, layer, metric, value in rows:
        writer.writerow((int(step), int(seed), int(task), layer, metric, repr(float(value))))
    return buf.getvalue()


def write_metrics(path: str | Path, rows) -> None:
    """Atomically write a whole metrics table (header + rows)."""
    atomic_write_text(path, _HEADER + format_rows(rows))


class MetricsWriter:
    """Append-only writer of ``metrics.csv``: ``append(rows)`` writes the rows, flushes and
    fsyncs (durable on return). Cost per record: its own rows, whatever the file's length.
    ``MetricsWriter(path)`` creates the file with its header when it does not exist."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            atomic_write_text(self.path, _HEADER)
        self._fh = open(self.path, "a", newline="")

    def append(self, rows) -> None:
        text = format_rows(rows)
        if text:
            self._fh.write(text)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _parse(path: Path, text: str):
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n").split(",") != list(METRIC_COLUMNS):
        head = lines[0].rstrip() if lines else ""
        raise InputError(f"{str(path)!r} is not a metrics table (header {head!r})")
    return lines


def read_table(path: str | Path) -> MetricsTable:
    """Read ``metrics.csv`` into a :class:`MetricsTable` (a partial last line, left by a kill
    during an append, is ignored)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"metrics file {str(path)!r} does not exist")
    lines = _parse(path, path.read_text())
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    rows = [(int(r[0]), int(r[1]), int(r[2]), r[3], r[4], float(r[5])) for r in csv.reader(lines[1:])]
    return MetricsTable(rows)


def read_metrics(path: str | Path) -> list[tuple]:
    """Read ``metrics.csv`` back as a list of (step, seed, task, layer, metric, value)."""
    return read_table(path).rows()


def metrics_cut(path: str | Path, last_step: int) -> int | None:
    """Byte length of ``metrics.csv`` that keeps exactly its complete rows with step <=
    ``last_step`` (rows are in step order), or None when the file needs no cut. Reads only."""
    path = Path(path)
    data = path.read_bytes()
    text = data.decode()
    lines = _parse(path, text)
    keep = len(lines[0].encode())
    for line in lines[1:]:
        if not line.endswith("\n") or int(line.split(",", 1)[0]) > last_step:
            break
        keep += len(line.encode())
    return None if keep == len(data) else keep


def cut_metrics(path: str | Path, length: int) -> None:
    """Truncate ``metrics.csv`` to ``length`` bytes (from :func:`metrics_cut`) and fsync."""
    with open(path, "r+b") as fh:
        fh.truncate(length)
        fh.flush()
        os.fsync(fh.fileno())


# -------------------------------------------------------------- checkpoints


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.npz"


def tree_layout(tree) -> list[tuple[str, tuple, str]]:
    """[(path, shape, dtype)] of every leaf of ``tree`` in flatten order (paths as
    ``jax.tree_util.keystr``, e.g. ``['variables']['params']['dense_0']['kernel']``)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(p), tuple(int(s) for s in np.shape(x)), str(getattr(x, "dtype", None)
             or np.asarray(x).dtype)) for p, x in flat]


def save_checkpoint(run_dir: str | Path, step: int, state, meta: dict | None = None) -> Path:
    """Save a pytree of arrays with its layout (path, shape, dtype of every leaf) and a
    checksum sidecar. Cost: one device->host copy of the state. Restoring needs a template
    of the same structure (:func:`load_checkpoint` checks the layout against it)."""
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    layout = [[p, list(s), d] for p, s, d in tree_layout(state)]
    meta = dict(meta or {}, step=int(step), num_leaves=len(leaves), leaves=layout)
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


def _check_layout(path: Path, meta: dict, leaves: list, template) -> None:
    want = tree_layout(template)
    if "leaves" in meta:
        got = [(p, tuple(s), d) for p, s, d in meta["leaves"]]
    else:  # checkpoints written before layouts were stored: compare by position
        got = [(w[0], tuple(a.shape), str(a.dtype)) for w, a in zip(want, leaves)]
        got += [(f"leaf {i}", tuple(a.shape), str(a.dtype)) for i, a in enumerate(leaves[len(want):], len(want))]
    got_paths, want_paths = {g[0] for g in got}, {w[0] for w in want}
    for g, w in zip(got, want):
        if g[0] != w[0]:
            missing = next((x[0] for x in want if x[0] not in got_paths), None)
            extra = next((x[0] for x in got if x[0] not in want_paths), None)
            what = (f"the rebuilt state has leaf {missing} that the checkpoint lacks" if missing
                    else f"the checkpoint has leaf {extra} that the rebuilt state lacks" if extra
                    else f"leaf order differs at {w[0]}")
            raise CheckpointMismatchError(f"checkpoint {str(path)!r} does not fit the run's config: {what}")
        if g[1] != w[1] or g[2] != w[2]:
            raise CheckpointMismatchError(
                f"checkpoint {str(path)!r} does not fit the run's config: leaf {w[0]} is expected "
                f"{w[2]}{list(w[1])}, found {g[2]}{list(g[1])}")
    if len(got) != len(want):
        longer, name = (want, "rebuilt state") if len(want) > len(got) else (got, "checkpoint")
        raise CheckpointMismatchError(f"checkpoint {str(path)!r} does not fit the run's config: the {name} has "
                                      f"{len(longer) - min(len(got), len(want))} more leaves, first "
                                      f"{longer[min(len(got), len(want))][0]}")


def load_checkpoint(run_dir: str | Path, step: int, template):
    """Load the checkpoint at ``step`` into the structure of ``template``.

    Raises CorruptCheckpointError when the bytes do not match their checksum or cannot be
    decoded, and CheckpointMismatchError (naming the first differing leaf: path, expected and
    found shape and dtype) when the stored layout differs from ``template``'s.
    """
    data = verify_checkpoint(run_dir, step)
    path = checkpoint_path(run_dir, step)
    try:
        with np.load(io.BytesIO(data)) as npz:
            meta = json.loads(bytes(npz["__meta__"]).decode())
            leaves = [npz[f"leaf_{i:05d}"] for i in range(meta["num_leaves"])]
    except Exception as exc:  # noqa: BLE001 - any decoding failure means corrupt
        raise CorruptCheckpointError(f"checkpoint {str(path)!r} cannot be read ({exc}); not loaded") from None
    _check_layout(path, meta, leaves, template)
    treedef = jax.tree_util.tree_structure(template)
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

"""Atomic file writes and JSON-ready values: the one place the package writes a file whole.

Every file is written to a temporary name in the target folder, flushed, fsynced and renamed
over the target, so a reader (or a process killed by SIGKILL) never sees half a file.
Append-only logs (the metrics table) are the one exception; see
:class:`pdx.training.rundir.MetricsWriter`. This module imports nothing of the package but
NumPy, so every layer (data, plotting, training, experiments, benchmarks) can use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np


def atomic_write(path: str | Path, write: Callable) -> Path:
    """Call ``write(fh)`` on a binary temporary file beside ``path``, fsync it and rename it
    to ``path`` (all or nothing); the temporary file is removed on any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode())


def jsonable(x):
    """``x`` with NumPy / JAX arrays and scalars, tuples and Paths turned into JSON types
    (dict keys become strings); anything else is returned unchanged."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "__array__") and not isinstance(x, (str, bytes)):
        return jsonable(np.asarray(x).tolist()) if np.ndim(x) else np.asarray(x).item()
    return x


def atomic_write_json(path: str | Path, obj, *, indent: int = 2) -> Path:
    """Write ``obj`` (made :func:`jsonable`) as sorted, indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=indent, sort_keys=True) + "\n")


__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "jsonable"]

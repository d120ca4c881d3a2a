"""The metrics table in memory: columnar, append-only, queried with NumPy masks.

It imports nothing of the package, so training (which fills it), plotting and the experiments
(which read it) share it without importing each other.

A run's records are the tidy rows ``(step, seed, task, layer, metric, value)`` of
``metrics.csv``. :class:`MetricsTable` keeps them as six NumPy columns (int64 step, seed,
task; str layer, metric; float64 value), appended in blocks (one block per record, so appending
is O(rows added) and a run's total cost is linear in its records) and concatenated once,
lazily, when queried. Queries (:meth:`select`, :meth:`series`, :meth:`metrics`) are vectorised
masks, never scans of Python tuples.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

COLUMNS = ("step", "seed", "task", "layer", "metric", "value")
_DTYPES = {"step": np.int64, "seed": np.int64, "task": np.int64, "layer": object, "metric": object,
           "value": np.float64}


class MetricsTable:
    """Columnar table of metric rows; see the module docstring.

    ``MetricsTable(rows)`` builds one from an iterable of 6-tuples; ``extend(rows)`` appends;
    ``columns`` / ``table[name]`` give the NumPy columns; ``rows()`` the tuples back.
    """

    def __init__(self, rows: Iterable[tuple] = ()):
        self._blocks: list[dict[str, np.ndarray]] = []
        self._cols: dict[str, np.ndarray] | None = None
        self.extend(rows)

    # ------------------------------------------------------------ building
    def extend(self, rows: Iterable[tuple]) -> "MetricsTable":
        """Append rows ``(step, seed, task, layer, metric, value)``; O(len(rows))."""
        rows = list(rows)
        if rows:
            cols = list(zip(*rows))
            self._blocks.append({name: np.asarray(col, dtype=_DTYPES[name]) for name, col in zip(COLUMNS, cols)})
            self._cols = None
        return self

    # ------------------------------------------------------------- queries
    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The six columns as NumPy arrays (concatenated on first use after an append)."""
        if self._cols is None:
            if not self._blocks:
                self._cols = {name: np.zeros(0, _DTYPES[name]) for name in COLUMNS}
            else:
                self._cols = {name: np.concatenate([b[name] for b in self._blocks]) for name in COLUMNS}
                self._blocks = [self._cols]
        return self._cols

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return sum(len(b["step"]) for b in self._blocks)

    def select(self, metric: str | None = None, layer: str | None = None, *, seed: int | None = None,
               step: int | None = None, task: int | None = None) -> np.ndarray:
        """Boolean mask of the rows matching every given value."""
        cols = self.columns
        mask = np.ones(len(cols["step"]), bool)
        for name, want in (("metric", metric), ("layer", layer), ("seed", seed), ("step", step), ("task", task)):
            if want is not None:
                mask &= cols[name] == want
        return mask

    def series(self, metric: str, layer: str = "") -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """{seed: (steps, values)} of one metric and layer, in step order."""
        cols, mask = self.columns, self.select(metric, layer)
        steps, seeds, values = cols["step"][mask], cols["seed"][mask], cols["value"][mask]
        out = {}
        for s in np.unique(seeds):
            m = seeds == s
            order = np.argsort(steps[m], kind="stable")
            out[int(s)] = (steps[m][order], values[m][order])
        return out

    def metrics(self) -> list[tuple[str, str]]:
        """Sorted distinct (metric, layer) pairs."""
        cols = self.columns
        return sorted(set(zip(cols["metric"].tolist(), cols["layer"].tolist())))

    def rows(self) -> list[tuple]:
        """The rows as ``(step, seed, task, layer, metric, value)`` tuples of Python scalars."""
        cols = self.columns
        return list(zip(*(cols[name].tolist() for name in COLUMNS)))

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.rows())


def as_table(rows) -> MetricsTable:
    """``rows`` as a :class:`MetricsTable` (returned as is when it already is one)."""
    return rows if isinstance(rows, MetricsTable) else MetricsTable(rows)


__all__ = ["COLUMNS", "MetricsTable", "as_table"]

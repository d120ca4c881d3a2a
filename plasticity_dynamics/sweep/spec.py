"""The sweep file: ``[sweep]`` (mode, seeds), ``[sweep.axes]`` (dotted keys -> value lists) and
``[base]`` (any keys of config.toml), parsed and checked before anything is written.

```toml
[sweep]
mode = "grid"            # or "zip"
seeds = [0, 1]
max_memory_gb = 8        # optional: memory the lanes of one program may use (default: 80% of free)
exact = true             # optional: at most 16 lanes per program, so SGD lanes are bit-identical
[sweep.axes]
"optim.lr" = [0.01, 0.05]
"optim.noise_sigma0" = [0.0, 0.01]
[base]
optim = { name = "noisy_sgd" }
```

``grid`` takes every combination (the first axis varies slowest), ``zip`` the i-th value of
every axis. Every bad file raises :class:`InputError` with one line: unknown keys, an empty or
non-list axis, an axis given twice (quoted ``"optim.lr"`` and nested ``optim.lr``, or a
repeated TOML key), an axis also set in ``[base]``, seeds outside ``[sweep]``, zip axes of
unequal lengths, and any cell whose config does not validate (naming the cell).
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..training import Config

MODES = ("grid", "zip")
SWEEP_KEYS = ("mode", "seeds", "axes", "max_memory_gb", "exact")
#: Lanes per program with ``exact = true``: measured on XLA:CPU with the tiny MLP, SGD lanes are
#: bit-identical to separate runs up to 16 lanes and differ by float32 rounding at 32 (XLA
#: picks its batched-matmul strategy by the lane count).
EXACT_MAX_LANES = 16


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep: ``cells[i]`` maps each swept key to its value in cell i, and
    ``configs[i]`` is the full config of cell i (base, then the cell's values, then the seeds)."""

    mode: str
    seeds: tuple[int, ...]
    axes: dict[str, tuple]
    base: Config
    max_memory_gb: float | None
    cells: tuple[dict, ...]
    configs: tuple[Config, ...]
    exact: bool = False  # cap programs at EXACT_MAX_LANES lanes (bit-identical SGD lanes)

    @property
    def keys(self) -> list[str]:
        return list(self.axes)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file (see the module docstring); InputError on any fault."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"sweep file {str(path)!r} does not exist")
    try:
        tree = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        if "overwrite" in msg.lower() or "duplicate" in msg.lower():
            raise InputError(f"sweep file {str(path)!r}: a key is given twice ({msg}); give each axis once") from None
        raise InputError(f"sweep file {str(path)!r} is not valid TOML: {msg}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"sweep file {str(path)!r} is not UTF-8 text: {exc}") from None
    return parse_sweep(tree)


def parse_sweep(tree: dict) -> SweepSpec:
    """Check a parsed sweep file (a dict as tomllib returns it) and expand its cells."""
    extra = sorted(set(tree) - {"sweep", "base"})
    if extra:
        raise InputError(f"unknown sweep file table {extra[0]!r}; a sweep file has [sweep], [sweep.axes] and [base]")
    sweep = tree.get("sweep")
    if not isinstance(sweep, dict):
        raise InputError("the sweep file has no [sweep] table (mode, seeds, axes)")
    extra = sorted(set(sweep) - set(SWEEP_KEYS))
    if extra:
        raise InputError(f"unknown key sweep.{extra[0]}; [sweep] accepts: {', '.join(SWEEP_KEYS)}")
    mode = sweep.get("mode", "grid")
    if mode not in MODES:
        raise InputError(f"sweep.mode={mode!r} is not one of: {', '.join(MODES)}")
    base_tree = tree.get("base", {})
    if not isinstance(base_tree, dict):
        raise InputError("[base] must be a table of config.toml keys")
    if "seeds" in base_tree:
        raise InputError("seeds is given in [base]; a sweep's seeds are sweep.seeds (one place for them)")
    base = Config.from_dict(base_tree)
    seeds = sweep.get("seeds", list(base.seeds))
    if isinstance(seeds, bool) or not isinstance(seeds, (list, int)):
        raise InputError(f"sweep.seeds={seeds!r} must be a list of seeds or a count")
    base = base.with_overrides({"seeds": seeds})
    mem = sweep.get("max_memory_gb")
    if mem is not None and (isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem <= 0):
        raise InputError(f"sweep.max_memory_gb={mem!r} must be a positive number of GB")
    exact = sweep.get("exact", False)
    if not isinstance(exact, bool):
        raise InputError(f"sweep.exact={exact!r} must be true or false")
    if exact and len(base.seeds) > EXACT_MAX_LANES:
        raise InputError(f"sweep.exact=true caps a program at {EXACT_MAX_LANES} lanes, but every cell runs "
                         f"{len(base.seeds)} seeds; use at most {EXACT_MAX_LANES} seeds or exact=false")

    axes_tree = sweep.get("axes")
    if not isinstance(axes_tree, dict) or not axes_tree:
        raise InputError("[sweep.axes] is missing or empty; name at least one axis, e.g. \"optim.lr\" = [0.01, 0.1]")
    axes: dict[str, tuple] = {}
    for key, values in _flatten_axes(axes_tree):
        if key in axes:
            raise InputError(f"axis {key!r} is given twice in [sweep.axes]; give each axis once")
        if key == "seeds":
            raise InputError("seeds is not an axis; list them in sweep.seeds (every cell runs every seed)")
        if not isinstance(values, list):
            raise InputError(f"axis {key!r} = {values!r} must be a list of values")
        if not values:
            raise InputError(f"axis {key!r} is empty; give it at least one value")
        axes[key] = tuple(values)
    base_flat = dict(_flatten_base(base_tree))
    for key in axes:
        if key in base_flat:
            raise InputError(f"{key} is set in [base] and swept in [sweep.axes]; remove it from [base]")
    return expand(base, axes, mode, None if mem is None else float(mem), exact=exact)


def expand(base: Config, axes: dict[str, tuple], mode: str = "grid", max_memory_gb: float | None = None, *,
           exact: bool = False) -> SweepSpec:
    """The cells of ``axes`` (dotted key -> values) over ``base`` (whose seeds every cell runs),
    combined by ``mode``; for code that holds a Config already (the experiments). InputError
    for zip axes of unequal lengths and for a cell whose config does not validate.
    ``exact``: cap programs at :data:`EXACT_MAX_LANES` lanes (see :class:`SweepSpec`)."""
    if mode not in MODES:
        raise InputError(f"sweep.mode={mode!r} is not one of: {', '.join(MODES)}")
    axes = {k: tuple(v) for k, v in axes.items()}
    if mode == "zip":
        lengths = {k: len(v) for k, v in axes.items()}
        if len(set(lengths.values())) > 1:
            desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
            raise InputError(f"sweep.mode='zip' needs axes of equal length: {desc}")
        combos = list(zip(*axes.values()))
    else:
        combos = list(itertools.product(*axes.values()))
    cells, configs = [], []
    for i, combo in enumerate(combos):
        values = dict(zip(axes, combo))
        try:
            cfg = base.with_overrides(values)
        except InputError as exc:
            desc = ", ".join(f"{k}={v!r}" for k, v in values.items())
            raise InputError(f"cell {i} ({desc}): {exc}") from None
        cells.append(values)
        configs.append(cfg)
    return SweepSpec(mode, tuple(base.seeds), axes, base, max_memory_gb, tuple(cells), tuple(configs), exact)


def _flatten_axes(tree: dict, prefix: str = ""):
    """(dotted key, value) of [sweep.axes]: quoted ``"optim.lr"`` and nested ``optim.lr`` alike."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten_axes(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _flatten_base(tree: dict):
    for key, value in tree.items():
        if isinstance(value, dict):
            for k, v in value.items():
                yield f"{key}.{k}", v
        else:
            yield key, value


def format_value(value: Any) -> str:
    """A swept value as one CSV field: numbers and strings as written, lists as TOML arrays."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


__all__ = ["EXACT_MAX_LANES", "MODES", "SweepSpec", "expand", "format_value", "load_sweep", "parse_sweep"]

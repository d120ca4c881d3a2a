"""Typed run configuration, loadable from TOML and from dotted ``key=value`` overrides.

A :class:`Config` is a frozen tree of small dataclasses. Every section has fixed,
typed fields; ``model``, ``tasks`` and ``intervention`` also carry free
``options`` that are passed on to the family / stream / intervention constructor,
which validates them. Dotted keys address fields: ``optim.lr``, ``model.widths``,
``tasks.classes_per_task``, ``seeds``.

Defaults give a sensible continual run: a small MLP on ``mnist1d`` split into five
two-class tasks, Adam 1e-3, two seeds, metrics every 50 steps.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomli_w

from ..errors import InputError, check_choice, check_positive, check_range

OPTIMIZERS = ("sgd", "adam", "rmsprop", "noisy_sgd")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    preset: str | None = "small"
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist1d"
    data_dir: str | None = None


@dataclass(frozen=True)
class TasksConfig:
    kind: str = "class_split"
    classes_per_task: int = 2
    num_tasks: int | None = 5
    head_zeroing: bool = True
    metric_batch_size: int = 500
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    steps_per_task: int = 400
    epochs_per_task: int | None = None
    batch_size: int = 128
    reset_optimizer_each_task: bool = False


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    noise_sigma0: float = 0.01
    noise_decay: float = 0.999


@dataclass(frozen=True)
class InterventionConfig:
    name: str = "none"
    start_step: int = 0  # the intervention acts from this global step on (e.g. SGD -> CBP switch)
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RecordConfig:
    every: int = 50
    checkpoint_every: int | None = None  # None: at every task end
    metrics: bool = True
    options: dict = field(default_factory=dict)  # thresholds passed to pdx.metrics.make_unit_metrics_fn


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    seeds: tuple[int, ...] = (0, 1)

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict:
        """Nested plain dict (options merged into their section), TOML-ready."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                section = {}
                for sf in fields(value):
                    v = getattr(value, sf.name)
                    if sf.name == "options":
                        section.update(v)
                    else:
                        section[sf.name] = v
                out[f.name] = section
            else:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(_drop_none(_tuples_to_lists(self.to_dict())))

    @classmethod
    def from_dict(cls, tree: dict) -> "Config":
        if not isinstance(tree, dict):
            raise InputError(f"config must be a table of sections, got {type(tree).__name__}")
        cfg = cls()
        flat = dict(_flatten(tree))
        return cfg.with_overrides(flat)

    @classmethod
    def from_toml(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"config file {str(path)!r} does not exist")
        try:
            tree = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
        return cls.from_dict(tree)

    # ------------------------------------------------------------ overrides
    def with_overrides(self, overrides: dict[str, Any]) -> "Config":
        """Return a copy with dotted keys set, e.g. ``{"optim.lr": 0.01}``; validates."""
        cfg = self
        for key, value in overrides.items():
            cfg = _set(cfg, key, value)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Range and type checks that need no data (the rest happens in build)."""
        check_positive("train.steps_per_task", self.train.steps_per_task, integer=True)
        if self.train.epochs_per_task is not None:
            check_positive("train.epochs_per_task", self.train.epochs_per_task, integer=True)
        check_positive("train.batch_size", self.train.batch_size, integer=True)
        check_choice("optim.name", self.optim.name, OPTIMIZERS)
        check_positive("optim.lr", self.optim.lr)
        check_range("optim.momentum", self.optim.momentum, 0.0, 1.0)
        check_positive("optim.weight_decay", self.optim.weight_decay, allow_zero=True)
        check_positive("optim.noise_sigma0", self.optim.noise_sigma0, allow_zero=True)
        check_range("optim.noise_decay", self.optim.noise_decay, 0.0, 1.0, high_inclusive=True)
        check_positive("intervention.start_step", self.intervention.start_step, integer=True, allow_zero=True)
        check_positive("record.every", self.record.every, integer=True)
        if self.record.checkpoint_every is not None:
            check_positive("record.checkpoint_every", self.record.checkpoint_every, integer=True)
            if self.record.checkpoint_every % self.record.every:
                raise InputError(
                    f"record.checkpoint_every={self.record.checkpoint_every} must be a multiple of "
                    f"record.every={self.record.every}"
                )
        check_positive("tasks.classes_per_task", self.tasks.classes_per_task, integer=True)
        if self.tasks.num_tasks is not None:
            check_positive("tasks.num_tasks", self.tasks.num_tasks, integer=True)
        check_positive("tasks.metric_batch_size", self.tasks.metric_batch_size, integer=True)
        if not self.seeds:
            raise InputError("seeds=[] must name at least one seed")
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise InputError(f"seeds entry {s!r} must be a non-negative integer")
        if len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"seeds={list(self.seeds)} has repeated entries")


# ---------------------------------------------------------------- helpers

_SECTIONS = {f.name: f for f in fields(Config)}


def _set(cfg: Config, key: str, value: Any) -> Config:
    parts = key.split(".")
    if parts[0] == "seeds" and len(parts) == 1:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise InputError(f"seeds={value!r} must be >= 1 (a count) or a list of seeds")
            value = tuple(range(value))
        elif isinstance(value, (list, tuple)):
            value = tuple(value)
        else:
            raise InputError(f"seeds={value!r} must be a count or a list of integers")
        return replace(cfg, seeds=value)
    if parts[0] not in _SECTIONS or parts[0] == "seeds" or len(parts) != 2:
        allowed = ", ".join(sorted(_SECTIONS))
        raise InputError(f"unknown config key {key!r}; keys are <section>.<name> with section in: {allowed}")
    section_name, name = parts
    section = getattr(cfg, section_name)
    names = {f.name: f for f in fields(section)}
    if name in names and name != "options":
        value = _coerce(key, value, names[name].type)
        return replace(cfg, **{section_name: replace(section, **{name: value})})
    if "options" in names:
        options = dict(section.options)
        options[name] = value
        return replace(cfg, **{section_name: replace(section, options=options)})
    allowed = ", ".join(n for n in names if n != "options")
    raise InputError(f"unknown config key {key!r}; {section_name} accepts: {allowed}")


def _coerce(key: str, value: Any, annotation: str) -> Any:
    ann = str(annotation)
    optional = "None" in ann
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise InputError(f"{key}=None is not allowed; give a value")
    if ann.startswith("bool"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise InputError(f"{key}={value!r} must be true or false")
    if ann.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise InputError(f"{key}={value!r} must be an integer")
        return value
    if ann.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{key}={value!r} must be a number")
        return float(value)
    if ann.startswith("str"):
        if not isinstance(value, str):
            raise InputError(f"{key}={value!r} must be a string")
        return value
    return value


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not prefix:
            if key not in _SECTIONS or key == "seeds":
                raise InputError(f"unknown config section {key!r}; sections are: {', '.join(sorted(_SECTIONS))}")
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


def _drop_none(tree):
    if isinstance(tree, dict):
        return {k: _drop_none(v) for k, v in tree.items() if v is not None}
    return tree


def _tuples_to_lists(tree):
    if isinstance(tree, dict):
        return {k: _tuples_to_lists(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_tuples_to_lists(v) for v in tree]
    return tree


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` where value is a TOML literal (bare words are strings)."""
    if "=" not in text:
        raise InputError(f"--set {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise InputError(f"--set {text!r} has an empty key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value

"""Typed run configuration, loadable from TOML and from dotted ``key=value`` overrides.

A :class:`Config` is a frozen tree of small dataclasses. Every section has fixed,
typed fields; ``model``, ``tasks`` and ``intervention`` also carry free
``options`` that are passed on to the family / stream / intervention constructor,
which validates them. Dotted keys address fields: ``optim.lr``, ``model.widths``,
``tasks.classes_per_task``, ``seeds``.

Defaults give a sensible continual run: a small MLP on ``mnist1d`` split into five
two-class tasks, Adam 1e-3, two seeds, metrics every 50 steps.

``None`` is a value, not a gap: ``model.preset = None`` means the family's paper sizes,
``tasks.num_tasks = None`` every task the stream has, and the fields that only some
components read (``tasks.classes_per_task``, ``tasks.head_zeroing``, ``optim.noise_*``,
``train.steps_per_task``) default to ``None`` = "the component's own default", so a value
given for a component that does not read it is an error instead of a silent no-op
(:func:`pdx.training.build` checks those). TOML has no null, so :meth:`Config.to_toml` lists
the dotted keys whose value is ``None`` in a top-level ``none = [...]`` array;
``from_toml(to_toml(c)) == c`` holds for every config (a property-based test checks it).
Option values are stored as tuples (TOML arrays read back as tuples), so equality survives
the round trip.
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
    classes_per_task: int | None = None  # class-split streams only (their default: 2)
    num_tasks: int | None = None  # None: every task the stream has (class split: classes // k)
    head_zeroing: bool | None = None  # None: the stream's default (class split: True, others: False)
    metric_batch_size: int = 500
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    steps_per_task: int | None = None  # None: 400, unless epochs_per_task is given
    epochs_per_task: int | None = None
    batch_size: int = 128
    reset_optimizer_each_task: bool = False


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    noise_sigma0: float | None = None  # noisy_sgd only (its default: 0.01)
    noise_decay: float | None = None  # noisy_sgd only (its default: 0.999)


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
        """TOML text with every field; ``None`` values are listed by dotted key in ``none``."""
        tree = _tuples_to_lists(self.to_dict())
        nones = sorted(f"{sec}.{k}" for sec, body in tree.items() if isinstance(body, dict)
                       for k, v in body.items() if v is None)
        tree = _drop_none(tree)
        return tomli_w.dumps({"none": nones, **tree} if nones else tree)

    @classmethod
    def from_dict(cls, tree: dict) -> "Config":
        if not isinstance(tree, dict):
            raise InputError(f"config must be a table of sections, got {type(tree).__name__}")
        tree = dict(tree)
        nones = tree.pop("none", [])
        if not isinstance(nones, (list, tuple)) or not all(isinstance(k, str) for k in nones):
            raise InputError(f"none={nones!r} must be a list of dotted keys whose value is None")
        flat = dict(_flatten(tree))
        for key in nones:
            if key in flat:
                raise InputError(f"config key {key!r} is given a value and also listed in none")
            flat[key] = None
        return cls().with_overrides(flat)

    def differences(self, other: "Config") -> list[tuple[str, Any, Any]]:
        """[(dotted key, value here, value in other)] for every key whose values differ."""
        a, b = dict(_flatten_all(self.to_dict())), dict(_flatten_all(other.to_dict()))
        return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]

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
        if self.train.steps_per_task is not None:
            check_positive("train.steps_per_task", self.train.steps_per_task, integer=True)
        if self.train.epochs_per_task is not None:
            check_positive("train.epochs_per_task", self.train.epochs_per_task, integer=True)
            if self.train.steps_per_task is not None:
                raise InputError(f"train.steps_per_task={self.train.steps_per_task} and train.epochs_per_task="
                                 f"{self.train.epochs_per_task} are both given; a task length is one or the other")
        check_positive("train.batch_size", self.train.batch_size, integer=True)
        check_choice("optim.name", self.optim.name, OPTIMIZERS)
        check_positive("optim.lr", self.optim.lr)
        check_range("optim.momentum", self.optim.momentum, 0.0, 1.0)
        check_positive("optim.weight_decay", self.optim.weight_decay, allow_zero=True)
        for key in ("noise_sigma0", "noise_decay"):
            if getattr(self.optim, key) is not None and self.optim.name != "noisy_sgd":
                raise InputError(f"optim.{key}={getattr(self.optim, key)!r} applies only to optim.name='noisy_sgd', "
                                 f"not {self.optim.name!r}; remove it")
        if self.optim.momentum and self.optim.name == "adam":
            raise InputError(f"optim.momentum={self.optim.momentum!r} does not apply to optim.name='adam' "
                             "(Adam's first moment is its momentum); remove it or use sgd/rmsprop")
        if self.optim.noise_sigma0 is not None:
            check_positive("optim.noise_sigma0", self.optim.noise_sigma0, allow_zero=True)
        if self.optim.noise_decay is not None:
            check_range("optim.noise_decay", self.optim.noise_decay, 0.0, 1.0, high_inclusive=True)
        check_positive("intervention.start_step", self.intervention.start_step, integer=True, allow_zero=True)
        if self.intervention.name == "none" and (self.intervention.start_step or self.intervention.options):
            given = ["start_step"] * bool(self.intervention.start_step) + sorted(self.intervention.options)
            raise InputError(f"intervention.{given[0]} is set but intervention.name='none'; name an intervention "
                             "or remove it")
        if not self.record.metrics and self.record.options:
            raise InputError(f"record.{sorted(self.record.options)[0]} is a unit-metric option but "
                             "record.metrics=false; remove it or turn the metrics on")
        check_positive("record.every", self.record.every, integer=True)
        if self.record.checkpoint_every is not None:
            check_positive("record.checkpoint_every", self.record.checkpoint_every, integer=True)
            if self.record.checkpoint_every % self.record.every:
                raise InputError(
                    f"record.checkpoint_every={self.record.checkpoint_every} must be a multiple of "
                    f"record.every={self.record.every}"
                )
        if self.tasks.classes_per_task is not None:
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
        options[name] = _freeze(key, value, top=True)
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


def _freeze(key: str, value: Any, top: bool = False) -> Any:
    """An option value as stored: lists become tuples (recursively), so a config equals its TOML
    round trip; ``None`` is allowed only as the whole value (TOML cannot hold it inside)."""
    if value is None:
        if top:
            return None
        raise InputError(f"{key} holds None inside a list or table; config.toml cannot store that")
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(key, v) for v in value)
    if isinstance(value, dict):
        return {str(k): _freeze(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        raise InputError(f"{key}=nan is not a usable value")
    return value


def _flatten_all(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and not prefix:
            yield from _flatten_all(value, f"{key}.")
        else:
            yield f"{prefix}{key}", value


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

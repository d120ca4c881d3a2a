"""One family of error types for the whole toolkit.

Every bad input raises a subclass of :class:`PdxError`; the command line turns
:class:`InputError` into exit code 2 with its one-line message, and
:class:`DivergenceError` into exit code 3. Messages name the bad value and what
is allowed, e.g. ``model.name='mlpp' is not one of: mlp, cnn, resnet18, vit``.
"""

from __future__ import annotations

from typing import Iterable


class PdxError(Exception):
    """Base class of every error raised on purpose by plasticity_dynamics."""


class InputError(PdxError, ValueError):
    """A bad argument, config value, file or directory (CLI exit code 2)."""


class DatasetMissingError(InputError, FileNotFoundError):
    """A file dataset was asked for but its files are not in ``data_dir``."""


class DivergenceError(PdxError, FloatingPointError):
    """Training produced a NaN or Inf loss (CLI exit code 3)."""

    def __init__(self, message: str, step: int | None = None, seed: int | None = None):
        super().__init__(message)
        self.step = step
        self.seed = seed


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before reaching its tolerance."""


def check_choice(name: str, value, allowed: Iterable) -> None:
    """Raise InputError unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise InputError(f"{name}={value!r} is not one of: {', '.join(map(str, allowed))}")


def check_positive(name: str, value, *, integer: bool = False, allow_zero: bool = False) -> None:
    """Raise InputError unless ``value`` is a (non-negative if allow_zero) positive number."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        want = "an integer" if integer else "a number"
        raise InputError(f"{name}={value!r} must be {want}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name}={value!r} must be {bound}")


def check_range(name: str, value, low, high, *, high_inclusive: bool = False) -> None:
    """Raise InputError unless low <= value < high (or <= high)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name}={value!r} must be a number")
    ok = low <= value <= high if high_inclusive else low <= value < high
    if not ok:
        close = "]" if high_inclusive else ")"
        raise InputError(f"{name}={value!r} must lie in [{low}, {high}{close}")

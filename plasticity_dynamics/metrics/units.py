"""Per-unit activity diagnostics: dead, never-active, low-activity, dormant, linearised,
saturated and frozen units.

Inputs are one layer's matrices of shape (samples, units) (see :mod:`.layout`): ``h`` the
activations, ``g`` = dL/dh on the same samples, ``z`` the pre-activations. Each criterion comes
as a ``*_units`` function returning a boolean mask of shape (units,) and a ``*_fraction``
function returning its mean (a float scalar). All are pure, jit-able and vmap-able; thresholds
are Python numbers. Cost: O(samples x units) elementwise work, no matrix products. A layer of
all zeros or constants gives defined values (never NaN).

References: the paper (arXiv 2510.00304, App. B.1.2; PAPER.md section 4) for dead and
saturated fractions; Dohare et al. 2024 (Nature) for never-active and active-on-<1%; Sokar et
al. 2023 (ReDo) for the tau-dormant score; LucMc/continual-learning for linearised units;
DESIGN.md / PAPER.md section 8 item 6 for frozen units (|f'(z)| < eps).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ..errors import InputError, check_positive, check_range
from .layout import check_matrix


def _share(mask, op, frac):
    """Per-unit comparison of the share of samples where ``mask`` holds with ``frac``, done on
    integer counts against frac * samples (a float32 mean is ambiguous at exact ties such as
    495 of 500 samples against 0.99)."""
    count = jnp.sum(mask, axis=0, dtype=jnp.int32)
    return op(count, frac * mask.shape[0])


def _check_pair(name_a, a, name_b, b):
    if a.shape != b.shape:
        raise InputError(f"{name_b} has shape {tuple(b.shape)}; expected the shape of {name_a}, {tuple(a.shape)}")


def dead_units(h, eps: float = 1e-7, frac: float = 0.95) -> jnp.ndarray:
    """Mask (units,): unit j dead iff mean_i 1[|h_ij| < eps] > frac (the paper's rule)."""
    check_positive("eps", eps, allow_zero=True)
    check_range("frac", frac, 0.0, 1.0)
    h = check_matrix("h", h)
    return _share(jnp.abs(h) < eps, jnp.greater, frac)


def dead_fraction(h, eps: float = 1e-7, frac: float = 0.95) -> jnp.ndarray:
    """Fraction of units that are dead (|h| < eps on more than ``frac`` of the samples).

    Paper defaults eps = 1e-7, frac = 0.95 (arXiv 2510.00304, App. B.1.2).
    """
    return jnp.mean(dead_units(h, eps, frac))


def never_active_units(h) -> jnp.ndarray:
    """Mask (units,): the output is exactly zero on every sample (Dohare et al. 2024, MNIST)."""
    h = check_matrix("h", h)
    return jnp.all(h == 0, axis=0)


def never_active_fraction(h) -> jnp.ndarray:
    """Fraction of units whose output is exactly zero on every sample of the batch."""
    return jnp.mean(never_active_units(h))


def low_activity_units(h, frac: float = 0.01, eps: float = 0.0) -> jnp.ndarray:
    """Mask (units,): unit non-zero (|h| > eps) on fewer than ``frac`` of the samples.

    Dohare et al. 2024 (CIFAR-100) use frac = 0.01 with conv channels averaged over space per
    example: pass ``flatten_units(a, "conv", pool=True)`` for that reading.
    """
    check_range("frac", frac, 0.0, 1.0, high_inclusive=True)
    check_positive("eps", eps, allow_zero=True)
    h = check_matrix("h", h)
    return _share(jnp.abs(h) > eps, jnp.less, frac)


def low_activity_fraction(h, frac: float = 0.01, eps: float = 0.0) -> jnp.ndarray:
    """Fraction of units active (|h| > eps) on fewer than ``frac`` of the samples."""
    return jnp.mean(low_activity_units(h, frac, eps))


def dormant_scores(h) -> jnp.ndarray:
    """ReDo score (units,): s_j = mean_i |h_ij| divided by (mean_k s_k + 1e-9) (Sokar et al. 2023)."""
    h = check_matrix("h", h)
    s = jnp.mean(jnp.abs(h), axis=0)
    return s / (jnp.mean(s) + 1e-9)


def dormant_units(h, tau: float = 0.025) -> jnp.ndarray:
    """Mask (units,): ReDo score <= tau. An all-zero layer is entirely dormant."""
    check_positive("tau", tau, allow_zero=True)
    return dormant_scores(h) <= tau


def dormant_fraction(h, tau: float = 0.025) -> jnp.ndarray:
    """Fraction of tau-dormant units (ReDo score <= tau); tau = 0.025 and 0.1 are both in use."""
    return jnp.mean(dormant_units(h, tau))


def linearised_units(z, frac: float = 0.9) -> jnp.ndarray:
    """Mask (units,): pre-activation z > 0 on at least ``frac`` of the samples (a ReLU acting as
    the identity; LucMc/continual-learning). Meaningful for ReLU-like activations."""
    check_range("frac", frac, 0.0, 1.0, high_inclusive=True)
    z = check_matrix("z", z)
    return _share(z > 0, jnp.greater_equal, frac)


def linearised_fraction(z, frac: float = 0.9) -> jnp.ndarray:
    """Fraction of units whose pre-activation is positive on >= ``frac`` of the samples."""
    return jnp.mean(linearised_units(z, frac))


def saturated_units(h, g, tau: float = 1e-4, frac: float = 0.99) -> jnp.ndarray:
    """Mask (units,): |g_ij| / max(mean_i |h_ij|, 1e-12) < tau on more than ``frac`` of samples.

    The paper's rule (App. B.1.2): defaults tau = 1e-4, frac = 0.99 (bit flipping: 0.05, 0.8).
    ``g`` is dL/dh with the loss averaged over the batch, so tau depends on that convention.
    """
    check_positive("tau", tau, allow_zero=True)
    check_range("frac", frac, 0.0, 1.0)
    h = check_matrix("h", h)
    g = check_matrix("g", g)
    _check_pair("h", h, "g", g)
    mu = jnp.maximum(jnp.mean(jnp.abs(h), axis=0), 1e-12)
    return _share(jnp.abs(g) / mu < tau, jnp.greater, frac)


def saturated_fraction(h, g, tau: float = 1e-4, frac: float = 0.99) -> jnp.ndarray:
    """Fraction of saturated units (see :func:`saturated_units`)."""
    return jnp.mean(saturated_units(h, g, tau, frac))


def resolve_derivative(activation) -> Callable:
    """f'(z) for an activation given by name or as an elementwise callable f.

    A name is resolved with ``plasticity_dynamics.models.activation_derivative`` (imported
    lazily, so this module does not depend on the models at import time); a callable ``f`` is
    differentiated elementwise with ``jax.grad``.
    """
    if callable(activation):
        f = activation
        return lambda z: jax.grad(lambda t: jnp.sum(f(t)))(z)
    if not isinstance(activation, str):
        raise InputError(f"activation={activation!r} must be an activation name or a callable")
    from .. import models  # lazy: metrics must not need the models at import time

    derivative = getattr(models, "activation_derivative", None)
    if derivative is None:
        raise InputError(
            f"activation={activation!r}: plasticity_dynamics.models.activation_derivative is not "
            "available; pass the activation as a callable instead"
        )
    return derivative(activation)


def frozen_units(z, activation, eps: float = 0.01, frac: float = 0.99) -> jnp.ndarray:
    """Mask (units,): |f'(z_ij)| < eps on more than ``frac`` of the samples.

    ``activation`` is a name (relu, tanh, ...) or an elementwise callable f. Frozen units are
    the paper's M_F (Theorem 2.1): their incoming-weight gradients vanish on those samples.
    For ReLU this is z <= 0; leaky ReLU (slope 0.01) is never frozen at eps = 0.01.
    """
    check_positive("eps", eps, allow_zero=True)
    check_range("frac", frac, 0.0, 1.0)
    z = check_matrix("z", z)
    deriv = resolve_derivative(activation)
    return _share(jnp.abs(deriv(z)) < eps, jnp.greater, frac)


def frozen_fraction(z, activation, eps: float = 0.01, frac: float = 0.99) -> jnp.ndarray:
    """Fraction of frozen units (see :func:`frozen_units`)."""
    return jnp.mean(frozen_units(z, activation, eps, frac))

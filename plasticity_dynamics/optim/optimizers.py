"""Optimisers on optax with PyTorch semantics, and the noisy-SGD gradient noise (PAPER.md 5.5).

``make_optimizer(name, lr, ...)`` for name in sgd | adam | rmsprop | noisy_sgd:
- sgd: buf = momentum * buf + g (PyTorch, dampening 0; first buf = g), p -= lr * buf.
- adam: PyTorch Adam (bias-corrected, eps outside the square root).
- rmsprop: PyTorch RMSprop: v = a v + (1 - a) g^2, p -= lr * g / (sqrt(v) + eps), a = 0.99,
  optional momentum on g / (sqrt(v) + eps).
- noisy_sgd: g <- g + sigma0 * decay^t * ||g_p|| * xi per parameter tensor p, then sgd.
Weight decay: coupled (default, PyTorch ``weight_decay``: g += wd * p before the
optimiser's statistics) or decoupled (``coupled_weight_decay=False``: p -= lr * wd * p
after them, i.e. AdamW / SGDW).

Noise key: the noisy-SGD state carries its own PRNG key (default PRNGKey(0)). When one
optimiser object initialises many seeds (vmap), give every seed its own stream with
:func:`reseed_noise` (e.g. ``reseed_noise(opt.init(params), seed_key)``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..errors import InputError, check_choice, check_positive, check_range

OPTIMIZERS: dict[str, str] = {
    "sgd": "SGD with optional (heavy-ball or Nesterov) momentum, PyTorch semantics",
    "adam": "Adam (PyTorch defaults b1=0.9, b2=0.999, eps=1e-8)",
    "rmsprop": "RMSprop (PyTorch: decay 0.99, eps outside the square root, optional momentum)",
    "noisy_sgd": "SGD on gradients plus N(0, (sigma0 decay^t ||g_p||)^2 I) noise per tensor (PAPER.md 5.5)",
}


def _raw_key(key):
    if key is None:
        return jax.random.PRNGKey(0)
    key = jnp.asarray(key) if not hasattr(key, "dtype") else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


class NoisyGradState(NamedTuple):
    """State of :func:`noisy_sgd_noise`: step count t (int32) and a raw uint32[2] PRNG key."""

    count: jax.Array
    key: jax.Array


def noisy_sgd_noise(sigma0: float, decay: float, key=None) -> optax.GradientTransformation:
    """Gradient noise g_p <- g_p + sigma0 * decay^t * ||g_p||_2 * xi_p, xi_p ~ N(0, I), per tensor p.

    t counts updates from 0, so decay = 0 adds noise on the first update only
    (0**0 = 1) and decay = 1 keeps it constant. A zero gradient tensor gets no
    noise (its norm is 0). The noise of update t uses ``fold_in(key, t)`` split
    over the tensors. Cost: one norm and one normal draw per tensor.
    Reference: PAPER.md 5.5 (the authors' per-tensor variant).
    """
    check_positive("noise_sigma0", sigma0, allow_zero=True)
    check_range("noise_decay", decay, 0.0, 1.0, high_inclusive=True)
    return _noise(sigma0, decay, key)


def _noise(sigma0, decay, key=None) -> optax.GradientTransformation:
    """:func:`noisy_sgd_noise` without the range checks: ``sigma0`` and ``decay`` may be traced
    scalars (one value per vmapped lane, :func:`lane_optimizer`)."""
    key0 = _raw_key(key)

    def init(params):
        del params
        return NoisyGradState(count=jnp.zeros([], jnp.int32), key=key0)

    def update(updates, state, params=None):
        del params
        scale = sigma0 * jnp.power(jnp.asarray(decay, jnp.float32), state.count.astype(jnp.float32))
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        keys = jax.random.split(jax.random.fold_in(state.key, state.count), max(len(leaves), 1))
        noisy = []
        for g, k in zip(leaves, keys):
            norm = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))
            xi = jax.random.normal(k, g.shape, jnp.float32)
            noisy.append((g + (scale * norm) * xi).astype(g.dtype))
        return jax.tree_util.tree_unflatten(treedef, noisy), NoisyGradState(state.count + 1, state.key)

    return optax.GradientTransformation(init, update)


#: noisy SGD's defaults (the paper's figures): sigma_t = sigma0 * decay^t.
NOISE_SIGMA0, NOISE_DECAY = 0.01, 0.999


def describe_optimizer(name: str, lr: float, *, momentum: float = 0.0, weight_decay: float = 0.0,
                       noise_sigma0: float | None = None, noise_decay: float | None = None) -> dict:
    """The settings :func:`make_optimizer` builds from these arguments, defaults resolved (for
    summaries): only the keys that the optimiser reads."""
    d = {"name": name, "lr": float(lr), "weight_decay": float(weight_decay)}
    if name != "adam":
        d["momentum"] = float(momentum)
    if name == "noisy_sgd":
        d["noise_sigma0"] = float(NOISE_SIGMA0 if noise_sigma0 is None else noise_sigma0)
        d["noise_decay"] = float(NOISE_DECAY if noise_decay is None else noise_decay)
    return d


def make_optimizer(name: str, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8, noise_sigma0: float | None = None,
                   noise_decay: float | None = None, *, coupled_weight_decay: bool = True, nesterov: bool = False,
                   rmsprop_decay: float = 0.99, noise_key=None) -> optax.GradientTransformation:
    """Build an optax optimiser (see the module docstring for the update rules).

    noise_sigma0 / noise_decay default to 0.01 / 0.999 (the paper's figures) for
    noisy_sgd and must be None for the others. Raises InputError for bad values.
    """
    check_choice("optim.name", name, OPTIMIZERS)
    check_positive("optim.lr", lr)
    check_range("optim.momentum", momentum, 0.0, 1.0)
    check_positive("optim.weight_decay", weight_decay, allow_zero=True)
    if name != "noisy_sgd" and (noise_sigma0 is not None or noise_decay is not None):
        raise InputError(f"noise_sigma0/noise_decay are only used by noisy_sgd, not optim.name={name!r}")
    if nesterov and momentum == 0:
        raise InputError("nesterov=True needs momentum > 0")
    if name == "adam" and momentum:
        raise InputError(f"optim.momentum={momentum!r} does not apply to adam (its first moment, b1, is its "
                         "momentum); remove it or use sgd/rmsprop")
    parts = []
    if name == "noisy_sgd":
        parts.append(noisy_sgd_noise(NOISE_SIGMA0 if noise_sigma0 is None else noise_sigma0,
                                     NOISE_DECAY if noise_decay is None else noise_decay, noise_key))
    if weight_decay and coupled_weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    if name == "adam":
        check_range("b1", b1, 0.0, 1.0)
        check_range("b2", b2, 0.0, 1.0)
        check_positive("eps", eps, allow_zero=True)
        parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
    elif name == "rmsprop":
        check_range("rmsprop_decay", rmsprop_decay, 0.0, 1.0)
        parts.append(optax.scale_by_rms(decay=rmsprop_decay, eps=eps, initial_scale=0.0, eps_in_sqrt=False))
    if name != "adam" and momentum > 0:
        parts.append(optax.trace(decay=momentum, nesterov=nesterov))
    if weight_decay and not coupled_weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.scale(-lr))
    return optax.chain(*parts)


#: The optimiser settings that keep shapes, so that vmapped lanes of one program may differ in
#: them (:func:`lane_optimizer`); the key each has in :func:`lane_hypers` is the config field.
LANE_HYPERS = ("lr", "momentum", "weight_decay", "noise_sigma0", "noise_decay")


def lane_hypers(name: str, lr: float, *, momentum: float = 0.0, weight_decay: float = 0.0,
                noise_sigma0: float | None = None, noise_decay: float | None = None) -> dict[str, float]:
    """The values :func:`lane_optimizer` reads for optimiser ``name`` (defaults resolved), as a
    dict of floats: lr and weight_decay always, momentum unless adam, the noise pair for noisy_sgd."""
    d = describe_optimizer(name, lr, momentum=momentum, weight_decay=weight_decay, noise_sigma0=noise_sigma0,
                           noise_decay=noise_decay)
    return {k: v for k, v in d.items() if k in LANE_HYPERS}


def lane_optimizer(name: str, hypers: dict, *, use_momentum: bool, use_weight_decay: bool,
                   noise_key=None) -> optax.GradientTransformation:
    """The engine's optimiser with hyperparameter *values* taken from ``hypers`` (keys of
    :func:`lane_hypers`), which may be traced scalars: one value per vmapped lane of one program.

    Which transforms are chained is fixed by ``name``, ``use_momentum`` and ``use_weight_decay``
    (momentum > 0 and weight_decay > 0: :func:`make_optimizer` chains a transform only then, and
    a momentum buffer changes the state's shape), so ``lane_optimizer(name, lane_hypers(...),
    ...)`` has the state tree of ``make_optimizer`` with the same settings, and the same update
    rules (coupled weight decay, PyTorch defaults). Values are not checked here (the config
    checked them). Cost: make_optimizer's.
    """
    parts = []
    if name == "noisy_sgd":
        parts.append(_noise(hypers["noise_sigma0"], hypers["noise_decay"], noise_key))
    if use_weight_decay:
        parts.append(optax.add_decayed_weights(hypers["weight_decay"]))
    if name == "adam":
        parts.append(optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8))
    elif name == "rmsprop":
        parts.append(optax.scale_by_rms(decay=0.99, eps=1e-8, initial_scale=0.0, eps_in_sqrt=False))
    if name != "adam" and use_momentum:
        parts.append(optax.trace(decay=hypers["momentum"], nesterov=False))
    parts.append(optax.scale(-hypers["lr"]))
    return optax.chain(*parts)


def _is_noise_state(x) -> bool:
    return isinstance(x, NoisyGradState)


def reseed_noise(opt_state, key):
    """Replace the key of every NoisyGradState in ``opt_state`` by fold_in(key, i) (i = its index).

    Pure and vmap-safe; a state without noise is returned unchanged.
    """
    key = _raw_key(key)
    counter = iter(range(1 << 30))

    def fix(x):
        if _is_noise_state(x):
            return NoisyGradState(x.count, jax.random.fold_in(key, next(counter)))
        return x

    return jax.tree_util.tree_map(fix, opt_state, is_leaf=_is_noise_state)


def reset_state(optimizer: optax.GradientTransformation, params, old_state=None):
    """Fresh optimiser state for ``params`` (task switch): ``optimizer.init(params)``.

    Moments and counts restart as when the optimiser is re-created (the authors'
    ``reset optimizer``; the noisy-SGD schedule restarts at t = 0). If ``old_state``
    is given, noise keys continue from it (new key = fold_in(old key, old count)) so a
    reset does not replay the first noise draws. Pure and jit/vmap-safe.
    """
    new = optimizer.init(params)
    if old_state is None:
        return new
    olds = [x for x in jax.tree_util.tree_leaves(old_state, is_leaf=_is_noise_state) if _is_noise_state(x)]
    it = iter(olds)

    def fix(x):
        if _is_noise_state(x):
            old = next(it, None)
            if old is not None:
                return NoisyGradState(x.count, jax.random.fold_in(old.key, old.count))
        return x

    return jax.tree_util.tree_map(fix, new, is_leaf=_is_noise_state)

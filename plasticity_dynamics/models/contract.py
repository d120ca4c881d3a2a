"""The model contract: ``Model`` (pure ``init`` / ``apply``) and its ``Output``.

A ``Model`` wraps a flax.linen module; outside code only sees pytrees and pure functions::

    model = pdx.models.create("mlp", preset="tiny")
    variables = model.init(key, x)            # {"params": ..., "batch_stats": ... (batch norm only)}
    out = model.apply(variables, x, train=True, rng=key)
    out.logits, out.variables, out.activations, out.preactivations

``apply`` is jit-able with ``train`` static: ``jax.jit(model.apply, static_argnames="train")``.
``model.layer_kinds`` (layer name -> "dense" | "conv" | "tokens") says how metrics flatten each
monitored activation: dense (B, D); conv (B, H, W, C) -> (B*H*W, C); tokens (B, T, D) -> (B*T, D).

Probes: ``probes={name: jnp.zeros_like(out.activations[name]), ...}`` (any subset of the monitored
names) are added to the monitored activations right where they are recorded, so
``jax.grad(loss, argnums=probes)`` is dL/dh for each monitored layer h.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
from flax.core import FrozenDict, freeze

from ..errors import InputError


class Output(NamedTuple):
    """Result of ``Model.apply``.

    logits: (B, num_outputs) float32.
    variables: same dict structure as the input variables; new ``batch_stats`` after a train-mode
        pass with batch norm, otherwise the input variables themselves.
    activations: monitored layer name -> array (post-activation for mlp/cnn hidden layers,
        block outputs for resnet18/vit, post-activation MLP hidden units of vit blocks), probes added.
    preactivations: same keys where the layer has an activation function: its input z.
    """

    logits: Any
    variables: Any
    activations: dict
    preactivations: dict


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A network as pure functions. Build with ``pdx.models.create``.

    name: family ("mlp", "cnn", "resnet18", "vit"); options: fully resolved options (a dict;
    do not mutate); module: the flax.linen module; layer_kinds: monitored layer name -> kind, in
    forward order; activation: name of the activation function (see activations.ACTIVATIONS).
    Equality and hash use (name, options) only, so a Model can be a static jit argument.
    """

    name: str
    options: dict
    module: nn.Module
    layer_kinds: dict
    activation: str

    def _key(self):
        return (self.name, tuple(sorted((k, repr(v)) for k, v in self.options.items())))

    def __eq__(self, other):
        return isinstance(other, Model) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    @property
    def _needs_rng(self) -> bool:
        return (self.options.get("dropout", 0.0) > 0
                or self.options.get("attention_dropout", 0.0) > 0)

    def init(self, key, x):
        """Initialise variables for inputs shaped like ``x`` (batch axis first; values unused
        except for shapes). Returns ``{"params": ...}`` plus ``"batch_stats"`` with batch norm.
        Deterministic in ``key``. Raises InputError on input shapes the family cannot take.
        Runs jitted (compiled once per model options and input shape, cached per process)."""
        return dict(_jitted_init(self)(key, x))

    def apply(self, variables, x, *, train: bool = False, rng=None, probes=None, rates=None) -> Output:
        """Run the network on a batch ``x``.

        train: batch norm uses and updates batch statistics (returned in Output.variables) and
            dropout is active (needs ``rng``); eval mode uses running statistics, no dropout.
        rng: PRNG key for dropout; required when train and a dropout rate > 0 (else InputError).
        probes: optional dict {monitored name: array shaped like that activation}.
        rates: optional dict {option in :data:`RATE_OPTIONS` (``dropout``, ``attention_dropout``):
            value} overriding the model's rate for this call; values may be traced scalars (a
            sweep's vmapped lanes differ in them, one compiled program). A rate given here draws
            its dropout masks even when 0 (the program must not depend on the value).
        Cost: one forward pass; runs jitted (cached per model options, input shapes, ``train``
        and probe keys), so outside a jit the first call per shape compiles.
        Output.activations / preactivations are in forward order (that of ``layer_kinds``);
        note that any jit around this call returns dicts with sorted keys.
        """
        if train and self._needs_rng and rng is None:
            rates = ", ".join(f"{k}={self.options[k]}" for k in ("dropout", "attention_dropout")
                              if self.options.get(k, 0.0) > 0)
            raise InputError(f"rng=None with train=True, but model {self.name!r} has {rates}: "
                             "pass rng=<PRNG key> (or set the dropout rates to 0)")
        if probes is not None:
            unknown = [k for k in probes if k not in self.layer_kinds]
            if unknown:
                raise InputError(f"probes key {unknown[0]!r} is not one of: "
                                 f"{', '.join(self.layer_kinds)}")
        if rates is not None:
            bad = [k for k in rates if k not in RATE_OPTIONS or k not in self.options]
            if bad:
                allowed = [k for k in RATE_OPTIONS if k in self.options]
                raise InputError(f"rates key {bad[0]!r} is not a rate of model {self.name!r}; allowed: "
                                 f"{', '.join(allowed)}")
            if train and rng is None:
                raise InputError("rates given with train=True but rng=None: pass rng=<PRNG key>")
            rates = dict(rates)
        rngs = {"dropout": rng} if (train and rng is not None) else {}
        out = _jitted_apply(self)(variables, x, train=bool(train), rngs=rngs, probes=probes, rates=rates)
        # jit hands dicts back with sorted keys; restore the forward order (plain dicts).
        order = list(self.layer_kinds)
        return out._replace(
            activations={k: out.activations[k] for k in order if k in out.activations},
            preactivations={k: out.preactivations[k] for k in order if k in out.preactivations})


#: Model options that may be overridden per call by traced values (``Model.apply(rates=...)``):
#: they change neither shapes nor control flow of a train-mode pass.
RATE_OPTIONS = ("dropout", "attention_dropout")


def _apply(model: Model, variables, x, train, rngs, probes, rates=None) -> Output:
    module = model.module if not rates else model.module.clone(**rates)
    if train and "batch_stats" in variables:
        (logits, acts, pre), updates = module.apply(
            variables, x, train=True, probes=probes, rngs=rngs, mutable=["batch_stats"])
        new = {**variables, "batch_stats": updates["batch_stats"]}
        if isinstance(variables, FrozenDict):
            new = freeze(new)
    else:
        logits, acts, pre = module.apply(variables, x, train=train, probes=probes, rngs=rngs)
        new = variables
    return Output(logits, new, acts, pre)


@functools.lru_cache(maxsize=256)
def _jitted_apply(model: Model):
    """Compiled apply for one model configuration (retraced per shapes / train / probe keys):
    one compilation instead of one per primitive when called eagerly; inlined under an outer
    jit."""
    return jax.jit(functools.partial(_apply, model), static_argnames="train")


@functools.lru_cache(maxsize=256)
def _jitted_init(model: Model):
    """Compiled ``module.init`` for one model configuration (jit retraces per input shape).
    Jitting init is ~2x faster than eager op-by-op init on first use."""
    return jax.jit(lambda key, x: model.module.init({"params": key}, x, train=False, probes=None))

"""One optimiser step of a model on a batch: the map θ_{t+1} = F(θ_t, s_t, batch).

Shared by the training engine and the experiments (cloning runs train a base and an
expanded model side by side with it). Pure and jit/vmap/scan-safe. Loops over steps are
:func:`plasticity_dynamics.loop.run_steps`.
"""

from __future__ import annotations

from typing import Callable

import jax
import optax

from ..losses import masked_loss  # noqa: F401  (the one loss; re-exported here for older imports)


def train_step(model, optimizer: optax.GradientTransformation, loss_kind: str, variables, opt_state,
               x, y, class_mask, rng, rates=None):
    """Forward in train mode (dropout with ``rng``, batch statistics), loss, gradient, update.

    ``rates``: optional dropout rates overriding the model's (``Model.apply(rates=...)``; traced
    scalars of a sweep's lanes).

    Returns (variables, opt_state, loss, accuracy, output). ``output.activations`` are the
    monitored activations of this batch (interventions such as CBP read them).
    Cost: one forward and one backward pass.
    """

    def loss_fn(params):
        extra = {} if rates is None else {"rates": rates}  # wrapped models (models.wrap) take no rates
        out = model.apply({**variables, "params": params}, x, train=True, rng=rng, **extra)
        loss, acc = masked_loss(out.logits, y, class_mask, loss_kind)
        return loss, (out, acc)

    (loss, (out, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
    params = optax.apply_updates(variables["params"], updates)
    return {**out.variables, "params": params}, opt_state, loss, acc, out


def make_step(model, optimizer: optax.GradientTransformation, loss_kind: str,
              batch_at: Callable[[jax.Array], tuple]):
    """The step map of plain training, for :func:`~plasticity_dynamics.loop.run_steps`:
    ``((variables, opt_state), t) -> ((variables, opt_state), (loss, accuracy))``.

    ``batch_at(t) -> (x, y, class_mask, rng)`` gives step ``t``'s batch (``class_mask`` None:
    all classes) and dropout key. Cost: one :func:`train_step`.
    """

    def step(carry, t):
        x, y, mask, rng = batch_at(t)
        variables, opt_state, loss, acc, _ = train_step(model, optimizer, loss_kind, *carry, x, y, mask, rng)
        return (variables, opt_state), (loss, acc)

    return step

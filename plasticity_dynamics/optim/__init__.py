"""plasticity_dynamics.optim: optimisers (optax, PyTorch semantics), noisy SGD, interventions.

``make_optimizer(name, lr, ...)`` (sgd | adam | rmsprop | noisy_sgd), ``noisy_sgd_noise``,
``reseed_noise`` / ``reset_state`` for optimiser state; ``make_intervention(name, **opts)``
(none | shrink_perturb | cbp | redo | head_reset | full_reset) returning pure
``init`` / ``apply`` / ``on_task_start`` functions.
"""

from .interventions import (INTERVENTIONS, LANE_OPTIONS, Intervention, cbp, full_reset, head_reset, lane_intervention,
                            lane_options, make_intervention, none, redo, shrink_perturb)
from .optimizers import (LANE_HYPERS, OPTIMIZERS, NoisyGradState, describe_optimizer, lane_hypers, lane_optimizer,
                         make_optimizer, noisy_sgd_noise, reseed_noise, reset_state)
from .units import UnitLayer, mask_opt_state, torch_default_like, unit_layers

__all__ = [
    "INTERVENTIONS",
    "LANE_HYPERS",
    "LANE_OPTIONS",
    "Intervention",
    "NoisyGradState",
    "OPTIMIZERS",
    "UnitLayer",
    "cbp",
    "describe_optimizer",
    "full_reset",
    "head_reset",
    "lane_hypers",
    "lane_intervention",
    "lane_options",
    "lane_optimizer",
    "make_intervention",
    "make_optimizer",
    "mask_opt_state",
    "noisy_sgd_noise",
    "none",
    "redo",
    "reseed_noise",
    "reset_state",
    "shrink_perturb",
    "torch_default_like",
    "unit_layers",
]

"""plasticity_dynamics: loss of plasticity as a dynamical system, in JAX.

Import as ``import plasticity_dynamics as pdx``. Subpackages, one concept each:
``models``, ``data``, ``tasks``, ``optim``, ``training``, ``metrics``,
``manifolds``, ``curvature``, ``theory``, ``experiments``, ``plotting``; modules ``loop``
(the one training loop, ``run_steps``) and ``losses`` (the one loss, ``masked_loss``).
"""

from . import errors
from . import loop
from . import losses
from . import models
from . import data
from . import tasks
from . import optim
from . import metrics
from . import manifolds
from . import curvature
from . import theory
from . import training
from .training import step as _step  # noqa: F401  (pdx.training.step.make_step)
from . import experiments
from . import plotting

__version__ = "0.1.0"

train = training.train  # pdx.train(config) -> Run (DESIGN.md contract)

from .runtime import configure_jax  # noqa: E402  (JAX settings the command line applies; call first)

"""plasticity_dynamics.models: the model zoo behind one pure-function contract.

``create(name, preset=None, **options) -> Model`` with name in FAMILIES ("mlp", "cnn",
"resnet18", "vit"); ``Model.init(key, x)`` and ``Model.apply(variables, x, *, train, rng,
probes) -> Output``. See ``contract`` for the contract and each family module for layer names.
"""

from .activations import ACTIVATIONS, activation_derivative, activation_fn
from .contract import Model, Output
from .registry import FAMILIES, PRESETS, create

__all__ = [
    "ACTIVATIONS",
    "FAMILIES",
    "Model",
    "Output",
    "PRESETS",
    "activation_derivative",
    "activation_fn",
    "create",
]

"""plasticity_dynamics.models: the model zoo behind one pure-function contract.

``create(name, preset=None, **options) -> Model`` with name in FAMILIES ("mlp", "cnn",
"resnet18", "vit"); ``Model.init(key, x)`` and ``Model.apply(variables, x, *, train, rng,
probes) -> Output``. See ``contract`` for the contract and each family module for layer names.
``from_function(apply_fn, params, example_x)`` (and ``from_flax`` / ``from_nnx`` /
``from_equinox``) wraps any JAX network behind the same contract, its unit ``Layout`` inferred
from the jaxpr (see ``wrap``, ``infer``, ``layout``); zoo models get theirs the same way
(``zoo_layout``).
"""

from .activations import ACTIVATIONS, activation_derivative, activation_fn
from .contract import Model, Output
from .layout import LayerSpec, Layout
from .registry import FAMILIES, PRESETS, create
from .wrap import FunctionModel, from_equinox, from_flax, from_function, from_nnx

__all__ = [
    "ACTIVATIONS",
    "FAMILIES",
    "FunctionModel",
    "LayerSpec",
    "Layout",
    "Model",
    "Output",
    "PRESETS",
    "activation_derivative",
    "activation_fn",
    "create",
    "from_equinox",
    "from_flax",
    "from_function",
    "from_nnx",
]

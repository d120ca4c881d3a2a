"""``create(name, preset=None, **options) -> Model``: the model registry and its validation.

Options are resolved as: family defaults (the paper's sizes, PAPER.md 5.1) <- preset values <-
explicit options. Every option is checked; a bad one raises InputError with one line naming the
value and what is allowed. ``PRESETS[family][preset]`` lists each preset's full options
("paper" = the defaults; "small" = CPU-minutes sizes; "tiny" = unit-test sizes).

Common options (all families): num_outputs (10), activation, norm ("none" | "batch" | "layer"),
norm_affine (True), norm_after_activation (False; mlp and cnn only, others accept only False),
dropout (rate in [0, 1)).
"""

from __future__ import annotations

from types import ModuleType

from ..errors import InputError, check_choice, check_positive, check_range
from . import cnn, mlp, resnet, vit
from .activations import ACTIVATIONS
from .contract import Model
from .layers import NORMS

_FAMILY_MODULES: dict[str, ModuleType] = {"mlp": mlp, "cnn": cnn, "resnet18": resnet, "vit": vit}
FAMILIES = tuple(_FAMILY_MODULES)

_COMMON = dict(num_outputs=10, norm_affine=True, norm_after_activation=False)

# option -> validator kind, per family (common options first).
_COMMON_KINDS = dict(num_outputs="posint", activation="activation", norm="norm",
                     norm_affine="bool", norm_after_activation="bool", dropout="rate")
_FAMILY_KINDS = {
    "mlp": dict(widths="posints"),
    "cnn": dict(channels="posints", fc_widths="posints0"),
    "resnet18": dict(base_channels="posint", stages="posints"),
    "vit": dict(patch_size="posint", dim="posint", depth="posint", heads="posint",
                mlp_ratio="posnum", attention_dropout="rate"),
}

_SIZES = {
    "small": {
        "mlp": dict(widths=(64,) * 3),
        "cnn": dict(channels=(16, 32, 64), fc_widths=(128,)),
        "resnet18": dict(base_channels=8),
        "vit": dict(dim=64, depth=2, heads=4, patch_size=4),
    },
    "tiny": {
        "mlp": dict(widths=(16, 16)),
        "cnn": dict(channels=(4, 8), fc_widths=(16,)),
        "resnet18": dict(base_channels=4),
        "vit": dict(dim=16, depth=1, heads=2, patch_size=4),
    },
}


def _defaults(family: str) -> dict:
    return {**_COMMON, **_FAMILY_MODULES[family].DEFAULTS}


PRESETS: dict[str, dict[str, dict]] = {
    fam: {"paper": _defaults(fam),
          **{p: {**_defaults(fam), **_SIZES[p][fam]} for p in _SIZES}}
    for fam in FAMILIES
}


def _check(name: str, value, kind: str):
    """Validate one option; return its normalised value (sequences become tuples)."""
    if kind == "posint":
        check_positive(name, value, integer=True)
    elif kind == "posnum":
        check_positive(name, value)
    elif kind == "rate":
        check_range(name, value, 0.0, 1.0)
        value = float(value)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise InputError(f"{name}={value!r} must be True or False")
    elif kind == "activation":
        check_choice(name, value, ACTIVATIONS)
    elif kind == "norm":
        check_choice(name, value, NORMS)
    elif kind in ("posints", "posints0"):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise InputError(f"{name}={value!r} must be a sequence of positive integers")
        value = tuple(value)
        if kind == "posints" and not value:
            raise InputError(f"{name}={value!r} must hold at least one positive integer")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise InputError(f"{name}={value!r} must hold positive integers only "
                                 f"(bad entry {v!r})")
    return value


def resolve_options(name: str, preset: str | None = None, **options) -> dict:
    """Merge defaults, preset and ``options`` for family ``name`` and validate everything."""
    check_choice("model", name, FAMILIES)
    preset = "paper" if preset is None else preset
    if preset not in PRESETS[name]:
        raise InputError(f"preset={preset!r} is not one of the {name} presets: "
                         f"{', '.join(PRESETS[name])}")
    kinds = {**_COMMON_KINDS, **_FAMILY_KINDS[name]}
    for key in options:
        if key not in kinds:
            raise InputError(f"option {key!r} is not one of the {name} options: "
                             f"{', '.join(kinds)}")
    resolved = {**PRESETS[name][preset], **options}
    out = {key: _check(key, resolved[key], kind) for key, kind in kinds.items()}
    if name in ("resnet18", "vit") and out["norm_after_activation"]:
        raise InputError(f"norm_after_activation=True is not supported for {name}; allowed: False "
                         "(only mlp and cnn take True)")
    if name == "vit":
        if out["dim"] % out["heads"]:
            raise InputError(f"heads={out['heads']} must divide dim={out['dim']}")
        if vit.hidden_width(out) < 1:
            raise InputError(f"mlp_ratio={out['mlp_ratio']!r} gives an MLP width < 1 for "
                             f"dim={out['dim']}; need dim * mlp_ratio >= 1")
    return out


def from_entry_point(spec: str, preset: str | None = None, **options):
    """Build a model with a Python entry point ``"package.module:function"``.

    The function is called with ``**options`` (a training config's ``model`` options, with
    ``num_outputs`` filled in by the engine), plus ``preset=`` when it takes such a parameter;
    it must return a model of the contract (e.g. ``pdx.models.from_function(...)``). Raises
    InputError (one line) when the module cannot be imported, has no such function, or the
    result is not a model.
    """
    import importlib
    import inspect

    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise InputError(f"model={spec!r} must be a family ({', '.join(FAMILIES)}) or an entry "
                         "point 'package.module:function'")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as err:
        raise InputError(f"model={spec!r}: cannot import module {mod_name!r} ({err})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise InputError(f"model={spec!r}: module {mod_name!r} has no function {fn_name!r}")
    params = inspect.signature(fn).parameters
    if preset is not None and ("preset" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())):
        options = {**options, "preset": preset}
    model = fn(**options)
    if not all(hasattr(model, a) for a in ("init", "apply", "layer_kinds", "activation")):
        raise InputError(f"model={spec!r} returned {type(model).__name__}, not a model (need "
                         "init/apply/layer_kinds/activation: see pdx.models.from_function)")
    return model


def create(name: str, preset: str | None = None, **options) -> Model:
    """Build a model of family ``name`` ("mlp", "cnn", "resnet18", "vit"), or with a Python
    entry point ``"package.module:function"`` (see :func:`from_entry_point`), so a training
    config's ``model.name`` can name a researcher's own model.

    preset: None or "paper" (paper sizes), "small" (CPU minutes), "tiny" (tests); explicit
    ``options`` override preset values. Raises InputError on an unknown family, preset, option
    or a bad option value. Building is cheap (no parameters are created until ``init``).
    """
    if isinstance(name, str) and ":" in name:
        return from_entry_point(name, preset, **options)
    opts = resolve_options(name, preset, **options)
    fam = _FAMILY_MODULES[name]
    return Model(name=name, options=opts, module=fam.build(opts),
                 layer_kinds=fam.layer_kinds(opts), activation=opts["activation"])

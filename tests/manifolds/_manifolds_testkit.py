"""Shared tiny networks for the manifolds tests (built once per session).

Each entry: (model, variables, x). Batch-norm running statistics and norm parameters are
randomised so that duplicating them is actually tested; vit query/key kernels are scaled up so
attention weights are far from uniform. resnet18 uses stages=(1, 1) (stem,
an identity-shortcut block and a projection-shortcut block) to keep compile times low.
"""

import jax
import jax.numpy as jnp
import numpy as np

import plasticity_dynamics as pdx

FAMILIES = ("mlp", "cnn", "resnet18", "vit")
OPTIONS = {
    "mlp": dict(dropout=0.0),
    "cnn": dict(dropout=0.0),
    "resnet18": dict(dropout=0.0, stages=(1, 1)),
    "vit": dict(dropout=0.0, attention_dropout=0.0),
}


def _randomise(variables, seed):
    rng = np.random.default_rng(seed)
    out = {"params": variables["params"]}
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: a + 0.1 * rng.standard_normal(a.shape).astype(np.float32)
        if str(p[-1].key) in ("scale", "bias") else a, variables["params"])
    # sharpen vit attention (init std 0.02 gives near-uniform weights that hide logit errors)
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: a * 20.0 if any(getattr(k, "key", None) in ("query", "key") for k in p)
        and p[-1].key == "kernel" else a, params)
    out["params"] = params
    if "batch_stats" in variables:
        out["batch_stats"] = jax.tree_util.tree_map_with_path(
            lambda p, a: (0.2 * rng.standard_normal(a.shape) if p[-1].key == "mean"
                          else 0.5 + rng.random(a.shape)).astype(np.float32),
            variables["batch_stats"])
    return jax.tree_util.tree_map(jnp.asarray, out)


def make_net(family, seed=0, batch=8, **options):
    model = pdx.models.create(family, preset="tiny", **{**OPTIONS[family], **options})
    key = jax.random.PRNGKey(seed)
    shape = (batch, 12) if family == "mlp" else (batch, 8, 8, 3)
    x = jax.random.normal(jax.random.fold_in(key, 1), shape)
    variables = _randomise(model.init(key, x[:2]), seed)
    return model, variables, x


_APPLY = {}


def apply_fn(model, train=False):
    """Jitted logits of ``model`` (cached per model and mode)."""
    k = (model, train)
    if k not in _APPLY:
        _APPLY[k] = jax.jit(lambda v, x: model.apply(v, x, train=train).logits)
    return _APPLY[k]


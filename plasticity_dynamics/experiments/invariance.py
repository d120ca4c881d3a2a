"""Invariance of the cloning manifold under optimisers (PAPER.md 1.3 remarks, 1.5, 5.4).

:func:`invariance` trains a small base network, expands it E-fold (function-preserving
cloning, :func:`pdx.manifolds.expand`), trains the wide network under several settings from
the cloned point and records, every ``record_every`` steps, how far the trajectory is from the
cloning manifold M_D(w0) = w0 + M_BC and how much of each step leaves it:

- ``distance``, ``relative_distance``: ||P_N(w_t - w0)|| (and / ||w_t||);
- ``leakage``: ||P_N g|| / ||g|| of the loss gradient of the step;
- ``update_leakage``: the same for the applied update (noise, decay, per-coordinate scaling);
- ``equitable_residual``: (||row|| + ||column||) / ||w|| residual of M_RE and M_CE;
- ``clone_r2``: the smallest clone R^2 (``pdx.metrics.clone_r2``) over the steps since the last
  record, forward activations and backward signals dL/dh of every monitored layer of a cloned
  group, on each step's own training batch (train mode);
- ``loss``: the training loss of the step.

Settings (``SETTINGS``): ``sgd``, ``momentum`` (SGD, momentum 0.9), ``adam``, ``rmsprop``
start on the manifold with a fresh optimiser state and stay there (Theorem 2.1 and its
optimiser remark). ``noisy_sgd`` (per-tensor noise, PAPER.md 5.5), ``dropout`` (independent
masks) and ``adam_l2`` leave it. ``adam_l2`` (Adam with coupled L2, g + lambda w) starts at an
equitable but not block-constant point (w0 plus a doubly centred perturbation: every
inter-block submatrix gets zero row and column sums, so outputs are still cloned); there the
per-coordinate second moments differ within a block and the update breaks equitability.
``sgd_l2`` (optional) starts from the same point and keeps equitability (uniform shrinkage),
moving from one leaf M_D(w) to another: its distance to the initial leaf grows, its
equitable residual does not.

Training steps run in ``lax.scan`` inside ``jit``; settings sharing a model run as one vmapped
program (``batched=True``, one compile). Returns a dict of
NumPy arrays: ``result["step"]`` and ``result[setting][metric]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..errors import InputError, check_choice, check_positive
from ..loop import run_steps
from ..losses import masked_loss

SETTINGS = ("sgd", "momentum", "adam", "rmsprop", "noisy_sgd", "dropout", "adam_l2")
ALL_SETTINGS = SETTINGS + ("sgd_l2",)
STAYS = ("sgd", "momentum", "adam", "rmsprop")
METRICS = ("distance", "relative_distance", "leakage", "update_leakage", "equitable_residual",
           "clone_r2", "loss")


def _data(key, model, num_samples, input_shape):
    if input_shape is None:
        input_shape = (16,) if model.name == "mlp" else (8, 8, 3)
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (num_samples,) + tuple(input_shape))
    teacher = jax.random.normal(kw, (int(np.prod(input_shape)), model.options["num_outputs"]))
    y = jnp.argmax(x.reshape(num_samples, -1) @ teacher, axis=1)
    return x, y


def _xent(logits, y):
    return masked_loss(logits, y)[0]


def _equitable_perturbation(partition, params, key, scale):
    """Doubly centred random perturbation of every leaf with two unit axes (zero row and
    column sums in every inter-block submatrix), scaled to ``scale`` times the leaf's RMS."""
    from ..manifolds.blocks import block_mean, partition_axis
    from ..manifolds.partition import collection_paths

    out = []
    paths = collection_paths(params)
    for k, (path, x) in zip(jax.random.split(key, len(paths)), paths):
        specs = partition.specs(path)
        x = jnp.asarray(x)
        if len(specs) == 2:
            r = jax.random.normal(k, x.shape)
            for spec in specs:
                r = r - block_mean(r, *partition_axis(partition, spec, x.shape[spec.axis]))
            rms = jnp.sqrt(jnp.mean(x * x))
            x = x + scale * rms * r / jnp.sqrt(jnp.mean(r * r) + 1e-30)
        out.append(x)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), out)


def _optimizer(setting, lr, adam_lr, weight_decay, noise_sigma0, noise_decay, key):
    from ..optim import make_optimizer

    if setting in ("sgd", "dropout"):
        return make_optimizer("sgd", lr)
    if setting == "momentum":
        return make_optimizer("sgd", lr, momentum=0.9)
    if setting == "adam":
        return make_optimizer("adam", adam_lr)
    if setting == "rmsprop":
        return make_optimizer("rmsprop", adam_lr)
    if setting == "noisy_sgd":
        return make_optimizer("noisy_sgd", lr, noise_sigma0=noise_sigma0, noise_decay=noise_decay,
                              noise_key=key)
    if setting == "adam_l2":
        return make_optimizer("adam", adam_lr, weight_decay=weight_decay)
    return make_optimizer("sgd", lr, weight_decay=weight_decay)  # sgd_l2


def _train_base(model, variables, x, y, steps, lr, batch_size, key):
    from ..training.step import make_step

    opt = optax.sgd(lr)

    def batch_at(t):
        k = jax.random.fold_in(key, t)
        idx = jax.random.randint(k, (batch_size,), 0, x.shape[0])
        return x[idx], y[idx], None, k

    step = make_step(model, opt, "xent", batch_at)
    run = jax.jit(lambda v: run_steps(step, (v, opt.init(v["params"])), steps)[0][0])
    return run(variables)


def _clone_r2(model, partition, activations, deltas):
    """Smallest clone R^2 over the monitored layers of cloned groups, forward and backward."""
    from ..metrics import clone_r2, flatten_units

    vals = []
    for k, kind in model.layer_kinds.items():
        lu = partition.layers.get(k)
        if lu is None or partition.is_trivial(lu.group):
            continue
        ids = partition.groups[lu.group]
        vals.append(clone_r2(flatten_units(activations[k], kind), ids))
        vals.append(clone_r2(flatten_units(deltas[k], kind), ids))
    return jnp.min(jnp.stack(vals)) if vals else jnp.float32(1.0)


def invariance(model: str = "mlp", *, preset: str = "tiny", options: dict | None = None,
               factor: int = 2, settings=SETTINGS, base_steps: int = 200, steps: int = 1000,
               record_every: int = 50, lr: float = 0.01, adam_lr: float = 1e-3,
               batch_size: int = 32, num_samples: int = 256, input_shape=None,
               dropout: float = 0.2, noise_sigma0: float = 0.01, noise_decay: float = 0.999,
               weight_decay: float = 0.1, perturbation: float = 0.1, seed: int = 0,
               data=None, base=None, return_params: bool = False, batched: bool = True) -> dict:
    """Train an expanded network under each setting and record the manifold metrics.

    model, preset, options: passed to ``pdx.models.create`` (dropout is forced to 0 except in
    the ``dropout`` setting, which uses rate ``dropout``). factor: expansion factor E.
    settings: subset of ``ALL_SETTINGS``. base_steps: SGD steps on the base network before
    cloning. steps, record_every: wide-network steps and recording period (steps must be a
    multiple). lr (sgd, momentum, noisy_sgd, dropout, sgd_l2), adam_lr (adam, rmsprop,
    adam_l2). weight_decay: coupled L2 of the *_l2 settings; perturbation: relative size of
    their doubly centred starting perturbation. data: optional (x, y) arrays, else a random
    teacher task with ``num_samples`` inputs of ``input_shape``. base: optional
    (base_model, base_variables) to start from (e.g. a trained checkpoint; its dropout must be
    0) instead of creating ``model`` and training it for ``base_steps``. return_params: also return
    ``result[setting]["params"]`` (final wide params). batched: train all settings that share
    a model in one vmapped program (one compile; every copy carries every optimiser state,
    memory x len(settings)^2 optimiser states) instead of one program per setting.
    Returns {"step": (R,), "factor", "model", setting: {metric: (R,) array}}; metrics as in the
    module docstring (the first record is taken after ``record_every`` steps).
    Cost: (base_steps + len(settings) * steps) training steps, one compile per setting.
    """
    from .. import manifolds as mf
    from ..models import create

    check_positive("factor", factor, integer=True)
    check_positive("steps", steps, integer=True)
    check_positive("record_every", record_every, integer=True)
    check_positive("base_steps", base_steps, integer=True, allow_zero=True)
    if steps % record_every:
        raise InputError(f"steps={steps} must be a multiple of record_every={record_every}")
    for s in settings:
        check_choice("setting", s, ALL_SETTINGS)
    if base is None:
        extra = {"attention_dropout": 0.0} if model == "vit" else {}
        base_model = create(model, preset=preset, **{**dict(options or {}), "dropout": 0.0,
                                                     **extra})
    else:
        base_model, variables = base
        model = base_model.name
        if base_model._needs_rng:
            raise InputError("base model has dropout > 0; pass a model created with dropout=0 "
                             "(the dropout setting adds it to the wide model)")
    key = jax.random.PRNGKey(seed)
    k_data, k_init, k_base, k_run = jax.random.split(key, 4)
    x, y = _data(k_data, base_model, num_samples, input_shape) if data is None else map(
        jnp.asarray, data)
    if base is None:
        variables = base_model.init(k_init, x[:2])
    if base_steps:
        variables = _train_base(base_model, variables, x, y, base_steps, lr, batch_size, k_base)
    wide_model, wide, partition = mf.expand(base_model, variables, factor)

    result = {"step": np.arange(record_every, steps + 1, record_every), "factor": factor,
              "model": model}
    runs = {}  # model -> [settings]; "dropout" needs its own model (static dropout rate)
    for setting in settings:
        runs.setdefault("dropout" if setting == "dropout" else "plain", []).append(setting)
    manifold = mf.cloned(partition, wide["params"])
    for which, names in runs.items():
        run_model = wide_model
        if which == "dropout":
            run_model = create(model, **{**wide_model.options, "dropout": dropout})
        groups = [names] if batched else [[n] for n in names]
        for group in groups:
            starts = []
            for setting in group:
                start = wide["params"]
                if setting in ("adam_l2", "sgd_l2"):
                    start = _equitable_perturbation(partition, start, jax.random.fold_in(k_run, 7),
                                                    perturbation)
                starts.append({**wide, "params": start})
            opts = [_optimizer(n, lr, adam_lr, weight_decay, noise_sigma0, noise_decay,
                               jax.random.fold_in(k_run, 11)) for n in group]
            keys = jnp.stack([jax.random.fold_in(k_run, ALL_SETTINGS.index(n)) for n in group])
            stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *starts)
            final, recs = _run(run_model, manifold, partition, opts, stacked, keys, x, y,
                               steps, record_every, batch_size)
            for i, setting in enumerate(group):
                out = {k: np.asarray(v[i]) for k, v in recs.items()}
                if return_params:
                    out["params"] = jax.tree_util.tree_map(lambda a: np.asarray(a[i]), final)
                result[setting] = out
    return result


def _run(model, manifold, partition, opts, stacked, keys, x, y, steps, record_every,
         batch_size):
    """Train len(opts) copies (vmapped): copy i starts at stacked[i] and uses opts[i]; every
    copy carries all optimiser states and selects its own update, so one compile serves all."""
    from ..manifolds import equitable_residuals, tree_norm

    def go(v, sel, key):
        man = manifold.at(v["params"])

        def step(carry, t):
            v, states, (_, _, _, r2_min) = carry
            k = jax.random.fold_in(key, t)
            idx = jax.random.randint(k, (batch_size,), 0, x.shape[0])

            def loss(p, probes):
                out = model.apply({**v, "params": p}, x[idx], train=True, rng=k, probes=probes)
                return _xent(out.logits, y[idx]), (out.variables, out.activations)

            shapes = jax.eval_shape(lambda: model.apply(v, x[idx], train=True, rng=k).activations)
            probes = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
            (l, (new_v, acts)), (g, deltas) = jax.value_and_grad(
                loss, argnums=(0, 1), has_aux=True)(v["params"], probes)
            r2_min = jnp.minimum(r2_min, _clone_r2(model, partition, acts, deltas))
            pairs = [o.update(g, s, v["params"]) for o, s in zip(opts, states)]
            upd = pairs[0][0]
            for i, (u, _) in enumerate(pairs[1:], start=1):
                upd = jax.tree_util.tree_map(lambda a, b, i=i: jnp.where(sel == i, b, a), upd, u)
            params = optax.apply_updates(v["params"], upd)
            return ({**new_v, "params": params}, tuple(s for _, s in pairs),
                    (l, g, upd, r2_min)), None

        def chunk(carry, r):
            carry, _ = run_steps(step, carry, record_every, start=r * record_every)
            v, states, (l, g, upd, r2_min) = carry
            res = equitable_residuals(partition, v["params"])
            # one batched normal projection of (offset from the reference, gradient, update)
            trees = (jax.tree_util.tree_map(jnp.subtract, v["params"], man.reference), g, upd)
            normals = jax.vmap(man.normal)(jax.tree_util.tree_map(
                lambda *a: jnp.stack(a), *trees))
            n_off, n_g, n_u = (tree_norm(jax.tree_util.tree_map(lambda a, i=i: a[i], normals))
                               for i in range(3))
            ratio = lambda a, b: jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)  # noqa
            rec = {"distance": n_off,
                   "relative_distance": ratio(n_off, tree_norm(v["params"])),
                   "leakage": ratio(n_g, tree_norm(g)),
                   "update_leakage": ratio(n_u, tree_norm(upd)),
                   "equitable_residual": (res["row"] + res["column"]) / res["norm"],
                   "clone_r2": r2_min, "loss": l}
            return (v, states, (l, g, upd, jnp.float32(1.0))), rec

        zeros = jax.tree_util.tree_map(jnp.zeros_like, v["params"])
        carry = (v, tuple(o.init(v["params"]) for o in opts),
                 (jnp.float32(0.0), zeros, zeros, jnp.float32(1.0)))
        carry, recs = run_steps(chunk, carry, steps // record_every)  # one chunk per record
        return carry[0]["params"], recs

    sels = jnp.arange(len(opts))
    return jax.jit(jax.vmap(go))(stacked, sels, keys)


__all__ = ["invariance", "SETTINGS", "ALL_SETTINGS", "STAYS", "METRICS"]

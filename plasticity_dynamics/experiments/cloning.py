"""Cloning experiments: a base network is trained, expanded ×2 by function-preserving
cloning, and the clone is trained beside the base (Fig 2.1, B.7, B.8–B.11, B.12, B.13–B.14).
PAPER.md 5.4–5.6.

Protocol, per variant and seed (all seeds of a variant in one compiled, vmapped program):

1. Train the base model for ``base_steps`` with the variant's optimiser (noise off) and dropout.
2. ``pdx.manifolds.expand(model, variables, 2)``: every unit/channel/feature becomes two exact
   clones (ViT: heads duplicated, so the wide ViT computes exactly the base function).
3. Train the clone (fresh optimiser state, as the authors' code) and keep training the base
   (its phase-1 state, noise off) on the *same* batches for ``clone_steps``.
4. Every ``every`` steps, on a fixed class-balanced batch in eval mode: cloning R² of every
   monitored layer, forward activations and backward signals (variance ratio, mean over layers
   and both directions, PAPER.md 4), and the effective rank (mean over monitored layers) of the
   clone and of the base; plus the training loss of both, averaged over the steps in between.

Grids (``cloning-noise``'s SGD reference and σ₀ × λ cells): :func:`clone_grid` trains variants
that share the base phase as vmapped lanes of one program, their noise values traced scalars of
:func:`pdx.optim.lane_optimizer`; the base phase and the base run beside the clones are computed
once per seed. :func:`clone_run` is its one-variant case.

R² is measured in eval mode: for dropout runs it asks whether the *weights* left the cloning
manifold, not whether this step's masks differ.

Variants: ``sgd`` (SGD, lr 0.01 at paper scale, no momentum as the paper's text; the authors'
code used momentum 0.9: pass ``momentum``), ``noisy`` (noisy SGD σ₀ = 0.01, λ = 0.999), ``dropout``
(p = 0.1), ``adam``. Scales: ``paper`` (CIFAR-10 from ``--data-dir``, the paper's models, 20 +
500 epochs ≈ 7,800 + 195,000 steps, 5 seeds), ``small`` (MLP on mnist1d, CNN/ResNet/ViT on digits,
CPU presets), ``smoke`` (MLP, a few hundred steps), ``medium`` (``cloning-families`` only: the
small presets on a task the base network has *not* solved, the training set relabelled uniformly
at random with a fixed seed, :func:`random_label_dataset`).

Why ``medium`` relabels: at small scale the image nets fit digits in their base phase, so the
clone starts at a minimum where noise and dropout have little to gain (the paper's base nets
sit at 20 of 520 epochs of CIFAR-10, far from fitted). Memorising random labels keeps the
loss high for the whole run, which is the paper's regime, with the same steps and optimisers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..plotting.run import band as _band
from .registry import register

_SCALE = {
    "smoke": dict(base_steps=150, clone_steps=300, every=30, seeds=2, mbs=200, batch=64, lr=0.05),
    "small": dict(base_steps=600, clone_steps=3000, every=150, seeds=3, mbs=300, batch=128, lr=0.05),
    "paper": dict(base_steps=7820, clone_steps=195_500, every=3910, seeds=5, mbs=500, batch=128, lr=0.01),
}
_SCALE["medium"] = dict(_SCALE["small"])  # the small presets, on random labels (see the module docstring)
MEDIUM_LABEL_SEED = 1234
# Small scale, per family. Measured on the 2-core CPU (3 seeds, batch 128, one clone step plus
# one base step): MLP a few ms, ViT 65 ms, CNN 150 ms, ResNet-18 500 ms; the image nets get shorter
# runs (batch 64, CNN/ResNet 2 seeds) so that each figure stays in minutes.
_SMALL_FAMILY = {
    "cnn": dict(base_steps=300, clone_steps=900, every=75, seeds=2, batch=64),
    "resnet18": dict(base_steps=150, clone_steps=450, every=50, seeds=2, batch=64),
    "vit": dict(base_steps=300, clone_steps=1200, every=100, batch=64),
}


def clone_settings(family: str, scale: str) -> dict:
    """Steps, seeds, batch and lr of a cloning run of ``family`` at ``scale`` (see ``_SCALE``)."""
    extra = _SMALL_FAMILY.get(family, {}) if scale in ("small", "medium") else {}
    return {**_SCALE[scale], **extra}


@dataclass(frozen=True)
class Variant:
    """One cloned-training setting. ``noise`` = (σ₀, λ) for noisy SGD; ``optimizer`` sgd|adam."""

    name: str
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.0
    dropout: float = 0.0
    noise: tuple | None = None


SGD, NOISY, DROPOUT = Variant("SGD"), Variant("SGD + noise", noise=(0.01, 0.999)), Variant("SGD + dropout", dropout=0.1)


def random_label_dataset(ds, seed: int = MEDIUM_LABEL_SEED):
    """``ds`` with every training label replaced by a uniform random class (seeded; the test split
    is kept and unused): a memorisation task no base network here solves in its base phase."""
    import dataclasses

    y = np.random.default_rng([seed, ds.num_classes]).integers(0, ds.num_classes, len(ds.y_train)).astype(np.int32)
    return dataclasses.replace(ds, y_train=y, name=f"{ds.name}-random-labels")


def _family_setup(family: str, scale: str, data_dir, dropout: float):
    from .. import data as pdata
    from .. import models as pmodels

    if scale == "paper":
        ds = pdata.load("cifar10", data_dir=data_dir)
        preset = "paper"
    else:
        ds = pdata.load("mnist1d" if family == "mlp" else "digits")
        preset = "small"
    if scale == "medium":
        ds = random_label_dataset(ds)
    opts = {"dropout": dropout, "num_outputs": ds.num_classes, "norm": "layer" if family == "vit" else "batch"}
    if family == "vit":
        opts["attention_dropout"] = dropout
    model = pmodels.create(family, preset=preset, **opts)
    return ds, model


def _metric_batch(ds, size: int, seed: int = 0):
    """A fixed class-balanced batch of the training set (NumPy)."""
    rng = np.random.default_rng(seed)
    per = max(1, size // ds.num_classes)
    idx = np.concatenate([rng.permutation(np.flatnonzero(ds.y_train == c))[:per] for c in range(ds.num_classes)])
    return ds.x_train[idx], ds.y_train[idx]


def _optimizer(v: Variant, lr: float, with_noise: bool):
    from ..optim import make_optimizer

    if v.optimizer == "adam":
        return make_optimizer("adam", v.lr or lr / 10)
    if v.noise is not None and with_noise:
        return make_optimizer("noisy_sgd", v.lr or lr, momentum=v.momentum, noise_sigma0=v.noise[0],
                              noise_decay=v.noise[1])
    return make_optimizer("sgd", v.lr or lr, momentum=v.momentum)


def _clone_lane(v: Variant, lr: float, noisy: bool) -> tuple[str, dict]:
    """(optimiser name, lane values of :func:`pdx.optim.lane_optimizer`) of a variant's clone
    phase. In a grid with noisy variants (``noisy``), a noise-free SGD variant is noisy SGD with
    σ₀ = 0, λ = 1: g + 0·ξ = g, the same update to the bit."""
    from ..optim import lane_hypers

    if v.optimizer == "adam":
        return "adam", lane_hypers("adam", v.lr or lr / 10)
    if noisy:
        s0, lam = v.noise if v.noise is not None else (0.0, 1.0)
        return "noisy_sgd", lane_hypers("noisy_sgd", v.lr or lr, momentum=v.momentum, noise_sigma0=s0,
                                        noise_decay=lam)
    return "sgd", lane_hypers("sgd", v.lr or lr, momentum=v.momentum)


def _partitions(model, partition) -> dict:
    return {layer: partition.groups[partition.group_of(layer)] for layer in model.layer_kinds}


def clone_run(family: str, variant: Variant, scale: str, data_dir=None, seed0: int = 0) -> dict:
    """Train base, expand ×2, train clone and base side by side. Returns NumPy series:
    ``step`` (R,), and (seeds, R) arrays ``r2``, ``r2_fwd``, ``r2_bwd``, ``loss_clone``,
    ``loss_base``, ``rank_clone``, ``rank_base``; scalars ``clone_start_step`` and
    ``max_output_gap`` (largest |clone − base| logit difference right after expansion).
    The one-variant case of :func:`clone_grid`."""
    return clone_grid(family, [variant], scale, data_dir, seed0)[0]


def clone_grid(family: str, variants: list, scale: str, data_dir=None, seed0: int = 0) -> list[dict]:
    """:func:`clone_run` of several variants that share the base phase, as the vmapped *lanes*
    of one program: lane (variant i, seed j) trains variant i's clone from seed j's expanded
    base, its optimiser values (lr, momentum, noise σ₀ and λ) traced scalars of
    :func:`pdx.optim.lane_optimizer`; the base phase and the base run beside the clones are
    computed once per seed and shared by every variant (they are the same for all: SGD with
    the variant's lr and momentum, no noise, on the same batches with the same keys).

    The variants must agree on everything but the noise (σ₀, λ): optimiser, lr, momentum and
    dropout (InputError otherwise). A noise-free variant in a grid with noisy ones runs as
    σ₀ = 0, λ = 1 (bit-identical to SGD). Returns one :func:`clone_run` result per variant.
    Cost: one base phase, then (variants + 1) × seeds networks trained per step; one compile.
    """
    from ..errors import InputError
    from ..loop import block_length, run_blocks, run_steps, straight_line_preferred
    from ..manifolds import expand
    from ..metrics import make_unit_metrics_fn
    from ..optim import lane_optimizer, reseed_noise
    from ..training.step import make_step

    variants = list(variants)
    if not variants:
        raise InputError("clone_grid needs at least one variant")
    shared = {(v.optimizer, v.lr, v.momentum, v.dropout) for v in variants}
    if len(shared) > 1:
        raise InputError(f"clone_grid: variants differ in optimiser, lr, momentum or dropout ({sorted(map(str, shared))}); "
                         "a grid's lanes may differ only in the noise (σ₀, λ)")
    variant = variants[0]
    s = clone_settings(family, scale)
    ds, model = _family_setup(family, scale, data_dir, variant.dropout)
    n_seeds, batch, lr = s["seeds"], s["batch"], s["lr"]
    xs, ys = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    mx, my = (jnp.asarray(a) for a in _metric_batch(ds, s["mbs"]))
    mask = jnp.ones((ds.num_classes,), bool)
    n = xs.shape[0]
    opt_base = _optimizer(variant, lr, with_noise=False)
    noisy = any(v.noise is not None for v in variants) and variant.optimizer != "adam"
    lanes = [_clone_lane(v, lr, noisy) for v in variants]
    name = lanes[0][0]
    use_momentum = name != "adam" and variant.momentum > 0
    opt_init = lane_optimizer(name, lanes[0][1], use_momentum=use_momentum, use_weight_decay=False)

    def batch_at(seed, step):
        k = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 11), step)
        idx = jax.random.randint(k, (batch,), 0, n)
        return xs[idx], ys[idx], jax.random.fold_in(k, 1)

    def batches(seed, fold=None):  # step t's (x, y, mask, key); the base run's key folded with 2
        def at(t):
            x, y, k = batch_at(seed, t)
            return x, y, mask, (k if fold is None else jax.random.fold_in(k, fold))
        return at

    # conv models on XLA:CPU train in straight-line blocks driven from the host (loop.py)
    straight = straight_line_preferred(lambda v: model.apply(v, xs[:2]).logits,
                                       jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), xs[:2])))
    seeds = jnp.arange(seed0, seed0 + n_seeds)

    def phase1_init(seed):
        variables = model.init(jax.random.PRNGKey(seed), xs[:2])
        return variables, opt_base.init(variables["params"])

    b1 = block_length(s["base_steps"]) if straight else s["base_steps"]
    phase1 = jax.jit(lambda carry, t0: jax.vmap(
        lambda c, sd: run_steps(make_step(model, opt_base, "xent", batches(sd)), c, b1, start=t0, unroll=straight)
    )(carry, seeds))
    base_vars, base_opt = run_blocks(phase1, jax.jit(jax.vmap(phase1_init))(seeds), s["base_steps"], b1)[0]

    one = jax.tree_util.tree_map(lambda a: a[0], base_vars)
    wide_model, _, partition = expand(model, one, 2)
    wide_vars = _expand_seeds(model, base_vars)
    gap = float(jnp.max(jnp.abs(wide_model.apply(jax.tree_util.tree_map(lambda a: a[0], wide_vars), mx).logits
                                - model.apply(one, mx).logits)))
    clone_opt = jax.vmap(lambda v, k: reseed_noise(opt_init.init(v["params"]), k))(
        wide_vars, jax.vmap(lambda sd: jax.random.fold_in(jax.random.PRNGKey(sd), 99))(seeds))

    # lane = (variant, seed), variant-major: every variant starts from the same expanded bases
    n_var = len(variants)
    tile = partial(jax.tree_util.tree_map, lambda a: jnp.concatenate([a] * n_var))
    lane_seeds = jnp.tile(seeds, n_var)
    hypers = {k: jnp.repeat(jnp.asarray([h[k] for _, h in lanes], jnp.float32), n_seeds) for k in lanes[0][1]}

    parts = _partitions(wide_model, partition)
    m_wide = make_unit_metrics_fn(wide_model, loss="xent", partitions=parts, jit=False)
    m_base = make_unit_metrics_fn(model, loss="xent", jit=False)
    every = s["every"]

    block = block_length(every) if straight else every

    def clone_steps(carry, seed, h, t0):
        opt = lane_optimizer(name, h, use_momentum=use_momentum, use_weight_decay=False)
        carry, (lw, _) = run_steps(make_step(wide_model, opt, "xent", batches(seed)), carry, block,
                                   start=t0, unroll=straight)
        return carry, lw

    def base_steps(carry, seed, t0):  # the base beside the clones, on the same batches
        carry, (lb, _) = run_steps(make_step(model, opt_base, "xent", batches(seed, fold=2)), carry, block,
                                   start=t0, unroll=straight)
        return carry, lb

    @jax.jit
    def run_block(carry, t0):  # block steps of every lane; losses (block, lanes)
        clones, base = carry
        clones, lw = jax.vmap(clone_steps, in_axes=(0, 0, 0, None))(clones, lane_seeds, hypers, t0)
        base, lb = jax.vmap(base_steps, in_axes=(0, 0, None))(base, seeds, t0)
        return (clones, base), (lw.T, lb.T)

    measure = jax.jit(lambda wv, bv: (jax.vmap(lambda v: m_wide(v, mx, my, mask))(wv),
                                      jax.vmap(lambda v: m_base(v, mx, my, mask))(bv)))

    def record(wv, bv):
        mw, mb = jax.device_get(measure(wv, bv))
        fwd = np.mean([np.asarray(v) for v in mw["clone_r2_fwd"].values()], axis=0)
        bwd = np.mean([np.asarray(v) for v in mw["clone_r2_bwd"].values()], axis=0)
        rc = np.mean([np.asarray(v) for v in mw["effective_rank"].values()], axis=0)
        rb = np.tile(np.mean([np.asarray(v) for v in mb["effective_rank"].values()], axis=0), n_var)
        return fwd, bwd, rc, rb

    clones, base = (tile(wide_vars), tile(clone_opt)), (base_vars, base_opt)
    fwd0, bwd0, rc0, rb0 = record(clones[0], base[0])
    steps, cols = [s["base_steps"]], {k: [v] for k, v in
                                     dict(r2_fwd=fwd0, r2_bwd=bwd0, rank_clone=rc0, rank_base=rb0).items()}
    nan = np.full(n_var * n_seeds, np.nan)
    cols["loss_clone"], cols["loss_base"] = [nan], [nan]
    for start in range(0, s["clone_steps"], every):
        (clones, base), (lw, lb) = run_blocks(run_block, (clones, base), every, block, start=s["base_steps"] + start)
        lw, lb = lw.mean(0), lb.mean(0)
        fwd, bwd, rc, rb = record(clones[0], base[0])
        steps.append(s["base_steps"] + start + every)
        for k, v in dict(r2_fwd=fwd, r2_bwd=bwd, rank_clone=rc, rank_base=rb,
                         loss_clone=np.asarray(lw), loss_base=np.tile(np.asarray(lb), n_var)).items():
            cols[k].append(v)
    lanes_out = {k: np.stack(v, axis=1) for k, v in cols.items()}  # (lanes, R)
    results = []
    for i in range(n_var):
        out = {k: v[i * n_seeds:(i + 1) * n_seeds] for k, v in lanes_out.items()}
        out["r2"] = (out["r2_fwd"] + out["r2_bwd"]) / 2
        out["step"] = np.asarray(steps)
        out["clone_start_step"] = s["base_steps"]
        out["max_output_gap"] = gap
        results.append(out)
    return results


def _expand_seeds(model, base_vars):
    """Expand every seed's variables (expand works on one network; loop over the seed axis)."""
    from ..manifolds import expand

    n = jax.tree_util.tree_leaves(base_vars)[0].shape[0]
    wides = [expand(model, jax.tree_util.tree_map(lambda a: a[i], base_vars), 2)[1] for i in range(n)]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *wides)


# ------------------------------------------------------------------------------ figures




def _panels(axes, runs: dict, clone_start: int, base_dotted: bool = True):
    """R², loss (clone solid, base dotted) and effective rank, one curve per variant."""
    for i, (name, r) in enumerate(runs.items()):
        c = f"C{i}"
        _band(axes[0], r["step"], r["r2"], name, c)
        _band(axes[1], r["step"][1:], r["loss_clone"][:, 1:], name, c)
        if base_dotted:
            _band(axes[1], r["step"][1:], r["loss_base"][:, 1:], None, c, ":")
        _band(axes[2], r["step"], r["rank_clone"], name, c)
        if base_dotted:
            _band(axes[2], r["step"], r["rank_base"], None, c, ":")
    for ax, t in zip(axes, ("cloning R²", "training loss (dotted: base)", "effective rank (dotted: base)")):
        ax.axvline(clone_start, color="k", linestyle="--", linewidth=0.8)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)


def _end(r, key):
    return float(np.nanmean(r[key][:, -1]))


def _summary(runs: dict) -> dict:
    return {name: {"r2_end": _end(r, "r2"), "r2_min": float(np.nanmin(r["r2"].mean(0))),
                   "loss_clone_end": _end(r, "loss_clone"), "loss_base_end": _end(r, "loss_base"),
                   "rank_clone_end": _end(r, "rank_clone"), "rank_base_end": _end(r, "rank_base"),
                   "max_output_gap_at_cloning": r["max_output_gap"]} for name, r in runs.items()}


def _trapped_checks(res: dict, prefix: str = "") -> list:
    checks = []
    for name, r in res.items():
        stays = not any(t in name for t in ("noise", "dropout"))
        if stays:
            checks.append((f"{prefix}{name}: R² stays 1 (trapped)", f"min R² {r['r2_min']:.6f}",
                           r["r2_min"] > 1 - 1e-5))
        else:
            checks.append((f"{prefix}{name}: R² falls below 0.99 (escapes)", f"end R² {r['r2_end']:.4f}",
                           r["r2_end"] < 0.99))
    return checks


def _slow_escape_notes(triples) -> list:
    """A note for every escaping variant (noise/dropout) whose end R² stayed above 0.99: how far it
    left 1 against the trapped reference run, and how small the clone's loss was.
    ``triples`` = [(label, summary, reference summary)]."""
    notes = []
    for label, r, ref in triples:
        if r["r2_end"] >= 0.99:
            notes.append(f"{label}: R² left 1 by only {1 - r['r2_end']:.1e} (trapped reference: "
                         f"{1 - ref['r2_min']:.1e}). The clone's training loss is {r['loss_clone_end']:.4f}: with the "
                         "data already fitted, the gradient and curvature that would amplify the asymmetry are "
                         "nearly zero, so the clones separate slowly; the paper's runs are 195k steps on CIFAR-10.")
    return notes


def _families(scale):
    return ("mlp",) if scale == "smoke" else ("mlp", "cnn", "resnet18", "vit")


@register("cloning", "Fig 2.1",
          "Cloned MLP: R², training loss against the base, and effective rank for SGD, noisy SGD and dropout.")
def run_cloning(scale: str, out_dir: Path, data_dir=None, progress=True) -> dict:
    import matplotlib.pyplot as plt

    from ..plotting.run import save_figure

    runs = {v.name: clone_run("mlp", v, scale, data_dir) for v in _progress((SGD, NOISY, DROPOUT), progress)}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    _panels(axes, runs, clone_settings("mlp", scale)["base_steps"])
    fig.suptitle("Fig 2.1: cloned MLP (dashed: cloning)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_dir / "figures" / "fig2_1")
    res = _summary(runs)
    checks = _trapped_checks(res)
    checks.append(("noisy clone reaches a lower loss than the SGD clone",
                   f"{res['SGD + noise']['loss_clone_end']:.3f} vs {res['SGD']['loss_clone_end']:.3f}",
                   res["SGD + noise"]["loss_clone_end"] < res["SGD"]["loss_clone_end"]))
    checks.append(("noisy clone has a higher effective rank than the SGD clone",
                   f"{res['SGD + noise']['rank_clone_end']:.1f} vs {res['SGD']['rank_clone_end']:.1f}",
                   res["SGD + noise"]["rank_clone_end"] > res["SGD"]["rank_clone_end"]))
    notes = _notes(scale) + _slow_escape_notes((n, r, res["SGD"]) for n, r in res.items() if n != "SGD")
    return {"results": res, "checks": checks, "notes": notes}


@register("cloning-families", "Fig B.7",
          "Cloning in all four families (BN; LN for the ViT): R², loss and effective rank for SGD, noise, dropout.",
          scales=("smoke", "small", "medium", "paper"))
def run_cloning_families(scale: str, out_dir: Path, data_dir=None, progress=True) -> dict:
    import matplotlib.pyplot as plt

    from ..plotting.run import save_figure

    fams = _families(scale)
    fig, axes = plt.subplots(len(fams), 3, figsize=(13, 3.2 * len(fams)), squeeze=False)
    results, checks = {}, []
    for i, fam in enumerate(_progress(fams, progress)):
        runs = {v.name: clone_run(fam, v, scale, data_dir) for v in (SGD, NOISY, DROPOUT)}
        _panels(axes[i], runs, clone_settings(fam, scale)["base_steps"])
        axes[i][0].set_ylabel(fam)
        results[fam] = _summary(runs)
        checks += _trapped_checks(results[fam], f"{fam} ")
        # B.7's loss panels: an escaping clone keeps learning where the SGD clone is capped by its base
        # (the question medium scale asks on random labels, which no base fits)
        for name in (NOISY.name, DROPOUT.name):
            ends = results[fam][name]["loss_clone_end"], results[fam][SGD.name]["loss_clone_end"]
            checks.append((f"{fam} {name}: the clone's loss ends below the SGD clone's",
                           f"{ends[0]:.3f} vs {ends[1]:.3f}", ends[0] < ends[1]))
    fig.suptitle("Fig B.7: cloning in every family", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_dir / "figures" / "figB_7")
    notes = _notes(scale, fams) + _slow_escape_notes(
        (f"{fam} {n}", r, results[fam]["SGD"]) for fam in fams for n, r in results[fam].items() if n != "SGD")
    return {"results": results, "checks": checks, "notes": notes}


@register("cloning-noise", "Fig B.8–B.11",
          "Noisy SGD after cloning: loss for σ₀ × λ sweeps (MLP and ViT).")
def run_cloning_noise(scale: str, out_dir: Path, data_dir=None, progress=True) -> dict:
    import matplotlib.pyplot as plt

    from ..plotting.run import save_figure

    # The paper's grid (3 σ₀ × 5 λ) at paper scale; a 2 × 3 corner of it at small scale (CPU minutes).
    sigmas = {"smoke": (0.01, 0.05), "small": (0.01, 0.05), "paper": (0.01, 0.02, 0.05)}[scale]
    lambdas = {"smoke": (0.0, 0.999), "small": (0.0, 0.99, 1.0), "paper": (0.0, 0.9, 0.99, 0.999, 1.0)}[scale]
    fams = ("mlp",) if scale == "smoke" else ("mlp", "vit")
    results, checks = {}, []
    for fam in _progress(fams, progress):
        # the SGD reference and every σ₀ × λ cell: lanes of one program, one shared base phase
        cells = [(s0, lam) for s0 in sigmas for lam in lambdas]
        base, *runs = clone_grid(fam, [SGD] + [Variant(f"σ₀={s0}, λ={lam}", noise=(s0, lam)) for s0, lam in cells],
                                 scale, data_dir)
        grid = dict(zip(cells, runs))
        for by, other in (("lambda", sigmas), ("sigma", lambdas)):
            panels = lambdas if by == "lambda" else sigmas
            fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
            for j, p in enumerate(panels):
                ax = axes[0][j]
                for k, o in enumerate(other):
                    r = grid[(o, p)] if by == "lambda" else grid[(p, o)]
                    _band(ax, r["step"][1:], r["loss_clone"][:, 1:], f"{'σ₀' if by == 'lambda' else 'λ'}={o}", f"C{k}")
                _band(ax, base["step"][1:], base["loss_base"][:, 1:], "base", "k", ":")
                _band(ax, base["step"][1:], base["loss_clone"][:, 1:], "SGD clone", "grey")
                ax.set_title(f"{fam}: {'λ' if by == 'lambda' else 'σ₀'} = {p}", fontsize=9)
                ax.set_xlabel("step")
                ax.legend(fontsize=6)
            fig.suptitle(f"noisy-SGD clone loss ({fam}), one panel per {'λ' if by == 'lambda' else 'σ₀'}", fontsize=10)
            fig.tight_layout()
            number = {("mlp", "lambda"): 8, ("mlp", "sigma"): 9, ("vit", "lambda"): 10, ("vit", "sigma"): 11}[(fam, by)]
            save_figure(fig, out_dir / "figures" / f"figB_{number}")
        results[fam] = {f"{s0},{lam}": {"loss_clone_end": _end(r, "loss_clone"), "r2_end": _end(r, "r2")}
                        for (s0, lam), r in grid.items()}
        results[fam]["SGD"] = {"loss_clone_end": _end(base, "loss_clone"), "loss_base_end": _end(base, "loss_base"),
                               "r2_min": float(np.nanmin(base["r2"].mean(0)))}
        single = results[fam][f"{sigmas[0]},0.0"]
        checks.append((f"{fam}: a single noisy step (λ = 0) breaks the clones", f"end R² {single['r2_end']:.4f}",
                       single["r2_end"] < 0.99))
        sgd_loss = results[fam]["SGD"]["loss_clone_end"]
        if fam == "mlp":  # B.8: any decaying noise escapes to a lower loss (the ViT's all reach ≈0, B.10)
            decaying = [results[fam][f"{s0},{lam}"]["loss_clone_end"] for s0 in sigmas for lam in lambdas if lam < 1]
            checks.append((f"{fam}: every decaying noise (λ < 1) ends below the SGD clone's loss",
                           f"worst {max(decaying):.3f} vs SGD clone {sgd_loss:.3f}", max(decaying) < sgd_loss))
        if 1.0 in lambdas:  # B.9 / B.11: constant noise hurts
            big = sigmas[-1]
            const, once = results[fam][f"{big},1.0"]["loss_clone_end"], results[fam][f"{big},0.0"]["loss_clone_end"]
            checks.append((f"{fam}: constant noise (λ = 1, σ₀ = {big}) ends above a single noisy step (λ = 0)",
                           f"{const:.3f} vs {once:.3f}", const > once))
    notes = _notes(scale, fams) + _slow_escape_notes(
        (f"{fam} σ₀={sigmas[0]}, λ=0", results[fam][f"{sigmas[0]},0.0"], results[fam]["SGD"]) for fam in fams)
    return {"results": results, "checks": checks, "notes": notes}


@register("cloning-dropout", "Fig B.12",
          "Dropout p ∈ {0, 0.1, 0.2} after cloning: clone loss (solid) against the base (dotted).")
def run_cloning_dropout(scale: str, out_dir: Path, data_dir=None, progress=True) -> dict:
    import matplotlib.pyplot as plt

    from ..plotting.run import save_figure

    fams = ("mlp",) if scale == "smoke" else ("mlp", "cnn", "vit")
    fig, axes = plt.subplots(1, len(fams), figsize=(4.5 * len(fams), 3.3), squeeze=False)
    results, checks = {}, []
    for i, fam in enumerate(fams):
        runs = {f"p={p}": clone_run(fam, Variant(f"p={p}", dropout=p), scale, data_dir)
                for p in _progress((0.0, 0.1, 0.2), progress)}
        for j, (name, r) in enumerate(runs.items()):
            _band(axes[0][i], r["step"][1:], r["loss_clone"][:, 1:], name, f"C{j}")
            _band(axes[0][i], r["step"][1:], r["loss_base"][:, 1:], None, f"C{j}", ":")
        axes[0][i].set_title(f"{fam}", fontsize=9)
        axes[0][i].legend(fontsize=7)
        results[fam] = _summary(runs)
        checks.append((f"{fam}: dropout breaks the clones", f"end R² (p=0.1) {results[fam]['p=0.1']['r2_end']:.4f}",
                       results[fam]["p=0.1"]["r2_end"] < 0.99))
    fig.suptitle("Fig B.12: dropout after cloning (dotted: base)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_dir / "figures" / "figB_12")
    notes = _notes(scale, fams) + _slow_escape_notes(
        (f"{fam} p=0.1", results[fam]["p=0.1"], results[fam]["p=0.0"]) for fam in fams)
    return {"results": results, "checks": checks, "notes": notes}


@register("cloning-optimizers", "Fig B.13–B.14",
          "SGD against Adam after cloning (MLP and ViT): loss, R², effective rank. Both stay trapped.")
def run_cloning_optimizers(scale: str, out_dir: Path, data_dir=None, progress=True) -> dict:
    import matplotlib.pyplot as plt

    from ..plotting.run import save_figure

    fams = ("mlp",) if scale == "smoke" else ("mlp", "vit")
    fig, axes = plt.subplots(len(fams), 3, figsize=(13, 3.3 * len(fams)), squeeze=False)
    results, checks = {}, []
    for i, fam in enumerate(fams):
        runs = {v.name: clone_run(fam, v, scale, data_dir) for v in _progress((SGD, Variant("Adam", "adam")), progress)}
        _panels(axes[i], runs, clone_settings(fam, scale)["base_steps"])
        axes[i][0].set_ylabel(fam)
        results[fam] = _summary(runs)
        checks += _trapped_checks(results[fam], f"{fam} ")
    fig.suptitle("Fig B.13 (MLP) / B.14 (ViT): SGD vs Adam after cloning", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_dir / "figures" / "figB_13_14")
    return {"results": results, "checks": checks, "notes": _notes(scale, fams)}


def _notes(scale, families=("mlp",)):
    lines = []
    for fam in families:
        s = clone_settings(fam, scale)
        lines.append(f"{fam}: {s['base_steps']} base steps, then {s['clone_steps']} steps of clone and base side by "
                     f"side; {s['seeds']} seeds; batch {s['batch']}; SGD lr {s['lr']} (Adam lr {s['lr'] / 10}); "
                     f"records every {s['every']} steps on a fixed class-balanced batch of {s['mbs']} (eval mode).")
    if scale == "medium":
        lines.append("Medium scale = the small presets on a task the base has not solved: every training label "
                     f"replaced by a uniform random class (seed {MEDIUM_LABEL_SEED}), so the clone starts far from "
                     "a minimum, as the paper's base nets (20 of 520 CIFAR-10 epochs) do.")
    return lines + ["R² = mean over monitored layers and both directions of the variance-ratio R² (PAPER.md 4); "
                    "bands are the std over seeds."]


def _progress(items, enabled):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="variants", leave=False)

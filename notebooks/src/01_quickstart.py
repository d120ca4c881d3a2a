# %% [markdown]
# # 01 · Quickstart: a continual run, its units, its manifolds, its curvature
#
# **Question.** Train a small network on a stream of tasks. What do its units look like at the
# end, does the network sit on a loss-of-plasticity (LoP) manifold — frozen units $M_F$ or cloned
# units $M_D$ (Theorem 2.1 of arXiv 2510.00304) — and is that manifold stable?
#
# The notebook walks once through the layers of `plasticity_dynamics`:
# model → training → unit metrics → manifold detection → normal-space spectrum.
# It runs in well under a minute on a laptop CPU. The later notebooks take each step further:
# `02` cloning manifolds, `03` frozen units and rank, `04` continual loss of plasticity,
# `05` the curvature tools.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import plasticity_dynamics as pdx

T0 = time.perf_counter()
print("plasticity_dynamics", pdx.__version__, "| jax", jax.__version__, "on", jax.default_backend())

# %% [markdown]
# ## 1. A model is a pair of pure functions
#
# `pdx.models.create` returns a `Model` with `init(key, x)` and
# `apply(variables, x, ...) -> Output`. Besides the logits, the output carries the monitored
# activations and their pre-activations, which is all the unit metrics and the manifold code
# need. The `tiny` preset is an MLP with two hidden layers of 16 ReLU units; we switch off
# normalisation and dropout.

# %%
model = pdx.models.create("mlp", preset="tiny", norm="none", dropout=0.0)
x = jnp.zeros((8, 40))  # MNIST-1D signals have 40 samples
variables = model.init(jax.random.PRNGKey(0), x)
out = model.apply(variables, x)
print("options:", model.options)
print("logits:", out.logits.shape)
print("activations:", {k: v.shape for k, v in out.activations.items()})
print("params:", jax.tree_util.tree_map(jnp.shape, variables["params"]))

# %% [markdown]
# ## 2. A short continual run
#
# A `Config` describes a run; `pdx.training.train` compiles the whole stream (all seeds vmapped,
# steps in `lax.scan`) and records every unit metric on a fixed, class-balanced batch of the
# current task. Here: MNIST-1D split into three tasks of two classes, 100 Adam steps per task,
# one seed.

# %%
config = pdx.training.Config().with_overrides({
    "model.name": "mlp", "model.preset": "tiny", "model.norm": "none", "model.dropout": 0.0,
    "data.name": "mnist1d",
    "tasks.kind": "class_split", "tasks.classes_per_task": 2, "tasks.num_tasks": 3,
    "tasks.metric_batch_size": 200,
    "train.steps_per_task": 100, "train.batch_size": 64,
    "optim.name": "adam", "optim.lr": 1e-2,
    "record.every": 25, "seeds": 1,
})
run = pdx.training.train(config, progress=False)
model = run.components.model
layers = list(model.layer_kinds)
switches = [t["first_step"] for t in run.summary["schedule"][1:]]
print(f"{run.summary['steps']} steps, {len(run.rows)} metric rows, "
      f"{run.summary['wall_time_s']:.1f} s (compilation included)")

DEAD = "dead_frac@1e-07,0.95"
fig, axes = plt.subplots(1, 3, figsize=(11, 2.8))
steps, acc = run.metric("accuracy")[0]
axes[0].plot(steps, acc, "o-", ms=3)
axes[0].set_title("online accuracy (current task)")
for layer in layers:
    axes[1].plot(*run.metric(DEAD, layer)[0], "o-", ms=3, label=layer)
    axes[2].plot(*run.metric("effective_rank", layer)[0], "o-", ms=3, label=layer)
axes[1].set_title("dead fraction")
axes[2].set_title("effective rank")
axes[2].legend(fontsize=7)
for ax in axes:
    ax.set_xlabel("step")
    for s in switches:
        ax.axvline(s, color="k", lw=0.6, ls="--")
fig.tight_layout()

task_of = np.searchsorted(switches, steps, side="left")  # a record at a switch closes the task
for t in range(config.tasks.num_tasks):
    a = acc[task_of == t]
    print(f"task {t}: online accuracy {a[0]:.3f} (first record) -> {a[-1]:.3f} (last record)")
climbs = [acc[task_of == t][-1] > acc[task_of == t][0] for t in range(config.tasks.num_tasks)]
print("accuracy climbs within every task:", all(climbs))
# what this section demonstrates, asserted: every task is learnt (above the 2-class chance level at
# its last record, and better than at its first record)
assert all(climbs), climbs
assert all(acc[task_of == t][-1] > 0.5 for t in range(config.tasks.num_tasks)), acc

# %% [markdown]
# **What it shows.** Each task starts from a zeroed output layer on two new classes. The online
# accuracy (mean over the steps since the previous record) is printed at the first and last record
# of every task, with whether it climbed within each task; how low it restarts depends on how well
# the features learned so far separate the new pair of classes. The dead fraction (units with
# $|h| < 10^{-7}$ on more than 95 % of the metric batch) and the effective rank are tracked per layer
# at every record. Three short tasks are far too few to see plasticity degrade: notebook `04` runs
# longer streams.

# %% [markdown]
# ## 3. Unit metrics of the final network
#
# `pdx.metrics.unit_metrics` runs one forward and one backward pass and returns every
# diagnostic per layer. Metric names carry their thresholds (`dead_frac@1e-07,0.95`), so
# variants never collide; `pdx.metrics.describe_metrics()` documents each name.

# %%
final = jax.tree_util.tree_map(lambda a: a[0], run.final_state["variables"])  # seed axis first
stream = run.components.stream
mx, my, mmask = stream.metric_batch(stream.num_tasks - 1)  # fixed batch of the last task
metrics = pdx.metrics.unit_metrics(model, final, (mx, my), class_mask=mmask)
shown = [DEAD, "dormant_frac@0.025", "frozen_frac@0.01,0.99", "duplicate_frac@0.95",
         "effective_rank", "stable_rank", "srank@0.99"]
print(f"{'metric':<24}" + "".join(f"{layer:>12}" for layer in layers))
for name in shown:
    print(f"{name:<24}" + "".join(f"{metrics[name][layer]:12.3f}" for layer in layers))
print(f"... {len(metrics)} metrics in all, e.g.:")
print("\n".join(pdx.metrics.describe_metrics().splitlines()[:3]))
# fractions are fractions, and an effective rank lies between 1 and the layer's width
widths = model.options["widths"]
assert all(0.0 <= metrics[name][layer] <= 1.0 for name in shown if "_frac@" in name for layer in layers)
assert all(1.0 <= metrics["effective_rank"][layer] <= w for layer, w in zip(layers, widths))

# %% [markdown]
# ## 4. Manifold detection
#
# `pdx.manifolds.detect` looks for frozen units ($f'(z) = 0$ on the batch: their incoming weights
# get no gradient) and for clone clusters (units with identical activations), and returns both
# manifolds with the evidence. With the defaults a unit is frozen only if its derivative vanishes
# on *every* sample, as Theorem 2.1 requires; `frac=0.95` relaxes this to the metric's 95 %.
#
# A trained network rarely holds exact clones, so we also make some: `pdx.manifolds.expand`
# doubles every hidden layer by function-preserving cloning (each unit becomes two copies with
# halved outgoing weights). Detection must find the planted pairs.

# %%
strict = pdx.manifolds.detect(model, final, mx)
loose = pdx.manifolds.detect(model, final, mx, frac=0.95)
print("frozen units, f'=0 on every sample:", {k: v.tolist() for k, v in strict.frozen_units.items()})
print("frozen units, f'=0 on 95% of them: ", {k: v.tolist() for k, v in loose.frozen_units.items()})
print("clone clusters in the trained net: ", {g: len(c["clusters"]) for g, c in strict.summary()["clones"].items()})

wide_model, wide, partition = pdx.manifolds.expand(model, final, 2)
gap = jnp.max(jnp.abs(wide_model.apply(wide, mx).logits - model.apply(final, mx).logits))
found = pdx.manifolds.detect(wide_model, wide, mx)
print(f"\nexpanded x2: widths {wide_model.options['widths']}, max |logit difference| {float(gap):.1e}")
for g, c in found.summary()["clones"].items():
    sizes = sorted({len(b) for b in c["clusters"]})
    print(f"  {g}: {len(c['clusters'])} clusters of sizes {sizes}, clone R^2 {c['r2']}")
print(" ", found.cloned, "| frozen:", found.frozen)
# expansion preserves the function; relaxing frac only adds units; the planted pairs are found as pairs
assert float(gap) < 1e-5, float(gap)
assert all(set(strict.frozen_units[k].tolist()) <= set(loose.frozen_units.get(k, [])) for k in strict.frozen_units)
assert found.summary()["clones"] and all({len(b) for b in c["clusters"]} == {2}
                                         for c in found.summary()["clones"].values())

# %% [markdown]
# **What it shows.** The strict and the relaxed detections differ exactly by units that are
# *almost* dead (if any are printed): their derivative vanishes on most, but not all, of the
# batch, so they still learn a little and are not on $M_F$. In the doubled network the planted
# pairs come back as clusters of size 2 with clone $R^2 = 1$; only copies of a unit frozen on
# every sample would be missing, because frozen units are constant and detection never calls
# constants clones. The cloned manifold's normal
# dimension (`normal_dim`) counts the parameter directions that would separate the clones.

# %% [markdown]
# ## 5. Is the cloning manifold stable? The normal-space spectrum
#
# On an LoP manifold the gradient has no normal component, so whether a trajectory near it is
# pulled in or pushed out is decided at second order: by the Hessian restricted to the normal
# space, $P_N H P_N$. `pdx.curvature.normal_spectrum` returns its extreme eigenvalues
# (dense for small normal spaces, Lanczos otherwise) and a verdict: *stable* (all positive),
# *unstable* (all negative), *saddle* (both signs) or *degenerate*.

# %%
mask = jnp.asarray(mmask)


def loss_fn(params, x, y):
    logits = wide_model.apply({**wide, "params": params}, x).logits
    return pdx.training.masked_loss(logits, y, mask, "xent")[0]


spec = pdx.curvature.normal_spectrum(loss_fn, wide["params"], found.cloned, k=5,
                                     args=(jnp.asarray(mx), jnp.asarray(my)))
print(f"verdict: {spec.verdict} ({spec.method}, {spec.num_hvps} Hessian-vector products, "
      f"normal_dim {spec.normal_dim}, zero tolerance {spec.tolerance:.1e})")
print("extreme normal eigenvalues:", np.array2string(spec.eigenvalues, precision=4))

fig, ax = plt.subplots(figsize=(5, 2.2))
ax.stem(spec.eigenvalues)
ax.axhline(0, color="k", lw=0.6)
ax.set_xlabel("index (5 lowest, 5 highest)")
ax.set_ylabel("eigenvalue of $P_N H P_N$")
ax.set_title(f"normal curvature at the cloned point: {spec.verdict}")
fig.tight_layout()
# the verdict is the sign pattern of the extreme normal eigenvalues outside the zero tolerance
lo, hi = float(spec.eigenvalues.min()), float(spec.eigenvalues.max())
expected = ("saddle" if lo < -spec.tolerance and hi > spec.tolerance else "stable" if lo > spec.tolerance
            else "unstable" if hi < -spec.tolerance else "degenerate")
assert spec.verdict == expected, (spec.verdict, lo, hi, spec.tolerance)
assert np.all(np.diff(spec.eigenvalues) >= 0) and spec.normal_dim == found.cloned.normal_dim
print(f"notebook time {time.perf_counter() - T0:.1f} s")

# %% [markdown]
# **What it shows.** The verdict and the extreme eigenvalues printed above. A *saddle* means
# some directions that separate clones lower the loss to second order: the manifold is invariant
# (the gradient is tangent) but not attracting along those directions, so a perturbation —
# gradient noise, dropout — can grow. Whether it does under a given optimiser is a question about
# the update map, not the Hessian alone: notebook `05` compares predicted and measured escape
# rates, and notebook `02` watches SGD, Adam, noise and dropout on the cloning manifold.

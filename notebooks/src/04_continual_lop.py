# %% [markdown]
# # 04 · Continual loss of plasticity: symptoms, normalisation, unit fate
#
# **Question.** When one network learns task after task, does its ability to learn fade, which
# unit-level symptoms come with it (dead units, rank), does normalisation prevent it
# (arXiv 2510.00304, Section 4 and Fig. 4.1), and what happens to individual units along the way?
#
# **Stream.** MNIST-1D has ten classes, so the paper's class split gives at most five two-class
# tasks — too short a stream to lose plasticity at laptop scale. We use the standard
# short-horizon stream instead: *random-label memorisation* (each task relabels the same 512
# inputs at random, 150 Adam steps per task, 20 tasks). Each task is equally hard, so a falling
# online accuracy means the *network* got worse at learning. The paper's class-split protocol is
# `plasticity-dynamics reproduce continual` (and `normalisation`).
#
# Three MLPs (3 × 32 ReLU units) differ only in normalisation before the activation: none,
# batch norm, layer norm (both with affine parameters); two seeds each.

# %%
import shutil
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import plasticity_dynamics as pdx
from plasticity_dynamics.experiments.continual import layer_mean, online

T0 = time.perf_counter()
TASKS, STEPS, EVERY = 20, 150, 75
NORMS = ("none", "batch", "layer")
DEAD, RANK = "dead_frac@1e-07,0.95", "effective_rank"
workdir = Path(tempfile.mkdtemp(prefix="pdx_nb04_"))


def config(norm):
    return pdx.training.Config().with_overrides({
        "model.name": "mlp", "model.preset": "tiny", "model.widths": [32, 32, 32],
        "model.norm": norm, "model.dropout": 0.0,
        "data.name": "mnist1d", "data.data_dir": str(workdir / "data"),  # generated once, then cached
        "tasks.kind": "random_labels", "tasks.num_tasks": TASKS,
        "tasks.num_examples": 512, "tasks.metric_batch_size": 200,
        "train.steps_per_task": STEPS, "train.batch_size": 64,
        "optim.name": "adam", "optim.lr": 1e-2,
        "record.every": EVERY, "record.checkpoint_every": EVERY, "seeds": 2,
    })


runs = {}
for norm in NORMS:
    runs[norm] = pdx.training.train(config(norm), out=workdir / norm, progress=False)
    print(f"norm={norm:<6} {runs[norm].summary['steps']} steps x 2 seeds, "
          f"{runs[norm].summary['wall_time_s']:.1f} s, {len(runs[norm].checkpoints)} checkpoints")

# %% [markdown]
# ## 1. Symptoms over tasks
#
# Every record holds the online accuracy (training batches since the previous record) and every
# unit metric on a fixed batch of the current task. Curves are means over the two seeds, bands
# their spread; layer metrics are means over the three hidden layers
# (`pdx.experiments.continual.layer_mean`).

# %%
def per_task(steps, values):
    """(seeds, tasks): mean over the records of each task (a record at a task's last step belongs to it)."""
    task = (steps - 1) // STEPS
    return np.stack([values[:, task == t].mean(axis=1) for t in range(TASKS)], axis=1)


fig, axes = plt.subplots(1, 3, figsize=(11, 2.9))
table = {}
for i, norm in enumerate(NORMS):
    rows = runs[norm].rows
    series = {"online accuracy": online(rows, "accuracy"), "dead fraction": layer_mean(rows, DEAD),
              "effective rank": layer_mean(rows, RANK)}
    table[norm] = {name: per_task(*series[name]).mean(axis=0) for name in series}
    acc = per_task(*series["online accuracy"])  # the saw-tooth within tasks averaged out
    curves = [(np.arange(1, TASKS + 1), acc)] + [(steps / STEPS, vals) for steps, vals in
                                                 (series["dead fraction"], series["effective rank"])]
    for ax, (name, (t, vals)) in zip(axes, zip(series, curves)):
        m, sd = vals.mean(0), vals.std(0)
        ax.plot(t, m, label=f"norm={norm}", color=f"C{i}")
        ax.fill_between(t, m - sd, m + sd, alpha=0.2, color=f"C{i}")
        ax.set_title(name + (" (mean over each task)" if name == "online accuracy" else ""), fontsize=9)
        ax.set_xlabel("task")
axes[0].legend(fontsize=7)
fig.tight_layout()

print(f"{'norm':<7}{'accuracy: best task -> last task':>34}{'dead: first -> last':>22}{'rank: first -> last':>22}")
for norm, t in table.items():
    acc = t["online accuracy"]
    print(f"{norm:<7}{acc.max():>20.3f} (task {acc.argmax():2d}) -> {acc[-1]:.3f}"
          f"{t['dead fraction'][0]:>13.3f} -> {t['dead fraction'][-1]:.3f}"
          f"{t['effective rank'][0]:>13.1f} -> {t['effective rank'][-1]:.1f}")
base_drop = table["none"]["online accuracy"].max() - table["none"]["online accuracy"][-1]
norm_drop = {n: table[n]["online accuracy"].max() - table[n]["online accuracy"][-1] for n in ("batch", "layer")}
print(f"\naccuracy lost since the best task: none {base_drop:.3f}, "
      + ", ".join(f"{n} {d:.3f}" for n, d in norm_drop.items()))
print("dead fraction at the last task: " + ", ".join(f"{n} {table[n]['dead fraction'][-1]:.3f}" for n in NORMS))
print("both normalised nets lose less accuracy than the baseline:", all(d < base_drop for d in norm_drop.values()))
print("both end with fewer dead units than the baseline:",
      all(table[n]["dead fraction"][-1] < table["none"]["dead fraction"][-1] for n in ("batch", "layer")))
# what this section demonstrates, asserted: without normalisation the network loses plasticity
# (accuracy falls by more than 0.1 from its best task) while dead units accumulate; both
# normalised networks lose less accuracy and end with fewer dead units
assert base_drop > 0.1, base_drop
assert table["none"]["dead fraction"][-1] > table["none"]["dead fraction"][0], table["none"]["dead fraction"]
assert all(d < base_drop for d in norm_drop.values()), (base_drop, norm_drop)
assert all(table[n]["dead fraction"][-1] < table["none"]["dead fraction"][-1] for n in ("batch", "layer"))

# %% [markdown]
# **What it shows.** Read the printed table. Without normalisation the online accuracy first
# improves (the features become useful for memorising) and then declines over the later tasks:
# the same kind of problem gets harder to learn — loss of plasticity. The decline comes with a
# growing fraction of dead units. Normalising the pre-activations keeps units in the range where
# their derivative is non-zero (notebook `03`); the two printed checks say whether, in this run,
# both normalised networks lost less accuracy and ended with fewer dead units than the baseline.
# The effective rank is a weaker witness at this scale: dead units lower it, but the live units
# spread out.

# %% [markdown]
# ## 2. Unit fate
#
# Symptoms in a table are averages; the dynamical view asks what each *unit* does. From the
# checkpoints (two per task) we label every unit of seed 0 at every record with one state
# (`pdx.metrics.unit_states`: dead > frozen > saturated > dormant > active, plus its clone
# cluster) on the current task's metric batch, and summarise the sequences with
# `pdx.metrics.track_fate`: state fractions, transitions within a task and at task switches,
# revivals of dead units, and how persistent the dead set is.

# %%
def unit_arrays(model, variables, x, y):
    """Activations h, errors g = dL/dh and pre-activations z of every monitored layer (eval mode)."""
    acts = model.apply(variables, x).activations
    probes = {k: jnp.zeros_like(v) for k, v in acts.items()}

    def loss(probes):
        out = model.apply(variables, x, probes=probes)
        return pdx.training.masked_loss(out.logits, y, jnp.ones(out.logits.shape[-1], bool), "xent")[0], out

    g, out = jax.grad(loss, has_aux=True)(probes)
    return out.activations, g, out.preactivations


def fate(run, seed_index=0):
    model, stream = run.components.model, run.components.stream
    arrays = jax.jit(lambda v, x, y: unit_arrays(model, v, x, y))
    states, clusters, tasks = [], [], []
    for step in run.checkpoints:
        state, meta = pdx.training.load_checkpoint(run.run_dir, step, run.final_state)
        variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a[seed_index]), state["variables"])
        mx, my, _ = stream.metric_batch(meta["task"])
        h, g, z = arrays(variables, jnp.asarray(mx), jnp.asarray(my))
        st, cl, offset = [], [], 0
        for layer in model.layer_kinds:
            u = pdx.metrics.unit_states(h[layer], g[layer], z[layer], activation=model.activation)
            st.append(np.asarray(u.state))
            cl.append(np.where(np.asarray(u.cluster) >= 0, np.asarray(u.cluster) + offset, -1))
            offset += h[layer].shape[1]
        states.append(np.concatenate(st))
        clusters.append(np.concatenate(cl))
        tasks.append(meta["task"])
    return pdx.metrics.track_fate(np.stack(states), tasks=np.array(tasks), clusters=np.stack(clusters)), tasks


fates = {norm: fate(runs[norm]) for norm in NORMS}
names = pdx.metrics.STATES
fig, axes = plt.subplots(1, 3, figsize=(11, 2.7), sharey=True)
for ax, norm in zip(axes, NORMS):
    f, tasks = fates[norm]
    x = np.asarray(runs[norm].checkpoints) / STEPS
    ax.stackplot(x, f["fractions"].T, labels=names, colors=["C2", "C1", "C4", "C0", "C3"])
    ax.set_title(f"norm={norm} (seed 0, all hidden units)", fontsize=9)
    ax.set_xlabel("task")
    ax.set_ylim(0, 1)
axes[0].set_ylabel("fraction of units")
axes[-1].legend(fontsize=7, loc="lower left")
fig.tight_layout()

dead = names.index("dead")
print(f"{'norm':<7}{'ever dead':>10}{'deaths: within / at switch':>29}{'revivals: within / at switch':>31}"
      f"{'dead persistence':>18}")
for norm in NORMS:
    f, _ = fates[norm]
    within, switch = f["transitions_within_task"], f["transitions_at_switch"]
    deaths = [int(m[:, dead].sum() - m[dead, dead]) for m in (within, switch)]
    revivals = [int(m[dead, :].sum() - m[dead, dead]) for m in (within, switch)]
    pers = f["dead_persistence"]
    persist = f"{np.nanmean(pers):.3f}" if np.any(np.isfinite(pers)) else "  (none dead)"
    print(f"{norm:<7}{f['ever']['dead']:10.3f}{deaths[0]:>19d} / {deaths[1]:<7d}"
          f"{revivals[0]:>21d} / {revivals[1]:<7d}{persist:>18}")
# bookkeeping, against counts made here: every unit has exactly one state per record, and every
# pair of consecutive records contributes one transition per unit (within a task or at a switch)
for norm in NORMS:
    f, tasks = fates[norm]
    n_units = sum(runs[norm].components.model.options["widths"])
    assert np.allclose(f["fractions"].sum(axis=1), 1.0)
    total = f["transitions_within_task"].sum() + f["transitions_at_switch"].sum()
    assert total == (len(tasks) - 1) * n_units, (norm, total)
    assert f["transitions_at_switch"].sum() == n_units * sum(a != b for a, b in zip(tasks[:-1], tasks[1:]))
# batch norm keeps almost every unit alive for the whole stream (2 % ever dead in this run, no
# head zeroing on random labels); the baseline loses most of its units at some point
assert fates["batch"][0]["ever"]["dead"] < 0.05 < 0.5 < fates["none"][0]["ever"]["dead"]
shutil.rmtree(workdir)  # the run directories (checkpoints) were only needed for this notebook
print(f"notebook time {time.perf_counter() - T0:.1f} s")

# %% [markdown]
# **What it shows.** The stacked areas are the population of states over the stream; the
# printed table counts how units move in and out of the dead state, split by whether the move
# happens within a task or across a task switch. A dead ReLU unit is on the frozen-unit manifold
# $M_F$ of its own incoming weights (notebook `03`, section 2): gradient descent cannot revive it
# through those weights; it returns only when the units *upstream* change what it receives. The
# split shows whether deaths cluster at task switches, where a fresh set of labels produces the
# largest updates. The *dead persistence*
# is the share of dead units still dead one record later. When deaths outnumber revivals the dead
# population grows and the network's effective width shrinks task by task — the dynamical
# picture behind the symptom in section 1. Normalisation changes the rates, not the mechanism
# (compare the `ever dead` column).

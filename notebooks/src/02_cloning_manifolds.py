# %% [markdown]
# # 02 · Cloning manifolds: invariance, escape, curvature, and the base network
#
# **Question.** Theorem 2.1 (arXiv 2510.00304; Appendix A.3) says: if the units of a network are
# partitioned into blocks and the weights are *row- and column-equitable* for that partition,
# then every unit of a block computes the same value, receives the same back-propagated error,
# and the gradient is constant on every block of every weight matrix. The set of such networks
# is then invariant under gradient descent: once cloned, always cloned. We check numerically:
#
# 1. that the gradient is block-constant (tangent to the manifold), even at equitable points
#    whose weights are *not* block-constant;
# 2. that SGD, SGD with momentum and Adam (with a fresh optimiser state) stay on the manifold;
# 3. that gradient noise and dropout leave it;
# 4. what the curvature normal to the manifold says (stable, unstable or saddle);
# 5. that a network on the manifold *is* a smaller network: its base (quotient) network.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import plasticity_dynamics as pdx
from plasticity_dynamics.experiments.invariance import invariance

T0 = time.perf_counter()
key = jax.random.PRNGKey(0)
k_x, k_teacher, k_init, k_pert = jax.random.split(key, 4)

# a teacher task: 256 Gaussian inputs in 16 dimensions, 4 classes from a random linear teacher
x = jax.random.normal(k_x, (256, 16))
y = jnp.argmax(x @ jax.random.normal(k_teacher, (16, 4)), axis=1)
OPTIONS = dict(widths=(8, 8), num_outputs=4, activation="tanh", norm="none", dropout=0.0)

# %% [markdown]
# ## 1. A network and its clone
#
# `pdx.manifolds.expand(model, variables, 2)` turns every hidden unit into two interleaved
# copies (unit $k$ becomes $2k$ and $2k+1$), copies incoming weights and divides outgoing weights
# by two. The wide network computes the same function. The returned `Partition` says which units
# are copies of which; `pdx.manifolds.cloned(partition, params)` is the affine manifold
# $M_D(w) = w + M_{BC}$ through the cloned point ($M_{BC}$: block-constant weight changes).

# %%
base = pdx.models.create("mlp", preset="tiny", **OPTIONS)
base_vars = base.init(k_init, x[:2])
wide, wide_vars, partition = pdx.manifolds.expand(base, base_vars, 2)
p0 = wide_vars["params"]
gap = jnp.max(jnp.abs(wide.apply(wide_vars, x).logits - base.apply(base_vars, x).logits))
M = pdx.manifolds.cloned(partition, p0)
print("blocks:", partition.summary()["groups"]["hidden_0"]["clusters"][:4], "...")
print(f"max |logit(wide) - logit(base)| = {float(gap):.1e}")
print(f"{M}: the manifold has {M.dim} dimensions inside {M.size}; {M.normal_dim} normal directions")


def loss_fn(params, x, y):
    logits = wide.apply({"params": params}, x).logits
    return pdx.losses.masked_loss(logits, y)[0]  # the package's one loss

# %% [markdown]
# ## 2. Block-constant gradients (Theorem 2.1)
#
# The *leakage* $\|P_N g\| / \|g\|$ is the fraction of the gradient that points off the manifold:
# 0 for a tangent gradient. We evaluate it at three points:
#
# * the cloned point $w_0$ (weights block-constant);
# * an *equitable* point $w_e$: $w_0$ plus a random perturbation projected onto
#   $M_{RE} \cap M_{CE}$ (`pdx.manifolds.equitable_projection`) — every block of every weight
#   matrix has equal row and column sums, but the entries differ;
# * a generic point: $w_0$ plus a small random perturbation.

# %%
noise = jax.tree_util.tree_map(lambda a: 0.1 * jax.random.normal(k_pert, a.shape), p0)
pe = pdx.manifolds.equitable_projection(partition, jax.tree_util.tree_map(jnp.add, p0, noise))
pg = jax.tree_util.tree_map(lambda a, n: a + 0.01 * n, p0, noise)
Me = pdx.manifolds.cloned(partition, pe)  # the parallel leaf M_D(w_e) through the equitable point
print("w_e row-equitable:", pdx.manifolds.in_row_equitable(partition, pe),
      "| column-equitable:", pdx.manifolds.in_column_equitable(partition, pe),
      f"| distance to M_D(w_0): {float(M.distance(pe)):.3f}")
grads = {name: jax.grad(loss_fn)(p, x, y) for name, p in (("w0", p0), ("we", pe), ("generic", pg))}
leak = {"w0": M.leakage(grads["w0"]), "we": Me.leakage(grads["we"]), "generic": M.leakage(grads["generic"])}
for name, value in leak.items():
    print(f"gradient leakage at {name:8s}: {float(value):.2e}")
h = wide.apply({"params": pe}, x).activations
print("max |h(2k) - h(2k+1)| at w_e:", {k: float(jnp.max(jnp.abs(v[:, ::2] - v[:, 1::2]))) for k, v in h.items()})
# Theorem 2.1, asserted: tangent gradients (float32 rounding) at the cloned and the equitable point,
# a visibly leaking one at the generic point; the wide net computes the base function; clones agree at w_e
assert float(gap) < 1e-5, float(gap)
assert float(leak["w0"]) < 1e-6 and float(leak["we"]) < 1e-6, leak
assert float(leak["generic"]) > 1e-3, leak
assert all(float(jnp.max(jnp.abs(v[:, ::2] - v[:, 1::2]))) < 1e-5 for v in h.values())

fig, axes = plt.subplots(1, 4, figsize=(11, 2.9))
panels = [(p0["dense_1"]["kernel"], "weights at $w_0$"), (grads["w0"]["dense_1"]["kernel"], "gradient at $w_0$"),
          (pe["dense_1"]["kernel"], "weights at $w_e$"), (grads["we"]["dense_1"]["kernel"], "gradient at $w_e$")]
for ax, (mat, title) in zip(axes, panels):
    lim = float(jnp.max(jnp.abs(mat)))
    ax.imshow(np.asarray(mat), cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("hidden_0 → hidden_1 kernel (16 × 16, clones adjacent)", fontsize=9)
fig.tight_layout()

# %% [markdown]
# **What it shows.** At $w_0$ and at the equitable point the leakage is at float32 rounding level
# (the printed values), while the generic point, although much closer to $w_0$, leaks visibly. The
# heatmaps show why: the gradient is made of $2\times 2$ constant blocks at both points, although
# the weights at $w_e$ are not. Block-constancy of the *gradient* needs only the row and column
# equitability of the *weights* — the paper's generality remark (2.2 in v1, 2.3 in v2): $M_D$ is
# strictly more general than literal weight copies. And at $w_e$ the clones still compute
# identical activations.

# %% [markdown]
# ## 3. Which optimisers stay on the manifold, and what leaves it
#
# `invariance` (the experiment behind the `reproduce` figures) trains a base network with SGD,
# expands it ×2 and trains the copy from the cloned point under each setting, recording the
# distance to the starting leaf $M_D(w_0)$, the equitability residual, the leakage of the applied
# update and the smallest clone $R^2$ (forward activations and backward errors, on each step's
# batch). Optimiser states are created at the moment of cloning, as the paper's optimiser remark
# requires. Noisy SGD adds Gaussian noise to the gradient ($\sigma_0 = 0.01$, decaying);
# dropout uses independent masks for the two copies of a unit.

# %%
SETTINGS = ("sgd", "momentum", "adam", "noisy_sgd", "dropout")
res = invariance("mlp", preset="tiny", options=OPTIONS, data=(x, y), settings=SETTINGS,
                 base_steps=100, steps=200, record_every=10, lr=0.05, adam_lr=0.01,
                 return_params=True)
FLOOR = 1e-12  # exact zeros are drawn at this floor on the log axes
fig, axes = plt.subplots(1, 3, figsize=(11, 2.9))
for i, s in enumerate(SETTINGS):
    r = res[s]
    kw = dict(ls="-", lw=4.5 - 1.5 * i) if s in ("sgd", "momentum", "adam") else dict(ls="--")  # stayers overlap
    axes[0].semilogy(res["step"], np.maximum(r["relative_distance"], FLOOR), label=s, **kw)
    axes[1].semilogy(res["step"], np.maximum(1 - r["clone_r2"], FLOOR), label=s, **kw)
    axes[2].semilogy(res["step"], np.maximum(r["update_leakage"], FLOOR), label=s, **kw)
for ax, title in zip(axes, ("distance to $M_D(w_0)$ / $\\|w\\|$", "$1 - $ clone $R^2$ (min since last record)",
                            "update leakage $\\|P_N u\\| / \\|u\\|$")):
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("steps after cloning")
axes[0].legend(fontsize=7)
fig.tight_layout()

print(f"{'setting':<10}{'rel. distance':>15}{'equit. resid.':>15}{'update leak':>13}{'min R^2':>10}{'loss':>8}")
for s in SETTINGS:
    r = res[s]
    print(f"{s:<10}{r['relative_distance'][-1]:15.2e}{r['equitable_residual'][-1]:15.2e}"
          f"{r['update_leakage'].max():13.2e}{r['clone_r2'].min():10.6f}{r['loss'][-1]:8.3f}")
stay = max(float(np.max(res[s]["relative_distance"])) for s in ("sgd", "momentum", "adam"))
leave = min(float(res[s]["relative_distance"][-1]) for s in ("noisy_sgd", "dropout"))
print(f"largest distance of SGD / momentum / Adam: {stay:.1e} (float32 eps = {np.finfo(np.float32).eps:.1e})")
print(f"smallest final distance of noisy SGD / dropout: {leave:.1e}")
print("stayers within 100 eps of the manifold:", stay <= 100 * np.finfo(np.float32).eps,
      "| leavers more than 1e-4 away:", leave > 1e-4)
# invariance, asserted: SGD, momentum and Adam stay on M_D(w_0) exactly (bit for bit: every update is
# block-constant, so the clones receive identical float32 updates), noise and dropout leave it
assert stay == 0.0, stay
assert all(np.min(res[s]["clone_r2"]) > 1 - 1e-6 and np.max(res[s]["update_leakage"]) == 0.0
           for s in ("sgd", "momentum", "adam"))
assert leave > 1e-4, leave

# %% [markdown]
# **What it shows.** SGD, momentum and Adam keep the copy on $M_D(w_0)$ to float32 rounding (the
# printed largest distance; an exact zero is drawn at the $10^{-12}$ floor): the updates are
# block-constant, the clone $R^2$ stays 1, and the losses still go down — the copy learns, but
# only as the base network would. Noisy SGD and dropout leave the manifold: their updates have a
# normal component at every step, and the distance grows along the run. Dropout's $R^2$ is low
# because it is measured on the masked forward pass of each step; noisy SGD drifts slowly,
# because its noise is a small fraction ($\sigma_0 = 1\%$, decaying) of the gradient's size.
# Leaving is only the start of *escaping*: whether the clones then separate further is decided
# by the curvature normal to the manifold.

# %% [markdown]
# ## 4. Curvature verdicts
#
# `pdx.curvature.normal_spectrum` restricts the Hessian to the normal space of the manifold and
# returns its extreme eigenvalues with a verdict. We ask it at two points of the cloning
# manifold: the clone of the untrained base network ($w_0$ above), and the copy after 200 SGD
# steps in the invariance run (still on its manifold). The normal projector does not depend on
# where the leaf passes, so one `Manifold` object serves both points (and one compilation).

# %%
p_sgd = jax.tree_util.tree_map(jnp.asarray, res["sgd"]["params"])
spectra = {}
for name, p in (("cloned at init", p0), ("after 200 SGD steps", p_sgd)):
    spectra[name] = pdx.curvature.normal_spectrum(loss_fn, p, M, k=4, args=(x, y), method="lanczos")
    s = spectra[name]
    print(f"{name:<22} {s.verdict:<8} lowest {s.eigenvalues[0]:+.4f}  highest {s.eigenvalues[-1]:+.4f}"
          f"  (tolerance {s.tolerance:.1e}, {s.num_hvps} HVPs)")
fig, ax = plt.subplots(figsize=(5.5, 2.4))
for i, (name, s) in enumerate(spectra.items()):
    ax.plot(np.arange(s.eigenvalues.size) + 0.15 * i, s.eigenvalues, "o", label=f"{name}: {s.verdict}")
ax.axhline(0, color="k", lw=0.6)
ax.set_xlabel("index (4 lowest, 4 highest)")
ax.set_ylabel("eigenvalue of $P_N H P_N$")
ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# **What it shows.** The printed verdicts. Where the verdict is *saddle*, the normal space holds
# directions of negative curvature: perturbations that separate clones along them lower the loss,
# and plain gradient descent amplifies them once something (noise, dropout) has put the
# trajectory off the manifold. A *stable* verdict would mean the opposite: perturbed clones are
# pulled back together. The Hessian is only half of the story for a stateful optimiser;
# notebook `05` linearises the whole optimiser step and compares predicted with measured escape
# rates.

# %% [markdown]
# ## 5. The base (quotient) network
#
# A network on the cloning manifold is a smaller network in disguise.
# `pdx.manifolds.base_network` builds the quotient: one unit per block, each weight the common
# column sum of its block (the paper's Appendix A.2 formula with the column-sum erratum). On the
# manifold the base network computes exactly the wide network's function; off it, it is only an
# approximation.

# %%
fig, ax = plt.subplots(figsize=(5.5, 2.6))
quotient_gap, quotient_size = {}, {}
for s in ("sgd", "noisy_sgd"):
    wide_p = jax.tree_util.tree_map(jnp.asarray, res[s]["params"])
    q_model, q_vars = pdx.manifolds.base_network(wide, {"params": wide_p}, partition)
    gaps = np.abs(np.asarray(wide.apply({"params": wide_p}, x).logits - q_model.apply(q_vars, x).logits)).ravel()
    n_wide = sum(a.size for a in jax.tree_util.tree_leaves(wide_p))
    n_base = sum(a.size for a in jax.tree_util.tree_leaves(q_vars["params"]))
    print(f"{s:<10} wide {wide.options['widths']} ({n_wide} params) -> base {q_model.options['widths']} "
          f"({n_base} params); max |logit difference| = {gaps.max():.1e}")
    ax.hist(np.log10(np.maximum(gaps, 1e-12)), bins=40, alpha=0.6, label=f"after {s}")
    quotient_gap[s], quotient_size[s] = float(gaps.max()), n_base
ax.set_xlabel(r"$\log_{10}$ |logit(wide) - logit(base)|  (exact zeros at -12)")
ax.set_ylabel("logits")
ax.legend(fontsize=7)
fig.tight_layout()
# on the manifold the base network is exact (float32 rounding) and is a chart of M_D (as many
# parameters as the manifold has dimensions); off it (noisy SGD) it is only an approximation
assert quotient_gap["sgd"] < 1e-5 and quotient_gap["noisy_sgd"] > 10 * quotient_gap["sgd"], quotient_gap
assert quotient_size["sgd"] == M.dim, (quotient_size, M.dim)
print(f"notebook time {time.perf_counter() - T0:.1f} s")

# %% [markdown]
# **What it shows.** After SGD the wide network and its base network agree to float32 rounding:
# the trained copy has the capacity of the base network only — this is loss of plasticity by
# cloning. (The base network's parameter count equals the manifold's dimension printed in section
# 1: the quotient *is* a chart of $M_D$.) After noisy SGD the gap is larger (printed): the clones
# have begun to differ and the wide network computes something the base network cannot.

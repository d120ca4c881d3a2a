# %% [markdown]
# # 06 · Your own model: an Equinox network, analysed without touching its code
#
# **Question.** Everything so far used the model zoo. Does the toolkit work on a network it did
# not define? We write a plain Equinox MLP here, wrap it with `pdx.models.from_equinox`, and
# ask for the same analyses: unit metrics, manifold detection, function-preserving expansion
# and the normal-space spectrum with its verdict. The unit layout (which parameter axis belongs
# to which unit, which units pass through an activation) is *inferred from the jaxpr* of the
# network: dense contractions, biases, the ReLU. No layer names, no hand-written walker.

# %%
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import plasticity_dynamics as pdx

key = jax.random.PRNGKey(0)
k_net, k_x, k_t = jax.random.split(key, 3)

# A small classification task: 4 classes given by a random linear teacher on 10 inputs.
x = jax.random.normal(k_x, (256, 10))
teacher = jax.random.normal(k_t, (10, 4))
y = jnp.argmax(x @ teacher, axis=1)

net = eqx.nn.MLP(in_size=10, out_size=4, width_size=16, depth=2, activation=jax.nn.relu,
                 key=k_net)
model = pdx.models.from_equinox(net, x)
print("layers:", model.layer_kinds, "activation:", model.activation)
for name, spec in model.layout.layers.items():
    print(name, "incoming:", [("/".join(p[1:]), a) for p, a in spec.incoming],
          "outgoing:", [("/".join(p[1:]), a) for p, a in spec.outgoing])
assert list(model.layer_kinds) == ["layers/0", "layers/1"] and model.activation == "relu"

# %% [markdown]
# ## Train it briefly
#
# The wrapped model has the zoo's contract: `model.apply(variables, x).logits`. Its parameters
# are the Equinox module's arrays, held as a dict by path (`layers/0/weight`, ...).

# %%
variables = model.init()
params = variables["params"]


def loss_fn(p, xx, yy):
    logits = model.apply({"params": p}, xx).logits
    return pdx.losses.masked_loss(logits, yy)[0]  # the package's one loss


opt = optax.adam(3e-3)
opt_state = opt.init(params)


@jax.jit
def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    updates, s = opt.update(g, s, p)
    return optax.apply_updates(p, updates), s, loss


losses = []
for _ in range(150):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
acc = float(jnp.mean(jnp.argmax(model.apply({"params": params}, x).logits, 1) == y))
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, accuracy {acc:.2f}")
assert losses[-1] < 0.5 * losses[0]

# %% [markdown]
# ## Plant a dead unit and a clone pair, then detect them
#
# In the first hidden layer, unit 3 gets zero incoming weights and bias −1 (a dead ReLU:
# h = 0 and f'(z) = 0 on every input), and unit 7 becomes a copy of unit 5 (same incoming
# weights and bias, so the same activation on every input).

# %%
layer, dead, (src, dst) = "layers/0", 3, (5, 7)
w = params["layers"]["0"]["weight"]  # (16, 10): out x in (Equinox convention)
b = params["layers"]["0"]["bias"]
w = w.at[dead].set(0.0).at[dst].set(w[src])
b = b.at[dead].set(-1.0).at[dst].set(b[src])
planted = {**params, "layers": {**params["layers"], "0": {"weight": w, "bias": b}}}
variables = {"params": planted}

metrics = pdx.metrics.unit_metrics(model, variables, (x, y))
dead_frac = next(v for k, v in metrics.items() if k.startswith("dead_frac"))
print("dead fraction per layer:", dead_frac)

det = pdx.manifolds.detect(model, variables, (x, y))
clusters = {g: [c.tolist() for c in det.partition.blocks(g) if c.size > 1]
            for g in det.partition.groups}
print("dead units:", {k: v.tolist() for k, v in det.dead_units.items()})
print("clone clusters:", clusters)
assert {k: v.tolist() for k, v in det.dead_units.items()} == {layer: [dead]}
assert clusters == {"layers/0": [[src, dst]], "layers/1": []}
assert dead_frac[layer] >= 1 / 16

# %% [markdown]
# ## Expand ×2 without changing the function
#
# `pdx.manifolds.expand` duplicates every unit (fan-in weights halved), wraps the *same* Equinox
# function around the wide parameters and returns the partition of the wide network: the two
# copies of each unit form one block. Its outputs equal the base network's.

# %%
wide_model, wide, partition = pdx.manifolds.expand(model, variables, 2)
base_out = model.apply(variables, x).logits
wide_out = wide_model.apply(wide, x).logits
rel = float(jnp.linalg.norm(wide_out - base_out) / jnp.linalg.norm(base_out))
print("wide layer sizes:", {g: partition.units(g) for g in partition.groups},
      f"relative output change {rel:.1e}")
assert rel < 1e-5

# %% [markdown]
# ## Normal spectra and verdicts
#
# Two LoP manifolds: the frozen-unit manifold of the dead unit (the base network), and the
# cloning manifold of the expanded network. `normal_spectrum` restricts the loss Hessian to the
# normal space of each and classifies the point. For a dead ReLU the loss does not depend on the
# frozen coordinates at all, so the normal block is zero: a *degenerate* verdict.

# %%
frozen_spec = pdx.curvature.normal_spectrum(loss_fn, planted, det.frozen, k=3, args=(x, y))
wp = wide["params"]
cloned = pdx.manifolds.cloned(partition, wp)
clone_spec = pdx.curvature.normal_spectrum(loss_fn, wp, cloned, k=3, args=(x, y))
for name, s in (("frozen (base)", frozen_spec), ("cloned (x2)", clone_spec)):
    print(f"{name}: normal_dim {s.normal_dim}, eigenvalues {np.round(s.eigenvalues, 5)}, "
          f"verdict {s.verdict}")
assert frozen_spec.verdict == "degenerate"
assert np.abs(frozen_spec.eigenvalues).max() <= frozen_spec.tolerance
assert clone_spec.verdict in ("stable", "unstable", "saddle", "degenerate")

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot(losses)
axes[0].set(xlabel="step", ylabel="training loss", title="Equinox MLP, wrapped")
axes[1].stem(clone_spec.eigenvalues)
axes[1].axhline(0, color="k", lw=0.5)
axes[1].set(xlabel="eigenpair (k lowest, k highest)", ylabel="eigenvalue",
            title=f"cloning normal spectrum: {clone_spec.verdict}")
fig.tight_layout()
plt.show()

# %% [markdown]
# **What it shows.** A network written in Equinox, unknown to the toolkit, gets the same
# treatment as the zoo: its layout is inferred from the computation (two dense layers with
# ReLU), the planted dead unit and clone pair are found exactly, the ×2 expansion preserves the
# function, and the normal spectra give a degenerate verdict for the dead unit's frozen manifold
# and a curvature verdict for the cloning manifold. The same works for Flax Linen
# (`from_flax`), Flax NNX (`from_nnx`) and any pure JAX function (`from_function`); a model the
# inference cannot read (a custom primitive on the unit axis, a grouped convolution) gets one
# error line naming the primitive and the parameter, and can declare its `pdx.models.Layout`.

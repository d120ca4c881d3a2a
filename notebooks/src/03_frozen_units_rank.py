# %% [markdown]
# # 03 · Frozen units and the rank–plasticity tension
#
# **Question.** Section 3 of arXiv 2510.00304 (v2) argues that a nonlinearity raises the rank of a
# representation by *decorrelating* it, and that an activation decorrelates strongly only where
# its derivative vanishes on most inputs — where the unit is nearly frozen. Frozen units, in turn,
# are a loss-of-plasticity manifold $M_F$ (Theorem 2.1). We put the theory functions of
# `pdx.theory` beside measurements from trained networks:
#
# 1. the theory: decorrelation strength $\gamma_\varphi$ against the frozen probability
#    $P(|f'| < 0.01)$ as a unit's pre-activation drifts (v2 Fig. A.2);
# 2. frozen units are invariant: exactly for dead ReLUs, approximately for saturated tanh;
# 3. the rank gain across one nonlinearity, per layer and activation: measured on trained MLPs
#    against the Gaussian prediction and the lower bound of Theorem 3.1;
# 4. where the units of trained networks sit on the theory's $\gamma$ — frozen-probability curve.
#
# Notation: a unit's pre-activation $u = a z + b$ with $z \sim N(0, 1)$ ($b$ mean, $a$ standard
# deviation), $\psi(z) = \varphi(az + b)$, linearity $\alpha = (E\psi')^2 / \mathrm{Var}\,\psi$,
# decorrelation strength $\gamma_\varphi = (1 - \alpha)/(1 + \alpha)$ (0 for a linear unit).

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import plasticity_dynamics as pdx

T0 = time.perf_counter()
ACTS = ("relu", "tanh", "gelu")
EPS = 0.01  # |f'| < EPS counts as frozen (v2 Appendix A.2)

# %% [markdown]
# ## 1. Theory: decorrelation needs saturation
#
# `pdx.theory.gamma((name, a, b))` and `pdx.theory.frozen_probability(name, a, b, eps)`, both in
# float64 from Hermite series and exact interval probabilities. ReLU units drift by their mean
# $b$ (a more negative bias), tanh units by their scale $a$ (a larger gain).

# %%
b_grid = np.linspace(-4.0, 2.0, 31)
a_grid = np.logspace(-1.0, 1.5, 31)
theory = {
    "relu (bias b, a = 1)": (b_grid, np.array([pdx.theory.gamma(("relu", 1.0, float(b))) for b in b_grid]),
                             pdx.theory.frozen_probability("relu", a=1.0, b=b_grid, eps=EPS)),
    "tanh (gain a, b = 0)": (a_grid, np.array([pdx.theory.gamma(("tanh", float(a), 0.0)) for a in a_grid]),
                             pdx.theory.frozen_probability("tanh", a=a_grid, b=0.0, eps=EPS)),
}
fig, axes = plt.subplots(1, 2, figsize=(9, 2.9))
rises = {}
for name, (param, gam, frz) in theory.items():
    axes[0].plot(frz, gam, "o-", ms=3, label=name)
    order = np.argsort(-param) if name.startswith("relu") else np.argsort(param)  # toward saturation
    rising = bool(np.all(np.diff(gam[order]) >= -1e-12) and np.all(np.diff(frz[order]) >= -1e-12))
    print(f"{name}: gamma {gam.min():.3f}..{gam.max():.3f}; gamma and P(frozen) rise together "
          f"toward saturation: {rising}")
    rises[name] = rising
axes[0].set_xlabel(f"P(|f'| < {EPS})")
axes[0].set_ylabel(r"$\gamma_\varphi$")
axes[0].legend(fontsize=7)
r = np.linspace(-1, 1, 201)
for name in ("relu", "tanh", "gelu"):
    k = pdx.theory.kernel(name)
    g = pdx.theory.gamma(name)
    axes[1].plot(r, r**2 - k(r) ** 2, label=f"{name}: gap $r^2 - K(r)^2$")
    axes[1].plot(r, g * r**2 * (1 - r**2), "--", color=axes[1].lines[-1].get_color(), lw=0.8)
    # the quartic gap lemma holds on the whole grid (up to float64 rounding)
    assert np.all(r**2 - k(r) ** 2 >= g * r**2 * (1 - r**2) - 1e-12), name
axes[1].set_xlabel("pre-activation correlation r")
axes[1].set_title(r"quartic gap bound (dashed: $\gamma_\varphi r^2(1-r^2)$)", fontsize=9)
axes[1].legend(fontsize=7)
fig.tight_layout()
# decorrelation needs saturation: gamma and P(frozen) rise together along both sweeps; ReLU reaches
# gamma -> 1, tanh stays below the sign function's (pi - 2) / (pi + 2)
assert all(rises.values()), rises
assert theory["relu (bias b, a = 1)"][1].max() > 0.99
assert theory["tanh (gain a, b = 0)"][1].max() <= (np.pi - 2) / (np.pi + 2) + 1e-9

# %% [markdown]
# **What it shows.** Left: along both sweeps $\gamma_\varphi$ and the frozen probability grow
# together (the printed monotonicity checks) — the only way to make a unit a strong decorrelator
# is to push it where $f'$ vanishes on most inputs. ReLU reaches $\gamma \to 1$ (a unit that is
# almost always off); tanh saturates at $\gamma = (\pi - 2)/(\pi + 2) \approx 0.22$, the sign
# function's value, by which point almost every input is frozen. Right: the v2 "quartic gap"
# lemma, $r^2 - K_\varphi(r)^2 \ge \gamma_\varphi r^2 (1 - r^2)$, that drives the rank bound: the
# gap vanishes only at $r \in \{0, \pm 1\}$ — orthogonal units or duplicates.

# %% [markdown]
# ## 2. Frozen units are invariant (Theorem 2.1, $M_F$)
#
# We plant frozen units in an MLP and train it. ReLU: four units of the first layer get a bias of
# $-100$ — dead on every input, $f' = 0$ exactly. Tanh: four units get a bias of $+5$ — saturated,
# $f' = 1 - \tanh^2 \approx 2 \cdot 10^{-4}$ but not zero. `pdx.manifolds.detect` finds them
# ($|f'| < 0.01$ on 99 % of the inputs) and returns the frozen manifold through the current
# parameters (incoming weights, and for dead units also outgoing weights, held fixed); we then run
# 100 SGD steps and measure the distance to that manifold.

# %%
data = pdx.data.load("mnist1d")
x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
x_eval = jnp.asarray(data.x_test[:512])


def train(model, params, opt, steps, key):
    """``steps`` optimiser steps on random batches of 128: the package's training step
    (`pdx.training.step.make_step`, cross-entropy) in its one loop (`pdx.loop.run_steps`, a
    jitted `lax.scan`); returns (final params, per-step losses)."""

    def batch_at(t):
        k = jax.random.fold_in(key, t)
        idx = jax.random.randint(k, (128,), 0, x_train.shape[0])
        return x_train[idx], y_train[idx], None, k

    step = pdx.training.step.make_step(model, opt, "xent", batch_at)
    run = jax.jit(lambda v: pdx.loop.run_steps(step, (v, opt.init(v["params"])), steps))
    (variables, _), (losses, _) = run({"params": params})
    return variables["params"], losses


planted = {"relu": -100.0, "tanh": 5.0}
frozen_result = {}
for act, bias in planted.items():
    model = pdx.models.create("mlp", widths=(16, 16), activation=act, norm="none", dropout=0.0)
    params = model.init(jax.random.PRNGKey(0), x_train[:2])["params"]
    params["dense_0"]["bias"] = params["dense_0"]["bias"].at[:4].set(bias)
    det = pdx.manifolds.detect(model, {"params": params}, x_eval, eps=EPS, frac=0.99)
    M_F = det.frozen
    trained, _ = train(model, params, optax.sgd(0.05), 100, jax.random.PRNGKey(1))
    moved = pdx.manifolds.tree_norm(jax.tree_util.tree_map(jnp.subtract, trained, params))
    print(f"{act}: frozen {({k: v.tolist() for k, v in det.frozen_units.items()})}, "
          f"dead {({k: v.tolist() for k, v in det.dead_units.items()})}; normal_dim {M_F.normal_dim}")
    print(f"      after 100 SGD steps: parameters moved {float(moved):.3f}, "
          f"distance to M_F {float(M_F.distance(trained)):.2e}")
    frozen_result[act] = (det, float(moved), float(M_F.distance(trained)))
# M_F is invariant: exactly for dead ReLUs (distance 0 bit for bit while the net moves), approximately
# for saturated tanh (small but non-zero distance); detection finds exactly the planted units
for act, (det, moved, dist) in frozen_result.items():
    assert det.frozen_units["hidden_0"].tolist() == [0, 1, 2, 3] and moved > 0.1, (act, moved)
assert frozen_result["relu"][0].dead_units["hidden_0"].tolist() == [0, 1, 2, 3]
assert frozen_result["relu"][2] == 0.0, frozen_result["relu"][2]
assert 0.0 < frozen_result["tanh"][2] < 0.01 * frozen_result["tanh"][1], frozen_result["tanh"][1:]
assert len(frozen_result["tanh"][0].dead_units.get("hidden_0", [])) == 0

# %% [markdown]
# **What it shows.** The dead ReLU units are found as *dead* (their outgoing weights are frozen as
# well, since $h = 0$), and after training the network has moved while its distance to $M_F$ is
# exactly zero: the theorem's invariance, bit for bit. The saturated tanh units are found as
# frozen (not dead: $h \approx 1$ still feeds the next layer like a bias) and the network stays
# *near* $M_F$ — the printed distance is small but not zero, because $f'$ never vanishes exactly.
# Exactly frozen units are the ReLU case; saturating activations give approximately invariant
# sets, which is what the tension argument predicts units drift toward.

# %% [markdown]
# ## 3. Rank gain across one nonlinearity: theory against trained networks
#
# Theorem 3.1 (v2): for a pre-activation correlation matrix $C$ and a standardised activation,
# $\mathrm{er}_2(K_\varphi(C)) / \mathrm{er}_2(C) \ge 1 + \gamma_\varphi \Psi(C) / \|C\|_F^2$,
# with $\mathrm{er}_2(M) = (\mathrm{tr}\,M)^2 / \|M\|_F^2$ and
# $\Psi(C) = \sum_{i \ne j} C_{ij}^2 (1 - C_{ij}^2)$. We train a 3×32 MLP for each activation
# (Adam, 400 steps on MNIST-1D) and, per hidden layer, on 512 held-out inputs:
#
# * **measured** gain: $\mathrm{er}_2(\mathrm{corr}(h)) / \mathrm{er}_2(\mathrm{corr}(z))$ from the
#   post- and pre-activations;
# * **theory, plain**: `pdx.theory.rank_gain(C, act)`, the kernel of the standardised activation
#   applied to the measured $C$; and its lower bound `pdx.theory.rank_gain_bound(C, act)`;
# * **theory, per unit**: the Gaussian prediction with each unit's own modulation
#   $\psi_i = \varphi(a_i z + b_i)$ ($a_i$, $b_i$ the measured std and mean of its
#   pre-activation): $\mathrm{corr}(\psi_i, \psi_j) = \sum_k c^{(i)}_k c^{(j)}_k C_{ij}^k$ with the
#   normalised Hermite coefficients $c^{(i)}$ of `pdx.theory.hermite_coefficients`.
#
# Units frozen on 99 % of the inputs are left out (their correlation is undefined or meaningless);
# the count is printed.

# %%
def adam_run(act, steps=400, lr=1e-2, seed=0):
    model = pdx.models.create("mlp", widths=(32, 32, 32), activation=act, norm="none", dropout=0.0)
    params = model.init(jax.random.PRNGKey(seed), x_train[:2])["params"]
    params, losses = train(model, params, optax.adam(lr), steps, jax.random.PRNGKey(seed + 1))
    return model, params, float(losses[-50:].mean())


def corr(a):
    a = a - a.mean(axis=0)
    a = a / np.sqrt((a * a).sum(axis=0))
    return np.clip(a.T @ a, -1.0, 1.0)


def per_unit_kernel(C, act, a, b, n=64):
    """Gaussian prediction of corr(psi_i(X_i), psi_j(X_j)) for (X_i, X_j) with correlation C_ij."""
    c = np.stack([pdx.theory.hermite_coefficients((act, float(ai), float(bi)), n)[1:] for ai, bi in zip(a, b)])
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    K = np.einsum("ik,jk,ijk->ij", c, c, C[:, :, None] ** np.arange(1, n + 1))
    np.fill_diagonal(K, 1.0)
    return K


rows, units = [], {}
for act in ACTS:
    model, params, final_loss = adam_run(act)
    out = model.apply({"params": params}, x_eval)
    deriv = pdx.models.activation_derivative(act)
    for layer in model.layer_kinds:
        z = np.asarray(out.preactivations[layer], np.float64)
        h = np.asarray(out.activations[layer], np.float64)
        frozen_frac = np.mean(np.abs(np.asarray(deriv(out.preactivations[layer]))) < EPS, axis=0)
        keep = (frozen_frac < 0.99) & (h.std(axis=0) > 1e-6)
        C = corr(z[:, keep])
        K = per_unit_kernel(C, act, z[:, keep].std(axis=0), z[:, keep].mean(axis=0))
        rows.append(dict(act=act, layer=layer, kept=int(keep.sum()), units=keep.size, loss=final_loss,
                         measured=pdx.theory.er2(corr(h[:, keep])) / pdx.theory.er2(C),
                         plain=pdx.theory.rank_gain(C, act), bound=pdx.theory.rank_gain_bound(C, act),
                         per_unit=pdx.theory.er2(K) / pdx.theory.er2(C)))
        units.setdefault(act, []).append((z.mean(axis=0), z.std(axis=0), frozen_frac))

print(f"{'act':<6}{'layer':<10}{'units':>7}{'bound':>8}{'plain':>8}{'per-unit':>10}{'measured':>10}")
for r in rows:
    print(f"{r['act']:<6}{r['layer']:<10}{r['kept']:>4}/{r['units']:<2}{r['bound']:8.3f}{r['plain']:8.3f}"
          f"{r['per_unit']:10.3f}{r['measured']:10.3f}")
print("final training losses:", {a: round(next(r["loss"] for r in rows if r["act"] == a), 3) for a in ACTS})
measured = np.array([r["measured"] for r in rows])
err_plain = np.abs(np.array([r["plain"] for r in rows]) / measured - 1)
err_unit = np.abs(np.array([r["per_unit"] for r in rows]) / measured - 1)
bound_ok = all(r["bound"] <= r["plain"] + 1e-12 for r in rows)
print(f"bound <= plain prediction in every layer (Theorem 3.1): {bound_ok}")
print(f"measured gain > 1 in {int(np.sum(measured > 1))} of {len(rows)} layers")
print(f"median relative error: plain kernel {np.median(err_plain):.3f}, per-unit kernel {np.median(err_unit):.3f}")
# Theorem 3.1's bound lies below the plain-kernel prediction (the theorem) and below the measured
# gain (the claim on trained nets) in every layer; every layer gains rank through its nonlinearity
assert bound_ok
assert all(r["bound"] <= r["measured"] for r in rows), [(r["act"], r["layer"], r["bound"], r["measured"]) for r in rows]
assert np.all(measured > 1), measured

fig, ax = plt.subplots(figsize=(9, 2.8))
pos = np.arange(len(rows))
for i, (key, label) in enumerate((("bound", "bound (Thm 3.1)"), ("plain", "theory, plain"),
                                  ("per_unit", "theory, per unit"), ("measured", "measured"))):
    ax.bar(pos + (i - 1.5) * 0.2, [r[key] for r in rows], width=0.2, label=label)
ax.axhline(1, color="k", lw=0.6)
ax.set_xticks(pos, [f"{r['act']}\n{r['layer']}" for r in rows], fontsize=7)
ax.set_ylabel(r"$\mathrm{er}_2$ gain")
ax.set_ylim(0.9, None)
ax.legend(fontsize=7, ncol=4)
fig.tight_layout()

# %% [markdown]
# **What it shows.** Every layer gains effective rank through its nonlinearity (the printed count
# of layers with a measured gain above 1), and the theorem's bound sits below the plain-kernel
# prediction everywhere, as it must. The bound is loose: it keeps only the quartic part of the
# gap. How well the Gaussian kernel predicts the *measured* gain is printed as a median relative
# error; the per-unit kernel accounts for the drift of each unit's mean and scale, which is
# exactly the freedom the tension argument is about. What remains is non-Gaussianity of the
# pre-activations, strongest in deeper layers.

# %% [markdown]
# ## 4. Where trained units sit on the tension curve
#
# For every unit of the trained networks we fit $(a_i, b_i)$ = (std, mean) of its pre-activation
# and ask the theory for its decorrelation strength $\gamma_\varphi(a_i, b_i)$ and its frozen
# probability under a Gaussian pre-activation; beside that we *measure* the fraction of inputs on
# which $|f'(z)| < 0.01$. The grey points are the theory over a grid of $(a, b)$ (v2 Fig. A.3).

# %%
def ranks(v):
    return np.argsort(np.argsort(v))


fig, axes = plt.subplots(1, len(ACTS), figsize=(11, 2.9), sharey=True)
A, B = np.meshgrid(np.logspace(-0.7, 1.0, 12), np.linspace(-3.0, 3.0, 12))
tension = {}
for ax, act in zip(axes, ACTS):
    grid = []
    for a, b in zip(A.ravel(), B.ravel()):
        try:
            grid.append((pdx.theory.frozen_probability(act, a=a, b=b, eps=EPS), pdx.theory.gamma((act, a, b))))
        except pdx.errors.InputError:  # numerically constant unit: no kernel
            pass
    grid = np.array(grid)
    ax.plot(grid[:, 0], grid[:, 1], ".", color="0.75", ms=3, label="theory grid")
    mean, std, measured = (np.concatenate(v) for v in zip(*units[act]))
    gam, pred = [], []
    for m, s in zip(mean, std):
        try:
            gam.append(pdx.theory.gamma((act, float(s), float(m))))
        except pdx.errors.InputError:
            gam.append(np.nan)
        pred.append(pdx.theory.frozen_probability(act, a=float(s), b=float(m), eps=EPS))
    gam, pred = np.array(gam), np.array(pred)
    ok = np.isfinite(gam)
    ax.scatter(measured[ok], gam[ok], s=8, c="C3", label="trained units (measured)")
    rho = np.corrcoef(ranks(measured[ok]), ranks(gam[ok]))[0, 1]
    print(f"{act}: {ok.sum()} units; Spearman(measured frozen fraction, gamma) = {rho:+.2f}; "
          f"mean |Gaussian P(frozen) - measured| = {np.mean(np.abs(pred - measured)):.3f}; "
          f"units frozen on >= 99% of inputs: {int(np.sum(measured >= 0.99))}")
    tension[act] = (rho, float(np.mean(np.abs(pred - measured))))
    ax.set_title(act, fontsize=9)
    ax.set_xlabel(f"P(|f'| < {EPS})")
axes[0].set_ylabel(r"$\gamma_\varphi$")
axes[0].legend(fontsize=7)
fig.tight_layout()
# the tension, asserted: decorrelation strength and measured frozen fraction are strongly rank-correlated
# for every activation, and the Gaussian frozen probability is within 0.1 of the measured one on average
assert all(rho > 0.5 and err < 0.1 for rho, err in tension.values()), tension
print(f"notebook time {time.perf_counter() - T0:.1f} s")

# %% [markdown]
# **What it shows.** Trained units fall on the theory's cloud: their decorrelation strength and
# their measured frozen fraction are tied together (the printed rank correlations), and the
# Gaussian frozen probability predicts the measured one to within the printed mean error. This
# is the rank–plasticity tension in one picture: a unit contributes more decorrelation, hence more
# rank, the further it sits toward the right, where its derivative — and its gradient — vanishes
# on most inputs. ReLU units can go all the way to exactly frozen (dead) units, which are then
# trapped on $M_F$ for good (section 2).

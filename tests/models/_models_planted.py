"""Four small networks written independently of the model zoo, with a planted dead (or
saturated) unit and a planted clone pair in their first hidden layer.

Each builder returns ``(model, params, x, y, loss, info)``: ``model`` wrapped with
pdx.models.from_*; ``loss(params, x, y)`` a cross-entropy written here from the raw network
(not via the wrapper, so it is an independent oracle); ``info`` = dict(kernel=<path of the first
layer's kernel>, frozen=unit, dead=bool, clones=(i, j)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import plasticity_dynamics as pdx

FROZEN, CLONES = 1, (2, 4)


def _xent(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def _data(key, shape, classes=3):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, shape), jax.random.randint(ky, (shape[0],), 0, classes)


def plain_mlp(seed=0):
    """Plain-JAX MLP, arbitrary names, tanh; unit FROZEN saturated (bias 20, zero weights)."""
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    p = {"alpha": jax.random.normal(k[0], (5, 8)) / 2, "beta": jnp.zeros(8),
         "gamma": jax.random.normal(k[1], (8, 6)) / 3, "delta": 0.1 * jnp.ones(6),
         "omega": jax.random.normal(k[2], (6, 3)) / 3}
    i, j = CLONES
    p["alpha"] = p["alpha"].at[:, FROZEN].set(0.0).at[:, j].set(p["alpha"][:, i])
    p["beta"] = p["beta"].at[FROZEN].set(20.0)

    def net(q, x):
        h = jnp.tanh(x @ q["alpha"] + q["beta"])
        h = jnp.tanh(h @ q["gamma"] + q["delta"])
        return h @ q["omega"]

    x, y = _data(k[3], (16, 5))
    model = pdx.models.from_function(net, p, x)
    return model, p, x, y, lambda q, xx, yy: _xent(net(q, xx), yy), dict(
        kernel=("params", "alpha"), frozen=FROZEN, dead=False, clones=CLONES)


def plain_cnn(seed=0):
    """Plain-JAX CNN (NHWC conv, relu, flatten, dense); channel FROZEN dead (bias -1)."""
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    p = {"filt": jax.random.normal(k[0], (3, 3, 1, 5)) / 3, "shift": jnp.zeros(5),
         "read": jax.random.normal(k[1], (4 * 4 * 5, 3)) / 8}
    i, j = CLONES
    p["filt"] = p["filt"].at[..., FROZEN].set(0.0).at[..., j].set(p["filt"][..., i])
    p["shift"] = p["shift"].at[FROZEN].set(-1.0)

    def net(q, x):
        h = jax.lax.conv_general_dilated(x, q["filt"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = jax.nn.relu(h + q["shift"])
        return h.reshape(h.shape[0], -1) @ q["read"]

    x, y = _data(k[3], (8, 4, 4, 1))
    model = pdx.models.from_function(net, p, x)
    return model, p, x, y, lambda q, xx, yy: _xent(net(q, xx), yy), dict(
        kernel=("params", "filt"), frozen=FROZEN, dead=True, clones=CLONES)


def nnx_mlp(seed=0):
    """Flax NNX MLP: Linear -> LayerNorm -> relu -> Linear; unit FROZEN dead (LN scale 0,
    bias -1)."""
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.first = nnx.Linear(5, 8, rngs=rngs)
            self.norm = nnx.LayerNorm(8, rngs=rngs)
            self.last = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.last(jax.nn.relu(self.norm(self.first(x))))

    net = Net(nnx.Rngs(seed))
    i, j = CLONES
    for name in ("kernel", "bias"):
        v = getattr(net.first, name)
        v.value = v.value.at[..., j].set(v.value[..., i])
    net.norm.scale.value = net.norm.scale.value.at[FROZEN].set(0.0)
    net.norm.bias.value = net.norm.bias.value.at[FROZEN].set(-1.0)
    x, y = _data(jax.random.PRNGKey(seed + 1), (16, 5))
    model = pdx.models.from_nnx(net, x)
    params = model.init()["params"]

    def raw(q, xx):
        h = xx @ q["first"]["kernel"] + q["first"]["bias"]
        mu = h.mean(-1, keepdims=True)
        var = ((h - mu) ** 2).mean(-1, keepdims=True)
        h = (h - mu) / jnp.sqrt(var + 1e-6) * q["norm"]["scale"] + q["norm"]["bias"]
        return jax.nn.relu(h) @ q["last"]["kernel"] + q["last"]["bias"]

    return model, params, x, y, lambda q, xx, yy: _xent(raw(q, xx), yy), dict(
        kernel=("params", "first", "kernel"), frozen=FROZEN, dead=True, clones=CLONES)


def equinox_mlp(seed=0):
    """Equinox MLP (eqx.nn.MLP, relu, vmapped); unit FROZEN dead (zero row, bias -1)."""
    import equinox as eqx

    net = eqx.nn.MLP(5, 3, 8, 2, key=jax.random.PRNGKey(seed))
    i, j = CLONES
    w, b = net.layers[0].weight, jnp.ones(8)  # positive biases: no unit dead by chance
    w = w.at[FROZEN].set(0.0).at[j].set(w[i])
    b = b.at[FROZEN].set(-1.0)
    net = eqx.tree_at(lambda n: (n.layers[0].weight, n.layers[0].bias, n.layers[1].bias), net,
                      (w, b, jnp.ones(8)))
    x, y = _data(jax.random.PRNGKey(seed + 1), (16, 5))
    model = pdx.models.from_equinox(net, x)
    params = model.init()["params"]

    def raw(q, xx):  # q: the wrapper's dict view {"layers": {"0": {"weight", "bias"}, ...}}
        h, n = xx, len(q["layers"])
        for i in range(n):
            layer = q["layers"][str(i)]
            h = h @ layer["weight"].T + layer["bias"]
            if i + 1 < n:
                h = jax.nn.relu(h)
        return h

    return model, params, x, y, lambda q, xx, yy: _xent(raw(q, xx), yy), dict(
        kernel=("params", "layers", "0", "weight"), frozen=FROZEN, dead=True, clones=CLONES)


BUILDERS = {"plain_mlp": plain_mlp, "plain_cnn": plain_cnn, "nnx_mlp": nnx_mlp,
            "equinox_mlp": equinox_mlp}


def normal_basis(partition, params) -> np.ndarray:
    """Orthonormal basis (n, d) of the normal space of the cloning manifold, from its
    definition: the orthogonal complement of the block-constant directions (entries that
    differ only by clone index along unit axes share one tangent direction)."""
    cols, offset = [], 0
    paths = pdx.manifolds.partition.collection_paths(params)
    total = sum(int(np.size(v)) for _, v in paths)
    for path, leaf in paths:
        shape = np.shape(leaf)
        keys = np.indices(shape).reshape(len(shape), -1).T.copy()
        for spec in partition.specs(path):
            ids = partition.groups[spec.group]
            u = ids.size
            col = keys[:, spec.axis]
            keys[:, spec.axis] = (col // u) * (u + 1) + ids[col % u]
        _, cls = np.unique(keys, axis=0, return_inverse=True)
        for c in range(cls.max() + 1):
            v = np.zeros(total)
            v[offset + np.flatnonzero(cls.reshape(-1) == c)] = 1.0
            cols.append(v / np.linalg.norm(v))
        offset += int(np.prod(shape))
    t = np.stack(cols, axis=1)  # orthonormal: classes are disjoint
    proj = np.eye(total) - t @ t.T
    w, v = np.linalg.eigh(proj)
    return v[:, w > 0.5]


def entry_tanh_mlp(num_outputs=10, width=16, input_dim=40, seed=0):
    """Entry point for a training config (``model.name = "_models_planted:entry_tanh_mlp"``):
    a plain-JAX tanh MLP for (B, input_dim) inputs, wrapped with from_function."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    p = {"w_in": jax.random.normal(k1, (input_dim, width)) / np.sqrt(input_dim),
         "b_in": jnp.zeros(width),
         "w_out": jax.random.normal(k2, (width, num_outputs)) / np.sqrt(width),
         "b_out": jnp.zeros(num_outputs)}

    def tanh_mlp(q, x):
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ q["w_in"] + q["b_in"])
        return h @ q["w_out"] + q["b_out"]

    return pdx.models.from_function(tanh_mlp, p, jnp.zeros((2, input_dim)))


def entry_unprovable(num_outputs=10, width=8, input_dim=40):
    """Entry point whose network sorts its hidden units: inference must refuse it."""
    p = {"w": jnp.ones((input_dim, width)), "v": jnp.ones((width, num_outputs))}

    def sorted_mlp(q, x):
        h = jnp.sort(jnp.tanh(x.reshape(x.shape[0], -1) @ q["w"]), axis=-1)
        return h @ q["v"]

    return pdx.models.from_function(sorted_mlp, p, jnp.zeros((2, input_dim)))

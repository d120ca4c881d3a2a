"""Hand-built manifolds, tiny networks and dense float64 oracles for the curvature tests.

Nothing here imports plasticity_dynamics: the oracles share no code with what they test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class CoordinateManifold:
    """Frozen coordinates: M = {theta : theta[mask] = ref[mask]}; normal = masked coordinates."""

    def __init__(self, mask, ref):
        self.mask = jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), mask)
        self.ref = ref
        self.normal_dim = int(sum(int(np.sum(m)) for m in jax.tree.leaves(mask)))

    def normal(self, v):
        return jax.tree.map(lambda x, m: x * m, v, self.mask)

    def tangent(self, v):
        return jax.tree.map(lambda x, m: x * (1 - m), v, self.mask)

    def project(self, p):
        return jax.tree.map(lambda x, r, m: x * (1 - m) + r * m, p, self.ref, self.mask)

    def distance(self, p):
        diff = jax.tree.map(lambda x, r, m: (x - r) * m, p, self.ref, self.mask)
        return jnp.sqrt(sum(jnp.sum(d * d) for d in jax.tree.leaves(diff)))

    def leakage(self, g):
        return jnp.sqrt(sum(jnp.sum(d * d) for d in jax.tree.leaves(self.normal(g))))


class ClonePairManifold:
    """Clone pairs (a, b) of hidden units of a one-hidden-layer MLP {w1, b1, w2, b2}.

    M = {w1[:, a] = w1[:, b], b1[a] = b1[b], w2[a] = w2[b]}: a linear subspace. Tangent =
    average over each pair of the incoming columns, biases and outgoing rows; normal = the
    half-difference part.
    """

    def __init__(self, pairs, din, dout):
        self.a = jnp.array([p[0] for p in pairs])
        self.b = jnp.array([p[1] for p in pairs])
        self.normal_dim = len(pairs) * (din + 1 + dout)

    def tangent(self, v):
        a, b = self.a, self.b
        w1 = v["w1"]; b1 = v["b1"]; w2 = v["w2"]  # noqa: E702
        m1 = (w1[:, a] + w1[:, b]) / 2
        mb = (b1[a] + b1[b]) / 2
        m2 = (w2[a] + w2[b]) / 2
        return {"w1": w1.at[:, a].set(m1).at[:, b].set(m1), "b1": b1.at[a].set(mb).at[b].set(mb),
                "w2": w2.at[a].set(m2).at[b].set(m2), "b2": v["b2"]}

    def normal(self, v):
        return jax.tree.map(lambda x, t: x - t, v, self.tangent(v))

    def project(self, p):
        return self.tangent(p)

    def distance(self, p):
        return jnp.sqrt(sum(jnp.sum(d * d) for d in jax.tree.leaves(self.normal(p))))

    def leakage(self, g):
        return self.distance(g)


def mlp_params(seed, din, h, dout, scale=1.0):
    """Random params from NumPy (no per-primitive jax compiles in test set-up)."""
    rng = np.random.default_rng(seed)
    f = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return {"w1": f(scale * rng.standard_normal((din, h)) / np.sqrt(din)),
            "b1": f(0.1 * rng.standard_normal(h)),
            "w2": f(scale * rng.standard_normal((h, dout)) / np.sqrt(h)),
            "b2": f(0.1 * rng.standard_normal(dout))}


def normal_data(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]


def mlp_apply(p, x, act=jnp.tanh):
    return act(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def mse_loss(act=jnp.tanh):
    def make(x, y):
        return lambda p: 0.5 * jnp.mean(jnp.sum((mlp_apply(p, x, act) - y) ** 2, axis=-1))
    return make


def flat64(tree):
    """Flatten a pytree in jax's leaf order (sorted dict keys) to float64 numpy."""
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def rows64(stacked):
    """Pytree with a leading axis r -> (r, n) float64 rows (NumPy indexing: no jax compiles)."""
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(stacked)]
    return np.concatenate([x.reshape(x.shape[0], -1) for x in leaves], axis=1)


def unflat(vec, like):
    leaves, treedef = jax.tree.flatten(like)
    out, i = [], 0
    for x in leaves:
        out.append(jnp.asarray(vec[i:i + x.size].reshape(x.shape), jnp.float32))
        i += x.size
    return treedef.unflatten(out)


def dense_hessian64(make_loss, params, *data):
    """Float64 Hessian of the flattened loss via jax.hessian under a local x64 context."""
    with jax.enable_x64(True):
        data64 = [jnp.asarray(np.asarray(d, np.float64)) for d in data]
        loss = make_loss(*data64)
        unflat = unflattener(params)

        def f(vec):
            return loss(unflat(vec))

        h = jax.jit(jax.hessian(f))(jnp.asarray(flat64(params)))
        return np.asarray(h, np.float64)


def unflattener(like):
    """vec -> pytree shaped like ``like``, in jax leaf order (the inverse of :func:`flat64`,
    dtype kept from ``vec``: float64 under ``enable_x64``)."""
    leaves, treedef = jax.tree.flatten(like)

    def unflat(vec):
        parts, i = [], 0
        for x in leaves:
            parts.append(vec[i:i + x.size].reshape(x.shape))
            i += x.size
        return treedef.unflatten(parts)

    return unflat


def projector_matrix(normal_fn, like):
    """Dense P_N (float64) by applying a test manifold's projector to identity columns."""
    n = flat64(like).size
    unflat = unflattener(like)

    def apply(e):
        return jnp.concatenate([y.ravel() for y in jax.tree.leaves(normal_fn(unflat(e)))])

    return np.asarray(jax.vmap(apply)(jnp.eye(n, dtype=jnp.float32)), np.float64).T


def clone_projector_explicit(pairs, din, h, dout):
    """P_N of ClonePairManifold written out by index (flat order b1, b2, w1, w2)."""
    n = h + dout + din * h + h * dout
    pn = np.zeros((n, n))

    def pair(i, j):
        pn[i, i] += 0.5; pn[j, j] += 0.5; pn[i, j] -= 0.5; pn[j, i] -= 0.5  # noqa: E702

    for a, b in pairs:
        pair(a, b)                                                     # b1
        for i in range(din):                                           # w1[i, a], w1[i, b]
            pair(h + dout + i * h + a, h + dout + i * h + b)
        for k in range(dout):                                          # w2[a, k], w2[b, k]
            pair(h + dout + din * h + a * dout + k, h + dout + din * h + b * dout + k)
    return pn


def clone_normal_basis(pn):
    """Orthonormal basis of range(P_N) for a clone-pair projector: (e_i - e_j) / sqrt(2) for
    each coupled coordinate pair (i < j) read off the explicit matrix."""
    i, j = np.nonzero(np.triu(pn, 1) < -0.25)
    basis = np.zeros((pn.shape[0], i.size))
    basis[i, np.arange(i.size)] = 1 / np.sqrt(2)
    basis[j, np.arange(i.size)] = -1 / np.sqrt(2)
    assert np.allclose(basis @ basis.T, pn)
    return basis


def normal_block_eigs(h, basis):
    """Eigenvalues of P_N H P_N restricted to N = range(basis) (orthonormal columns), float64."""
    b = basis.T @ h @ basis
    return np.linalg.eigvalsh((b + b.T) / 2)

"""Manifold metadata inside jit: normal_dim is the true (traced) value of each manifold, and
cloned(layout="dense") gives one pytree structure for every partition of a network."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

import plasticity_dynamics as pdx

mf = pdx.manifolds


def _mlp():
    model = pdx.models.create("mlp", preset="tiny")
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 6)))
    return model, variables


def test_normal_dim_inside_jit_is_each_manifolds_own():
    _, variables = _mlp()
    params = variables["params"]
    traces = []

    @jax.jit
    def dim(m):
        traces.append(1)
        return m.normal_dim

    got, want = [], []
    for units in ([0], [1, 2], [0, 3, 5, 7]):
        m = mf.frozen({"hidden_0": units}, params)
        want.append(m.normal_dim)
        got.append(int(dim(m)))
    assert isinstance(want[0], int) and len(set(want)) == 3
    assert got == want and len(traces) == 1  # one trace, three true values
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[mf.frozen({"hidden_0": u}, params) for u in ([0], [1, 2])])
    assert np.asarray(stacked.normal_dim).tolist() == want[:2]


def test_dense_layout_same_structure_and_same_projector():
    model, variables = _mlp()
    params = variables["params"]
    part = mf.unit_partition(model, variables)
    rng = np.random.default_rng(0)
    v = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32), params)
    structures = set()
    for seed in range(3):
        r = np.random.default_rng(seed)
        blocks = {g: r.integers(0, max(1, part.units(g) // (2 + seed)), part.units(g)) for g in part.groups}
        p = part.with_blocks(blocks)
        auto, dense = mf.cloned(p, params), mf.cloned(p, params, layout="dense")
        assert dense.normal_dim == auto.normal_dim
        a, b = jax.flatten_util.ravel_pytree(auto.normal(v))[0], jax.flatten_util.ravel_pytree(dense.normal(v))[0]
        assert np.allclose(np.asarray(a), np.asarray(b), atol=1e-5)
        structures.add(jax.tree.structure(dense))
    assert len(structures) == 1
    trivial = mf.cloned(part, params, layout="dense")  # singleton blocks: identity averaging
    assert trivial.normal_dim == 0 and jax.tree.structure(trivial) in structures

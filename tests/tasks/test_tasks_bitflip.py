"""Bit flipping: bias bit, one flip at each multiple of T, targets vs a NumPy LTU net written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx


def _run(stream, t, steps, key=jax.random.PRNGKey(0)):
    data = jax.tree_util.tree_map(jnp.asarray, stream.task_data(t))
    f = jax.jit(jax.vmap(stream.sample, in_axes=(None, None, 0)))
    x, y, mask = f(data, key, jnp.arange(steps))
    return np.asarray(x), np.asarray(y), np.asarray(mask)


def _ltu_reference(w, w_out, b_out, x, m, beta, coef):
    """The paper's LTU target: h_i = H(w_i.x - theta_i), theta_i = coef*beta - S_i,
    S_i = #{j: w_ij < 0} - 0.5 w_{i,m+1}; y = w_out.h + b_out (written independently)."""
    ys = []
    for row in x:
        acc = b_out
        for i in range(w.shape[0]):
            s_i = sum(1 for j in range(m + 1) if w[i, j] < 0) - 0.5 * w[i, m]
            theta = coef * beta - s_i
            z = sum(w[i, j] * row[j] for j in range(m + 1)) - theta
            acc += w_out[i] * (1.0 if z > 0 else 0.0)
        ys.append(acc)
    return np.array(ys)


def test_bias_bit_and_exactly_one_flip_at_multiples_of_T():
    m, f, T = 8, 5, 7
    s = pdx.tasks.bitflip(m=m, f=f, T=T, target_hidden=6, num_steps=200, seed=1)
    x, y, mask = _run(s, 0, 200)
    assert x.shape == (200, 1, m + 1) and y.shape == (200, 1, 1) and mask.shape == (200, 1) and mask.all()
    x = x[:, 0]
    assert np.all(x[:, -1] == 1.0) and set(np.unique(x).tolist()) <= {0.0, 1.0}
    changes = np.abs(np.diff(x[:, :f], axis=0)).sum(axis=1)  # changes[k] between steps k and k+1
    for k in range(199):
        assert changes[k] == (1 if (k + 1) % T == 0 else 0), k
    # the non-flipping bits are redrawn every step
    assert np.abs(np.diff(x[:, f:m], axis=0)).sum(axis=1).mean() > 0.5


@pytest.mark.parametrize("threshold,coef_offset", [("paper", 0), ("code", 1)])
def test_targets_match_numpy_ltu_net(threshold, coef_offset):
    m, beta = 10, 0.7
    s = pdx.tasks.bitflip(m=m, f=4, T=5, beta=beta, target_hidden=12, num_steps=100, seed=2, threshold=threshold,
                          batch_size=4)
    x, y, _ = _run(s, 0, 20)
    x, y = x.reshape(-1, m + 1), y.reshape(-1)
    tgt = s.task_data(0)["target"]
    ref = _ltu_reference(tgt["W"], tgt["w_out"], float(tgt["b_out"]), x, m, beta, m + coef_offset)
    np.testing.assert_allclose(y, ref, atol=1e-5)
    assert set(np.unique(tgt["W"]).tolist()) == {-1.0, 1.0} and abs(float(tgt["b_out"])) == 1.0
    assert len(np.unique(ref)) > 2  # the target is not trivially constant
    xm, ym, _ = s.metric_batch(0)
    np.testing.assert_allclose(ym[:, 0], _ltu_reference(tgt["W"], tgt["w_out"], float(tgt["b_out"]), xm, m, beta,
                                                        m + coef_offset), atol=1e-5)
    assert xm.shape == (128, m + 1) and np.all(xm[:, -1] == 1)


def test_tasks_continue_the_same_stream():
    s = pdx.tasks.bitflip(m=6, f=3, T=4, target_hidden=5, num_steps=100, steps_per_task=30, seed=0)
    assert s.num_tasks == 4 and s.steps_per_epoch(1) == 30 and s.loss == "mse" and s.num_outputs == 1
    whole = pdx.tasks.bitflip(m=6, f=3, T=4, target_hidden=5, num_steps=100, seed=0)
    x0, _, _ = _run(whole, 0, 60)
    x1, _, _ = _run(s, 1, 30)
    np.testing.assert_array_equal(x1[:, 0, :3], x0[30:60, 0, :3])  # flipping bits of global steps 30..59
    assert s.input_shape == (7,) and s.batch_size == 1

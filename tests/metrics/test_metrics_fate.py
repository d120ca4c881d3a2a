"""Unit fate: hand-written state sequences with known transitions, dwell times and revivals;
per-unit states from planted (h, g, z); parameter signals and accuracy against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError

m = pdx.metrics
A, DO, S, F, DE = (m.STATES.index(s) for s in ("active", "dormant", "saturated", "frozen", "dead"))


def test_unit_states_priority_and_clusters():
    rng = np.random.default_rng(0)
    n = 200
    h = rng.uniform(0.5, 1.5, size=(n, 6)).astype(np.float32)
    g = rng.normal(size=(n, 6)).astype(np.float32)
    z = rng.normal(size=(n, 6)).astype(np.float32) + 3.0
    h[:, 0] = 0.0  # dead (also dormant, saturated, frozen): reported as dead
    g[:, 0] = 0.0
    z[:, 0] = -1.0
    z[:, 1] = -1.0  # frozen ReLU input but non-zero output (a hand-built inconsistency): frozen
    g[:, 2] = 0.0  # saturated
    h[:, 3] *= 1e-3  # dormant
    h[:, 5] = h[:, 4]  # clones, active
    st = m.unit_states(h, g, z, activation="relu")
    np.testing.assert_array_equal(np.asarray(st.state), [DE, F, S, DO, A, A])
    np.testing.assert_array_equal(np.asarray(st.cluster), [-1, -1, -1, -1, 4, 4])
    st2 = m.unit_states(h)  # without g and z: no saturated / frozen states
    np.testing.assert_array_equal(np.asarray(st2.state), [DE, A, A, DO, A, A])


def test_track_fate_counts_by_hand():
    # 3 units, 6 records, task switch between records 2 and 3
    states = np.array([
        [A, A, DE],
        [A, DO, DE],
        [DE, DO, A],   # unit 2 revives (within task); unit 0 dies
        [DE, A, A],    # across the switch: unit 1 reactivates
        [A, A, DE],    # unit 0 revives
        [A, A, DE],
    ])
    tasks = [0, 0, 0, 1, 1, 1]
    f = m.track_fate(states, tasks=tasks)
    t = f["transitions"]
    assert t.sum() == 15
    assert t[A, A] == 5 and t[DE, DE] == 3 and t[A, DE] == 2 and t[DE, A] == 2
    assert t[A, DO] == 1 and t[DO, DO] == 1 and t[DO, A] == 1
    assert f["transitions_at_switch"].sum() == 3 and f["transitions_at_switch"][DO, A] == 1
    np.testing.assert_array_equal(f["transitions_within_task"] + f["transitions_at_switch"], t)
    np.testing.assert_array_equal(f["revivals"], [1, 0, 1])
    assert f["revivals_at_switch"] == 0
    np.testing.assert_array_equal(f["reactivations"], [1, 1, 1])
    # dwell: unit 0 runs A2 DE2 A2(censored); unit 1 A1 DO2 A3(c); unit 2 DE2 A2 DE2(c)
    np.testing.assert_array_equal(np.sort(f["dwell"]["dead"]["lengths"]), [2, 2, 2])
    assert f["dwell"]["dead"]["censored"].sum() == 1
    assert f["dwell_mean"]["active"] == pytest.approx((2 + 1 + 2) / 3)
    assert f["dwell_mean"]["dormant"] == 2.0 and np.isnan(f["dwell_mean"]["frozen"])
    np.testing.assert_allclose(f["fractions"][:, A], [2 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    # dead persistence: r1 {2}->{2}: 1; r2 {0} from {2}: 0; r3 {0} from {0}: 1; r4 from {0}: 0; r5 {2} from {2}: 1
    np.testing.assert_allclose(f["dead_persistence"], [1, 0, 1, 0, 1])
    assert f["ever"]["dead"] == pytest.approx(2 / 3) and f["ever"]["dormant"] == pytest.approx(1 / 3)


def test_track_fate_clusters():
    clusters = np.array([
        [0, 0, 0, -1],
        [0, 0, -1, -1],  # unit 2 leaves
        [-1, 1, 1, -1],  # 0 leaves, 2 joins a new cluster with 1
    ])
    states = np.zeros_like(clusters)
    f = m.track_fate(states, clusters=clusters)
    np.testing.assert_allclose(f["clone_fraction"], [0.75, 0.5, 0.5])
    np.testing.assert_allclose(f["clone_pair_persistence"], [1 / 3, 0.0])
    np.testing.assert_array_equal(f["clone_leaves"], [1, 1])
    np.testing.assert_array_equal(f["clone_joins"], [0, 1])
    with pytest.raises(InputError, match="states hold"):
        m.track_fate(np.full((2, 2), 7))
    with pytest.raises(InputError, match="tasks"):
        m.track_fate(states, tasks=[0, 1])


def test_param_signals_and_accuracy_against_numpy():
    rng = np.random.default_rng(0)
    params = {"a": {"kernel": rng.normal(size=(3, 4)), "bias": rng.normal(size=4)}, "b": rng.normal(size=(2,))}
    ref = jax.tree.map(lambda x: x + 0.5, params)
    norms = m.param_norms(params)
    flat_a = np.r_[params["a"]["kernel"].ravel(), params["a"]["bias"]]
    assert float(norms["a"]) == pytest.approx(np.linalg.norm(flat_a), rel=1e-6)
    assert float(norms["all"]) == pytest.approx(np.linalg.norm(np.r_[flat_a, params["b"]]), rel=1e-6)
    assert float(m.param_abs_mean(params)["b"]) == pytest.approx(np.abs(params["b"]).mean(), rel=1e-6)
    assert float(m.param_distance(params, ref)["all"]) == pytest.approx(0.5 * np.sqrt(18), rel=1e-6)
    logits = jnp.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [1.0, 0.0, 2.0]])
    y = jnp.array([2, 1, 2])
    assert float(m.accuracy(logits, y)) == pytest.approx(2 / 3)
    assert float(m.masked_accuracy(logits, y, jnp.array([False, True, True]))) == 1.0
    with pytest.raises(InputError, match="class_mask"):
        m.masked_accuracy(logits, y, jnp.ones(2, bool))

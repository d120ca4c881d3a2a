"""Permuted inputs / labels, random labels, teacher regression, and the stream registry."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError


@pytest.fixture(scope="module")
def digits():
    return pdx.data.load("digits")


def test_permuted_inputs_permutes_pixels_task0_identity(digits):
    s = pdx.tasks.permuted_inputs(digits, 3, seed=1, num_examples=200)
    d0, d1, d2 = (s.task_data(t) for t in range(3))
    assert d0["x"].shape == d1["x"].shape == (200, 8, 8, 1)
    np.testing.assert_array_equal(d0["y"], d1["y"])
    base = digits.x_train[s.subset]
    np.testing.assert_array_equal(d0["x"], base)
    perm = s.permutation(1)
    assert sorted(perm.tolist()) == list(range(64)) and not np.array_equal(perm, np.arange(64))
    np.testing.assert_array_equal(d1["x"].reshape(200, 64), base.reshape(200, 64)[:, perm])
    assert not np.array_equal(s.permutation(1), s.permutation(2))
    assert d1["class_mask"].all() and s.steps_per_epoch(0) == 2


def test_permuted_inputs_keep_channels_together():
    rng = np.random.default_rng(0)
    x = rng.random((12, 4, 4, 3)).astype(np.float32)
    ds = pdx.data.Dataset(x, np.arange(12, dtype=np.int32) % 3, x, np.arange(12, dtype=np.int32) % 3,
                          num_classes=3, input_shape=(4, 4, 3), name="fake")
    s = pdx.tasks.permuted_inputs(ds, 2, seed=0)
    xp = s.task_data(1)["x"].reshape(12, 16, 3)
    np.testing.assert_array_equal(xp, x.reshape(12, 16, 3)[:, s.permutation(1)])


def test_permuted_labels_is_a_consistent_relabelling(digits):
    s = pdx.tasks.permuted_labels(digits, 3, seed=2)
    y0, y1 = s.task_data(0)["y"], s.task_data(1)["y"]
    np.testing.assert_array_equal(y0, digits.y_train)
    perm = s.label_permutation(1)
    np.testing.assert_array_equal(y1, perm[y0])
    _, yt, _ = s.metric_batch(1, split="test")
    avail = np.bincount(perm[digits.y_test], minlength=10)  # test examples per permuted label
    np.testing.assert_array_equal(np.bincount(yt, minlength=10), np.minimum(50, avail))


def test_random_labels_fresh_per_task_and_no_test_split(digits):
    s = pdx.tasks.random_labels(digits, 2, seed=0, num_examples=300)
    y0, y1 = s.task_data(0)["y"], s.task_data(1)["y"]
    assert y0.shape == (300,) and y0.min() >= 0 and y0.max() <= 9
    assert (y0 == y1).mean() < 0.3
    np.testing.assert_array_equal(s.task_data(0)["y"], y0)
    with pytest.raises(InputError, match="split='test'"):
        s.metric_batch(0, split="test")


def test_gaussian_teacher_targets_match_numpy_forward():
    s = pdx.tasks.make_stream("teacher", None, input_dim=5, hidden=7, num_outputs=2, num_tasks=2, batch_size=16)
    data = jax.tree_util.tree_map(jnp.asarray, s.task_data(1))
    x, y, mask = jax.jit(s.sample)(data, jax.random.PRNGKey(0), 3)
    p = s.teacher(1)
    ref = np.tanh(np.asarray(x, np.float64) @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)
    assert x.shape == (16, 5) and y.shape == (16, 2) and mask.all() and s.loss == "mse"
    assert not np.allclose(s.teacher(0)["W1"], p["W1"])
    xm, ym, _ = s.metric_batch(0)
    assert xm.shape == (500, 5) and ym.shape == (500, 2)


def test_teacher_on_dataset_inputs(digits):
    s = pdx.tasks.teacher(digits, hidden=6, num_examples=100, batch_size=10)
    d = s.task_data(0)
    p = s.teacher(0)
    ref = np.tanh(d["x"].reshape(100, -1) @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    np.testing.assert_allclose(d["y"], ref, rtol=1e-5, atol=1e-5)
    x, y, _ = jax.jit(s.sample)(jax.tree_util.tree_map(jnp.asarray, d), jax.random.PRNGKey(1), 0)
    assert x.shape == (10, 8, 8, 1) and y.shape == (10, 1)


def test_registry(digits):
    assert set(pdx.tasks.STREAMS) == {"class_split", "permuted_inputs", "permuted_labels", "random_labels",
                                      "random_subsets", "bitflip", "teacher"}
    s = pdx.tasks.make_stream("permuted_labels", digits, num_tasks=2, batch_size=8, metric_batch_size=20)
    assert s.batch_size == 8 and s.metric_batch(0)[0].shape == (20, 8, 8, 1)
    b = pdx.tasks.make_stream("bitflip", digits, batch_size=1, metric_batch_size=64, num_steps=1000)
    assert b.metric_batch(0)[0].shape == (64, 21)
    for kind, opts in (("class_split", {"classes_per_task": 2}), ("permuted_inputs", {}), ("permuted_labels", {}),
                       ("random_labels", {}), ("random_subsets", {}), ("bitflip", {"num_steps": 100}),
                       ("teacher", {})):
        json.dumps(pdx.tasks.make_stream(kind, digits, **opts).describe())
    with pytest.raises(InputError, match="num_examples=99999"):
        pdx.tasks.make_stream("random_labels", digits, num_examples=99999)
    with pytest.raises(InputError, match="not a classification dataset"):
        pdx.tasks.make_stream("class_split", pdx.data.load("teacher"), classes_per_task=2)
    with pytest.raises(InputError, match="not a classification dataset"):
        pdx.tasks.make_stream("random_subsets", pdx.data.load("teacher"), classes_per_task=2)

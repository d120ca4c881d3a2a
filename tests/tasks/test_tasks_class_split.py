"""Class split stream: disjoint classes, masks, balanced metric batches, pure sampling, epochs."""

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


@pytest.fixture(scope="module")
def stream(digits):
    return pdx.tasks.class_split(digits, 2, seed=3, batch_size=14)


def test_tasks_have_disjoint_classes_and_correct_masks(stream, digits):
    seen = []
    shapes = set()
    for t in range(stream.num_tasks):
        data = stream.task_data(t)
        classes = set(np.unique(data["y"]).tolist())
        assert len(classes) == 2
        assert set(np.flatnonzero(data["class_mask"]).tolist()) == classes
        seen.append(classes)
        shapes.add(tuple((k, v.shape, v.dtype.str) for k, v in sorted(data.items())))
    assert len(shapes) == 1  # one compiled program serves every task
    assert set().union(*seen) == set(range(10)) and sum(len(s) for s in seen) == 10
    counts = np.bincount(digits.y_train, minlength=10)
    sizes = [counts[list(s)].sum() for s in seen]
    assert stream.task_size == min(sizes)
    assert stream.describe()["truncated"] == [s - min(sizes) for s in sizes]
    assert stream.num_outputs == 10 and stream.loss == "xent" and stream.head_zeroing
    json.dumps(stream.describe())


def test_class_order_is_seeded(digits):
    a = pdx.tasks.class_split(digits, 2, seed=3).describe()["task_classes"]
    b = pdx.tasks.class_split(digits, 2, seed=3).describe()["task_classes"]
    c = pdx.tasks.class_split(digits, 2, seed=4).describe()["task_classes"]
    assert a == b and a != c


def test_metric_batches_are_class_balanced_and_capped(digits):
    s = pdx.tasks.class_split(digits, 3, seed=0, metric_batch_size=101)
    x, y, mask = s.metric_batch(1)
    counts = np.bincount(y, minlength=10)[s.describe()["task_classes"][1]]
    assert sorted(counts.tolist()) == [33, 34, 34] and x.shape == (101, 8, 8, 1)
    assert set(np.flatnonzero(mask)) == set(s.describe()["task_classes"][1])
    np.testing.assert_array_equal(s.metric_batch(1)[0], x)  # fixed
    big = pdx.tasks.class_split(digits, 2, seed=0, metric_batch_size=1000)
    _, yb, _ = big.metric_batch(0, split="test")
    avail = np.bincount(digits.y_test, minlength=10)
    for c in big.describe()["task_classes"][0]:
        assert (yb == c).sum() == min(500, avail[c])


def test_parity_metric_batch_is_first_samples_single_class(digits):
    s = pdx.tasks.class_split(digits, 2, seed=0, metric_batch_size=100, parity_single_class=True)
    _, y, _ = s.metric_batch(0)
    first_class = s.describe()["task_classes"][0][0]
    assert np.all(y == first_class)


def test_sample_is_pure_jittable_and_vmappable(stream):
    data = jax.tree_util.tree_map(jnp.asarray, stream.task_data(2))
    key = jax.random.PRNGKey(0)
    x1, y1, m1 = stream.sample(data, key, 5)
    x2, y2, _ = jax.jit(stream.sample)(data, key, jnp.int32(5))
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.shape == (14, 8, 8, 1) and y1.dtype == jnp.int32 and m1.shape == (10,)
    assert set(np.asarray(y1).tolist()) <= set(np.flatnonzero(np.asarray(m1)).tolist())
    _, y3, _ = stream.sample(data, key, 6)
    _, y4, _ = stream.sample(data, jax.random.PRNGKey(1), 5)
    xs, _, _ = jax.vmap(stream.sample, in_axes=(None, 0, None))(data, jax.random.split(key, 3), 5)
    assert xs.shape == (3, 14, 8, 8, 1)
    assert not (np.array_equal(y1, y3) and np.array_equal(y1, y4))


def _ids_data(n, num_outputs=10):
    return {"x": jnp.arange(n, dtype=jnp.float32)[:, None], "y": jnp.zeros(n, jnp.int32),
            "class_mask": jnp.ones(num_outputs, bool)}


def _visited(stream, data, key, steps):
    f = jax.jit(jax.vmap(stream.sample, in_axes=(None, None, 0)))
    x, _, _ = f(data, key, jnp.arange(steps))
    return np.asarray(x[..., 0], int)


def test_epoch_sampling_visits_every_example_once_per_epoch(stream):
    assert stream.steps_per_epoch(0) == -(-stream.task_size // 14)
    n, spe = 266, 19  # batch 14 divides 266
    ids = _visited(stream, _ids_data(n), jax.random.PRNGKey(4), 3 * spe)
    for e in range(3):
        np.testing.assert_array_equal(np.sort(ids[e * spe:(e + 1) * spe].ravel()), np.arange(n))
    assert not np.array_equal(ids[:spe], ids[spe:2 * spe])  # a new permutation each epoch


def test_epoch_sampling_with_remainder_covers_everything(digits):
    s = pdx.tasks.class_split(digits, 2, seed=3, batch_size=32)
    n, spe = 50, -(-50 // 32)
    ids = _visited(s, _ids_data(n), jax.random.PRNGKey(5), 2 * spe)
    for e in range(2):
        epoch = ids[e * spe:(e + 1) * spe].ravel()
        assert set(epoch.tolist()) == set(range(n))
        assert len(set(epoch[:n].tolist())) == n  # first n draws of the epoch are a permutation


def test_random_sampling_in_range_with_replacement(digits):
    s = pdx.tasks.class_split(digits, 2, seed=3, batch_size=64, sampling="random")
    ids = _visited(s, _ids_data(20), jax.random.PRNGKey(6), 50)
    assert ids.min() >= 0 and ids.max() < 20 and set(ids.ravel().tolist()) == set(range(20))
    assert any(len(set(row.tolist())) < 64 for row in ids)


def test_augmentation_applies_to_image_streams():
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 3)).astype(np.float32)
    ds = pdx.data.Dataset(x, np.repeat(np.arange(4), 10).astype(np.int32), x[:8], np.arange(8, dtype=np.int32) % 4,
                          num_classes=4, input_shape=(8, 8, 3), name="fake", augment_pad=2)
    s = pdx.tasks.class_split(ds, 2, batch_size=10)
    assert s.describe()["augment_pad"] == 2
    data = jax.tree_util.tree_map(jnp.asarray, s.task_data(0))
    xa, _, _ = jax.jit(s.sample)(data, jax.random.PRNGKey(0), 0)
    plain = pdx.tasks.class_split(ds, 2, batch_size=10, augment=False)
    xp, _, _ = jax.jit(plain.sample)(data, jax.random.PRNGKey(0), 0)
    assert xa.shape == xp.shape and not np.array_equal(xa, xp)


def test_bad_input_names_the_value(digits):
    with pytest.raises(InputError, match="classes_per_task=11"):
        pdx.tasks.class_split(digits, 11)
    with pytest.raises(InputError, match="classes_per_task=0"):
        pdx.tasks.class_split(digits, 0)
    with pytest.raises(InputError, match="num_tasks=6"):
        pdx.tasks.class_split(digits, 2, num_tasks=6)
    with pytest.raises(InputError, match="batch_size=0"):
        pdx.tasks.class_split(digits, 2, batch_size=0)
    with pytest.raises(InputError, match="sampling='shuffle'"):
        pdx.tasks.class_split(digits, 2, sampling="shuffle")
    with pytest.raises(InputError, match="task=5"):
        pdx.tasks.class_split(digits, 2).task_data(5)
    with pytest.raises(InputError, match="'colour'"):
        pdx.tasks.make_stream("class_split", digits, classes_per_task=2, colour=1)
    with pytest.raises(InputError, match="'split_classes'"):
        pdx.tasks.make_stream("split_classes", digits)

"""random_subsets: any number of tasks, each a seeded draw of k classes (pure in (seed, task)),
balanced task data, fresh head masks, and exact resume through ``pdx.train``; plus permuted
inputs / labels with many tasks on mnist1d and digits."""

import json
import shutil

import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError
from plasticity_dynamics.training import Config, list_checkpoints, train


@pytest.fixture(scope="module")
def digits():
    return pdx.data.load("digits")


@pytest.fixture(scope="module")
def mnist1d():
    return pdx.data.load("mnist1d")


def _rows(x):
    return {r.tobytes() for r in np.ascontiguousarray(x, np.float32).reshape(len(x), -1)}


def test_each_task_is_k_balanced_classes_of_the_dataset_with_their_mask(digits):
    s = pdx.tasks.random_subsets(digits, 3, 40, seed=7, batch_size=16)
    counts = np.bincount(digits.y_train, minlength=10)
    assert s.examples_per_class == counts.min() and s.task_size == 3 * counts.min()
    shapes = set()
    for t in (0, 1, 17, 39):
        d = s.task_data(t)
        classes = s.task_classes(t)
        assert len(set(classes.tolist())) == 3 and all(0 <= c < 10 for c in classes)
        # exactly examples_per_class examples of each drawn class, nothing else
        np.testing.assert_array_equal(np.bincount(d["y"], minlength=10)[classes], [counts.min()] * 3)
        assert np.bincount(d["y"], minlength=10).sum() == s.task_size
        assert set(np.flatnonzero(d["class_mask"]).tolist()) == set(classes.tolist())
        # every (x, y) pair is a real training example of that class, none repeated
        for c in classes:
            xs = d["x"][d["y"] == c]
            assert _rows(xs) <= _rows(digits.x_train[digits.y_train == c]) and len(_rows(xs)) == len(xs)
        shapes.add(tuple((k, v.shape, v.dtype.str) for k, v in sorted(d.items())))
    assert len(shapes) == 1  # one compiled program serves every task
    assert s.num_outputs == 10 and s.head_zeroing and s.loss == "xent"
    json.dumps(s.describe())


def test_draws_are_a_pure_function_of_seed_and_task(digits):
    long = pdx.tasks.random_subsets(digits, 2, 1000, seed=3, examples_per_class=20)
    short = pdx.tasks.random_subsets(digits, 2, 800, seed=3, examples_per_class=20)
    other = pdx.tasks.random_subsets(digits, 2, 1000, seed=4, examples_per_class=20)
    for t in (0, 5, 799):  # independent of num_tasks and of which tasks were built before
        np.testing.assert_array_equal(long.task_classes(t), short.task_classes(t))
        for a, b in zip(long.task_data(t).values(), short.task_data(t).values()):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(long.metric_batch(t), short.metric_batch(t)):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(long.task_classes(999), long.task_classes(999))
    draws = [tuple(long.task_classes(t)) for t in range(50)]
    assert draws != [tuple(other.task_classes(t)) for t in range(50)]
    assert len(set(draws)) > 10  # the stream keeps changing (45 unordered pairs exist)
    with pytest.raises(InputError, match="task=1000"):
        long.task_classes(1000)


def test_classes_are_drawn_uniformly(mnist1d):
    s = pdx.tasks.random_subsets(mnist1d, 2, 3000, seed=0)
    drawn = np.concatenate([s.task_classes(t) for t in range(3000)])
    freq = np.bincount(drawn, minlength=10)
    # each class is in a task with probability 2/10: binomial mean 600, sd ~ 21.9; 5 sd bounds
    assert np.all(np.abs(freq - 600) < 5 * np.sqrt(3000 * 0.2 * 0.8)), freq


def test_metric_batch_is_balanced_over_the_task_classes(digits):
    s = pdx.tasks.random_subsets(digits, 4, 10, seed=1, metric_batch_size=101)
    x, y, mask = s.metric_batch(6)
    assert sorted(np.bincount(y, minlength=10)[s.task_classes(6)].tolist()) == [25, 25, 25, 26]
    assert set(np.unique(y).tolist()) == set(s.task_classes(6).tolist()) == set(np.flatnonzero(mask).tolist())
    _, yt, _ = s.metric_batch(6, split="test")
    assert set(np.unique(yt).tolist()) <= set(s.task_classes(6).tolist())


def test_bad_options_raise_input_error(digits):
    with pytest.raises(InputError, match="classes_per_task=11"):
        pdx.tasks.random_subsets(digits, 11)
    with pytest.raises(InputError, match="examples_per_class=100000"):
        pdx.tasks.random_subsets(digits, 2, examples_per_class=100000)
    with pytest.raises(InputError, match="num_tasks=0"):
        pdx.tasks.random_subsets(digits, 2, 0)
    with pytest.raises(InputError, match="option 'bogus'"):
        pdx.tasks.make_stream("random_subsets", digits, bogus=1)
    labels = pdx.data.Dataset(digits.x_train, digits.y_train, digits.x_test, digits.y_test, num_classes=11,
                              input_shape=digits.input_shape, name="eleven")
    with pytest.raises(InputError, match="class 10"):
        pdx.tasks.random_subsets(labels, 2)


@pytest.mark.parametrize("name", ["mnist1d", "digits"])
def test_permuted_streams_have_any_number_of_tasks(name, request):
    ds = request.getfixturevalue(name)
    pi = pdx.tasks.make_stream("permuted_inputs", ds, num_tasks=500, num_examples=50, seed=2)
    pl = pdx.tasks.make_stream("permuted_labels", ds, num_tasks=500, num_examples=50, seed=2)
    d = int(np.prod(ds.input_shape))
    perms = [pi.permutation(t) for t in (1, 250, 499)]
    for p in perms:
        assert sorted(p.tolist()) == list(range(d))
    assert len({p.tobytes() for p in perms}) == 3
    x499 = pi.task_data(499)["x"].reshape(50, d)
    np.testing.assert_array_equal(x499, pi.task_data(0)["x"].reshape(50, d)[:, perms[2]])
    lab = [pl.label_permutation(t) for t in (1, 250, 499)]
    assert len({p.tobytes() for p in lab}) == 3
    np.testing.assert_array_equal(pl.task_data(499)["y"], lab[2][pl.task_data(0)["y"]])
    # pure in (seed, task): a stream with fewer tasks rebuilds the same task
    again = pdx.tasks.make_stream("permuted_inputs", ds, num_tasks=300, num_examples=50, seed=2)
    np.testing.assert_array_equal(again.permutation(250), perms[1])


def _cfg(**extra):
    base = {
        "model.name": "mlp", "model.preset": "tiny", "data.name": "mnist1d", "tasks.kind": "random_subsets",
        "tasks.classes_per_task": 3, "tasks.num_tasks": 4, "tasks.metric_batch_size": 60,
        "tasks.examples_per_class": 40, "train.steps_per_task": 6, "train.batch_size": 16,
        "record.every": 3, "record.checkpoint_every": 6, "seeds": 2,
    }
    base.update(extra)
    return Config().with_overrides(base)


def test_engine_uses_classes_per_task_and_resume_equals_uninterrupted(tmp_path):
    full = train(_cfg(), out=tmp_path / "full", progress=False)
    stream = full.components.stream
    assert stream.kind == "random_subsets" and stream.classes_per_task == 3 and stream.task_size == 120
    assert [s["task"] for s in full.summary["schedule"]] == [0, 1, 2, 3]
    assert list_checkpoints(tmp_path / "full") == [6, 12, 18, 24]
    cut = tmp_path / "cut"  # simulate a stop after task 1
    shutil.copytree(tmp_path / "full", cut)
    for step in (18, 24):
        (cut / "checkpoints" / f"step_{step:08d}.npz").unlink()
        (cut / "checkpoints" / f"step_{step:08d}.sha256").unlink()
    resumed = train(None, out=cut, resume=True, progress=False)
    key = lambda rows: {(r[0], r[1], r[3], r[4]): r[5] for r in rows}  # noqa: E731
    assert key(resumed.rows) == key(full.rows)
    assert {r[2] for r in resumed.rows} == {0, 1, 2, 3}

"""A record at a task's end is taken on that task's metric batch, before the next task starts.

With head zeroing, the next task's start sets the output layer to 0, so dL/dh = 0 on every
unit and the paper's gradient-based saturated fraction reads 1.0; a boundary record must not
show that artefact. The oracle recomputes the metrics from the saved checkpoint on each batch.
"""

import jax
import jax.numpy as jnp
import numpy as np

from plasticity_dynamics.training import Config, train
from plasticity_dynamics.training.engine import make_task_start_fn


def test_task_end_record_uses_the_finished_task_batch(tmp_path):
    cfg = Config().with_overrides({
        "model.preset": "tiny", "model.dropout": 0.0, "tasks.classes_per_task": 5, "tasks.num_tasks": 2,
        "tasks.metric_batch_size": 40, "train.steps_per_task": 10, "train.batch_size": 8, "record.every": 10,
        "seeds": 1})
    run = train(cfg, out=tmp_path / "run", progress=False)
    c = run.components
    state = run.load_checkpoint(10)  # end of task 0
    one = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), state)
    names = [m for m, layer in run.table.metrics() if m.startswith("saturated_frac") and layer]
    assert names
    sat = names[0]
    on_task0 = c.metrics_fn(one["variables"], *map(jnp.asarray, c.stream.metric_batch(0)))
    table = run.table
    for layer, value in on_task0[sat].items():
        rec = table["value"][table.select(sat, layer, step=10)]
        np.testing.assert_allclose(rec, float(value), rtol=1e-5, atol=1e-7)
    # the artefact the record avoids: after the switch (head zeroed) on task 1's batch every unit
    # reads saturated
    switched = make_task_start_fn(c)(one, 0, 1)
    on_task1 = c.metrics_fn(switched["variables"], *map(jnp.asarray, c.stream.metric_batch(1)))
    assert all(float(v) == 1.0 for v in on_task1[sat].values())
    assert any(float(v) < 1.0 for v in on_task0[sat].values())

"""The engine compiles once per static configuration, measured with jax.monitoring compile events.

- a second identical ``train()`` in the same process compiles no chunk or metric program;
- 40 tasks of 391 steps with ``record.every = 100`` (chunks of 100, 9, 82, 18, ... steps)
  compile one chunk program;
- the masked chunk gives the same numbers as chunks scanned at their own length.
"""

import os
import subprocess
import sys

import jax
import numpy as np

from plasticity_dynamics.runtime import CompileLog
from plasticity_dynamics.training import Config, engine, train

def tiny(**over):
    base = {"model.preset": "tiny", "model.dropout": 0.0, "tasks.classes_per_task": 5, "tasks.num_tasks": 2,
            "tasks.metric_batch_size": 40, "train.steps_per_task": 12, "train.batch_size": 8, "record.every": 5,
            "seeds": 2}
    return Config().with_overrides({**base, **over})


def test_second_identical_train_compiles_no_chunk_or_metric_program():
    engine._PROGRAMS.clear()
    cfg = tiny(**{"optim.lr": 0.0123})  # a config no other test uses
    with CompileLog() as first:
        a = train(cfg, progress=False)
    assert first.count("jit(chunk)") == 1 and first.count("jit(counted_metrics)") == 1, first.names
    with CompileLog() as second:
        b = train(cfg, progress=False)
    assert sum(second.count(f"jit({f})") for f in ("chunk", "counted_metrics", "task_start")) == 0, second.names
    np.testing.assert_array_equal(a.table["value"], b.table["value"])


def test_forty_tasks_of_391_steps_compile_one_chunk_program():
    engine._PROGRAMS.clear()
    engine.TRACE_COUNTS.clear()
    cfg = Config().with_overrides({
        "model.preset": "tiny", "model.widths": [8], "model.norm": "none", "model.dropout": 0.0,
        "tasks.kind": "permuted_inputs", "tasks.num_tasks": 40, "tasks.num_examples": 256,
        "tasks.metric_batch_size": 16, "train.steps_per_task": 391, "train.batch_size": 4, "record.every": 100,
        "record.metrics": False, "seeds": 1, "optim.name": "sgd", "optim.lr": 0.01})
    with CompileLog() as names:
        run = train(cfg, progress=False)
    lengths = {int(s) for s in np.diff(np.concatenate([[0], np.unique(run.table["step"])]))}
    assert len(lengths) > 10  # many distinct chunk lengths ...
    assert names.count("jit(chunk)") == 1 and engine.TRACE_COUNTS["chunk"] == 1, names.names  # ... one program


def test_masked_chunks_equal_unmasked_chunks():
    """A chunk of 7 valid steps in a 12-step scan equals a scan of exactly 7 steps."""
    import jax.numpy as jnp

    cfg = tiny(**{"seeds": 1, "record.metrics": False})
    c = engine.build(cfg)
    state = jax.vmap(lambda s: engine.init_state(c, s))(jnp.asarray([0]))
    data = jax.tree_util.tree_map(jnp.asarray, c.stream.task_data(0))
    args = (jnp.asarray([0], jnp.int32), data, jnp.int32(0), jnp.int32(0), jnp.int32(0))
    masked = jax.jit(jax.vmap(engine.make_chunk_fn(c, 12), in_axes=(0, 0, None, None, None, None, None)))
    exact = jax.jit(jax.vmap(engine.make_chunk_fn(c, 7), in_axes=(0, 0, None, None, None, None, None)))
    s1, l1, _ = masked(state, *args, jnp.int32(7))
    s2, l2, _ = exact(state, *args, jnp.int32(7))
    np.testing.assert_allclose(np.asarray(l1)[:, :7], np.asarray(l2), rtol=1e-6)
    assert np.all(np.asarray(l1)[:, 7:] == 0)
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_configure_jax_turns_on_the_persistent_cache_unless_told_not_to(tmp_path):
    code = ("import jax, plasticity_dynamics as pdx; s = pdx.configure_jax(); "
            "print(s['compilation_cache']); print(jax.config.jax_compilation_cache_dir)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["PDX_COMPILATION_CACHE_DIR"] = str(tmp_path / "cache")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == [str(tmp_path / "cache")] * 2, out.stderr
    env["PDX_NO_COMPILATION_CACHE"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["None", "None"], out.stderr

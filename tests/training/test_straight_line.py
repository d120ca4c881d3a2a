"""Straight-line training of convolutional models on XLA:CPU (``loop.py``, ``engine.straight_line``).

The oracle of every check is the scanned loop that was the only path before: the same steps
written as a ``lax.scan`` (``run_steps`` without ``unroll``), which the rest of the suite tests
against independent references. Straight-line code may fuse differently, so values agree to
float32 rounding (the scanned and the unrolled programs are two XLA programs), not bit for bit.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.loop import block_length, run_blocks, run_steps, straight_line_preferred
from plasticity_dynamics.runtime import CompileLog
from plasticity_dynamics.training import Config, engine, train


def _step(carry, t):
    """A nonlinear map with a step-dependent input: x <- tanh(W x + t), output |x|²."""
    w, x = carry
    x = jnp.tanh(w @ x + 0.01 * t.astype(jnp.float32))
    return (w, x), jnp.sum(x * x)


def _carry():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    return jax.random.normal(k1, (6, 6)) / 2, jax.random.normal(k2, (6,))


def test_unrolled_steps_and_host_blocks_equal_the_scanned_loop():
    scanned, outs = jax.jit(lambda c: run_steps(_step, c, 12, start=3))(_carry())
    unrolled, outs_u = jax.jit(lambda c: run_steps(_step, c, 12, start=3, unroll=True))(_carry())
    program = jax.jit(lambda c, t0: run_steps(_step, c, 4, start=t0, unroll=True))
    with CompileLog() as log:
        blocked, outs_b = run_blocks(program, _carry(), 12, 4, start=3)
    assert log.count("jit(<lambda>)") == 1, log.names  # one program for the three blocks
    for got, got_outs in ((unrolled, outs_u), (blocked, outs_b)):
        np.testing.assert_allclose(got[1], scanned[1], rtol=1e-6, atol=1e-7)
        assert got_outs.shape == outs.shape == (12,)
        np.testing.assert_allclose(got_outs, outs, rtol=1e-6)
    # the start index reaches the steps: another start gives other values
    other, _ = run_blocks(program, _carry(), 12, 4, start=4)
    assert not np.allclose(other[1], scanned[1])


def test_run_blocks_and_run_steps_refuse_what_they_cannot_do():
    program = jax.jit(lambda c, t0: run_steps(_step, c, 4, start=t0, unroll=True))
    with pytest.raises(ValueError, match="length 10 is not a positive multiple of block 4"):
        run_blocks(program, _carry(), 10, 4)
    with pytest.raises(ValueError, match="unroll=True runs every step"):
        run_steps(_step, _carry(), 4, valid=2, unroll=True)


def test_block_length_is_the_largest_divisor_up_to_four():
    assert [block_length(n) for n in (1, 7, 50, 75, 100, 9)] == [1, 1, 2, 3, 4, 3]
    assert block_length(12, most=6) == 6


def test_straight_line_is_preferred_for_convolutions_on_cpu_only():
    x = jnp.zeros((1, 8, 8, 1))
    on_cpu = jax.default_backend() == "cpu"
    for name, expected in (("cnn", on_cpu), ("resnet18", on_cpu), ("vit", False)):
        model = pdx.models.create(name, preset="tiny", num_outputs=10)
        v = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0), x))
        assert straight_line_preferred(lambda v_, x_, m=model: m.apply(v_, x_).logits, v, x) is expected, name
    mlp = pdx.models.create("mlp", preset="tiny", num_outputs=10)
    xm = jnp.zeros((1, 40))
    assert straight_line_preferred(lambda v_, x_: mlp.apply(v_, x_).logits, mlp.init(jax.random.PRNGKey(0), xm),
                                   xm) is False


def _cnn(**over):
    base = {"model.name": "cnn", "model.preset": "tiny", "model.dropout": 0.1, "data.name": "digits",
            "tasks.classes_per_task": 5, "tasks.num_tasks": 2, "tasks.metric_batch_size": 32,
            "train.steps_per_task": 12, "train.batch_size": 8, "record.every": 6, "seeds": 2,
            "optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9}
    return Config().with_overrides({**base, **over})


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="straight-line training is the XLA:CPU path")
@pytest.mark.parametrize("every, block", [(6, 3), (5, 1)])
def test_conv_engine_blocks_equal_the_scanned_chunks(monkeypatch, every, block):
    """A tiny CNN (batch norm, dropout, SGD with momentum, head zeroing) trains in straight-line
    blocks (every = 6: chunks of 6, block 3; every = 5: chunks 5, 5, 2, 3, 5, 4, block 1) with
    one chunk program, and records what the scanned chunks record. (Not Adam: m / sqrt(v) of
    near-zero gradients turns float32 rounding differences into lr-sized steps, 1e-3 apart
    after 24 steps; with SGD every value agrees to 1e-4.)"""
    cfg = _cnn(**{"record.every": every})
    c = engine.build(cfg)
    shapes = jax.eval_shape(lambda: engine.init_state(c, 0))["variables"]
    assert engine.straight_line(c, shapes) == block
    engine._PROGRAMS.clear()
    with CompileLog() as log:
        straight = train(cfg, progress=False)
    assert log.count("jit(chunk)") == 1, log.names
    engine._PROGRAMS.clear()
    monkeypatch.setattr(engine, "straight_line", lambda c_, v_: 0)
    scanned = train(cfg, progress=False)
    a, b = straight.table, scanned.table
    np.testing.assert_array_equal(a["step"], b["step"])
    np.testing.assert_array_equal(a["metric"], b["metric"])
    np.testing.assert_allclose(a["value"], b["value"], rtol=2e-4, atol=2e-5)
    for x, y in zip(jax.tree_util.tree_leaves(straight.final_state), jax.tree_util.tree_leaves(scanned.final_state)):
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5)

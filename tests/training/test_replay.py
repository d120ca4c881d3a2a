"""pdx.training.run_step_fn: the engine's own step as a pure map. Iterated from a checkpoint with
loop.run_steps it reproduces the run's next checkpoint (the oracle: the engine's recorded state),
across a task start (head zeroing, optimiser reset), with dropout and batch statistics; the
Lyapunov exponents of that window are finite and its unperturbed end state is that checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.errors import InputError
from plasticity_dynamics.loop import run_steps
from plasticity_dynamics.training import (Config, build, list_checkpoints, load_checkpoint, run_step_fn, step_state,
                                          task_window, train)
from plasticity_dynamics.training.engine import init_state

SEEDS = (0, 1)


def _config(**extra):
    base = {"model.name": "mlp", "model.preset": "tiny", "model.dropout": 0.2, "data.name": "mnist1d",
            "tasks.classes_per_task": 5, "tasks.num_tasks": 2, "tasks.metric_batch_size": 40,
            "train.steps_per_task": 6, "train.batch_size": 16, "train.reset_optimizer_each_task": True,
            "optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9, "record.every": 3,
            "record.checkpoint_every": 3, "record.metrics": False, "seeds": list(SEEDS)}
    base.update(extra)
    return Config().with_overrides(base)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay") / "run"
    r = train(_config(), out=out, progress=False)
    assert list_checkpoints(out) == [3, 6, 9, 12]
    return r


def _seed_state(run, step, i):
    template = jax.vmap(lambda s: init_state(run.components, s))(jnp.asarray(SEEDS))
    state, _ = load_checkpoint(run.run_dir, step, template)
    return step_state(jax.tree_util.tree_map(lambda a: jnp.asarray(a[i]), state))


def _replay(step_fn, state, start, steps):
    return run_steps(lambda s, t: (step_fn(s, t), None), state, steps, start=start)[0]


def _close(a, b):
    return all(np.allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("start", [3, 6, 9])
def test_replay_from_a_checkpoint_reaches_the_next_checkpoint(run, start):
    c = run.components
    for i, seed in enumerate(SEEDS):
        got = _replay(run_step_fn(c, seed, start=start, steps=3), _seed_state(run, start, i), start, 3)
        want = _seed_state(run, start + 3, i)  # the engine's recorded state, not the code under test
        assert _close(got["params"], want["params"]), (start, seed)
        assert _close(got, want), (start, seed)  # optimiser state and batch statistics too
    # the comparison can fail: the other seed's batches and keys give another state
    other = _replay(run_step_fn(c, SEEDS[1], start=start, steps=3), _seed_state(run, start, 0), start, 3)
    assert not _close(other["params"], _seed_state(run, start + 3, 0)["params"])


def test_without_the_task_start_the_replay_misses(run):
    """Step 6 opens task 1 (head zeroing, optimiser reset): the engine's bare step from
    checkpoint 6 (no task start) does not reach checkpoint 9, so the replay test at 6 checks
    that the task start is part of step_fn."""
    from plasticity_dynamics.training.engine import make_engine_step
    from plasticity_dynamics.training.replay import engine_state, replay_context

    c = run.components
    ctx = replay_context(c, SEEDS[0], 1)
    step = make_engine_step(c)

    def bare(s, t):
        return step_state(step(engine_state(s), t, ctx["seed"], ctx["data"], ctx["task_first"], ctx["task"],
                               c.optimizer)[0])

    got = _replay(bare, _seed_state(run, 6, 0), 6, 3)
    assert not _close(got["params"], _seed_state(run, 9, 0)["params"])


def test_lyapunov_on_the_replayed_window(run):
    c = run.components
    st = _seed_state(run, 6, 0)
    r = pdx.curvature.normal_lyapunov(run_step_fn(c, SEEDS[0], start=6, steps=3), st, None, k=3, steps=3, t0=6)
    assert np.all(np.isfinite(r.exponents)) and list(r.exponents) == sorted(r.exponents, reverse=True)
    assert _close(r.final_state, _seed_state(run, 9, 0))


def test_bad_windows_and_interventions_raise(run):
    c = run.components
    with pytest.raises(InputError, match="crosses the end of task 0"):
        run_step_fn(c, 0, start=3, steps=4)
    assert task_window(c, 3, 10, clip=True).steps == 3
    with pytest.raises(InputError, match="no run step follows step 12"):
        run_step_fn(c, 0, start=12, steps=1)
    with pytest.raises(InputError, match="must be an integer >= 1"):
        run_step_fn(c, 0, start=0, steps=0)
    cbp = build(_config(**{"intervention.name": "cbp"}))
    with pytest.raises(InputError, match="intervention.name='cbp'"):
        run_step_fn(cbp, 0, start=0, steps=2)
    full = build(_config(**{"intervention.name": "full_reset"}))
    with pytest.raises(InputError, match="full_reset"):
        run_step_fn(full, 0, start=6, steps=2)
    run_step_fn(full, 0, start=7, steps=2)  # within the task: no reset, linearisable

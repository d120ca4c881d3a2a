"""analyze RUN_DIR: planted dead units are found, their normal block is zero (degenerate)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticity_dynamics.cli import main
from plasticity_dynamics.experiments.analyze import select_steps
from plasticity_dynamics.manifolds import detect
from plasticity_dynamics.training import Config, list_checkpoints, load_checkpoint, save_checkpoint, train
from plasticity_dynamics.training.engine import init_state


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("an") / "run"
    cfg = Config().with_overrides({
        "model.preset": "tiny", "model.norm": "none", "model.dropout": 0.0, "tasks.num_tasks": 1,
        "tasks.classes_per_task": 5, "tasks.metric_batch_size": 50, "train.steps_per_task": 10,
        "train.batch_size": 16, "record.every": 5, "record.checkpoint_every": 5, "seeds": 1,
        "record.metrics": False})
    run = train(cfg, out=out, progress=False)
    # Plant two dead units in hidden_1 (the last hidden layer: no cascade) of each checkpoint (other units each time): a bias far
    # below any input's drive.
    template = jax.vmap(lambda s: init_state(run.components, s))(jnp.asarray([0]))
    first = list_checkpoints(out)[0]
    base, _ = load_checkpoint(out, first, template)  # read before any checkpoint is rewritten
    x, y, _m = run.components.stream.metric_batch(0)
    one = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), base["variables"])
    dead = set(detect(run.components.model, one, (x, y)).frozen_units.get("hidden_1", []))
    live = [u for u in range(16) if u not in dead]
    for step, units in zip(list_checkpoints(out), (live[:2], live[2:4])):
        state = jax.tree_util.tree_map(np.array, base)  # same network (a copy), other planted units
        meta = {"task": 0, "seeds": [0]}
        bias = np.array(state["variables"]["params"]["dense_1"]["bias"])
        bias[0, units] = -1e4
        state["variables"]["params"]["dense_1"]["bias"] = bias
        save_checkpoint(out, step, state, meta)
    return out


def test_analyze_finds_planted_dead_units_with_zero_normal_block(run_dir, capsys):
    assert main(["analyze", str(run_dir), "--steps", "last", "--quiet"]) == 0
    payload = json.loads((run_dir / "manifolds.json").read_text())
    seed = payload["checkpoints"][-1]["seeds"][0]
    frozen = seed["manifolds"]["frozen"]
    assert frozen["verdict"] == "degenerate"
    assert max(abs(frozen["lambda_min"]), abs(frozen["lambda_max"])) <= frozen["tolerance"]
    assert frozen["leakage"] < 1e-6
    units = seed["detection"]
    assert "hidden_1" in json.dumps(units)
    assert (run_dir / "figures" / "manifolds_curvature.png").stat().st_size > 1000
    assert "degenerate" in capsys.readouterr().out


def test_one_compiled_kernel_for_every_checkpoint(run_dir):
    """Other frozen units of the same size at each checkpoint: the curvature kernel is traced
    once for the whole trajectory (manifold metadata is not part of the jit cache key)."""
    from plasticity_dynamics.curvature import _spectrum
    from plasticity_dynamics.experiments.analyze import analyze

    before = _spectrum._dense_kernel._cache_size()
    payload = analyze(run_dir, "all", progress=False)
    frozen = [s["manifolds"]["frozen"] for c in payload["checkpoints"] for s in c["seeds"]]
    assert len(frozen) == 2 and all(f["method"] == "dense" for f in frozen)
    assert payload["checkpoints"][0]["seeds"][0]["detection"] != payload["checkpoints"][1]["seeds"][0]["detection"]
    dims = {f["normal_dim"] for f in frozen}
    assert len(dims) == 1, dims
    assert _spectrum._dense_kernel._cache_size() - before <= 1


def test_select_steps():
    assert select_steps([5, 10], "all") == [5, 10]
    assert select_steps([5, 10], "last") == [10]
    assert select_steps([5, 10], "5") == [5]
    from plasticity_dynamics.errors import InputError

    for bad in ("7", "x", ""):
        with pytest.raises(InputError):
            select_steps([5, 10], bad)


def test_analyze_bad_input(run_dir, tmp_path, capsys):
    assert main(["analyze", str(tmp_path), "--quiet"]) == 2
    assert main(["analyze", str(run_dir), "--steps", "99", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "99" in err[1]

"""Non-optimiser lane axes: dropout rates and intervention rates are traced lane values, so a
grid over them is one compiled chunk program whose lanes equal their separate ``train`` runs;
the planner names the axes that split a sweep into programs.

Oracles: each lane against its own ``train(cfg)`` (one config, its values as the lane's), and
``Model.apply(rates=...)`` under jit against the model built with that rate as a constant.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plasticity_dynamics import models
from plasticity_dynamics.errors import InputError
from plasticity_dynamics.runtime import CompileLog
from plasticity_dynamics.sweep import describe_plan, group_cells, parse_sweep, split_axes
from plasticity_dynamics.training import engine, train, train_lanes

BASE = {"optim": {"name": "sgd", "lr": 0.05}, "model": {"preset": "tiny"},
        "tasks": {"classes_per_task": 5, "num_tasks": 2},
        "train": {"steps_per_task": 6, "batch_size": 8}, "record": {"every": 3, "metrics": False}}


def _spec(axes, seeds=(0, 1), **base):
    return parse_sweep({"sweep": {"seeds": list(seeds), "axes": axes}, "base": {**BASE, **base}})


def _lanes_equal_separate_runs(spec):
    programs = group_cells(spec)
    assert len(programs) == 1 and programs[0].lanes == len(spec.seeds) * len(spec.cells)
    engine._PROGRAMS.clear()
    with CompileLog() as names:
        lanes = train_lanes(list(spec.configs), progress=False, devices=1)
    assert names.count("jit(chunk)") == 1, names.names
    finals = []
    for cfg, lane in zip(spec.configs, lanes):
        alone = train(cfg, progress=False, devices=1)
        np.testing.assert_allclose(alone.table.columns["value"], lane.table.columns["value"], rtol=1e-6, atol=0)
        for x, y in zip(jax.tree_util.tree_leaves(alone.final_state), jax.tree_util.tree_leaves(lane.final_state)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=str(spec.cells))
        finals.append(lane)
    return finals


def test_dropout_and_cbp_rates_are_lanes_of_one_program():
    spec = _spec({"model.dropout": [0.1, 0.3], "intervention.replacement_rate": [0.05, 0.3]}, seeds=[0],
                 intervention={"name": "cbp", "maturity_threshold": 2}, tasks={"classes_per_task": 5, "num_tasks": 1})
    assert split_axes(spec) == []
    runs = _lanes_equal_separate_runs(spec)
    # the rates took effect: each cell's summary names its own values, and the lanes' losses differ
    assert [r.summary["model"]["options"]["dropout"] for r in runs] == [0.1, 0.1, 0.3, 0.3]
    assert [r.summary["intervention"]["options"]["replacement_rate"] for r in runs] == [0.05, 0.3, 0.05, 0.3]
    replaced = [int(sum(np.sum(v["replaced"]) for v in r.final_state["iv_state"].values())) for r in runs]
    assert replaced[1] > replaced[0] > 0
    losses = [tuple(r.table.columns["value"]) for r in runs]
    assert len(set(losses)) == 4


@pytest.mark.slow  # ~30 s (two compiles); the CBP/dropout grid above covers the chunk program in `make test`
def test_shrink_perturb_at_task_start_is_a_lane_axis():
    # shrink/sigma act in the task-start program here (at_task_start), which takes the lane values too
    spec = _spec({"intervention.shrink": [0.5, 0.9], "intervention.sigma": [0.0, 0.1]},
                 intervention={"name": "shrink_perturb", "at_task_start": True})
    runs = _lanes_equal_separate_runs(spec)
    assert len({tuple(r.table.columns["value"]) for r in runs}) == 4


def test_planner_names_the_axes_that_split_programs():
    spec = _spec({"model.dropout": [0.0, 0.1, 0.2], "optim.momentum": [0.5, 0.9]})
    assert split_axes(spec) == ["model.dropout"]  # a rate of 0 skips the draw: another program
    programs = group_cells(spec)
    assert [p.cells for p in programs] == [[0, 1], [2, 3, 4, 5]]
    head = describe_plan(spec, programs)[0]
    assert "split by model.dropout" in head and "lane axes: optim.momentum" in head
    spec = _spec({"model.widths": [[4], [6]], "intervention.tau": [0.1, 0.2]}, intervention={"name": "redo"})
    assert split_axes(spec) == ["model.widths"] and len(group_cells(spec)) == 2
    # CBP with min_one_per_step turns the rate into a unit count: not a lane
    spec = _spec({"intervention.replacement_rate": [0.1, 0.5]},
                 intervention={"name": "cbp", "min_one_per_step": True})
    assert split_axes(spec) == ["intervention.replacement_rate"]


@pytest.mark.parametrize("family", ["mlp", "vit"])
def test_model_apply_traced_rates_equal_constant_rates(family):
    opts = {"dropout": 0.25, **({"attention_dropout": 0.4} if family == "vit" else {})}
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1) if family == "vit" else (4, 10))
    const = models.create(family, preset="tiny", num_outputs=3, **opts)
    other = models.create(family, preset="tiny", num_outputs=3, **{k: 0.05 for k in opts})  # rates overridden
    variables = const.init(jax.random.PRNGKey(0), x)
    rng = jax.random.PRNGKey(7)
    want = const.apply(variables, x, train=True, rng=rng).logits
    got = jax.jit(lambda r: other.apply(variables, x, train=True, rng=rng, rates=r).logits)(
        {k: jnp.float32(v) for k, v in opts.items()})
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # a traced rate of 0 keeps every unit: the deterministic forward of a dropout-free pass
    zero = jax.jit(lambda r: other.apply(variables, x, train=True, rng=rng, rates=r).logits)(
        {k: jnp.float32(0.0) for k in opts})
    free = models.create(family, preset="tiny", num_outputs=3, **{k: 0.0 for k in opts})
    np.testing.assert_allclose(zero, free.apply(variables, x, train=True, rng=rng).logits, rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match="not a rate of model"):
        const.apply(variables, x, train=True, rng=rng, rates={"widths": 1.0})

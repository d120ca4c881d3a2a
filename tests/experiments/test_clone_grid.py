"""clone_grid: the σ₀ × λ cells of cloning-noise as lanes of one program with a shared base
phase equal their separate clone_run runs (each its own base phase and optimiser built with
constant values), and the noise-free SGD cell, run as σ₀ = 0 in the noisy grid, equals plain SGD."""

import numpy as np
import pytest

from plasticity_dynamics.errors import InputError
from plasticity_dynamics.experiments import cloning
from plasticity_dynamics.experiments.cloning import SGD, Variant, clone_grid, clone_run

KEYS = ("r2", "r2_fwd", "r2_bwd", "loss_clone", "loss_base", "rank_clone", "rank_base", "step")


@pytest.fixture
def short(monkeypatch):  # smoke settings, shortened: the test checks equality, not trends
    monkeypatch.setitem(cloning._SCALE, "smoke", dict(cloning._SCALE["smoke"], base_steps=20, clone_steps=40,
                                                        every=20, mbs=50))


@pytest.mark.slow  # ~1 min: four base phases and four compiles
def test_grid_lanes_equal_separate_clone_runs(short):
    variants = [SGD, Variant("a", noise=(0.05, 0.0)), Variant("b", noise=(0.02, 0.9))]
    grid = clone_grid("mlp", variants, "smoke")
    for v, lane in zip(variants, grid):
        alone = clone_run("mlp", v, "smoke")
        assert lane["clone_start_step"] == alone["clone_start_step"] and lane["max_output_gap"] == alone["max_output_gap"]
        for k in KEYS:
            assert lane[k].shape == alone[k].shape, k
            np.testing.assert_allclose(lane[k], alone[k], rtol=1e-5, atol=1e-6, err_msg=f"{v.name} {k}")
    # the noise took effect: the noisy clones left the SGD clone's trajectory
    assert not np.allclose(grid[1]["loss_clone"][:, -1], grid[0]["loss_clone"][:, -1])


def test_grid_rejects_variants_that_do_not_share_the_base_phase():
    with pytest.raises(InputError, match="may differ only in the noise"):
        clone_grid("mlp", [SGD, Variant("d", dropout=0.1)], "smoke")

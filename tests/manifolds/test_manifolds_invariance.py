"""Trajectories of expanded networks: which optimisers stay on the cloning manifold.

The manifold's own distance/leakage are checked together with oracles that share no code with
plasticity_dynamics.manifolds: the clone R^2 of pdx.metrics on forward and backward signals
(recorded by the experiment) and, for the MLP, NumPy block-constancy of the final parameters.
"""

import numpy as np
import pytest

from plasticity_dynamics.experiments.invariance import invariance

TOL = 1e-5
# Adam divides each coordinate's gradient by its own RMS, so float32 round-off that differs
# between cloned units (sums over duplicated ViT heads taken in another order) becomes
# lr-sized where a gradient is ~0: its update leakage and, over 50 steps, the ViT's distance
# reach 1e-5..1e-3 while the clones stay clones (R^2 = 1 - 1e-5). A real escape (noisy SGD,
# dropout in the MLP test) is > 1e-3 in distance and > 1e-2 in update leakage.
ADAM_UPDATE_TOL = 5e-3
ADAM_VIT_DISTANCE_TOL = 1e-4


def _max_block_spread(params, e):
    """NumPy oracle for the interleaved MLP: max |W - block mean| / max |W| over all leaves."""
    worst = 0.0
    for name, leaf in params.items():
        for k, w in leaf.items():
            w = np.asarray(w, np.float64)
            axes = []
            if name.startswith("dense_") or name.startswith("norm_"):
                axes.append(w.ndim - 1)           # output units are clones
            if k == "kernel" and name != "dense_0":
                axes.append(0)                    # input units are clones (not the pixels)
            m = w
            for ax in axes:
                shape = list(m.shape)
                shape[ax:ax + 1] = [shape[ax] // e, e]
                m = np.repeat(m.reshape(shape).mean(axis=ax + 1), e, axis=ax)
            worst = max(worst, np.max(np.abs(w - m)) / max(np.max(np.abs(w)), 1e-30))
    return worst


def _stays(rec, update_tol=TOL, distance_tol=TOL):
    assert np.max(rec["relative_distance"]) < distance_tol
    assert np.max(rec["leakage"]) < TOL and np.max(rec["update_leakage"]) < update_tol
    assert np.max(rec["equitable_residual"]) < TOL
    assert np.min(rec["clone_r2"]) > 1 - TOL


def test_mlp_1000_steps_stay_or_leave(nets):
    model, variables, _ = nets["mlp"]  # randomised batch-norm parameters and statistics
    r = invariance(base=(model, variables), input_shape=(12,), steps=1000, record_every=250,
                   base_steps=0, factor=2,
                   settings=("sgd", "momentum", "adam", "noisy_sgd", "dropout", "adam_l2"),
                   return_params=True)
    for s in ("sgd", "momentum", "adam"):
        _stays(r[s])
        assert _max_block_spread(r[s]["params"], 2) < TOL, s
        assert r[s]["loss"][-1] < r[s]["loss"][0] + 1.0  # it trained, it did not blow up
    for s in ("noisy_sgd", "dropout"):
        assert r[s]["relative_distance"][-1] > 1e-3, s
        assert np.max(r[s]["update_leakage"]) > 1e-2, s
        assert _max_block_spread(r[s]["params"], 2) > 1e-3, s
    assert r["dropout"]["clone_r2"][-1] < 1 - 1e-4
    # adam + coupled L2 at an equitable, not block-constant point: starts equitable (outputs
    # cloned), ends with broken equitability and clones that differ
    a = r["adam_l2"]
    assert a["relative_distance"][0] > 1e-3        # the start is off M_BC by construction
    assert a["equitable_residual"][-1] > 100 * max(a["equitable_residual"][0], 1e-8)
    assert a["clone_r2"][-1] < 1 - 1e-4


@pytest.mark.parametrize("family", ["cnn", "resnet18", "vit"])
def test_bigger_families_50_steps_stay(nets, family):
    model, variables, _ = nets[family]  # randomised norm parameters and statistics
    r = invariance(base=(model, variables), steps=50, record_every=25, base_steps=0,
                   batch_size=16, num_samples=64, settings=("sgd", "momentum", "adam"))
    for s in ("sgd", "momentum"):
        _stays(r[s])
    _stays(r["adam"], update_tol=ADAM_UPDATE_TOL, distance_tol=ADAM_VIT_DISTANCE_TOL if family == "vit" else TOL)

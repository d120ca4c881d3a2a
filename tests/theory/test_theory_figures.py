"""Figures A.1-A.3 run at scale smoke, write non-empty PNG and PDF, and return JSON-able numbers."""

import json

import pytest

from plasticity_dynamics.errors import InputError
from plasticity_dynamics.experiments import theory_figures as tf


@pytest.mark.parametrize("fn,stem", [(tf.fig_a1, "fig_a1"), (tf.fig_a2, "fig_a2"), (tf.fig_a3, "fig_a3")])
def test_figure_smoke(tmp_path, fn, stem):
    out = fn(tmp_path / "figs", scale="smoke")
    for ext in ("png", "pdf"):
        path = tmp_path / "figs" / f"{stem}.{ext}"
        assert path.is_file() and path.stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [f"{stem}.pdf", f"{stem}.png"]
    json.loads(json.dumps(out))
    assert set(out) == {"results", "checks", "notes"}
    if stem in ("fig_a1", "fig_a2"):  # theorems (A.1) and monotonicity (A.2) must hold at any scale
        assert all(holds for _, _, holds in out["checks"]), out["checks"]


def test_figure_bad_scale(tmp_path):
    with pytest.raises(InputError, match="scale"):
        tf.fig_a1(tmp_path, scale="huge")

"""Regression: a small CNN's unit metrics vmapped over 2 seeds hung for good on a 2-core CPU
under XLA's concurrency-optimised scheduler (every worker idle, the result never ready). The
command line and tests/conftest.py turn that scheduler off (plasticity_dynamics.cli.XLA_CPU_FLAG);
this test fails by timeout if the hang comes back."""

import os

import jax
import jax.numpy as jnp
import pytest

import plasticity_dynamics as pdx
from plasticity_dynamics.cli import XLA_CPU_FLAG


def test_flag_is_active_in_the_test_process():
    assert XLA_CPU_FLAG in os.environ["XLA_FLAGS"]


@pytest.mark.timeout(300)
def test_vmapped_cnn_metrics_finish():
    ds = pdx.data.load("digits")
    model = pdx.models.create("cnn", preset="small", num_outputs=10, norm="none", dropout=0.0)
    x, y = jnp.asarray(ds.x_train[:300]), jnp.asarray(ds.y_train[:300])
    variables = jax.vmap(lambda k: model.init(k, x[:2]))(jax.random.split(jax.random.PRNGKey(0), 2))
    f = jax.jit(jax.vmap(pdx.metrics.make_unit_metrics_fn(model, loss="xent"), in_axes=(0, None, None, None)))
    out = jax.device_get(f(variables, x, y, jnp.ones(10, bool)))
    assert out["effective_rank"]["conv_0"].shape == (2,)

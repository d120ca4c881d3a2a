"""Regressions for two XLA:CPU hangs (every worker idle, the result never ready).

1. A small CNN's unit metrics vmapped over 2 seeds hung under XLA's concurrency-optimised
   scheduler; the command line and tests/conftest.py turn that scheduler off
   (plasticity_dynamics.cli.XLA_CPU_FLAG).
2. jaxlib 0.10.2 runs a batched LAPACK call by queueing its batch members on the intra-op pool
   and blocking its own pool thread; two such calls at once on a 2-thread pool never finish
   (native stacks: two threads in ``jax::ParallelBatchMap`` under ``lapack_ssyevd_ffi`` /
   ``lapack_sgeqrf_ffi``). It hung ``reproduce normalisation --scale small`` (ResNet-18 metrics,
   "gram" route) and, every time, cloning-families' CNN metrics on the "qr" route.
   plasticity_dynamics.linalg keeps every LAPACK call unbatched under vmap.
"""

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


_CLONING_CNN = """
import sys
import jax, jax.numpy as jnp
import plasticity_dynamics as pdx
pdx.configure_jax()
from plasticity_dynamics.metrics import ranks
ranks.default_route = lambda shape=None: sys.argv[1]
from plasticity_dynamics.experiments import cloning as C
ds, model = C._family_setup("cnn", "medium", None, 0.0)
mx, my = (jnp.asarray(a) for a in C._metric_batch(ds, 300))
vs = jax.vmap(lambda s: model.init(jax.random.PRNGKey(s), mx[:2]))(jnp.arange(2))
m = pdx.metrics.make_unit_metrics_fn(model, loss="xent", jit=False)
f = jax.jit(jax.vmap(lambda v: m(v, mx, my, jnp.ones((10,), bool))))
for _ in range(3):
    jax.block_until_ready(f(vs))
print("done")
"""


@pytest.mark.slow
@pytest.mark.parametrize("route", ["qr", "gram"])
def test_vmapped_cloning_cnn_metrics_finish_in_a_subprocess(route):
    """The unit metrics of cloning-families' medium CNN (batch norm, digits, 300 examples) over
    2 seeds, three calls: with batched QR + SVD custom calls in this program ("qr" route) XLA:CPU
    deadlocked on the first or second call every time (12 of 12 attempts before
    plasticity_dynamics.linalg, 3 more with --xla_cpu_multi_thread_eigen=false);
    both routes must finish. A subprocess, so a deadlock fails the test instead of hanging the
    runner."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    try:
        r = subprocess.run([sys.executable, "-c", _CLONING_CNN, route], capture_output=True, text=True, timeout=240,
                           env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("the vmapped CNN unit metrics did not finish in 240 s (XLA:CPU deadlock)")
    assert r.returncode == 0 and "done" in r.stdout, r.stderr[-2000:]

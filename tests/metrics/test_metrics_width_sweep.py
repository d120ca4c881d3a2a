"""Regression: no public array function of pdx.metrics crashes at any width.

jaxlib 0.10.2's XLA:CPU segfaults on fused boolean element-wise ops of (units, units) arrays
from about 833 units on (``jax.jit(lambda a: a | a.T | jnp.eye(1024, dtype=bool))``). Every
public array function runs here over widths {1, 7, 128, 833, 1024, 2048, 4096} and row counts
{1, 64, 4096}, eagerly and inside ``jax.jit``, in a subprocess (tests/metrics/sweep_worker.py),
so a segfault fails the test and names the case instead of killing the runner. The widths around
the crash threshold run by default; the rest is slow-marked.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("sweep_worker.py")
ROOT = Path(__file__).resolve().parents[2]
WIDTHS = (1, 7, 128, 833, 1024, 2048, 4096)
ROWS = (1, 64, 4096)
FAST = {(1, 1), (64, 1024)}  # the crash regime; the rest is slow-marked


def run_cases(specs, timeout):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(WORKER), *specs], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    last = lines[-1] if lines else "(no output)"
    assert proc.returncode == 0 and last == "DONE", (
        f"exit code {proc.returncode}; last case: {last}\n{proc.stderr[-2000:]}")
    return lines


def _params():
    out = []
    for rows in ROWS:
        for width in WIDTHS:
            marks = () if (rows, width) in FAST else (pytest.mark.slow,)
            out.append(pytest.param(rows, width, marks=marks, id=f"{rows}x{width}"))
    return out


@pytest.mark.parametrize("rows,width", _params())
def test_every_array_function_runs_eager_and_jitted(rows, width):
    lines = run_cases([f"{rows}x{width}"], timeout=1500)
    ok = [ln for ln in lines if ln.startswith("OK ")]
    assert len(ok) >= 2 * 30  # every function, both modes, reached its end


def test_issue_examples_return_values_at_1024_units():
    """The eager calls of the bug report: they segfaulted before the uint8 work-around."""
    code = (
        "import numpy as np, plasticity_dynamics as pdx\n"
        "m = pdx.metrics\n"
        "lab = np.asarray(m.connected_components(np.zeros((1024, 1024), bool)))\n"
        "assert (lab == np.arange(1024)).all()\n"
        "h = np.random.default_rng(0).random((256, 1024)).astype(np.float32)\n"
        "h[:, 5] = h[:, 3]\n"
        "cl = m.clone_clusters(h, 0.999)\n"
        "assert int(cl.num_clusters) >= 1 and int(cl.labels[5]) == 3\n"
        "out = m.metrics_from_arrays({'L': np.random.default_rng(1).random((512, 900)).astype(np.float32)})\n"
        "assert 0 < out['effective_rank']['L'] <= 512\n"
        "print('DONE')\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("DONE"), (proc.returncode, proc.stderr[-2000:])

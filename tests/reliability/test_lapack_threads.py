"""configure_jax sets the threads of the BLAS library behind jaxlib's CPU LAPACK (SciPy's bundled
OpenBLAS), leaves NumPy's own BLAS alone, and rejects a bad PDX_LAPACK_THREADS in one line."""

import json
import os
import subprocess
import sys

import pytest

CODE = """
import json, numpy, scipy, scipy.linalg.cython_lapack, jax.numpy as jnp
from threadpoolctl import threadpool_info
before = {d["filepath"]: d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"}
import plasticity_dynamics as pdx
s = pdx.configure_jax()
jnp.linalg.qr(jnp.ones((3, 3))).R.block_until_ready()  # jaxlib's LAPACK still runs
after = {d["filepath"]: d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"}
print(json.dumps({"set": s["lapack_threads"], "before": before, "after": after,
                  "scipy": scipy.__file__, "numpy": numpy.__file__}))
"""


def _run(value):
    env = dict(os.environ, PDX_NO_COMPILATION_CACHE="1", OPENBLAS_NUM_THREADS="2")
    env.pop("PDX_LAPACK_THREADS", None)
    if value is not None:
        env["PDX_LAPACK_THREADS"] = value
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300)


def _libs(out):
    r = json.loads(out.stdout.strip().splitlines()[-1])
    scipy_root = os.path.dirname(r["scipy"])
    mine = [p for p in r["after"] if os.path.realpath(p).startswith((scipy_root + os.sep, scipy_root + ".libs"))]
    others = [p for p in r["after"] if p not in mine]
    return r, mine, others


@pytest.mark.parametrize("value,expected", [(None, 1), ("2", 2)])
def test_configure_jax_sets_scipy_blas_threads_and_leaves_numpy_alone(value, expected):
    out = _run(value)
    assert out.returncode == 0, out.stderr
    r, mine, others = _libs(out)
    if not mine:
        pytest.skip("SciPy's BLAS is shared with NumPy here (not a pip wheel install): nothing is set")
    assert r["set"] == {"library": mine[0], "threads": expected}
    assert r["after"][mine[0]] == expected
    for p in others:  # NumPy's BLAS keeps its own setting
        assert r["after"][p] == r["before"][p]


def test_zero_leaves_every_library_alone():
    out = _run("0")
    assert out.returncode == 0, out.stderr
    r, _, _ = _libs(out)
    assert r["set"] is None
    assert r["after"] == r["before"]


def test_bad_value_is_a_one_line_error_from_the_command_line():
    env = dict(os.environ, PDX_LAPACK_THREADS="two")
    out = subprocess.run([sys.executable, "-m", "plasticity_dynamics.cli", "list", "presets"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: PDX_LAPACK_THREADS='two' must be a non-negative integer: the threads of jaxlib's CPU LAPACK "
        "(1 is the default, 0 leaves the library's own setting)"]

"""Test-wide set-up: fake four CPU devices so multi-device paths run on CPU-only CI, and a
persistent XLA compilation cache so that identical programs (the same tiny model trained in
several tests, or twice in one test) compile once per suite run."""

import os
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# The command line's XLA CPU flag (see plasticity_dynamics.cli.XLA_CPU_FLAG): without it some
# vmapped metric programs hang for good on a 2-core CPU.
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_cpu_enable_concurrency_optimized_scheduler=false"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# CPU asynchronous dispatch off, as the command line does (see plasticity_dynamics.cli.configure_jax):
# a run was seen to hang in block_until_ready with it on (upstream jax-ml/jax#25861).
import jax  # noqa: E402

jax.config.update("jax_cpu_enable_async_dispatch", False)

# jaxlib's CPU LAPACK single-threaded, as the command line runs it (runtime.limit_lapack_threads):
# two pytest workers on 2 cores would otherwise each spawn OpenBLAS threads inside XLA's.
from plasticity_dynamics.runtime import limit_lapack_threads  # noqa: E402

limit_lapack_threads()

"""Application-level JAX settings: :func:`configure_jax`, called by the command line, the tests,
the notebooks and any script before its first computation; and :class:`CompileLog`, the one
way tests and benchmarks measure what was compiled.

The library itself never changes global JAX config; this module is the one place that does,
on request (including one library setting: the threads of jaxlib's CPU LAPACK). It imports
nothing of the package but the leaf ``errors`` module, so the package root can re-export it
without importing the command line.
"""

from __future__ import annotations

import os
from pathlib import Path

#: XLA CPU flag set by configure_jax. With XLA's concurrency-optimised scheduler, some vmapped
#: metric programs (a small CNN's unit metrics over 2 seeds, say) hang for good on a 2-core CPU:
#: every worker idle, the result never ready. Off, they run.
XLA_CPU_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
#: Set to 1 to keep compiled programs out of the persistent cache.
NO_CACHE_ENV = "PDX_NO_COMPILATION_CACHE"
#: Folder of the persistent compilation cache (default: the user cache folder, below).
CACHE_DIR_ENV = "PDX_COMPILATION_CACHE_DIR"
#: Threads of the BLAS library behind jaxlib's CPU LAPACK calls (default 1; 0 leaves it alone).
LAPACK_THREADS_ENV = "PDX_LAPACK_THREADS"


def default_cache_dir() -> Path:
    """``$PDX_COMPILATION_CACHE_DIR``, else ``$XDG_CACHE_HOME/plasticity_dynamics/jax``
    (``~/.cache/plasticity_dynamics/jax`` when XDG_CACHE_HOME is unset)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "plasticity_dynamics" / "jax"


def configure_jax() -> dict:
    """Apply the toolkit's JAX settings; returns what was set (for logs and tests).

    - ``XLA_CPU_FLAG`` is appended to ``XLA_FLAGS`` (read when the CPU backend starts, so call
      this before the first computation).
    - CPU asynchronous dispatch is switched off (upstream jax-ml/jax#25861 reports hangs with it).
    - The persistent compilation cache is turned on in :func:`default_cache_dir` (programs
      taking over 0.5 s to compile are stored, so a second process with the same shapes loads
      them instead of compiling), unless ``PDX_NO_COMPILATION_CACHE=1`` or JAX's own
      ``JAX_COMPILATION_CACHE_DIR`` already names a folder (then that one is kept).
    - The BLAS library behind jaxlib's CPU LAPACK calls runs single-threaded
      (:func:`limit_lapack_threads`; ``PDX_LAPACK_THREADS=N`` sets N threads, 0 leaves it alone).
    On GPU the first two change nothing.
    """
    import jax

    flags = os.environ.get("XLA_FLAGS", "")
    if XLA_CPU_FLAG.split("=")[0] not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_FLAG}".strip()
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    settings = {"xla_flags": os.environ["XLA_FLAGS"], "cpu_async_dispatch": False, "compilation_cache": None,
                "lapack_threads": limit_lapack_threads()}
    if os.environ.get(NO_CACHE_ENV, "") not in ("", "0"):
        return settings
    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(default_cache_dir())
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: run without the cache
        return settings
    jax.config.update("jax_compilation_cache_dir", folder)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    settings["compilation_cache"] = folder
    return settings


def lapack_threads_setting() -> int:
    """The thread count ``PDX_LAPACK_THREADS`` asks for (unset: 1; 0: leave the library alone);
    InputError naming the value for anything but a non-negative integer."""
    from .errors import InputError  # (a leaf module: runtime still imports nothing else of the package)

    raw = os.environ.get(LAPACK_THREADS_ENV, "1").strip()
    if not raw.isdigit():
        raise InputError(f"{LAPACK_THREADS_ENV}={raw!r} must be a non-negative integer: the threads of "
                         "jaxlib's CPU LAPACK (1 is the default, 0 leaves the library's own setting)")
    return int(raw)


def limit_lapack_threads(threads: int | None = None) -> dict | None:
    """Set the thread count of the BLAS library that jaxlib's CPU LAPACK calls (QR, SVD, eigh,
    Cholesky) run in: the OpenBLAS bundled with SciPy, whose LAPACK jaxlib loads. ``threads``:
    default :func:`lapack_threads_setting` (1).

    Why 1. XLA already spreads a program over the cores; a LAPACK call that also spawns OpenBLAS
    threads oversubscribes them, and at the sizes of unit metrics (a few hundred to a thousand
    units) OpenBLAS's threading costs more than it gains. Measured on 2 cores (median of 7,
    ``benchmarks/metrics.py`` layers; vmapped ``make_unit_metrics_fn`` over 3 seeds, 300
    examples): layer metrics 500 x 128 4.0 -> 2.1 ms, 1000 x 512 35 -> 28 ms, 4096 x 1024 about
    equal (292 vs 299 ms); engine metrics MLP 51 -> 28 ms, CNN 644 -> 529 ms, ResNet-18 6.17 ->
    5.85 s. NumPy's own BLAS (a separate library in pip installs) is not touched.

    Returns {"library": path, "threads": n} for the library set, or None when nothing was set:
    ``threads`` 0, threadpoolctl or SciPy missing, or SciPy's BLAS not its own (e.g. a conda
    install where NumPy and SciPy share one: limiting it would limit NumPy too).
    """
    threads = lapack_threads_setting() if threads is None else threads
    if threads == 0:
        return None
    try:
        import scipy
        import scipy.linalg.cython_lapack  # noqa: F401  (loads the library jaxlib takes LAPACK from)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    root = os.path.dirname(scipy.__file__)  # .../site-packages/scipy; wheels bundle scipy.libs beside it
    for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
        if os.path.realpath(lib.filepath).startswith((root + os.sep, root + ".libs" + os.sep)):
            lib.set_num_threads(threads)
            return {"library": lib.filepath, "threads": threads}
    return None


#: jax.monitoring duration events of one compilation: tracing, lowering, XLA backend compile.
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileLog:
    """Context manager recording what JAX compiled inside the block, from ``jax.monitoring``
    duration events (measured, not inferred from the code).

    ``names``: one entry per XLA backend compile (or persistent-cache load), the program's name
    as JAX reports it (``"jit(chunk)"``); ``seconds``: tracing + lowering + backend-compile time
    summed. ``count(name=None)``: how many backend compiles, all or of programs whose name
    contains ``name``. Cost: a listener call per event; nothing while no block is open.
    """

    def __init__(self):
        self.names: list[str] = []
        self.seconds = 0.0

    def _listen(self, event, duration, **kw):
        if event in (TRACE_EVENT, LOWER_EVENT, BACKEND_COMPILE_EVENT):
            self.seconds += duration
        if event == BACKEND_COMPILE_EVENT:
            self.names.append(str(kw.get("fun_name", "?")))

    def count(self, name: str | None = None) -> int:
        return len(self.names) if name is None else sum(name in n for n in self.names)

    def __enter__(self):
        import jax

        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc):
        import jax

        jax.monitoring.unregister_event_duration_listener(self._listen)
        return False


__all__ = ["CACHE_DIR_ENV", "NO_CACHE_ENV", "LAPACK_THREADS_ENV", "XLA_CPU_FLAG", "configure_jax",
           "default_cache_dir", "limit_lapack_threads", "lapack_threads_setting", "CompileLog", "BACKEND_COMPILE_EVENT"]

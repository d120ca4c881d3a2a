"""The notebooks: stored clean and in sync with their sources, and every cell runs headless.

Each notebook is executed with nbclient in a fresh ``python3`` kernel that must be this test's
interpreter (the project's .venv): the kernelspec is checked, and when it would start another
Python a kernelspec pointing at ``sys.executable`` is installed into a temporary prefix and put
first on ``JUPYTER_PATH``. An extra cell appended at test time prints the kernel's ``sys.prefix``
and the test compares it with its own. A failing cell fails the test (nbclient raises
``CellExecutionError`` with the cell's traceback): the notebooks ``assert`` what they demonstrate
(at least 3 assertions each), so a contradicted claim fails the test, which is itself checked here.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"
EXPECTED = ("01_quickstart", "02_cloning_manifolds", "03_frozen_units_rank", "04_continual_lop",
            "05_curvature_tools", "06_your_own_model")
CELL_TIMEOUT = 300  # seconds per cell; each notebook runs in well under two minutes on 2 cores


def _notebook(name: str) -> Path:
    return NB_DIR / f"{name}.ipynb"


def _load_builder():
    spec = importlib.util.spec_from_file_location("pdx_notebook_build", NB_DIR / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_is_present_with_its_source():
    found = sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert found == sorted(EXPECTED)
    assert sorted(p.stem for p in (NB_DIR / "src").glob("[0-9][0-9]_*.py")) == sorted(EXPECTED)
    readme = (NB_DIR / "README.md").read_text()
    for name in EXPECTED:
        assert f"{name}.ipynb" in readme, f"{name} is missing from notebooks/README.md"


def test_notebooks_are_stored_without_outputs_and_match_their_sources():
    builder = _load_builder()
    for name in EXPECTED:
        nb = nbformat.read(_notebook(name), as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.outputs == [] and c.execution_count is None for c in code), name
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
        rebuilt = builder.render(builder.build(NB_DIR / "src" / f"{name}.py"))
        assert _notebook(name).read_text() == rebuilt, f"{name}.ipynb is stale: run python notebooks/_build.py"


def test_builder_parses_percent_format():
    builder = _load_builder()
    text = '"""dropped"""\n# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\n\n# %%\n\n# %% [markdown]\n# end\n'
    assert builder.parse(text) == [("markdown", "# Title\n\ntext"), ("code", "x = 1"), ("markdown", "end")]


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A ``python3`` kernelspec that starts this interpreter; returns the name to use."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    aliases = {"python", f"python{sys.version_info[0]}", "python%i.%i" % sys.version_info[:2]}
    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
        # jupyter_client replaces a bare "python" / "python3" by sys.executable
        usable = argv0 in aliases or Path(argv0) == Path(sys.executable)
    except NoSuchKernel:
        usable = False
    mp = pytest.MonkeyPatch()
    if not usable:
        prefix = tmp_path_factory.mktemp("kernelspec")
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix),
                        "--name", "python3"], check=True, capture_output=True)
        mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    yield "python3"
    mp.undo()


def test_every_notebook_asserts_what_it_demonstrates():
    for name in EXPECTED:
        code = (NB_DIR / "src" / f"{name}.py").read_text()
        asserts = re.findall(r"^\s*assert\b", code, flags=re.MULTILINE)
        assert len(asserts) >= 3, f"{name}: {len(asserts)} assert statements, at least 3 expected"


def _execute(nb, kernel_name, monkeypatch):
    """Run ``nb`` in place in a fresh kernel the way a user's would run it; returns seconds taken."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    # a user's kernel: one CPU device, not conftest's four; the command line's XLA CPU flag kept
    from plasticity_dynamics.cli import XLA_CPU_FLAG

    monkeypatch.setenv("XLA_FLAGS", XLA_CPU_FLAG)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=kernel_name,
                                     resources={"metadata": {"path": str(NB_DIR)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    return time.perf_counter() - t0


def test_a_failed_assertion_fails_the_notebook_run(kernel_name, monkeypatch):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("assert x == 2, 'contradicted'"),
                nbformat.v4.new_code_cell("print('never reached')")]
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="contradicted"):
        _execute(nb, kernel_name, monkeypatch)
    assert nb.cells[2].outputs == []


# The quickstart (about 20 s) runs in the default suite; the other four (about 20-60 s each on a
# shared 2-core machine, 1.5-3.5 min together) are marked slow and run with `make test-all`.
FAST = ("01_quickstart",)


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in EXPECTED])
def test_notebook_executes(name, kernel_name, monkeypatch):
    nb = nbformat.read(_notebook(name), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    elapsed = _execute(nb, kernel_name, monkeypatch)
    print(f"\n{name}: executed in {elapsed:.1f} s")
    kernel_prefix = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
    assert kernel_prefix == sys.prefix, f"kernel ran {kernel_prefix!r}, not this interpreter ({sys.prefix!r})"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors

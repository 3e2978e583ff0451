"""Execute every tutorial notebook (``tutorials/*.ipynb``) top to bottom; any error fails the test.

The notebooks are committed without outputs and assert their key facts themselves, so running
them checks both that they still work and that the library still behaves as they claim.

Kernel: ``python3``.  jupyter_client resolves that name to the kernelspec of the running
environment (ipykernel's built-in spec, or ``<venv>/share/jupyter/kernels/python3``), and replaces a
kernelspec's ``python`` command with ``sys.executable``; :func:`test_kernel_uses_current_interpreter`
checks that the kernel really is the interpreter running pytest (so the editable install of
``taylorsolve`` is what the notebooks import).

Notebooks listed in ``SLOW`` (more than ~60 s) are marked ``slow``; keep the others fast.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
#: file names of notebooks that take more than ~60 s
SLOW: set[str] = set()
CELL_TIMEOUT = 300  # seconds per cell
KERNEL = "python3"


def _client(nb, cwd: Path) -> "nbclient.NotebookClient":
    return nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name=KERNEL,
        allow_errors=False,
        resources={"metadata": {"path": str(cwd)}},
    )


def _env_for_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel inherits this process's environment: make the repository importable even without
    an editable install (restored after the test)."""
    root = str(TUTORIALS.parent)
    pp = os.environ.get("PYTHONPATH", "")
    if root not in pp.split(os.pathsep):
        monkeypatch.setenv("PYTHONPATH", root + (os.pathsep + pp if pp else ""))


def test_kernel_uses_current_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _env_for_kernel(monkeypatch)
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    _client(nb, tmp_path).execute()
    out = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("output_type") == "stream").strip()
    assert Path(out).resolve() == Path(sys.executable).resolve(), (
        f"kernel {KERNEL!r} runs {out}, pytest runs {sys.executable}; install ipykernel in this environment"
    )


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW else []) for p in NOTEBOOKS],
)
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _env_for_kernel(monkeypatch)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name}: commit notebooks without outputs"
            assert cell.get("execution_count") is None, f"{path.name}: commit notebooks without execution counts"
    try:
        _client(nb, path.parent).execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{exc}", pytrace=False)

"""The tutorials: every notebook matches its source, was committed executed, and runs top to bottom.

Each tutorial is a jupytext percent-format script ``tutorials/NN_name.py``; ``tutorials/build.py``
generates ``NN_name.ipynb`` from it and executes it, and the executed notebook is committed (outputs
and figures included).  These tests check that

* every source has a committed notebook with the same cells (types and text), and vice versa;
* the committed notebook was executed top to bottom in one run (execution counts 1, 2, ...), holds no
  error output, and shows an image in every cell that draws a figure;
* the source executes top to bottom in a fresh kernel *now* (the tutorials assert their claims and the
  exercises' solutions, so a library change that breaks a claim fails here), and every figure cell
  produces a PNG (a non-interactive backend with ``plt.show()`` would not);
* the kernel is this interpreter and imports *this* checkout's ``taylorsolve`` (``PYTHONPATH`` first);
* the tutorials stay small (committed PNGs at modest resolution).

Kernel: ``python3``.  jupyter_client resolves that name to the kernelspec of the running environment
and replaces its ``python`` command with ``sys.executable``.  A source whose jupytext header sets
``tutorial: {slow: true}`` runs only with ``-m slow``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
#: the committed tutorials folder stays well below this (bytes)
MAX_TUTORIALS_BYTES = 5 * 1024 * 1024
#: one committed PNG stays below this (bytes, base64 in the notebook)
MAX_IMAGE_BYTES = 250 * 1024


def _load_build():
    spec = importlib.util.spec_from_file_location("tutorials_build", TUTORIALS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()
SOURCES = build.sources()


def _params(slow_aware: bool):
    out = []
    for src in SOURCES:
        marks = []
        if slow_aware and build.is_slow(build.from_source(src)):
            marks.append(pytest.mark.slow)
        out.append(pytest.param(src, id=src.stem, marks=marks))
    return out


def test_every_source_has_a_notebook_and_every_notebook_a_source() -> None:
    assert SOURCES, "no tutorial sources tutorials/NN_name.py found"
    notebooks = {p.stem for p in TUTORIALS.glob("*.ipynb")}
    sources = {p.stem for p in SOURCES}
    assert notebooks - sources == set(), f"notebooks without a source: {sorted(notebooks - sources)}"
    assert sources - notebooks == set(), (
        f"sources without a notebook: {sorted(sources - notebooks)}; run python tutorials/build.py"
    )


@pytest.mark.parametrize("source", _params(slow_aware=False))
def test_committed_notebook_matches_its_source_and_was_executed(source: Path) -> None:
    diffs = build.differences(source)
    assert not diffs, f"{source.name}: the notebook is out of date (python tutorials/build.py {source.name[:2]}):\n" + \
        "\n".join(diffs)
    nb = nbformat.read(build.notebook_path(source), as_version=4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{source.name}: the committed notebook was not executed top to bottom in one run (execution counts "
        f"{counts}); run python tutorials/build.py {source.name[:2]}"
    )
    assert not build.error_outputs(nb), f"{source.name}: committed with error outputs in cells {build.error_outputs(nb)}"
    missing = build.missing_figures(nb)
    assert not missing, f"{source.name}: cells {missing} draw a figure but the committed notebook shows no image"
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", ()):
            png = out.get("data", {}).get("image/png", "")
            assert len(png) < MAX_IMAGE_BYTES, f"{source.name}, cell {i}: a {len(png) // 1024} KiB image; lower the dpi"


def test_kernel_uses_current_interpreter_and_this_checkout(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sys, taylorsolve, toy, matplotlib; print(sys.executable); print(taylorsolve.__file__); "
        "print(toy.__file__); print(matplotlib.get_backend())"))
    build.execute(nb, cwd=tmp_path)
    lines = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("output_type") == "stream").split()
    exe, ts_file, toy_file, backend = lines
    assert Path(exe).resolve() == Path(sys.executable).resolve(), (
        f"kernel python3 runs {exe}, pytest runs {sys.executable}; install ipykernel in this environment"
    )
    assert Path(ts_file).resolve().is_relative_to(ROOT), f"the kernel imported taylorsolve from {ts_file}, not {ROOT}"
    assert Path(toy_file).resolve().is_relative_to(ROOT), f"the kernel imported toy from {toy_file}, not {ROOT}"
    assert backend == build.INLINE_BACKEND


@pytest.mark.parametrize("source", _params(slow_aware=True))
def test_notebook_executes_top_to_bottom_with_figures(source: Path) -> None:
    nb = build.from_source(source)
    try:
        build.execute(nb)
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{source.name} failed:\n{exc}", pytrace=False)
    assert build.figure_cells(nb), f"{source.name} draws no figure"
    missing = build.missing_figures(nb)
    assert not missing, f"{source.name}: cells {missing} draw a figure but produced no image"


def test_figure_check_catches_a_figure_that_is_never_shown(tmp_path: Path) -> None:
    """The bug tutorial 03 once had: a non-interactive backend, then plt.show(), so no image appears."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.show()"))
    build.execute(nb, cwd=tmp_path)
    assert build.figure_cells(nb) == [0] and build.missing_figures(nb) == [0]


def test_tutorials_stay_small() -> None:
    total = sum(p.stat().st_size for p in TUTORIALS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < MAX_TUTORIALS_BYTES, f"tutorials/ holds {total / 2**20:.1f} MiB; keep figures small"


def test_repository_does_not_point_outside_itself() -> None:
    """Documentation and code are self-contained: no references to a developer-only notes folder."""
    needle = "shared" + "/"
    skip = {".venv", ".ci-venv", ".git", "results", "__pycache__", "build", "dist", ".pytest_cache", ".hypothesis"}
    hits = []
    for path in ROOT.rglob("*"):
        if path.suffix not in (".py", ".md", ".ipynb") or not path.is_file():
            continue
        if skip & set(path.relative_to(ROOT).parts):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        hits += [f"{path.relative_to(ROOT)}:{i + 1}" for i, line in enumerate(text.splitlines()) if needle in line]
    assert not hits, f"references to {needle!r}: {hits}"

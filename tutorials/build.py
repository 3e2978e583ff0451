"""Build the tutorial notebooks from their sources, with executed outputs.

Every tutorial is one jupytext percent-format script, ``tutorials/NN_name.py`` (``# %%`` code cells,
``# %% [markdown]`` text cells; it also runs as a plain Python script).  The notebook
``tutorials/NN_name.ipynb`` is generated from it and executed top to bottom in a fresh kernel, and the
outputs (text and PNG figures) are committed, so a reader browsing the repository sees every result::

    python tutorials/build.py              # every tutorial: convert, execute, write
    python tutorials/build.py 03 06        # only these (by number or file name)
    python tutorials/build.py --check      # do the committed notebooks match their sources? (no kernel)
    python tutorials/build.py --no-execute # write notebooks without outputs (fast, for drafting)

Determinism: the kernel gets the repository first on ``PYTHONPATH`` (it imports *this* checkout's
``taylorsolve`` and ``toy``), one thread for torch/BLAS/numba, matplotlib's inline backend (figures
embedded as PNG), ``PYTHONHASHSEED=0``; the notebooks fix their own seeds.  Cell ids are their
positions and timing metadata is dropped, so rebuilding an unchanged source gives the same file
(up to printed timings, which the tutorials avoid).

A source may carry a jupytext header with ``tutorial: {slow: true}`` in its notebook metadata; the
tests then run it only with ``-m slow``.  ``tests/test_notebooks.py`` uses the functions below.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterable

import jupytext
import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE_PATTERN = re.compile(r"^\d\d_[a-z0-9_]+\.py$")
FORMAT = "py:percent"
KERNEL = "python3"
CELL_TIMEOUT = 600  # seconds per cell
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
#: a code cell matching this draws a figure and must show it as an image
FIGURE_CALL = re.compile(r"\bplt\.(show|subplots|subplot|figure)\(|\bdisplay\(\s*Image\(")
_VOLATILE_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled")

__all__ = [
    "sources",
    "notebook_path",
    "from_source",
    "kernel_env",
    "execute",
    "differences",
    "figure_cells",
    "missing_figures",
    "error_outputs",
    "is_slow",
    "build",
]


def sources(names: Iterable[str] = ()) -> list[Path]:
    """The tutorial sources ``NN_name.py`` (all, or those whose number or file name is in ``names``)."""
    found = sorted(p for p in HERE.iterdir() if SOURCE_PATTERN.match(p.name))
    names = list(names)
    if not names:
        return found
    picked = [p for p in found if any(p.name == n or p.stem == n or p.name[:2] == n for n in names)]
    unknown = [n for n in names if not any(p.name == n or p.stem == n or p.name[:2] == n for p in found)]
    if unknown:
        raise SystemExit(f"no tutorial source matches {', '.join(unknown)}; sources: {', '.join(p.name for p in found)}")
    return picked


def notebook_path(source: Path) -> Path:
    return source.with_suffix(".ipynb")


def from_source(source: Path) -> nbformat.NotebookNode:
    """The notebook of ``source`` without outputs: its cells, position ids, a python3 kernelspec."""
    nb = jupytext.read(source, fmt=FORMAT)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": KERNEL}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
        cell.metadata = {}
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nbformat.validate(nb)
    return nb


def kernel_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a tutorial kernel: this repository first on ``PYTHONPATH``, one thread,
    matplotlib's inline backend (PNG figures in the outputs), a fixed hash seed, no progress bars."""
    env = dict(os.environ if base is None else base)
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *path])
    env["MPLBACKEND"] = INLINE_BACKEND
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = "1"
    env["PYTHONHASHSEED"] = "0"
    env["TQDM_DISABLE"] = "1"
    return env


def _merge_streams(outputs: list) -> list:
    """Consecutive ``stdout``/``stderr`` chunks as one output each (how the kernel splits a cell's
    printing into messages depends on timing; merged, the stored outputs do not)."""
    merged: list = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (out.get("output_type") == "stream" and prev is not None and prev.get("output_type") == "stream"
                and prev.get("name") == out.get("name")):
            prev["text"] = prev["text"] + out["text"]
        else:
            merged.append(out)
    return merged


def _clean(nb: nbformat.NotebookNode) -> None:
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for key in _VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = _merge_streams(cell.outputs)


def execute(nb: nbformat.NotebookNode, *, timeout: int = CELL_TIMEOUT, cwd: Path = HERE) -> float:
    """Run ``nb`` top to bottom in a fresh kernel (in place); the wall time in seconds.

    Raises ``nbclient.exceptions.CellExecutionError`` at the first failing cell (a failed ``assert``
    included: the tutorials check their claims and the exercises' solutions with asserts).
    """
    import nbclient

    client = nbclient.NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL,
        allow_errors=False,
        record_timing=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    start = time.perf_counter()
    client.execute(env=kernel_env())
    elapsed = time.perf_counter() - start
    _clean(nb)
    return elapsed


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def differences(source: Path, notebook: Path | None = None) -> list[str]:
    """How the committed notebook differs from its source (cell types and text); empty if it matches."""
    notebook = notebook or notebook_path(source)
    if not notebook.exists():
        return [f"{notebook.name} is missing: run python tutorials/build.py {source.name[:2]}"]
    want, have = _cells(from_source(source)), _cells(nbformat.read(notebook, as_version=4))
    out = []
    if len(want) != len(have):
        out.append(f"{notebook.name} has {len(have)} cells, its source {len(want)}")
    for i, (w, h) in enumerate(zip(want, have)):
        if w != h:
            first = next((j for j, (a, b) in enumerate(zip(w[1], h[1])) if a != b), min(len(w[1]), len(h[1])))
            out.append(f"cell {i} ({w[0]}) differs from the source near {w[1][max(0, first - 30):first + 30]!r}")
    return out


def figure_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of the code cells that draw a figure (call ``plt.show``/``plt.subplots``/... or show an image)."""
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and FIGURE_CALL.search(c.source)]


def _has_image(cell: nbformat.NotebookNode) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.get("outputs", ()))


def missing_figures(nb: nbformat.NotebookNode) -> list[int]:
    """Figure cells (:func:`figure_cells`) whose outputs hold no PNG image."""
    return [i for i in figure_cells(nb) if not _has_image(nb.cells[i])]


def error_outputs(nb: nbformat.NotebookNode) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if any(o.get("output_type") == "error" for o in c.get("outputs", ()))]


def is_slow(nb: nbformat.NotebookNode) -> bool:
    """``tutorial: {slow: true}`` in the source's jupytext header (notebook metadata)."""
    return bool(nb.metadata.get("tutorial", {}).get("slow", False))


def build(source: Path, *, run: bool = True) -> tuple[Path, float]:
    """Write the notebook of ``source`` (executed unless ``run=False``); its path and the run time."""
    nb = from_source(source)
    elapsed = execute(nb) if run else 0.0
    if run:
        missing = missing_figures(nb)
        if missing:
            raise SystemExit(f"{source.name}: cells {missing} draw a figure but show no image")
    target = notebook_path(source)
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, target)
    return target, elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="tutorial numbers or file names (default: all)")
    ap.add_argument("--check", action="store_true", help="only check that the notebooks match their sources")
    ap.add_argument("--no-execute", action="store_true", help="write the notebooks without running them")
    args = ap.parse_args(argv)
    srcs = sources(args.names)
    if args.check:
        bad = {s.name: differences(s) for s in srcs}
        bad = {k: v for k, v in bad.items() if v}
        for name, diffs in bad.items():
            print(f"{name}:\n  " + "\n  ".join(diffs))
        print("all notebooks match their sources" if not bad else f"{len(bad)} notebook(s) out of date")
        return 1 if bad else 0
    for s in srcs:
        target, elapsed = build(s, run=not args.no_execute)
        size = target.stat().st_size / 1024
        took = f", executed in {elapsed:.1f} s" if not args.no_execute else " (not executed)"
        print(f"wrote {target.relative_to(ROOT)} ({size:.0f} KiB){took}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What every ``tutorials/_build_NN.py`` generator shares: collect cells, write the notebook.

Notebooks are committed without outputs and with deterministic cell ids, so rebuilding an unchanged
generator gives a byte-identical file.  ``python tutorials/_build_NN.py --run`` also executes the code
cells in this process (a quick check without a kernel; figures are not shown).
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

__all__ = ["NotebookBuilder"]


class NotebookBuilder:
    """Collects markdown and code cells (``md``, ``code``) and writes them to ``path`` (``main``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.cells: list = []

    def md(self, text: str) -> None:
        self.cells.append(new_markdown_cell(text.strip("\n")))

    def code(self, text: str) -> None:
        self.cells.append(new_code_cell(text.strip("\n")))

    def notebook(self) -> nbformat.NotebookNode:
        for i, cell in enumerate(self.cells):
            cell["id"] = f"cell-{i:02d}"
        return new_notebook(
            cells=self.cells,
            metadata={
                "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                "language_info": {"name": "python"},
            },
        )

    def run_here(self) -> None:
        """Execute the code cells in this process (non-interactive matplotlib backend)."""
        import matplotlib

        matplotlib.use("Agg")
        ns: dict = {"display": print}
        for cell in self.notebook().cells:
            if cell["cell_type"] == "code":
                exec(compile(cell["source"], f"<{cell['id']}>", "exec"), ns)

    def main(self, argv: list[str] | None = None) -> None:
        nb = self.notebook()
        nbformat.validate(nb)
        nbformat.write(nb, self.path)
        print(f"wrote {self.path}")
        if "--run" in (sys.argv[1:] if argv is None else argv):
            self.run_here()

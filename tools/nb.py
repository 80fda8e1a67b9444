"""Tiny helper to write a stripped notebook from a list of (kind, source) cells.

Run as: python tools/nb.py  (imported by the per-notebook scripts in tools/; notebooks are the artifact)
The .ipynb files are the source of truth once written; these scripts only make the first version reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path


def write(path: str | Path, cells: list[tuple[str, str]]) -> None:
    out = []
    for i, (kind, src) in enumerate(cells):
        src = src.strip("\n")
        cell = {"id": f"cell-{i:02d}", "cell_type": "markdown" if kind == "md" else "code", "metadata": {},
                "source": src.splitlines(keepends=True)}
        if kind == "params":
            cell["metadata"]["tags"] = ["parameters"]
        if cell["cell_type"] == "code":
            cell.update(outputs=[], execution_count=None)
        out.append(cell)
    nb = {"cells": out, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (repro)",
                                                    "language": "python"},
                                     "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    Path(path).write_text(json.dumps(nb, indent=1) + "\n")

"""Build each stripped `notebooks/NN_stem.ipynb` from its readable source `notebooks/NN_stem.py` (jupytext percent).

Run as: python tools/sync_notebooks.py [--check]      (`make notebooks`; the test suite runs the check)

The `.py` file is the source of truth: edit it, then run this script. The `.ipynb` is what papermill and
JupyterLab open; it is written deterministically (cell ids cell-00, cell-01, ..., no outputs, no execution
counts, only the `parameters` tag kept) so that rebuilding an unchanged source changes no byte. `--check` exits 1
and names the notebooks whose `.ipynb` disagrees with its source (a hand-edited `.ipynb`, or a forgotten sync).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (repro)", "language": "python"}


def build(source: Path) -> str:
    """The stripped notebook JSON text for one percent-format source."""
    nb = jupytext.read(source, fmt="py:percent")
    cells = []
    for i, c in enumerate(nb.cells):
        tags = [t for t in c.metadata.get("tags", []) if t == "parameters"]
        cell = {"id": f"cell-{i:02d}", "cell_type": c.cell_type, "metadata": {"tags": tags} if tags else {},
                "source": c.source.splitlines(keepends=True)}
        if c.cell_type == "code":
            cell.update(outputs=[], execution_count=None)
        cells.append(cell)
    doc = {"cells": cells,
           "metadata": {"kernelspec": KERNELSPEC, "language_info": {"name": "python"},
                        "jupytext": {"formats": "ipynb,py:percent"}},
           "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def sources() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def stale() -> list[Path]:
    """Notebooks whose .ipynb is missing or differs from what its source builds."""
    return [s.with_suffix(".ipynb") for s in sources()
            if not s.with_suffix(".ipynb").exists() or s.with_suffix(".ipynb").read_text() != build(s)]


def main(argv: list[str]) -> int:
    todo = stale()
    if "--check" in argv:
        if todo:
            names = ", ".join(p.name for p in todo)
            print(f"out of sync with their .py source: {names} — run: python tools/sync_notebooks.py", file=sys.stderr)
            return 1
        return 0
    for target in todo:
        target.write_text(build(target.with_suffix(".py")))
        print(f"wrote notebooks/{target.name}")
    for source in sources():
        keep_source_newer(source)
    return 0


def keep_source_newer(source: Path) -> None:
    """Give the .py an mtime no older than its .ipynb. JupyterLab's jupytext pairs the two (the `formats`
    metadata) and refuses to open a notebook whose .ipynb is more than a second newer than its .py and reads
    differently (our .py has no jupytext header): "File Load Error ... is more recent than ...". Written just now,
    the .ipynb would be the newer one; a newer .py is simply read as the source."""
    target = source.with_suffix(".ipynb")
    if target.exists() and target.stat().st_mtime_ns > source.stat().st_mtime_ns:
        os.utime(source, ns=(source.stat().st_atime_ns, target.stat().st_mtime_ns))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

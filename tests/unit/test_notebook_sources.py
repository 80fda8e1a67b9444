"""The readable notebook sources (notebooks/NN_stem.py, jupytext percent) and the committed .ipynb agree."""

from __future__ import annotations

import importlib.util
import json
import shutil

from repro import paths

_spec = importlib.util.spec_from_file_location("sync_notebooks", paths.ROOT / "tools" / "sync_notebooks.py")
sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync)


def test_every_notebook_has_a_source_and_agrees_with_it():
    notebooks = sorted(p.stem for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert notebooks and notebooks == [p.stem for p in sync.sources()]
    assert sync.stale() == [], "run: python tools/sync_notebooks.py"


def test_a_hand_edited_notebook_is_caught(tmp_path, monkeypatch):
    for p in sync.sources():
        shutil.copy(p, tmp_path / p.name)
        shutil.copy(p.with_suffix(".ipynb"), tmp_path / p.with_suffix(".ipynb").name)
    monkeypatch.setattr(sync, "NOTEBOOKS", tmp_path)
    assert sync.stale() == []
    target = sync.sources()[0].with_suffix(".ipynb")
    nb = json.loads(target.read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["source"].append("\nx = 1  # edited in JupyterLab, not in the .py\n")
    target.write_text(json.dumps(nb, indent=1) + "\n")
    assert sync.stale() == [target]
    assert sync.main(["--check"]) == 1
    assert sync.main([]) == 0 and sync.stale() == []  # rebuilt from the source


def test_notebooks_are_stripped_and_keep_the_parameters_tag():
    for p in sync.sources():
        nb = json.loads(p.with_suffix(".ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c["outputs"] and c["execution_count"] is None for c in code), p.name
        assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1, p.name


def test_sync_leaves_the_source_no_older_than_its_notebook(tmp_path):
    """JupyterLab's jupytext refuses to open an .ipynb more than a second newer than its paired .py: after a sync
    the .py must not be the older one."""
    import os

    src, nb = tmp_path / "09_x.py", tmp_path / "09_x.ipynb"
    src.write_text("# %%\n1\n")
    nb.write_text("{}")
    os.utime(src, ns=(0, 1_000_000_000))  # the source edited long before the notebook was written
    sync.keep_source_newer(src)
    assert src.stat().st_mtime_ns >= nb.stat().st_mtime_ns

"""Shared fixtures: a throwaway repo root so runner/config/results tests never touch the real results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro import paths, stats


def write_notebook(path: Path, param_src: str, body_src: list[str]) -> None:
    """A minimal nbformat-4 notebook: a cell tagged `parameters`, then code cells."""
    cells = [{"id": "params", "cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": param_src,
              "outputs": [], "execution_count": None}]
    cells += [{"id": f"c{i}", "cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
              for i, s in enumerate(body_src)]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                      "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))


@pytest.fixture
def tmp_repo(tmp_path, monkeypatch):
    """Point repro.paths (here and in papermill kernels, via REPRO_ROOT) at an empty temporary repo."""
    monkeypatch.setenv("REPRO_ROOT", str(tmp_path))
    for name, sub in [("ROOT", ""), ("NOTEBOOKS", "notebooks"), ("PARAMS", "params"), ("FIGURES", "figures"),
                      ("RESULTS", "results"), ("RUNS", "runs")]:
        monkeypatch.setattr(paths, name, tmp_path / sub if sub else tmp_path)
    return tmp_path


CLAIM_FIELDS = set(stats.CLAIM_COLUMNS) | {"why"}  # every saved claim's fields (04, 05, 06: one ledger)
VERDICTS = set(stats.VERDICTS)


def run_stages(*args: str, timeout: int = 900):
    """`python -m repro run ...` from an unrelated cwd; fails the test with the log tail on a non-zero exit."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "repro", "run", *args], capture_output=True, text=True, cwd="/",
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r

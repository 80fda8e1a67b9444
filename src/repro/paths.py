"""Every path of the suite, resolved from the repository root (never from the caller's cwd)."""

from __future__ import annotations

import os
from pathlib import Path

# REPRO_ROOT lets an installed (non-editable) package or a test point at another checkout.
ROOT = Path(os.environ.get("REPRO_ROOT", Path(__file__).resolve().parents[2])).resolve()
NOTEBOOKS = ROOT / "notebooks"
PARAMS = ROOT / "params"
FIGURES = ROOT / "figures"
RESULTS = ROOT / "results"
RUNS = ROOT / "runs"
PROFILES = ("smoke", "cpu", "gpu", "gpu-dryrun")


def params_file(profile: str, stem: str) -> Path:
    return PARAMS / profile / f"{stem}.yaml"


def notebook(stem: str) -> Path:
    return NOTEBOOKS / f"{stem}.ipynb"


def results_file(profile: str, stem: str) -> Path:
    return RESULTS / profile / f"{stem}.json"


def figures_dir(profile: str) -> Path:
    return FIGURES / profile


def run_dir(profile: str) -> Path:
    """Ignored working area of a profile: executed notebooks, data, checkpoints."""
    return RUNS / profile


def data_dir(profile: str) -> Path:
    return run_dir(profile) / "data"


def models_dir(profile: str) -> Path:
    return run_dir(profile) / "models"

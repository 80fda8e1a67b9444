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
# REPRO_RUNS: the working area elsewhere (tests/notebooks/test_exercises.py runs a notebook with its results and
# figures in a scratch root but its arms in this checkout's runs/: an arm records its folder's absolute path, which
# must stay valid after the scratch root is gone).
RUNS = Path(os.environ["REPRO_RUNS"]).resolve() if os.environ.get("REPRO_RUNS") else ROOT / "runs"
PROFILES = ("smoke", "cpu", "gpu", "gpu-dryrun")


def param_path(value) -> Path:
    """A path named in a params file (a `*_dir` / `*_path` key): absolute as given (~ expanded), otherwise relative to
    the repository root, wherever the code runs: the runner's kernel (cwd = the root), papermill, or a JupyterLab
    kernel (cwd = notebooks/ under `make lab`). Validation (repro.config) and loading use this one rule."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else ROOT / p


def model_ref(value) -> str:
    """A model named in params (`model_name_or_path`, `model_dir`): the local folder under param_path's rule when it
    exists, else the value unchanged, a hub id (repro.config admits one only with allow_hub, gpu profile)."""
    p = param_path(value)
    return str(p) if p.exists() else str(value)


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

"""One exercise per notebook 04-06, done as a reader does it in JupyterLab: the knob the exercise names is set in
the parameters cell (here papermill injects it beside the smoke params, as the runner does), the notebook runs top
to bottom, and the knob is checked to have taken effect, in the hand-batch maths or in what the run wrote.

Each run goes to a scratch repository root (REPRO_ROOT) whose notebooks and params are this checkout's and whose
working area is this checkout's runs/ (REPRO_RUNS), so the arms it trains land in the shared arm cache under their
own keys and real paths, while its results and figures go to the scratch root and never overwrite the smoke
run's."""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest

from repro import config, paths
from tests.conftest import run_stages

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_04():
    run_stages("--profile", "smoke", "--only", "01", "02", "03", "04")  # cached when earlier tests ran them


def run_exercise(tmp_path, monkeypatch, stem: str, knobs: dict):
    """(scratch root, executed notebook) of `stem` at the smoke params plus `knobs`."""
    import papermill

    root = tmp_path / "root"
    root.mkdir()
    for d in ("notebooks", "params"):
        (root / d).symlink_to(paths.ROOT / d)
    # the kernel (and the arm workers it starts) inherit both; the arms' folders are the checkout's real ones
    # (an arm records its absolute path: a path through the scratch root would dangle once the root is gone)
    monkeypatch.setenv("REPRO_ROOT", str(root))
    monkeypatch.setenv("REPRO_RUNS", str(paths.RUNS.resolve()))
    out = tmp_path / f"{stem}.ipynb"
    params = {**config.load_params("smoke", stem), **knobs}
    papermill.execute_notebook(str(paths.notebook(stem)), str(out), parameters=params, kernel_name="python3",
                               cwd=str(root), progress_bar=False)
    return root, nbformat.read(out, as_version=4)


def _outputs(nb) -> str:
    return "\n".join(str(o.get("text") or o.get("data", {}).get("text/plain", "")) for c in nb.cells
                     if c.cell_type == "code" for o in c.outputs)


def test_04_exercise_vrr_fallback_all(smoke_04, tmp_path, monkeypatch):
    """04, UMed exercise 1: umed_vrr_fallback = "all" pays answer 3 ("normal") a VRR in the hand batch, and the
    UMed arms train under the changed knob (their keys are those of the changed config, not the profile's)."""
    from repro import papers

    root, nb = run_exercise(tmp_path, monkeypatch, "04_rl", {"umed_vrr_fallback": "all"})
    assert "vrr_fallback='all'" in _outputs(nb)
    hand = next(c for c in nb.cells if c.cell_type == "code" and "umed_hand = " in c.source)
    table = hand.outputs[-1]["data"]["text/plain"]
    assert "Detection: normal" in table
    last_row = [ln for ln in table.splitlines() if ln.startswith("3 ")][0].split()
    assert float(last_row[-3]) > 0  # answer 3's VRR column (0 under the profile's "zero")
    records = json.loads((root / "results" / "smoke" / "04_rl.json").read_text())["metrics"]["runs"]["umed"]
    p04 = config.load_params("smoke", "04_rl")
    stage = papers.stage_from(p04)
    keys = {}
    for fallback in ("all", "zero"):
        cfg = papers.umed.UMedConfig.from_params({**p04, "umed_vrr_fallback": fallback})
        keys[fallback] = {j.method: j.key() for j in papers.umed.jobs(cfg, stage)}
    aar = next(r for r in records if r["method"] == "SFT+AAR")
    assert aar["key"] == keys["all"]["SFT+AAR"] != keys["zero"]["SFT+AAR"]


def test_05_exercise_iou_thresholds(smoke_04, tmp_path, monkeypatch):
    """05, UMed exercise 1: iou_thresholds = [0.3, 0.6] gives the accuracy curve exactly those thresholds."""
    root, _ = run_exercise(tmp_path, monkeypatch, "05_ablations", {"iou_thresholds": [0.3, 0.6]})
    curve = pd.read_csv(root / "figures" / "smoke" / "05_ablations_umed_iou_curve.csv")
    assert [float(c) for c in curve.columns if c != "method"] == [0.3, 0.6]


def test_06_exercise_loso(smoke_04, tmp_path, monkeypatch):
    """06, UMed exercise 1: ood_umed_loso = ["tbx11k"] leaves one leave-one-source-out condition."""
    root, _ = run_exercise(tmp_path, monkeypatch, "06_generalization", {"ood_umed_loso": ["tbx11k"]})
    conditions = pd.read_csv(root / "figures" / "smoke" / "06_generalization_umed_conditions.csv")["condition"]
    without = [c for c in conditions if str(c).startswith("without ")]
    assert without == ["without tbx11k"]

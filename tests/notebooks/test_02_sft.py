"""Papermill smoke run of notebooks 01 + 02 through the runner: artifacts, tables and metric bands."""

from __future__ import annotations

import json

import pytest

from repro import paths
from tests.conftest import run_stages

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result():
    # 01 is cached when test_01_data already ran it with the same params; 02 always reruns.
    run_stages("--profile", "smoke", "--only", "01")
    run_stages("--profile", "smoke", "--only", "02", "--force")
    return json.loads(paths.results_file("smoke", "02_sft").read_text())


def test_02_sft_smoke(result):
    m = result["metrics"]
    assert 0.3e6 < m["n_params"] < 1e6
    assert m["train"]["sft_final_loss"] < m["train"]["sft_first_loss"]  # it learned something
    assert m["train"]["base_final_loss"] < 6.0
    for model in ("base", "sft"):
        for task, key in [("vqa", "closed_acc"), ("mcq", "acc"), ("instruct", "mau_acc"), ("conv", "diagnosis_acc"),
                          ("report", "rouge_l")]:
            assert 0.0 <= m[model][task][key] <= 1.0, (model, task)
    # even 150 smoke steps teach the answer formats: reports overlap the truth more after SFT than before
    assert m["sft"]["report"]["rouge_l"] > m["base"]["report"]["rouge_l"] - 0.05
    for name in ("loss_curves.png", "samples.png", "mau_table2.md", "drllava.md", "vqa.md", "sft_per_source.csv"):
        assert (paths.figures_dir("smoke") / f"02_sft_{name}").exists(), name
    mau = (paths.figures_dir("smoke") / "02_sft_mau_table2.md").read_text()
    assert "ours (this repo)" in mau and "paper UMed-LVLM" in mau and "MedVInt (SFT)" in mau

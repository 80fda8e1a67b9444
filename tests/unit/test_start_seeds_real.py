"""A start per training seed on the real task (slow): stage 02's SFT recipe at another seed gives another start, and
UMed-LVLM's arm of that seed trains from it (its own step-0 probe) and is evaluated beside it."""

from __future__ import annotations

import pytest
import torch

from repro import paths
from repro.papers import common, umed
from repro.train import sft
from tests.conftest import run_stages

pytestmark = pytest.mark.slow


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """A runs folder whose smoke data, base and SFT are stage 02's (links), plus an SFT at seed 1 trained here."""
    run_stages("--profile", "smoke", "--only", "01", "02", "03")  # cached when earlier tests ran them
    real = paths.run_dir("smoke")
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    mine = paths.run_dir("smoke")
    (mine / "models").mkdir(parents=True)
    (mine / "data").symlink_to(real / "data")
    for name in ("base", "sft"):
        (mine / "models" / name).symlink_to(real / "models" / name)
    torch.set_num_threads(1)
    rows = sft.sft_dataset(mine / "data", ["instruct"], seed=1, batch_size=8, steps=6)
    sft.train(mine / "models" / "base" / "final", mine / "models" / "sft-s1", rows, max_steps=6, batch_size=8,
              lr=1e-3, seed=1, sequential=True)
    return mine


def test_each_seed_trains_and_is_judged_against_its_own_start(runs):
    stage = common.Stage(profile="smoke", seeds=[0, 1], start_seeds=[1], workers=1)
    cfg = umed.UMedConfig(train_rows=32, eval_limit=8, steps=2, batch_size=2, k=2, probe_rows=4, probe_k=2,
                          probe_points=1)
    run = umed.run(cfg, stage)
    starts = {r["seed"]: r for r in run["records"] if r["method"] == "SFT"}
    assert set(starts) == {0, 1}
    scores = run["rows"][run["rows"]["method"] == "SFT"]
    assert set(scores["seed"]) == {0, 1}
    assert scores[scores["seed"] == 0]["item"].tolist() == scores[scores["seed"] == 1]["item"].tolist()
    # the two starts are different models: they answer the same test images differently
    print({s: r["samples"] for s, r in starts.items()})
    assert starts[0]["samples"] and starts[0]["samples"] != starts[1]["samples"]
    # seed 1's arm has its own step-0 probe (its start), seed 0's the shared one
    arms = {j.seed: j for j in umed.jobs(cfg, stage) if j.method == "SFT+AAR"}
    assert common.step0_file(arms[1]).exists() and common.step0_file(arms[0]).exists()
    assert common.step0_file(arms[1]) != common.step0_file(arms[0])
    assert {r["seed"] for r in run["records"] if r["method"] == "SFT+AAR"} == {0, 1}

"""A start per training seed (Stage.start_seeds, 02's `start_seeds`): which stage-02 folder each seed starts from, the
arm keys that stay cached, the step-0 probe that is shared only by seeds sharing a start, one SFT evaluation per seed
paired with that seed's arms, and starts never listed as trained arms."""

from __future__ import annotations

import os

import pytest

from repro import papers, paths, report
from repro.papers import common, measure


@pytest.fixture
def models(tmp_path, monkeypatch):
    """runs/smoke/models/{base, sft, sft-s1}/final with a config and weights file each, distinct mtimes."""
    monkeypatch.setenv("REPRO_ROOT", str(tmp_path))
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    root = paths.models_dir("smoke")
    for k, name in enumerate(("base", "sft", "sft-s1")):
        d = root / name / "final"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(b"w")
        os.utime(d / "model.safetensors", ns=(10**18 + k, 10**18 + k))
    return root


def test_each_seed_reads_its_own_sft_and_shares_the_base(models):
    stage = common.Stage(profile="smoke", seeds=[0, 1], start_seeds=[1])
    assert common.model_dir(stage, "sft", 1) == models / "sft-s1" / "final"
    assert common.model_dir(stage, "sft", 0) == models / "sft" / "final"  # 02's own seed: models/sft
    assert common.model_dir(stage, "sft") == models / "sft" / "final"
    assert common.model_dir(stage, "base", 1) == models / "base" / "final"
    assert common.model_dir(common.Stage(profile="smoke"), "sft", 1) == models / "sft" / "final"  # no start_seeds
    with pytest.raises(FileNotFoundError, match="start of seed 2 .*start_seeds must list 2"):
        common.model_dir(common.Stage(profile="smoke", seeds=[2], start_seeds=[2]), "sft", 2)


def test_arm_keys_change_only_for_seeds_with_their_own_start(models):
    cfg = papers.umed.UMedConfig()
    shared = common.Stage(profile="smoke", seeds=[0, 1])
    own = common.Stage(profile="smoke", seeds=[0, 1], start_seeds=[1])

    def arm(stage, seed):
        return next(j for j in papers.umed.jobs(cfg, stage) if j.method == "SFT+AAR" and j.seed == seed)

    assert arm(shared, 0).key() == arm(own, 0).key()  # seed 0's cached arms stay valid
    assert arm(shared, 1).key() != arm(own, 1).key()  # seed 1 starts elsewhere: a new arm
    # step 0 of the probe is shared by the seeds of one start only
    assert common.step0_file(arm(own, 0)) == common.step0_file(arm(shared, 0)) == common.step0_file(arm(shared, 1))
    assert common.step0_file(arm(own, 1)) != common.step0_file(arm(own, 0))


def test_one_sft_evaluation_per_seed_pairs_with_that_seeds_arms(models):
    own = common.Stage(profile="smoke", seeds=[0, 1], start_seeds=[1])
    shared = common.Stage(profile="smoke", seeds=[0, 1])
    for mod, cfg in [(papers.umed, papers.umed.UMedConfig()), (papers.mmedpo, papers.mmedpo.MMedPOConfig()),
                     (papers.drllava, papers.drllava.DrLLaVAConfig())]:
        assert [j.seed for j in mod.jobs(cfg, shared) if j.method == "SFT"] == [None]
        assert [j.seed for j in mod.jobs(cfg, own) if j.method == "SFT"] == [0, 1]
    zhu = papers.zhu.jobs(papers.zhu.ZhuConfig(), own)
    assert [j.seed for j in zhu if j.method == "SFT"] == [0, 1]
    assert [j.seed for j in zhu if j.method == "base"] == [None]  # the base is shared


def test_a_start_evaluated_per_seed_is_not_a_trained_arm():
    start = {"paper": "umed", "method": "SFT", "seed": 1, **measure.start_record({"m": 0.5})}
    arm = {"paper": "umed", "method": "SFT+AAR", "seed": 1, "kl_end": 0.2, "reward_first": 0.0, "reward_last": 1.0,
           "trained": True, "why": ""}
    assert measure.is_start(start) and measure.is_start({**start, "seed": None}) and not measure.is_start(arm)
    table = report.arms_table({"umed": {"records": [start, arm]}})
    assert list(table["method"]) == ["SFT+AAR"]

"""The fixed validation probe's pure parts: its points, the learned rule (known answers), the sweep's choice rule,
and the arms table fields stage 04 saves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from repro import report
from repro.papers import probe, sweep
from repro.train import ppo_math


def table(start, end, step_end=10, clusters=None):
    n = len(start)
    clusters = clusters or [f"img{i}" for i in range(n)]
    mk = lambda step, r: pd.DataFrame({"step": step, "item": [f"conv:{c}:0" for c in clusters], "cluster": clusters,  # noqa: E731
                                       "reward": r, "target_pass1": 0.5, "target_greedy": 0.5})
    return pd.concat([mk(0, start), mk(step_end, end)], ignore_index=True)


def test_points_start_at_zero_and_end_at_the_last_step():
    assert probe.points(12, 3) == [0, 4, 8, 12]
    assert probe.points(2, 3) == [0, 1, 2]
    assert probe.points(0) == [0]
    assert probe.points(10, 1) == [0, 10]


def test_learned_when_every_item_rises():
    rng = np.random.default_rng(0)
    start = rng.normal(0, 1, 60)
    r = probe.learned({0: table(start, start + 0.5 + rng.normal(0, 0.1, 60))})
    assert r["learned"] and r["ci_low"] > 0
    assert r["difference"] == pytest.approx(0.5, abs=0.05)
    assert r["reward_end"] - r["reward_start"] == pytest.approx(r["difference"])


def test_not_learned_when_flat_or_falling_and_it_says_why():
    rng = np.random.default_rng(1)
    start = rng.normal(0, 1, 60)
    flat = probe.learned({0: table(start, start + rng.normal(0, 0.5, 60))})
    assert flat["ci_low"] < 0 < flat["ci_high"] and not flat["learned"] and "CI" in flat["why"]
    fall = probe.learned({0: table(start, start - 1.0)})
    assert not fall["learned"] and fall["ci_high"] < 0


def test_float_noise_alone_is_not_learning():
    """The lr-0 null's end probe differed from another seed's step 0 by ~3e-8 on some items: not a rise."""
    start = np.linspace(0, 1, 40)
    noise = probe.learned({0: table(start, start + 3e-8), 1: table(start, start + 1e-8)})
    assert noise["ci_low"] > 0 and not noise["learned"]
    assert probe.learned({0: table(start, start + 1e-3)})["learned"]


def test_learned_pools_seeds_and_needs_a_point_after_step_zero():
    start = np.linspace(0, 1, 40)
    up, down = table(start, start + 0.3), table(start, start - 0.1)
    pooled = probe.learned({0: up, 1: down})
    assert pooled["seeds"] == [0, 1] and pooled["difference"] == pytest.approx(0.1)
    only_start = up[up["step"] == 0]
    assert probe.learned({0: only_start})["learned"] is False


def test_tied_share_counts_prompts_whose_samples_all_score_alike():
    scores = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 2.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    assert ppo_math.tied_share(scores, groups) == pytest.approx(2 / 3)


def test_sweep_chooses_the_largest_gain_that_keeps_the_val_metric():
    rows = pd.DataFrame([
        # lr 1e-4 gains most but lowers the greedy validation metric: not eligible
        {"paper": "p", "lr": 1e-4, "batch_size": 4, "step": 8, "seed": s, "probe_gain": 1.0, "val_metric": 0.4,
         "val_metric_start": 0.5} for s in (0, 1)] + [
        {"paper": "p", "lr": 3e-5, "batch_size": 4, "step": 8, "seed": s, "probe_gain": g, "val_metric": 0.5 + d,
         "val_metric_start": 0.5} for s, g, d in ((0, 0.6, 0.02), (1, 0.4, -0.01))] + [
        {"paper": "p", "lr": 3e-5, "batch_size": 4, "step": 4, "seed": s, "probe_gain": 0.2, "val_metric": 0.5,
         "val_metric_start": 0.5} for s in (0, 1)])
    c = sweep.choose(rows)["p"]
    assert (c["lr"], c["batch_size"], c["steps"]) == (3e-5, 4, 8)
    assert c["probe_gain"] == pytest.approx(0.5) and c["val_metric_change"] == pytest.approx(0.005)
    worse = rows.assign(val_metric=0.0)
    assert "none" in sweep.choose(worse)["p"]
    # with the paired CI of the change: a drop whose CI reaches 0 is noise, not a fall; one below 0 is a fall
    noisy = rows.assign(val_ci_low=-0.2, val_ci_high=0.05)
    assert sweep.choose(noisy)["p"]["lr"] == 1e-4
    fell = rows.assign(val_ci_low=-0.2, val_ci_high=[-0.01, -0.01, 0.1, 0.1, 0.1, 0.1])
    assert sweep.choose(fell)["p"]["lr"] == 3e-5


def test_arms_table_carries_the_learned_fields():
    rec = {"method": "SFT+PPO", "seed": 0, "kl_end": 0.3, "reward_first": 1.0, "reward_last": 1.2, "trained": False,
           "moved": True, "learned": False, "why": "did not learn: ...",
           "probe": {"reward_start": 1.0, "reward_end": 1.01, "ci_low": -0.1, "ci_high": 0.12, "difference": 0.01},
           "pass1": {"start": 0.3, "end": 0.31}, "greedy_val": {"start": 0.5, "end": 0.5},
           "probe_points": [{"step": 0, "reward": 1.0, "target_pass1": 0.3, "target_greedy": 0.5},
                            {"step": 4, "reward": 1.01, "target_pass1": 0.31, "target_greedy": 0.5}],
           "log": [{"step": 1, "reward": 1.0, "kl": 0.1}, {"step": 2, "reward": 1.2, "kl": 0.3}]}
    start = {"method": "SFT", "seed": None, "kl_end": None, "reward_first": None, "reward_last": None,
             "trained": True, "why": ""}
    runs = {"umed": {"records": [start, rec]}}
    arms = report.arms_table(runs)
    assert len(arms) == 1 and set(report.ARM_COLUMNS) == set(arms.columns)
    a = arms.iloc[0]
    assert not a["learned"] and a["moved"] and not a["trained"] and a["probe"]["ci_low"] == -0.1
    assert list(report.probe_long(runs)["step"]) == [0, 4]
    shown = report.arms_readable(arms).iloc[0]  # the saved table: text, not dicts
    assert shown["probe reward change [95% CI]"] == "+0.010 [-0.100, +0.120]"
    assert (shown["probe pass@1"], shown["probe greedy"]) == ("0.30 -> 0.31", "0.50 -> 0.50")
    assert list(report.train_log(runs).columns[:4]) == ["paper", "method", "seed", "step"]


def test_sweep_merge_replaces_only_the_cells_a_run_redid():
    row = lambda paper, lr, seed, gain: {c: 0.0 for c in sweep.COLUMNS} | {  # noqa: E731
        "paper": paper, "lr": lr, "batch_size": 4, "step": 8, "seed": seed, "probe_gain": gain}
    old = pd.DataFrame([row("zhu", 3e-5, 0, 1.0), row("zhu", 3e-5, 1, 2.0), row("umed", 3e-5, 0, 3.0)])
    new = pd.DataFrame([row("zhu", 3e-5, 1, 9.0), row("drllava", 1e-5, 0, 4.0)])
    out = sweep.merge(old, new)
    assert sorted(zip(out["paper"], out["seed"], out["probe_gain"])) == [
        ("drllava", 0, 4.0), ("umed", 0, 3.0), ("zhu", 0, 1.0), ("zhu", 1, 9.0)]
    assert sweep.merge(pd.DataFrame(columns=sweep.COLUMNS), new).equals(new)


def test_sweep_merge_keeps_a_scheduled_papers_other_run_lengths():
    """MMedPO's DPO runs a cosine schedule over its length: a 60-step run does not replace the 30-step run's rows."""
    row = lambda paper, step, gain: {c: 0.0 for c in sweep.COLUMNS} | {  # noqa: E731
        "paper": paper, "lr": 2e-5, "batch_size": 8, "step": step, "seed": 0, "probe_gain": gain}
    old = pd.DataFrame([row("mmedpo", 30, 1.0), row("zhu", 30, 2.0)])
    out = sweep.merge(old, pd.DataFrame([row("mmedpo", 60, 3.0), row("zhu", 60, 4.0)]))
    assert sorted(zip(out["paper"], out["step"])) == [("mmedpo", 30), ("mmedpo", 60), ("zhu", 60)]


def test_sweep_merge_of_the_same_run_keeps_the_record_already_in_the_file():
    """--merge of a run already folded in (same command, same finished_at) keeps the file's record and its note;
    the same command run again (a later finished_at) replaces it."""
    run = {"command": "python -m repro.papers.sweep --papers zhu", "provenance": {"finished_at": "t1", "sha": None}}
    filled = {**run, "provenance": {"finished_at": "t1", "sha": "abc"}, "note": "sha filled in by hand"}
    assert sweep.merge_runs([filled], [run]) == [filled]
    again = {**run, "provenance": {"finished_at": "t2", "sha": "def"}}
    assert sweep.merge_runs([filled], [again]) == [again]


def test_summary_of_a_dpo_table_has_the_preference_accuracy():
    t = pd.DataFrame({"step": [0, 0, 0, 5, 5, 5], "item": ["pair:0", "pair:1", "vqa:a:0"] * 2,
                      "cluster": ["a", "b", "a"] * 2, "reward": [0.0, 0.0, np.nan, 0.4, -0.1, np.nan],
                      "target_pass1": [np.nan, np.nan, 0.5, np.nan, np.nan, 0.75],
                      "target_greedy": [np.nan, np.nan, 1.0, np.nan, np.nan, 1.0]})
    s = probe.summary(t)
    assert s["preference_accuracy"].tolist() == [0.0, 0.5]  # a margin of 0 (step 0: policy = reference) is no win
    assert s["reward"].tolist() == pytest.approx([0.0, 0.15]) and s["target_pass1"].tolist() == [0.5, 0.75]
    r = probe.learned({0: t})
    assert r["n_items"] == 2 and r["difference"] == pytest.approx(0.15)  # the pairs only


def test_sweep_publish_keeps_one_record_per_command(tmp_repo):
    """A sweep re-published from its cached cells at a later commit replaces its own run record, and the plan's
    probe size comes from the latest one."""
    rows = pd.DataFrame([{"paper": "zhu", "lr": 1e-4, "batch_size": 8, "step": 60, "seed": 0, "probe_gain": 0.3,
                          "reward": 1.6, "reward_start": 1.3, "val_metric": 0.7, "val_metric_start": 0.65,
                          "val_pass1": 0.6, "val_ci_low": -0.05, "val_ci_high": 0.16, "seconds": 1.0}],
                        columns=sweep.COLUMNS)
    run = {"command": "python -m repro.papers.sweep --papers zhu", "papers": ["zhu"], "grid": {"probe_rows": 64}}
    sweep.publish("cpu", rows, [{**run, "provenance": {"sha": "a"}}])
    rec = sweep.publish("cpu", rows, [{**run, "provenance": {"sha": "b"}}])
    assert [r["provenance"]["sha"] for r in rec["runs"]] == ["b"]
    other = sweep.publish("cpu", rows, [{**run, "command": "python -m repro.papers.sweep --papers zhu --lrs 1e-4"}])
    assert len(other["runs"]) == 2


def test_recorder_shares_step_zero_between_seeds_and_scores_later_points(tmp_path):
    calls = []

    def scorer(model, processor, spec, step):
        calls.append((model, step))
        return pd.DataFrame({"step": step, "item": ["a", "b"], "cluster": ["1", "2"], "reward": [model, model + 1.0],
                             "target_pass1": 0.5, "target_greedy": 1.0})[probe.COLUMNS]

    shared = tmp_path / "probe0" / "arm.csv"
    first = probe.Recorder(None, [0, 2], tmp_path / "s0" / "probe.csv", scorer=scorer, shared=shared)
    first(0, 0.0, None), first(1, 5.0, None), first(2, 1.0, None)
    second = probe.Recorder(None, [0, 2], tmp_path / "s1" / "probe.csv", scorer=scorer, shared=shared)
    second(0, 9.0, None), second(2, 3.0, None)  # step 0 is read back: the weights passed in are not scored
    assert calls == [(0.0, 0), (1.0, 2), (3.0, 2)]
    a, b = first.table(), second.table()
    pd.testing.assert_frame_equal(a[a["step"] == 0], b[b["step"] == 0])
    assert list(b.loc[b["step"] == 2, "reward"]) == [3.0, 4.0]
    assert probe.read_table(tmp_path / "s1" / "probe.csv").equals(b)  # the arm's own file has both points
    assert not list(tmp_path.rglob("*.tmp"))


def test_step0_file_is_one_per_arm_across_seeds(tmp_repo):
    from repro.papers import common, umed

    stage = common.Stage(profile="smoke", seeds=[0, 1])
    jobs = [j for j in umed.jobs(umed.UMedConfig(controls=True), stage) if j.fn == "repro.papers.umed:arm"]
    files = {(j.method, j.seed): common.step0_file(j) for j in jobs}
    assert files[("SFT+AAR", 0)] == files[("SFT+AAR", 1)] != files[("SFT+PPO", 0)]
    assert len(set(files.values())) == len({j.method for j in jobs})  # the lr-0 null is an arm of its own


def test_read_table_gives_back_the_floats_written(tmp_path):
    rng = np.random.default_rng(0)
    t = pd.DataFrame({"step": 0, "item": [f"{i:06d}" for i in range(500)], "cluster": "000123",
                      "reward": rng.normal(size=500) / 3, "target_pass1": rng.random(500), "target_greedy": 1.0})
    t.to_csv(tmp_path / "p.csv", index=False)
    back = probe.read_table(tmp_path / "p.csv")
    assert back["item"].iloc[0] == "000000" and back["cluster"].iloc[0] == "000123"
    assert (back["reward"].to_numpy() == t["reward"].to_numpy()).all()
    assert (back["target_pass1"].to_numpy() == t["target_pass1"].to_numpy()).all()

"""Stage 04's papers package and report: configs (one default per knob, unknown keys rejected), the "trained"
rule, per-row scores, pairing by seed, claims fields and parallel arms identical to serial. repro.stats is being
written elsewhere: a minimal stand-in is monkeypatched in here (never in src)."""

from __future__ import annotations

import dataclasses
import math
import sys
import types

import numpy as np
import pandas as pd
import pytest

from repro import config, evaluation, papers, paths
from repro import ledger as _ledger  # noqa: F401  imported (with replication) before fake_stats swaps repro.stats
from repro.config import ConfigError
from repro.papers import claims, common, continued, measure

CLAIM_FIELDS = ["paper", "claim", "metric", "comparison", "difference", "ci_low", "ci_high", "p_value", "p_holm",
                "mde", "n_items", "seeds", "verdict"]


# ----------------------------------------------------------------------------------------------- configs
def test_every_knob_has_one_default_the_dataclass():
    declared = config.declared_parameters("04_rl")
    assert declared == {**papers.declared(), "profile": declared["profile"]}
    for paper, cls in papers.CONFIGS.items():
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            assert declared[f"{paper}_{f.name}"][1] == default
    # the old shared knobs are gone: Dr-LLaVA has its own lr / kl_beta, UMed its own PPO knobs
    assert not {"ppo_lr", "ppo_kl_beta", "mt_steps"} & set(declared)
    assert {"drllava_lr", "drllava_kl_beta", "drllava_gamma", "drllava_lam", "umed_lr", "umed_kl_beta"} <= set(declared)
    dr = papers.drllava.DrLLaVAConfig()
    assert dr.gamma == 1.0 and dr.lam == 1.0


def test_notebook_knobs_not_injected_take_the_dataclass_default():
    cfg = config.from_namespace({"profile": "smoke", "umed_lr": 3e-5}, "04_rl")
    assert cfg.umed_lr == 3e-5
    assert cfg.drllava_kl_beta == papers.drllava.DrLLaVAConfig().kl_beta
    assert papers.umed.UMedConfig.from_params(cfg).lr == 3e-5
    assert papers.stage_from(cfg).seeds == [0]


def test_unknown_or_mistyped_key_is_a_one_line_config_error_naming_it():
    with pytest.raises(config.ConfigError, match="umed_lrr") as e:
        config.validate({"umed_lrr": 1e-5}, "04_rl", "params/cpu/04_rl.yaml")
    assert "\n" not in str(e.value)
    with pytest.raises(config.ConfigError, match="'drllava_lr' has value 'fast'"):
        config.validate({"drllava_lr": "fast"}, "04_rl", "params/cpu/04_rl.yaml")
    with pytest.raises(config.ConfigError, match="zhu_generation"):
        papers.zhu.ZhuConfig.from_params({"zhu_generation": 8})
    with pytest.raises(config.ConfigError, match="eval_split"):
        papers.stage_from({"eval_split": "train"})
    with pytest.raises(config.ConfigError, match="mmedpo_steps"):
        papers.mmedpo.MMedPOConfig.from_params({"mmedpo_steps": 2.5})


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu", "gpu-dryrun"])
def test_params_files_are_valid(profile):
    params = config.load_params(profile, "04_rl", check_paths=False)
    configs = papers.configs_from(params)
    assert set(configs) == set(papers.PAPERS)
    assert configs["zhu"].max_completion_length >= evaluation.MAX_NEW_TOKENS["mcq"]


# ----------------------------------------------------------------------------------------------- trained rule
def curve(rewards, kls, stds=None):
    d = {"step": list(range(1, len(rewards) + 1)), "reward": rewards, "kl": kls}
    if stds is not None:
        d["reward_std"] = stds
    return pd.DataFrame(d)


def test_trained_rule():
    ok, why = common.arm_status(curve([0.0, 0.0, 0.0], [0.2, 0.3, 0.4], stds=[0.0, 0.0, 0.0]), 0.3, 1e-4)
    assert not ok and "zero reward variance" in why
    ok, why = common.arm_status(curve([1.0, 1.2], [0.001, 0.002]), 0.002, 0.01)
    assert not ok and "did not move" in why and "0.002" in why
    ok, why = common.arm_status(curve([5.0, 5.0, 5.0], [0.5, 0.5, 0.5]), 0.5, 0.01)
    assert not ok and "never changed" in why
    assert common.arm_status(curve([1.0, 2.0], [0.1, 0.5], stds=[0.3, 0.2]), 0.5, 0.01) == (True, "")
    assert not common.arm_status(pd.DataFrame(), None, 0.01)[0]


def test_summarize_curve_known_answer():
    s = common.summarize_curve(curve([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.1, 0.2, 0.3, 0.4]), 0.01, last=2)
    assert s["reward_first"] == pytest.approx(1.5) and s["reward_last"] == pytest.approx(4.5)
    assert s["kl_end"] == pytest.approx(0.35) and s["trained"] is True
    two = common.summarize_curve(curve([1.0, 2.0], [0.1, 0.2]), 0.01)  # windows of a short run do not overlap
    assert (two["reward_first"], two["reward_last"], two["kl_end"]) == (1.0, 2.0, 0.2)


def test_pass_at_known_answer():
    p1, pk = measure.pass_at(np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]))
    assert p1 == pytest.approx(5 / 12) and pk == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------------- per-row scores
def test_row_scores_items_clusters_and_metrics():
    df = pd.DataFrame({"id": ["img1", "img1", "img2"], "source": ["kvasir"] * 3,
                       "answer_type": ["closed", "open", "closed"], "score": [1.0, 0.5, 0.0]})
    long = evaluation.row_scores("vqa", df)
    assert list(long["item"]) == ["vqa:img1:0", "vqa:img1:1", "vqa:img2:0"]
    assert list(long["cluster"]) == ["img1", "img1", "img2"]
    assert list(long["metric"]) == ["closed_correct", "open_recall", "closed_correct"]
    assert list(long["score"]) == [1.0, 0.5, 0.0]
    conv = pd.DataFrame({"id": ["m1", "m1"], "source": ["bone_marrow"] * 2, "variant": ["standard", "reversed"],
                         "conversation_correct": [1.0, 0.0], "diagnosis_correct": [1.0, 1.0],
                         "consistent": [1.0, 0.0], "question_acc": [1.0, 0.6]})
    long = evaluation.row_scores("conv", conv)
    std = long[(long["variant"] == "standard") & (long["metric"] == "conversation_correct")]
    assert list(std["item"]) == ["conv:m1:0"] and list(std["score"]) == [1.0]
    assert set(long["metric"]) == {"conversation_correct", "diagnosis_correct", "path_consistency", "question_acc"}


# ----------------------------------------------------------------------------------------------- claims
@pytest.fixture
def fake_stats(monkeypatch):
    """Minimal stand-in for repro.stats (contract of the stats branch): compare pairs by (seed, item); a seed-less
    baseline is shared by every seed."""

    def compare(treat, base, n_boot=2000, rng_seed=0, binary=None):
        if base["seed"].isna().all():
            base = pd.concat([base.assign(seed=s) for s in treat["seed"].unique()])
        m = treat.merge(base, on=["seed", "item"], suffixes=("_t", "_b"))
        d = float((m["score_t"] - m["score_b"]).mean())
        return {"difference": d, "ci_low": d - 0.1, "ci_high": d + 0.1, "p_value": 0.01 if d else 1.0, "mde": 0.05,
                "n_items": int(m["item"].nunique()), "n_clusters": int(m["cluster_t"].nunique()),
                "seeds": sorted(int(s) for s in m["seed"].unique()), "test": "fake"}

    def claims_frame(items):
        rows = []
        for c in items:
            verdict = "not_trained" if not c["trained"] else ("reproduced" if c["difference"] > 0 else "inconclusive")
            rows.append({**{k: c.get(k) for k in CLAIM_FIELDS if k not in ("p_holm", "verdict")},
                         "p_holm": c["p_value"], "verdict": verdict, "why": "fake"})
        return pd.DataFrame(rows)

    mod = types.ModuleType("repro.stats")
    mod.compare, mod.claims_frame = compare, claims_frame
    mod.ci95 = lambda v: (float(np.mean(v)), float("nan"))
    monkeypatch.setitem(sys.modules, "repro.stats", mod)
    import repro

    monkeypatch.setattr(repro, "stats", mod, raising=False)
    return mod


def rows_of(method, seed, scores, metric="closed_correct"):
    return pd.DataFrame({"paper": "mmedpo", "method": method, "seed": seed, "task": "vqa", "source": "kvasir",
                         "variant": "", "item": [f"vqa:i{i}:0" for i in range(len(scores))],
                         "cluster": [f"i{i}" for i in range(len(scores))], "metric": metric, "score": scores})


def rec(method, seed, trained=True, why=""):
    return {"paper": "mmedpo", "method": method, "seed": seed, "metrics": {}, "curve": [], "trained": trained,
            "why": why, "kl_end": 0.1, "reward_first": 0.0, "reward_last": 1.0}


def test_arms_are_paired_by_seed_not_position(fake_stats):
    # DPO seed 0 is perfect on item 0 only, seed 1 on item 1 only; MMedPO copies each seed's DPO and adds item 2.
    # Records and rows are listed in opposite seed orders: pairing by position would mix seeds.
    rows = pd.concat([rows_of("DPO", 0, [1.0, 0.0, 0.0]), rows_of("DPO", 1, [0.0, 1.0, 0.0]),
                      rows_of("MMedPO", 1, [0.0, 1.0, 1.0]), rows_of("MMedPO", 0, [1.0, 0.0, 1.0])])
    run = {"records": [rec("DPO", 0), rec("DPO", 1), rec("MMedPO", 1), rec("MMedPO", 0)], "rows": rows}
    only = [claims.Claim("mmedpo", "MMedPO beats DPO", "MMedPO", "DPO", "closed_correct")]
    out = claims.judge({"mmedpo": run}, claims=only)
    assert out[0]["difference"] == pytest.approx(1 / 3)  # by position it would be (0 + 1/3 ... mixed) != 1/3
    assert out[0]["seeds"] == [0, 1] and out[0]["trained"]
    frame = claims.scores(run, "MMedPO", "closed_correct")
    assert list(frame.columns) == ["seed", "item", "cluster", "score"]


def test_untrained_arm_makes_the_claim_not_trained_with_its_reason(fake_stats):
    rows = pd.concat([rows_of("SFT", None, [0.0, 1.0]), rows_of("DPO", 0, [1.0, 1.0])])
    run = {"records": [rec("SFT", None), rec("DPO", 0, trained=False, why="end KL 0.001 < 0.01")], "rows": rows}
    only = [c for c in claims.CLAIMS if c.claim == "DPO beats SFT on closed VQA"]
    led = claims.ledger({"mmedpo": run}, claims=only)
    assert list(led["verdict"]) == ["not_trained"] and "end KL" in led["why"].iloc[0]
    assert math.isnan(led["difference"].iloc[0])
    assert all(f in led.columns for f in CLAIM_FIELDS)


def test_why_known_answers():
    row = {"difference": 0.1, "ci_low": 0.05, "ci_high": 0.15, "p_holm": 0.001, "mde": 0.04}
    expected = "+0.100 [+0.050, +0.150] in the paper's direction, p_holm 0.001"
    assert claims.why({**row, "verdict": "reproduced"}) == expected
    small = {**row, "difference": 0.01, "ci_low": -0.03, "ci_high": 0.05, "p_holm": 0.6, "verdict": "inconclusive"}
    assert claims.why(small) == "+0.010 [-0.030, +0.050]: smaller than this evaluation can detect (mde 0.040)"
    assert claims.why({"verdict": "not trained"}, "DPO seed 0: x") == "not trained: DPO seed 0: x"


def test_claims_list_one_per_observation():
    dr = [c for c in claims.CLAIMS if c.paper == "drllava" and c.base == "SFT"]
    assert [c.variant for c in dr] == ["standard"]  # 04 scores the standard order; each variant is 06's claim
    assert [c.variant for c in claims.DR_ROBUSTNESS] == list(claims.DR_VARIANTS)
    assert papers.drllava.TEST_VARIANTS == ["standard"] == continued.VARIANTS["drllava"]  # what 04's claims read
    # every paper's "beats SFT" claim has its compute-matched continued-SFT twin (repro.papers.continued)
    beats_start = {c.paper for c in claims.CLAIMS if c.base == "SFT" and c.kind == "claim"}
    beats_cont = {c.paper for c in claims.CLAIMS if c.base == continued.METHOD}
    assert beats_start == beats_cont == {"umed", "zhu", "mmedpo", "drllava"}
    # the continued-SFT arm scores only the conversation variants its claims read
    for c in claims.CLAIMS:
        if c.base == continued.METHOD and c.paper in continued.VARIANTS:
            assert c.variant in continued.VARIANTS[c.paper]
    assert len({(c.paper, c.treat, c.base, c.metric, c.variant) for c in claims.CLAIMS}) == len(claims.CLAIMS)
    assert any(c.paper == "mmedpo" and c.metric == "rouge_l" for c in claims.CLAIMS)  # report-generation claim


def test_report_arms_and_tables_label_untrained(fake_stats):
    from repro import report

    run = {"records": [rec("SFT", None) | {"metrics": {"closed_acc": 0.5}},
                       rec("DPO", 0, trained=False, why="x") | {"metrics": {"closed_acc": 0.6}}], "rows": None}
    arms = report.arms_table({"mmedpo": run})
    assert list(arms.columns) == report.ARM_COLUMNS and list(arms.columns[:4]) == ["paper", "method", "seed", "learned"]
    assert len(arms) == 1 and not arms["trained"].iloc[0] and arms["why"].iloc[0] == "x"
    t = report.table(run["records"], ["closed_acc"])
    assert list(t.index) == ["SFT", "DPO (not trained)"]


# ----------------------------------------------------------------------------------------------- parallel arms
def fake_arm(job):
    """A cheap arm for the parallel test: deterministic in the seed, like a real one."""
    import torch

    if job.method == "boom":
        raise RuntimeError("boom arm failed")
    torch.manual_seed(job.seed)
    x = torch.rand(4).tolist()
    rows = pd.DataFrame({"task": "vqa", "source": "s", "variant": "", "item": [f"i{i}" for i in range(4)],
                         "cluster": [f"c{i}" for i in range(4)], "metric": "m", "score": x})
    return {"metrics": {"m": sum(x) / 4}, "curve": [], "kl_end": 1.0, "reward_first": 0.0, "reward_last": 1.0,
            "trained": True, "why": "", "threads": torch.get_num_threads()}, rows


def _jobs(methods=("a", "b"), seeds=(0, 1, 2)):
    stage = common.Stage(profile="smoke")
    cfg = papers.mmedpo.MMedPOConfig()
    return [common.Job("fake", m, s, "tests.unit.test_papers:fake_arm", cfg, stage) for s in seeds for m in methods]


@pytest.fixture
def tmp_root(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_ROOT", str(tmp_path))  # spawned workers resolve their paths here too
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    return tmp_path


def test_parallel_arms_equal_serial_and_keep_files(tmp_root):
    par_recs, par_rows = common.run_jobs(_jobs(), workers=2)
    files = sorted(p.parent.name for p in (tmp_root / "runs").rglob("arm.json"))
    assert files == sorted(j.folder.name for j in _jobs())
    for f in (tmp_root / "runs").rglob("arm.json"):
        f.unlink()
    ser_recs, ser_rows = common.run_jobs(_jobs(), workers=1)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in par_recs]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in ser_recs]
    assert all(r["threads"] == 1 for r in par_recs + ser_recs)
    pd.testing.assert_frame_equal(par_rows, ser_rows)
    assert [(r["method"], r["seed"]) for r in par_recs] == [(j.method, j.seed) for j in _jobs()]  # job order


def test_a_failing_arm_loses_no_other_arm(tmp_root):
    with pytest.raises(RuntimeError, match="boom"):
        common.run_jobs(_jobs(methods=("a", "boom"), seeds=(0, 1)), workers=2)
    done = sorted(p.parent.name for p in (tmp_root / "runs").rglob("arm.json"))
    assert done == sorted(j.folder.name for j in _jobs(methods=("a",), seeds=(0, 1)))
    recs, _ = common.run_jobs(_jobs(methods=("a",), seeds=(0, 1)), workers=1, only_cached=True)
    assert len(recs) == 2


def test_arm_folders_are_keyed_by_config_so_a_sweep_keeps_every_run():
    stage = common.Stage(profile="smoke")
    a, b = papers.umed.UMedConfig(lr=1e-5), papers.umed.UMedConfig(lr=3e-5)
    fa, fb = papers.umed.jobs(a, stage)[1].folder, papers.umed.jobs(b, stage)[1].folder
    assert fa != fb and fa.parent == fb.parent and fa.name.startswith(papers.umed.jobs(a, stage)[1].name + "-")
    assert papers.umed.jobs(a, stage)[0].folder == papers.umed.jobs(b, stage)[0].folder  # the SFT evaluation


def test_zhu_base_variants_limit_the_base_arms_only():
    stage = common.Stage(profile="smoke", seeds=[0])
    cfg = papers.zhu.ZhuConfig(base_variants=["grpo"])
    trained = [j.method for j in papers.zhu.jobs(cfg, stage) if j.seed is not None]
    assert trained == ["base+grpo"] + [f"SFT+{v}" for v in papers.zhu.VARIANTS]
    full = [j.method for j in papers.zhu.jobs(papers.zhu.ZhuConfig(), stage) if j.seed is not None]
    assert len(full) == 2 * len(papers.zhu.VARIANTS)
    with pytest.raises(ConfigError, match="'zhu_base_variants' has value.*'grpo_x'"):
        papers.zhu.jobs(papers.zhu.ZhuConfig(base_variants=["grpo_x"]), stage)


def test_start_cache_key_ignores_training_knobs_but_not_eval_knobs():
    stage = common.Stage(profile="smoke")
    a, b = papers.umed.UMedConfig(), papers.umed.UMedConfig(steps=99, lr=1.0)
    assert papers.umed.start_job(a, stage).key() == papers.umed.start_job(b, stage).key()
    assert papers.umed.jobs(a, stage)[0].key() == papers.umed.jobs(b, stage)[0].key()  # the SFT evaluation
    assert papers.umed.jobs(a, stage)[1].key() != papers.umed.jobs(b, stage)[1].key()  # a trained arm
    c = papers.umed.UMedConfig(eval_limit=7)
    assert papers.umed.jobs(a, stage)[0].key() != papers.umed.jobs(c, stage)[0].key()


def test_the_pool_starts_the_longest_arm_first_and_returns_job_order(tmp_root, monkeypatch):
    """Longest-first submission (so two workers finish together), results still in job order, and arms already on
    disk are read back without starting a worker."""
    jobs = _jobs(methods=("a",), seeds=(0, 1, 2))
    monkeypatch.setitem(common.SECONDS, jobs[0].fn, 1)
    assert [common.est_seconds(j) for j in jobs] == [1, 1, 1]
    common.run_jobs(jobs[:1], workers=1)  # seed 0 is on disk now
    submitted = []

    class Recorder:  # stands in for the process pool: records submission order, runs in this process
        def __init__(self, **kw):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def submit(self, fn, job):
            import concurrent.futures as cf

            submitted.append(job.seed)
            f = cf.Future()
            f.set_result(fn(job))
            return f

    import concurrent.futures

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Recorder)
    monkeypatch.setattr(common, "est_seconds", lambda j: {0: 5, 1: 10, 2: 20}[j.seed])
    recs, rows = common.run_jobs(jobs, workers=2, progress=False)
    assert submitted == [2, 1]  # seed 0 was cached: never submitted; then longest first
    assert [r["seed"] for r in recs] == [0, 1, 2]
    assert list(rows["seed"].drop_duplicates()) == [0, 1, 2]


def test_an_arm_key_is_computed_once_per_job(monkeypatch):
    job = _jobs(methods=("a",), seeds=(0,))[0]
    calls = []
    real = common.Job._compute_key
    monkeypatch.setattr(common.Job, "_compute_key", lambda self: calls.append(1) or real(self))
    assert job.folder == job.folder and job.key() == job.key()
    assert len(calls) == 1


def test_two_arms_that_answer_alike_everywhere_get_the_rule_of_three_mde_and_say_so():
    """No item differs: the plug-in SE is 0 (an MDE of 0 would claim perfect power), so the MDE is bounded with the
    rule of three on the clusters: (z_.975 + z_.8) * sqrt(3) / C; NaN where scores are not in [0, 1]."""
    from repro import stats

    f = pd.DataFrame({"seed": 0, "item": [f"i{i}" for i in range(6)], "cluster": [f"c{i}" for i in range(6)],
                      "score": [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]})
    r = stats.compare(f, f.copy(), n_boot=200)
    assert r["mde"] == pytest.approx(2.8016 * math.sqrt(3) / 6, abs=1e-3) and r["difference"] == 0
    assert r["ci_low"] == 0 == r["ci_high"]
    row = {**r, "p_holm": 1.0, "verdict": "inconclusive"}
    assert claims.why(row).startswith("the two arms score the same on every item: the method changed none")
    assert "rule-of-three" in claims.why(row)
    g = f.assign(score=[2.0, 3.1, 2.2, 2.0, 5.0, 1.0])  # log lengths: unbounded, no bound
    assert math.isnan(stats.compare(g, g.copy(), n_boot=50, binary=False)["mde"])
    g = f.assign(score=[1.0, 1.0, 1.0, 1.0, 0.0, 1.0])  # one item differs: an MDE again
    assert stats.compare(g, f, n_boot=200)["mde"] > 0


def _fake_mcq_scores(data, split, limit):  # every answer right, in the real per-row layout
    rows = pd.DataFrame(evaluation.load_rows(data, "mcq", split, limit or None))
    return evaluation.row_scores("mcq", rows.assign(correct=1.0))


@pytest.mark.parametrize("limit", [0, 4])
def test_zhu_scores_every_mcq_question_of_the_test_images(tmp_path, monkeypatch, limit):
    from repro.data import build, conversations

    data = tmp_path / "data"
    build.build(data, seed=0, n_per_class=4, n_normal=4, image_size=64, difficulty=0.5, yes_share=0.5,
                split_fractions=[0.5, 0.2, 0.3], conv_train_variants=["standard"],
                conv_eval_variants=list(conversations.VARIANTS[:1]), heldout_categories=[], mcq_test_questions=3)
    monkeypatch.setattr(measure, "job_data_dir", lambda job: data)
    monkeypatch.setattr("repro.models.load_vlm", lambda path: ("model", "processor"))
    # the test split's rows score 1, the extra kinds 0: the flat accuracy must then be 1/3 (mean over all rows)
    monkeypatch.setattr(measure, "evaluate", lambda model, stage, tasks, lim, split=None, **kw: (
        {"accuracy": 1.0}, _fake_mcq_scores(data, split or stage.eval_split, lim).assign(score=float(split is None))))
    job = common.Job("zhu", "SFT+grpo", 0, "", papers.zhu.ZhuConfig(eval_limit=limit), common.Stage(profile="smoke"))
    test = _fake_mcq_scores(data, "test", limit)
    flat, rows = papers.zhu.evaluate(job, tmp_path)
    assert len(rows) == 3 * len(test) and rows["item"].is_unique  # three kinds per image, none lost, none twice
    assert set(rows["cluster"]) == set(test["cluster"])  # the arm's test images, with their other two kinds
    assert (rows.groupby("cluster").size() == 3).all()
    assert flat["accuracy"] == pytest.approx(1 / 3)
    val = dataclasses.replace(job, stage=common.Stage(profile="smoke", eval_split="val"))
    assert len(papers.zhu.evaluate(val, tmp_path)[1]) == len(_fake_mcq_scores(data, "val", limit))  # val: as is


def test_zhu_mcq_extra_scores_length_in_words_and_on_the_log_scale():
    preds = ["<think>A. x: no. B. y: yes.</think><answer>B</answer>", "", "one two three"]
    rows = [{"messages": [{"role": "user", "content": "q"},
                          {"role": "assistant", "content": "<think>A. x: no. B. y: yes.</think><answer>B</answer>"}]}
            ] * 3
    out = papers.zhu.mcq_extra("mcq", pd.DataFrame({"prediction": preds}), rows)
    assert out["length"] == [6.0, 0.0, 3.0]  # whitespace words of the whole answer
    assert out["log_length"] == pytest.approx([math.log(7), 0.0, math.log(4)])  # ln(1 + words)
    assert out["format"] == [1.0, 0.0, 0.0]


def test_before_after_lines_up_the_same_rows_of_start_and_arms():
    from repro import report

    def sample(pred):
        return {"prompt": "Which finding?", "truth": "B", "prediction": pred}

    run = {"records": [
        {"method": "SFT", "seed": None, "samples": {"mcq": [sample("A"), sample("B")]}},
        {"method": "SFT+grpo", "seed": 0, "samples": {"mcq": [sample("B"), sample("B")]}},
        {"method": "SFT+grpo", "seed": 1, "samples": {"mcq": [sample("C"), sample("C")]}},  # another seed: not shown
        {"method": "SFT+ecr", "seed": 0, "samples": {}},  # not evaluated (did not learn): no column
        {"method": "conv arm", "seed": 0, "samples": {"conv": [sample(["yes", "no"])]}},
    ]}
    t = report.before_after(run)
    assert list(t.columns) == ["task", "item", "prompt", "reference", "SFT", "SFT+grpo", "conv arm"]
    mcq = t[t["task"] == "mcq"]
    assert mcq["SFT"].tolist() == ["A", "B"] and mcq["SFT+grpo"].tolist() == ["B", "B"]
    assert t[t["task"] == "conv"]["conv arm"].tolist() == ["yes / no"]
    assert report.before_after({"records": [{"method": "SFT", "seed": None}]}).empty

"""Stage 05 wiring: each ablation removes exactly its component (known answers on toy samples), the full methods'
jobs are stage 04's (same keys: read back, not retrained), the IoU-threshold curve and the paper's differences."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from repro import report
from repro.config import ConfigError
from repro.data import decision_tree as dt
from repro.papers import ablation_report as rep
from repro.papers import ablations as ab
from repro.papers import common, drllava, mmedpo, umed, zhu
from repro.rewards import localization as loc
from repro.rewards import rules


# ----------------------------------------------------------------------------------------------- UMed rewards
def _answer(box) -> str:
    return f"Detection: abnormal. Localization: {box}. Recognition: nodule in the lung, CT."


# Two candidates of one query (query_id 0). True box: pixels [0, 0, 32, 32] of a 64-pixel image = [0, 0, 50, 50]
# percent. Predicted [0, 0, 25, 50] -> IoU 1250/2500 = 0.5; [0, 0, 25, 25] -> 625/2500 = 0.25.
COMPLETIONS = [_answer([0, 0, 25, 50]), _answer([0, 0, 25, 25])]
COLS = {"abnormal": [True, True], "category": ["nodule"] * 2, "region": ["lung"] * 2, "modality": ["CT"] * 2,
        "bboxes": [[[0, 0, 32, 32]]] * 2, "image_size": [64, 64], "query_id": [0, 0]}
VRR = [0.2, 0.1]  # raw attention mass of the two candidates


def stub_vrr(prompts=None, completions=None, **kw):
    return list(VRR)


def _call(f, completions=COMPLETIONS, **over):
    return f(prompts=["q", "q"], completions=completions, **{**COLS, **over})


def test_alr_of_the_toy_sample_is_hand_computed():
    assert _call(loc.alr_reward) == pytest.approx([0.5, 0.25])


def test_umed_ablations_known_answers():
    rel = _call(loc.make_relevance_reward())
    full = _call(loc.make_aar_reward(group_key="query_id", vrr_fn=stub_vrr))
    # full: (rel + ALR/max (0.5/0.5, 0.25/0.5) + VRR/max (0.2/0.2, 0.1/0.2)) / 3 terms (the one scale of every variant)
    assert full == pytest.approx([(rel[0] + 1 + 1) / 3, (rel[1] + 0.5 + 0.5) / 3])
    assert _call(ab.aar_variant("w/o VRR", stub_vrr)) == pytest.approx([(rel[0] + 1) / 2, (rel[1] + 0.5) / 2])
    assert _call(ab.aar_variant("w/o ALR", stub_vrr)) == pytest.approx([(rel[0] + 1) / 2, (rel[1] + 0.5) / 2])
    assert _call(ab.aar_variant("w/o max-norm", stub_vrr)) == pytest.approx(
        [(rel[0] + 0.5 + 0.2) / 3, (rel[1] + 0.25 + 0.1) / 3])


def test_without_vrr_ignores_attention_and_without_alr_ignores_the_box():
    f = ab.aar_variant("w/o VRR", stub_vrr)
    assert _call(f) == _call(ab.aar_variant("w/o VRR", lambda *a, **k: [9.0, 0.0]))  # VRR never read
    g = ab.aar_variant("w/o ALR", stub_vrr)
    moved = [_answer([30, 30, 90, 90]), _answer([0, 0, 50, 50])]  # other boxes, same words
    assert _call(g) == pytest.approx(_call(g, completions=moved))
    assert _call(ab.aar_variant("w/o max-norm", stub_vrr)) != pytest.approx(
        _call(ab.aar_variant("w/o max-norm", stub_vrr), completions=moved))


def test_unknown_umed_ablation_is_an_error():
    with pytest.raises(ValueError, match="unknown UMed ablation"):
        ab.aar_variant("w/o everything")
    with pytest.raises(ValueError, match="unknown UMed ablation"):  # a knob row is the full reward, not a variant
        ab.aar_variant("AAR mean")


def test_umed_sensitivity_rows_are_the_full_reward_with_one_knob_flipped():
    """Issue 27: the paper's AAR (policy VRR, sum) is the method; the mean of the terms is a sensitivity row. Its
    reward is the full AAR on the [0, 1] scale and still reads the policy (the trainer binds it)."""
    from types import SimpleNamespace

    from repro.papers import umed

    job = SimpleNamespace(extra={"ablation": "AAR mean"}, cfg=umed.UMedConfig())
    (mean,) = ab.umed_rewards(job, "no model is loaded for the policy's VRR")
    (full,) = [umed.aar_reward(umed.UMedConfig(), "unused")]
    assert mean.range == (0.0, 1.0) and full.range == (0.0, 3.0)
    assert hasattr(mean, "bind_policy") and hasattr(full, "bind_policy")
    assert set(ab.UMED_KNOBS) <= set(ab.UMED)


# ----------------------------------------------------------------------------------------------- Dr-LLaVA rewards
def _conv(diagnosis="AML"):
    path = dt.PATHS[diagnosis]
    return {"turn_categories": [1, 2, 3, 4, 5], "turn_labels": list(path)}


def _turns(diagnosis):
    return [dt.ANSWER_BANKS["train"][a][0] for _, a in dt.TURN_KEYS[diagnosis]]


def test_drllava_without_path_term_known_answers():
    row = {k: [v] for k, v in _conv("AML").items()}
    no_path = ab.drllava_variant("w/o path term")
    perfect = _turns("AML")
    assert rules.drllava_reward(completions=[perfect], **row) == [9.0]
    assert no_path(completions=[perfect], **row) == [5.0]  # five right turns, the four consistency points gone
    # coherent but wrong path (MM from turn 4): full 3 + 4 consistency, without the term 3
    mixed = perfect[:3] + _turns("MM")[3:]
    assert rules.drllava_reward(completions=[mixed], **row) == [7.0]
    assert no_path(completions=[mixed], **row) == [3.0]
    assert ab.drllava_variant("gated") is rules.drllava_gated_reward
    assert ab.drllava_variant("released") is rules.released_reward


# ----------------------------------------------------------------------------------------------- MMedPO data
def _pref():
    import datasets
    from PIL import Image

    img = Image.fromarray(np.full((8, 8, 3), 128, np.uint8))
    rows = [dict(prompt="q", chosen="a cyst in the liver", rejected="a mass in the lung", images=[img],
                 rejected_images=[img], weight=0.7, kind="text", id="i1", source="s", category="cyst", score=0.8),
            dict(prompt="q", chosen="a cyst", rejected="a cyst in the lung", images=[img], rejected_images=[img],
                 weight=0.9, kind="text", id="i2", source="s", category="cyst", score=0.3),
            dict(prompt="q", chosen="a cyst", rejected="a cyst", images=[img], rejected_images=[img], weight=0.5,
                 kind="visual", id="i1", source="s", category="cyst", score=0.6)]
    return datasets.Dataset.from_list(rows)


def _job(ablation):
    return SimpleNamespace(extra={"ablation": ablation}, stage=SimpleNamespace(profile="smoke"), seed=0)


def test_mmedpo_ablations_rewrite_only_their_component():
    from repro.data.preference import weights_for

    pref = _pref()
    text, weighted = ab.mmedpo_pref(pref, _job("text w/ weights"))
    assert weighted and text["kind"] == ["text", "text"] and text["weight"] == pytest.approx([0.7, 0.9])
    ones, weighted = ab.mmedpo_pref(pref, _job("visual w/o weights"))
    assert weighted and ones["weight"] == [1.0, 1.0, 1.0] and ones["kind"] == pref["kind"]
    single, _ = ab.mmedpo_pref(pref, _job("single judge"))  # rescored with the full method's mode (raw)
    from repro.rewards import clinical

    judge = clinical.DEFAULT_PANEL[0]
    want = weights_for([judge("a mass in the lung", "a cyst in the liver"), judge("a cyst in the lung", "a cyst")],
                       "raw")
    assert single["weight"][:2] == pytest.approx(want) and single["weight"][2] == 0.5
    with pytest.raises(ValueError, match="unknown MMedPO ablation 'weights raw'"):
        ab.mmedpo_pref(pref, _job("weights raw"))  # the full method now: no ablation of that name


def test_mmedpo_weight_modes_from_the_stored_score():
    """The arm's text weights come from `score` (0.8, 0.3); the visual pair keeps its 0.5."""
    pref = _pref()
    assert mmedpo.text_scores(pref) == pytest.approx([0.8, 0.3])
    assert mmedpo.reweight_text(pref, [0.8, 0.3], "raw")["weight"] == pytest.approx([0.8, 0.3, 0.5])
    assert mmedpo.reweight_text(pref, [0.8, 0.3], "literal")["weight"] == pytest.approx([0.75, 0.75, 0.5])
    # normalize: mean 0.55, std 0.25 -> z = +1, -1 -> 1 +- sqrt(0.1) = 1.316 / 0.684, clipped to [0.75, 1.25]
    assert mmedpo.reweight_text(pref, [0.8, 0.3], "normalize")["weight"] == pytest.approx([1.25, 0.75, 0.5])
    assert mmedpo.reweight_text(pref, [0.0, 1.0], "raw")["weight"][0] == 0.0  # s = 0 switches the pair off


def test_global_noise_changes_only_visual_rejected_images():
    pref = _pref()
    out, weighted = ab.mmedpo_pref(pref, _job("global noise"))
    assert weighted and out["weight"] == pref["weight"]
    before = [np.asarray(r[0]) for r in pref["rejected_images"]]
    after = [np.asarray(r[0]) for r in out["rejected_images"]]
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])  # text pairs untouched
    assert not np.array_equal(before[2], after[2])  # the whole visual image is noised
    assert (after[2] != 128).mean() > 0.5


# ----------------------------------------------------------------------------------------------- jobs and caching
def _stage(tmp_path, monkeypatch):
    from repro import paths

    monkeypatch.setattr(paths, "models_dir", lambda profile: tmp_path / profile / "models")
    return common.Stage(profile="smoke", seeds=[0, 1])


def test_full_method_jobs_are_stage_04s(tmp_path, monkeypatch):
    stage, acfg = _stage(tmp_path, monkeypatch), ab.AblationConfig()
    for paper, mod, cfg in [("umed", umed, umed.UMedConfig()), ("mmedpo", mmedpo, mmedpo.MMedPOConfig()),
                            ("drllava", drllava, drllava.DrLLaVAConfig()), ("zhu", zhu, zhu.ZhuConfig())]:
        keys04 = {j.key(): j.folder for j in mod.jobs(cfg, stage)}
        jobs = ab.jobs(paper, cfg, stage, acfg)
        full = [j for j in jobs if "ablation" not in j.extra and not j.method.startswith("SFT+grpo (")]
        assert full and all(keys04.get(j.key()) == j.folder for j in full), paper  # same key, same folder
        abl = [j for j in jobs if j not in full]
        assert len(abl) == len(getattr(acfg, paper)) * len(stage.seeds), paper
        assert not {j.key() for j in abl} & set(keys04), paper
        assert all("/" not in j.name for j in abl) and len({j.folder for j in abl}) == len(abl), paper


def test_mmedpo_knob_rows_and_the_matched_arm(tmp_path, monkeypatch):
    stage, cfg = _stage(tmp_path, monkeypatch), mmedpo.MMedPOConfig()
    jobs = {(j.method, j.seed): j for j in ab.jobs("mmedpo", cfg, stage, ab.AblationConfig())}
    full, dpo = jobs[("MMedPO", 0)], jobs[("DPO", 0)]
    assert full.extra == {"weights": "raw"} and "weights" not in dpo.extra  # DPO is unweighted
    norm = jobs[(ab.label("mmedpo", "weights normalize"), 0)]
    assert norm.cfg.weight_mode == "normalize" and norm.extra == {"ablation": "weights normalize",
                                                                  "weights": "normalize"}  # no data hook
    lit = jobs[(ab.label("mmedpo", "weights literal"), 0)]
    assert lit.extra["weights"] == "literal" and "pref" not in lit.extra
    for seed in (0, 1):  # the matched arm names the full MMedPO arm of ITS seed
        m = jobs[("MMedPO (global noise, matched KL)", seed)]
        target = jobs[("MMedPO", seed)]
        assert m.extra["match_kl"] == {"arm": target.folder.name, "key": target.key()}
        assert m.extra["weights"] == "raw" and m.extra["pref"].endswith(":mmedpo_pref")
    # the weight mode is the weighted arms' knob: DPO's key stays, MMedPO's changes
    other = {(j.method, j.seed): j.key() for j in mmedpo.jobs(mmedpo.MMedPOConfig(weight_mode="normalize"), stage)}
    assert other[("DPO", 0)] == dpo.key() and other[("MMedPO", 0)] != full.key()
    with pytest.raises(ConfigError, match="mmedpo_weight_mode"):
        mmedpo.MMedPOConfig(weight_mode="clip")


def test_matched_step_on_a_hand_kl_curve():
    """kl_end is the mean of the last min(3, n // 2) logged KLs (common.summarize_curve); the matched step is the
    first step where that running value reaches the target."""
    curve = [(1, 0.0), (2, 0.1), (3, 0.3), (4, 0.6), (5, 0.9), (6, 1.2), (7, 1.5)]
    # n=1..3: window 1 -> 0.0, 0.1, 0.3; n=4: mean(0.3, 0.6) = 0.45; n=5: 0.75; n=6: mean(.6, .9, 1.2) = 0.9
    assert mmedpo.matched_step(curve, 0.3) == (3, pytest.approx(0.3))
    assert mmedpo.matched_step(curve, 0.5) == (5, pytest.approx(0.75))
    assert mmedpo.matched_step(curve, 0.8) == (6, pytest.approx(0.9))
    assert mmedpo.matched_step(curve, 5.0) is None  # never reached: the arm runs its planned steps
    assert mmedpo.matched_step(pd.DataFrame(curve, columns=["step", "kl"]), 0.5)[0] == 5
    # a target above 0 is never met by the first logged step (policy = reference there)
    assert mmedpo.matched_step([(1, 0.0)], 1e-9) is None


def test_run_waves_runs_the_matched_arm_after_its_target(monkeypatch, tmp_path):
    stage, cfg = _stage(tmp_path, monkeypatch), mmedpo.MMedPOConfig()
    jobs = ab.jobs("mmedpo", cfg, stage, ab.AblationConfig(mmedpo=[ab.MATCHED]))
    calls = []

    def run_jobs(js, workers, only_cached=False):
        calls.append([j.method for j in js])
        return [{"method": j.method, "seed": j.seed} for j in js], pd.DataFrame({"x": [len(js)]})

    monkeypatch.setattr(common, "run_jobs", run_jobs)
    recs, rows = ab.run_waves(jobs, 2)
    assert calls[1] == ["MMedPO (global noise, matched KL)"] * 2 and "MMedPO" in calls[0]
    assert [(r["method"], r["seed"]) for r in recs] == [(j.method, j.seed) for j in jobs]  # job order kept
    assert len(rows) == 2


def test_zhu_ablations_change_one_knob(tmp_path, monkeypatch):
    stage, cfg = _stage(tmp_path, monkeypatch), zhu.ZhuConfig(generations=8, beta=0.04)
    jobs = {j.method: j for j in ab.jobs("zhu", cfg, stage, ab.AblationConfig(zhu_small_generations=4))
            if j.seed == 0}
    beta0, small = jobs[ab.label("zhu", "beta 0")], jobs[ab.label("zhu", "small G")]
    assert beta0.cfg.beta == ab.ZERO_BETA and beta0.cfg.generations == 8
    assert small.cfg.generations == 4 and small.cfg.beta == 0.04
    assert beta0.extra == small.extra == {"init": "sft", "variant": "grpo"}


def test_breadth_knobs_drop_arms_and_keep_the_others_keys(tmp_path, monkeypatch):
    """umed_plain_ppo false drops SFT+PPO (and with it 04's and 05's claims against it); zhu_init_study false
    drops GRPO from the base and its start. Every remaining arm keeps its key: no cached arm is retrained."""
    stage = _stage(tmp_path, monkeypatch)
    on, off = umed.UMedConfig(), umed.UMedConfig(plain_ppo=False)
    keys_on = {(j.method, j.seed): j.key() for j in umed.jobs(on, stage)}
    keys_off = {(j.method, j.seed): j.key() for j in umed.jobs(off, stage)}
    assert {m for m, _ in keys_on} - {m for m, _ in keys_off} == {"SFT+PPO"}
    assert all(keys_on[k] == v for k, v in keys_off.items())
    cfg = zhu.ZhuConfig()
    with_init = ab.jobs("zhu", cfg, stage, ab.AblationConfig(zhu=[]))
    without = ab.jobs("zhu", cfg, stage, ab.AblationConfig(zhu=[], zhu_init_study=False))
    assert {j.method for j in with_init} - {j.method for j in without} == {"base", "base+grpo"}
    assert {j.key() for j in without} <= {j.key() for j in with_init}


def test_config_rejects_unknown_ablation_and_is_declared():
    with pytest.raises(ConfigError, match="unknown ablation"):
        ab.AblationConfig(umed=["w/o everything"])
    from repro import config

    assert {"umed", "mmedpo", "zhu", "drllava", "seeds", "n_boot"} <= set(config.declared_parameters("05_ablations"))


# ----------------------------------------------------------------------------------------------- report
def test_iou_curve_known_answer():
    rows = []
    for item, det, cat, iou, mau in [("a", 1, 1, 0.55, 1), ("b", 1, 1, 0.75, 1), ("c", 1, float("nan"),
                                                                                    float("nan"), 1),
                                     ("d", 0, 0, 0.9, 0)]:
        for metric, v in [("detection_correct", det), ("category_correct", cat), ("iou", iou), ("mau_correct", mau)]:
            rows.append({"method": "m", "seed": 0, "source": "deeplesion", "item": item, "metric": metric,
                         "score": v})
    c = rep.iou_curve(pd.DataFrame(rows), [0.5, 0.6, 0.8]).set_index("threshold")["accuracy"]
    assert c[0.5] == pytest.approx(3 / 4) and c[0.6] == pytest.approx(2 / 4) and c[0.8] == pytest.approx(1 / 4)


def test_paper_differences():
    vals = {(c.paper, c.claim): v for c, v, _ in rep.paper_claims()}
    assert vals[("umed", "full AAR beats w/o VRR")] == pytest.approx(0.75 - 0.71)
    assert vals[("umed", "full AAR beats w/o AAR (SFT+PPO)")] == pytest.approx(0.75 - 0.67)
    assert vals[("mmedpo", "clinical weights help text pairs (report ROUGE-L)")] == pytest.approx((15.66 - 10.95) / 100)
    assert vals[("mmedpo", "lesion-local noise beats global noise (closed VQA)")] == pytest.approx(
        ((59.88 - 58.88) + (46.98 - 46.91)) / 200)
    assert vals[("zhu", "init study: SFT start beats base start (GRPO)")] is None


def test_one_claim_per_observation_for_the_path_term():
    """Path consistency and conversation accuracy come from the same conversations: one claim, not two."""
    dr = [c for c, _, _ in rep.paper_claims() if c.paper == "drllava"]
    assert [(c.metric, c.variant) for c in dr] == [("path_consistency", "standard")]


def test_matched_kl_claim_reports_both_arms_kl():
    """The matched-KL claim row carries kl_treated / kl_control (each arm's kl_end, mean over seeds), and so does
    the 05 table."""
    matched = ab.label("mmedpo", ab.MATCHED)

    def rows(method, scores, metric):
        return pd.DataFrame({"paper": "mmedpo", "method": method, "seed": 0, "task": "vqa", "source": "s",
                             "variant": "", "item": [f"vqa:i{i}:0" for i in range(len(scores))],
                             "cluster": [f"i{i}" for i in range(len(scores))], "metric": metric, "score": scores})

    def rec(method, kl):
        return {"paper": "mmedpo", "method": method, "seed": 0, "metrics": {"closed_acc": 0.5}, "curve": [],
                "trained": True, "why": "", "kl_end": kl}

    run = {"records": [rec("MMedPO", 0.53), rec(matched, 0.55)],
           "rows": pd.concat([rows("MMedPO", [1.0, 0.0, 1.0, 1.0], "closed_correct"),
                              rows(matched, [1.0, 0.0, 0.0, 1.0], "closed_correct")])}
    items = [i for i in rep.paper_claims() if i[0].base == matched and i[0].metric == "closed_correct"]
    frame = rep.judge({"mmedpo": run}, items, n_boot=50)
    out = rep.records(frame)
    assert len(out) == 1 and out[0]["kl_treated"] == pytest.approx(0.53) and out[0]["kl_control"] == 0.55
    assert "at matched KL" in out[0]["claim"] and out[0]["difference"] == pytest.approx(0.25)
    assert rep.arm_kl(run, "SFT") is None
    assert "KL not matched" not in out[0]["why"]
    run["records"][1]["matched_kl"] = {"target": 0.53, "reached": False, "step": None, "kl": 0.2, "planned_steps": 3}
    why = rep.records(rep.judge({"mmedpo": run}, items, n_boot=50))[0]["why"]
    assert why.endswith("; KL not matched: 0.2 < target 0.53 after all 3 steps")
    table = rep.mmedpo_table(run).xs(report.OURS, level="who")
    assert list(table["KL (nats)"]) == ["0.53", "0.55"]

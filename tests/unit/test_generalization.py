"""Stage 06's data subsetting (held-out rows really absent from training, nested data shares), checkpoint steps,
summaries and claims on hand-made rows."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from repro import generalization as gen
from repro.generalization import arms, subsets
from repro.generalization import report as gr

ROWS = [{"id": f"{s}-{i}", "source": s, "category": c, "modality": m, "question_kind": k}
        for i, (s, c, m, k) in enumerate([("deeplesion", "mass", "CT", "finding"),
                                          ("deeplesion", "nodule", "CT", "region"),
                                          ("kidney_stone", "kidney stone", "CT", "modality"),
                                          ("nih_cxr", "effusion", "X-ray", "finding"),
                                          ("nih_cxr", "nodule", "X-ray", "region"),
                                          ("tbx11k", "tuberculosis", "X-ray", "modality"),
                                          ("kvasir", "polyp", "endoscopy", "finding")] * 3)]
HELD = ["deeplesion:mass", "nih_cxr:effusion"]


def test_heldout_categories_absent_from_training_and_alone_in_test():
    train, test = subsets.pair("categories", HELD)
    tr, te = subsets.select(ROWS, train), subsets.select(ROWS, test)
    pairs = {(r["source"], r["category"]) for r in tr}
    assert ("deeplesion", "mass") not in pairs and ("nih_cxr", "effusion") not in pairs
    assert {(r["source"], r["category"]) for r in te} == {("deeplesion", "mass"), ("nih_cxr", "effusion")}
    assert len(tr) + len(te) == len(ROWS)


def test_leave_one_source_out_and_single_modality():
    tr, te = (subsets.select(ROWS, s) for s in subsets.pair("source", "tbx11k"))
    assert "tbx11k" not in {r["source"] for r in tr} and {r["source"] for r in te} == {"tbx11k"}
    tr, te = (subsets.select(ROWS, s) for s in subsets.pair("modality", "CT"))
    assert {r["modality"] for r in tr} == {"CT"} and {r["modality"] for r in te} == {"X-ray", "endoscopy"}


def test_question_kind_never_in_training():
    tr, te = (subsets.select(ROWS, s) for s in arms.zhu_parts("modality").values())
    assert {r["question_kind"] for r in tr} == {"finding", "region"}
    assert {r["question_kind"] for r in te} == {"modality"}


def test_fractions_are_nested_and_sized():
    picked = [{r["id"] for r in subsets.select(ROWS, subsets.pair("fraction", f, seed=3)[0])}
              for f in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert [len(p) for p in picked] == [round(f * len(ROWS)) for f in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert all(a <= b for a, b in zip(picked, picked[1:], strict=False))
    assert subsets.pair("fraction", 0.5)[1] == {"kind": "all"}  # a data share is tested on every test row


def test_conditions_and_bad_specs():
    conds = subsets.conditions(HELD, ["tbx11k", "deeplesion"], "CT", [0.2, 1.0])
    # 100 % is trained here with the same recipe as the other shares (no stage-04 shortcut: 04 saw every image)
    assert list(conds) == ["unseen categories", "without tbx11k", "without deeplesion", "CT only", "20% data",
                           "100% data"]
    with pytest.raises(ValueError, match="'kind' has value 'nope'"):
        subsets.select(ROWS, {"kind": "nope"})
    with pytest.raises(ValueError, match="train rows only"):
        subsets.select(ROWS, {"kind": "fraction", "value": 0.5, "part": "test"})
    with pytest.raises(ValueError, match=r"ood_umed_fractions.*\[1.5\]"):
        subsets.check_fractions([0.5, 1.5])
    assert subsets.check_fractions([1.0, 0.2, 0.2]) == [0.2, 1.0]


def test_spec_indices_reads_metadata_only():
    from datasets import Dataset

    ds = Dataset.from_list([{k: r[k] for k in ("source", "category", "modality")} for r in ROWS[:7]])
    assert arms.spec_indices(ds, subsets.pair("source", "nih_cxr")[1]) == [3, 4]


def test_checkpoint_steps_known_answers():
    assert arms.checkpoint_steps(8, 4) == [2, 4, 6, 8]
    assert arms.checkpoint_steps(2, 4) == [1, 2]
    assert arms.checkpoint_steps(5, 1) == [5]
    with pytest.raises(ValueError, match="ood_zhu_steps"):
        arms.checkpoint_steps(0, 2)


def test_declared_has_04_knobs_and_study_knobs():
    d = gen.declared()
    assert d["ood_umed_fractions"] == ("list", [0.2, 0.4, 0.6, 0.8, 1.0]) and "umed_lr" in d and "seeds" in d
    from repro.config import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'ood_umed_nope'"):
        gen.UMedStudy.from_params({"ood_umed_nope": 1})


def test_mean_ci_clusters_are_the_units():
    # two images: image a has items scoring 1 and 0 (mean 0.5), image b one item scoring 1 -> mean 0.75 over images
    df = pd.DataFrame({"seed": [0, 0, 0], "item": ["a1", "a2", "b1"], "cluster": ["a", "a", "b"],
                       "score": [1.0, 0.0, 1.0]})
    m, h, n = gr.mean_ci(df)
    assert m == pytest.approx(0.75) and n == 2
    assert h == pytest.approx(1.96 * math.sqrt(0.125) / math.sqrt(2))


def _conv_rows(method, seed, scores):
    """scores {image: {variant: 0/1}} -> rows in stage 04's long form."""
    return [{"paper": "drllava", "method": method, "seed": seed, "task": "conv", "source": "bone_marrow",
             "variant": v, "item": f"conv:{img}:{k}", "cluster": img, "metric": "conversation_correct", "score": s}
            for img, per in scores.items() for k, (v, s) in enumerate(per.items())]


def test_drops_and_robustness_claim():
    sft = {f"i{n}": {"standard": 1.0, "hint_wrong": 0.0} for n in range(30)}
    ppo = {f"i{n}": {"standard": 1.0, "hint_wrong": 1.0} for n in range(30)}
    rows = pd.DataFrame(_conv_rows("SFT", float("nan"), sft) + _conv_rows(gr.DR, 0, ppo))
    run = {"paper": "drllava", "rows": rows,
           "records": [{"method": "SFT", "seed": None, "trained": True, "why": ""},
                       {"method": gr.DR, "seed": 0, "trained": True, "why": ""}]}
    d = gr.drops(run, "SFT", "hint_wrong")
    assert len(d) == 30 and (d["score"] == -1).all() and d["seed"].isna().all()
    c = gr.pair_claim(run, "drllava", "x", gr.DR, "SFT", "conversation_drop",
                      treat_scores=gr.drops(run, gr.DR, "hint_wrong"), base_scores=d, n_boot=200)
    assert c["difference"] == pytest.approx(1.0)
    frame = gr.ledger([c, None])
    assert frame.loc[0, "verdict"] == "reproduced"
    assert {"paper", "claim", "metric", "comparison", "difference", "ci_low", "ci_high", "p_value", "p_holm", "mde",
            "n_items", "seeds", "verdict", "why"} <= set(frame.columns)


def test_drllava_claims_pair_04s_standard_rows_with_06s_variant_rows():
    # 04's rows hold the standard order, 06's the variants (studies.drllava_run concatenates them): PPO keeps its
    # answers under hint_wrong where SFT is talked out of half of them
    sft = {f"i{n}": {"standard": 1.0, "hint_wrong": float(n % 2)} for n in range(40)}
    ppo = {f"i{n}": {"standard": 1.0, "hint_wrong": 1.0} for n in range(40)}
    ppo_rows = [r for s in (0, 1, 2) for r in _conv_rows(gr.DR, s, ppo)]
    rows = pd.DataFrame(_conv_rows("SFT", float("nan"), sft) + ppo_rows)
    run = {"paper": "drllava", "rows": rows,
           "records": [{"method": "SFT", "seed": None, "trained": True, "why": ""}]
           + [{"method": gr.DR, "seed": s, "trained": True, "why": ""} for s in (0, 1, 2)]}
    frame = gr.ledger(gr.drllava_claims(run))
    raises = frame[frame["claim"].str.contains("raises")].set_index("claim")
    less = frame[frame["claim"].str.contains("loses less")].set_index("claim")
    # one row per variant and question; variants without rows (04 scored none, 06 not run) are absent
    assert list(raises.index) == ["robustness: rule-reward PPO raises conversation accuracy (hint_wrong)"]
    assert list(less.index) == ["robustness: rule-reward PPO loses less than SFT from standard to hint_wrong"]
    assert raises.iloc[0]["difference"] == pytest.approx(0.5) and less.iloc[0]["difference"] == pytest.approx(0.5)
    assert (frame["verdict"] == "reproduced").all() and list(raises.iloc[0]["per_seed"]) == pytest.approx([0.5] * 3)
    assert frame["p_holm"].notna().all()  # one Holm family: the variants' two questions together


def test_untrained_arm_gives_not_trained_claim():
    run = {"paper": "umed", "rows": pd.DataFrame(columns=["method", "seed", "item", "cluster", "metric", "score",
                                                          "variant", "source"]),
           "records": [{"method": "SFT [c]", "seed": None, "trained": True, "why": ""},
                       {"method": "SFT+AAR [c]", "seed": 0, "trained": False, "why": "end KL 0 < 0.01"}]}
    frame = gr.ledger(gr.umed_claims(run))
    assert list(frame["verdict"]) == ["not_trained"] and "end KL" in frame.loc[0, "why"]


def test_umed_claim_with_both_arms_at_the_floor_is_a_check():
    # held-out abnormal images that neither arm names (MAU 0 on 39 of 40): a difference there is no evidence
    def rows(method, seed, scores):
        return [{"paper": "umed", "method": method, "seed": seed, "task": "instruct", "source": "tbx11k",
                 "variant": "", "item": f"instruct:i{k}:0", "cluster": f"i{k}", "metric": "mau_correct",
                 "score": v} for k, v in enumerate(scores)]

    c = "without tbx11k"
    run = {"paper": "umed", "rows": pd.DataFrame(rows(f"SFT [{c}]", None, [0.0] * 40)
                                                 + rows(f"SFT+AAR [{c}]", 0, [1.0] + [0.0] * 39)),
           "records": [{"method": f"SFT [{c}]", "seed": None, "trained": True, "why": ""},
                       {"method": f"SFT+AAR [{c}]", "seed": 0, "trained": True, "why": ""}]}
    frame = gr.ledger(gr.umed_claims(run))
    assert frame.loc[0, "kind"] == "check" and frame.loc[0, "pinned"].startswith("floor: both arms score 0 on 98%")
    assert "not a claim" in frame.loc[0, "why"]


def _mcq(method, seed, label, scores):
    return [{"paper": "zhu", "method": method, "seed": seed, "task": "mcq", "source": "s", "variant": label,
             "item": f"mcq:i{k}:0", "cluster": f"i{k}", "metric": "accuracy", "score": v} for k, v in enumerate(scores)]


def test_zhu_frame_and_claims_read_the_checkpoint_labels():
    rows = (_mcq("SFT", None, "0:held-out kind", [0.0] * 40) + _mcq("SFT+grpo", 0, "2:held-out kind", [0.0] * 40)
            + _mcq("SFT+grpo", 0, "4:held-out kind", [1.0] * 40) + _mcq("SFT", None, "0:trained kinds", [0.0] * 40)
            + _mcq("SFT+grpo", 0, "2:trained kinds", [0.0] * 40) + _mcq("SFT+grpo", 0, "4:trained kinds", [1.0] * 40))
    run = {"paper": "zhu", "rows": pd.DataFrame(rows),
           "records": [{"method": "SFT", "seed": None, "trained": True, "why": ""},
                       {"method": "SFT+grpo", "seed": 0, "trained": True, "why": ""}]}
    frame = gr.zhu_frame(run)
    held = frame[(frame["part"] == "held-out kind") & (frame["metric"] == "accuracy")]
    assert list(held["step"]) == [0, 2, 4] and list(held["mean"]) == [0.0, 0.0, 1.0]
    claims = gr.ledger(gr.zhu_claims(run, "SFT", "SFT+grpo"))
    assert len(claims) == 3 and list(claims["difference"]) == [1.0, 1.0, 1.0]  # step 4 vs start; step 4 vs step 2
    assert "step 2 to step 4" in claims.loc[2, "claim"]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_mmedpo_knobs_of_06_are_04s(profile):
    # 06 pairs its base-start MMedPO arm with 04's SFT-start arm (same items, same training): a knob that drifts
    # apart makes the arms incomparable, and different eval sizes drop the claim (items do not match)
    from repro import config

    p04 = config.load_params(profile, "04_rl", check_paths=False)
    p06 = config.load_params(profile, "06_generalization", check_paths=False)
    shared = [k for k in p06 if k.startswith("mmedpo_") and k in p04]
    assert shared and {k: p06[k] for k in shared} == {k: p04[k] for k in shared}
    if profile != "smoke":  # the knobs chosen on validation in 04 (06's header: its values follow 04's)
        chosen = [k for k in ("umed_k", "umed_lr", "zhu_lr", "zhu_batch_size", "mmedpo_lr") if k in p04 and k in p06]
        assert chosen and {k: p06[k] for k in chosen} == {k: p04[k] for k in chosen}

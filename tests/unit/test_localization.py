"""UMed-LVLM's AAR total on one scale (repro.rewards.localization, scale="mean"): known answers by hand, normal and
abnormal prompts on the same [0, 1] range, and the grouping by query that PPO passes as `query_id`."""

from __future__ import annotations

import pytest

from repro.data.tasks import instruct_target
from repro.rewards import localization

ABN = {"abnormal": True, "bboxes": [[16, 16, 32, 32]], "category": "nodule", "region": "lung", "modality": "CT",
       "image_size": 64}  # true box in percent: [25, 25, 50, 50]
NORMAL = {"abnormal": False, "bboxes": [], "category": "normal", "region": "chest", "modality": "X-ray",
          "image_size": 64}
BEST_ABN = instruct_target(True, "[25, 25, 50, 50]", "nodule", "lung", "CT")
HALF_ABN = instruct_target(True, "[25, 25, 50, 38]", "nodule", "lung", "CT")   # IoU 13/25 with the true box
BEST_NORMAL = instruct_target(False, "", "normal", "chest", "X-ray")


def test_aar_total_mean_scale_by_hand():
    # query a (abnormal, 2 candidates): rel 1, 0.5; ALR 0.2, 0.4 -> 0.5, 1; VRR 0.3, 0.6 -> 0.5, 1
    #   sums 2.0, 2.5; three terms apply -> 2/3, 5/6
    # query b (normal, 2 candidates): rel 1, 0.25; no ALR, no VRR -> one term -> 1, 0.25
    # query c (abnormal, one candidate's ALR missing): rel 0.5, 0.5; ALR 0, None -> max 0 -> 0, None; VRR 0, 0
    #   the query has an ALR term, so both are divided by 3 -> 1/6, 1/6
    rel = [1.0, 0.5, 1.0, 0.25, 0.5, 0.5]
    alr = [0.2, 0.4, None, None, 0.0, None]
    vrr = [0.3, 0.6, None, None, 0.0, 0.0]
    ids = ["a", "a", "b", "b", "c", "c"]
    got = localization.aar_total(rel, alr, vrr, group_ids=ids, scale="mean")
    assert got == pytest.approx([2 / 3, 5 / 6, 1.0, 0.25, 1 / 6, 1 / 6])
    # the literal sum, for comparison: abnormal spans [0, 3], normal [0, 1]
    assert localization.aar_total(rel, alr, vrr, group_ids=ids) == pytest.approx([2.0, 2.5, 1.0, 0.25, 0.5, 0.5])
    with pytest.raises(ValueError, match="scale"):
        localization.aar_total(rel, alr, vrr, group_ids=ids, scale="max")


def test_normal_and_abnormal_prompts_share_one_range():
    """The best answer to a normal and to an abnormal prompt both earn 1.0 (the sum gave 2.0 vs 1.0: without
    VRR, an abnormal prompt adds ALR to relevance)."""
    cols = {k: [ABN[k], ABN[k], NORMAL[k], NORMAL[k]] for k in ABN}
    comps = [[{"role": "assistant", "content": c}] for c in (BEST_ABN, HALF_ABN, BEST_NORMAL, "no")]
    aar = localization.make_aar_reward(group_key="query_id")
    got = aar(prompts=None, completions=comps, query_id=[0, 0, 1, 1], **cols)
    rel_no = localization.relevance_reward(None, ["no"], **{k: [NORMAL[k]] for k in NORMAL})[0]
    # BEST_ABN: (1 + 1) / 2; HALF_ABN: relevance 1 + ALR (13/25) / max (1) over 2 terms; normal: relevance alone
    assert got == pytest.approx([1.0, (1 + 13 / 25) / 2, 1.0, rel_no])
    assert aar.range == (0.0, 1.0) and all(0.0 <= g <= 1.0 for g in got)
    literal = localization.make_aar_reward(group_key="query_id", scale="sum")
    assert literal(prompts=None, completions=comps, query_id=[0, 0, 1, 1], **cols)[:3] == pytest.approx(
        [2.0, 1 + 13 / 25, 1.0])
    assert literal.range == (0.0, 3.0)
    with pytest.raises(ValueError, match="scale"):
        localization.make_aar_reward(scale="raw")


def test_vrr_term_counts_on_abnormal_prompts_only():
    calls = []

    def fake_vrr(prompts=None, completions=None, abnormal=None, **kw):
        calls.append(len(completions))
        return [0.4 if a else None for a in abnormal]  # None on normal images, as attention.make_vrr_reward

    cols = {k: [ABN[k], NORMAL[k]] for k in ABN}
    comps = [[{"role": "assistant", "content": c}] for c in (BEST_ABN, BEST_NORMAL)]
    aar = localization.make_aar_reward(group_key="query_id", vrr_fn=fake_vrr)
    # abnormal: (relevance 1 + ALR 1/1 + VRR 0.4/0.4) / 3 = 1; normal: relevance 1 / 1 = 1
    assert aar(prompts=None, completions=comps, query_id=[0, 1], **cols) == pytest.approx([1.0, 1.0])
    assert calls == [2]

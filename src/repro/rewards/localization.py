"""UMed-LVLM abnormal-aware rewards (docs/methods.md §4(a)): ALR, a relevance judge proxy, per-query max-normalisation.

Target format (tasks.instruct_target): "Detection: abnormal. Localization: [x1, y1, x2, y2]. Recognition: <category>
in the <region>, <modality>." with the box in integer percent of the image (schema.py). Columns: abnormal,
bboxes (pixel [x1, y1, x2, y2] lists), category, and the image size from `image_size` ((width, height) or one int),
else the `image` column (PIL .size or numpy .shape), else DEFAULT_IMAGE_SIZE = 64 (SynthMed's size).

    ALR        r_loc = max_k IoU(parsed box, true box k in percent)       paper: IoU(pred bbox, GT bbox)
               The box is read by tasks.parse_instruct (the Localization section, else the first box anywhere).
               0 when no box parses; None for normal images (abnormal False or no true box), where the paper's
               reward does not apply. Range [0, 1]. Several true boxes: the best-matching one counts.
    relevance  paper: r^LLM from an LLM judge of the response's relevance. RuleRelevanceJudge (default) is the mean
               of four checks, each in [0, 1]: structure (share of Detection/Localization/Recognition sections
               present, in that order), detection right, category right ("normal" for normal images), and no
               contradiction (abnormal claimed but no category or a normal recognition, normal claimed with a box or
               a category, several categories named). Range [0, 1]. A RelevanceJudge
               `__call__(response, facts) -> float in [0, 1]` can replace it (gpu profile).
    max_normalize  r / max(r) over the K candidates of one query (0 for all when max <= 0; None stays None).
    aar_total  r_t = relevance + r_loc / max(r_loc) + r_att / max(r_att), the maxima per query; None terms add 0.
               The VRR attention values r_att come from the model (computed elsewhere) and are passed in.
               scale="mean" (make_aar_reward's default) divides r_t by the number of terms that apply to the
               query: 3 on an abnormal image (relevance, ALR, VRR), 1 on a normal one (relevance only; ALR and VRR
               are None there), so every prompt's reward lies in [0, 1]. Why: the paper max-normalises ALR and VRR
               so that each term lies on one scale; summed raw, an abnormal prompt's reward spans [0, 3] and a
               normal one's [0, 1], so a batch mixing them would be dominated by which kind of image a sample came
               from (issue 11), not by how good its answer was. scale="sum" is the literal formula.

Groups: TRL's GRPO sampler repeats each prompt num_generations (G) times *consecutively*, so the G completions of
one query are adjacent. Pass `group_ids` (any hashable per item; equal ids form a group, e.g. the `id` column) or
`group_size=G` (consecutive chunks). Per process this holds when the per-device batch is a multiple of G.
"""

from __future__ import annotations

import math
import re
from typing import Protocol

from repro.data import schema
from repro.data.schema import DEFAULT_IMAGE_SIZE, image_wh  # re-exported: the rewards' public names
from repro.data.tasks import parse_instruct
from repro.rewards import make_reward

_SECTIONS = re.compile(r"(detection|locali[sz]ation|recognition)\s*:", re.I)
_CATEGORY_WORDS = re.compile(r"\b(" + "|".join(re.escape(c) for c in sorted(
    {c.lower() for s in schema.SOURCES.values() for c in s["categories"]}, key=len, reverse=True)) + r")\b")


def _true_boxes(bboxes, width: int, height: int) -> list[list[float]]:
    out = []
    for b in bboxes if isinstance(bboxes, (list, tuple)) else []:
        if isinstance(b, (list, tuple)) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b):
            p = schema.bbox_to_percent(b, width, height)
            if all(math.isfinite(v) for v in p) and p[2] > p[0] and p[3] > p[1]:
                out.append(p)
    return out


def explain_alr(text: str, bboxes=None, abnormal=None, image=None, image_size=None) -> dict:
    """ALR = max IoU(parsed box, true boxes in percent); 0 if no box parses; None for normal images. Range [0, 1]."""
    w, h = wh = image_wh(image, image_size)
    truths = _true_boxes(bboxes, w, h)
    if abnormal is False or not truths:
        return {"reward": None, "why": "normal image (no true box)"}
    pred = parse_instruct(text)["bbox"]
    ious = [schema.iou(pred, t) for t in truths] if pred else []
    return {"reward": max(ious) if ious else 0.0, "pred_box": pred, "true_boxes": truths, "ious": ious,
            "image_size": wh}


# ---------------------------------------------------------------- relevance
class RelevanceJudge(Protocol):
    """Relevance of a response to the image facts ({"abnormal", "category", ...}) in [0, 1] (an LLM in the paper)."""

    def __call__(self, response: str, facts: dict) -> float: ...


class RuleRelevanceJudge:
    """Mean of structure, detection, category and no-contradiction checks (module docstring)."""

    def details(self, response: str, facts: dict) -> dict:
        names = [m.group(1).lower().replace("localisation", "localization") for m in _SECTIONS.finditer(response)]
        order = ["detection", "localization", "recognition"]
        # Longest in-order run of distinct section names: "Recognition: .. Detection: .." is half-structured.
        seen, k = [], 0
        for n in names:
            if k < 3 and n == order[k]:
                seen.append(n)
                k += 1
        structure = k / 3
        parsed = parse_instruct(response)
        truth_abn = facts.get("abnormal")
        truth_cat = facts.get("category")
        detection = float(truth_abn is not None and parsed["abnormal"] is bool(truth_abn))
        want = schema.NORMAL if truth_abn is False else truth_cat
        category = float(isinstance(want, str) and parsed["category"] is not None
                         and parsed["category"].lower() == want.lower())
        rec = re.split(r"recognition\s*:", response, maxsplit=1, flags=re.I)
        rec_text = (rec[1] if len(rec) > 1 else response).lower()
        n_categories = len(set(_CATEGORY_WORDS.findall(rec_text)))
        contradictions = []
        if parsed["abnormal"] is True and (parsed["category"] in (None, schema.NORMAL)):
            contradictions.append("abnormal without an abnormal category")
        if parsed["abnormal"] is False and (parsed["bbox"] is not None or n_categories):
            contradictions.append("normal with a box or a category")
        if n_categories > 1:
            contradictions.append("several categories named")
        if parsed["abnormal"] is None:
            contradictions.append("no detection statement")
        consistent = float(not contradictions)
        score = (structure + detection + category + consistent) / 4
        return {"score": score, "structure": structure, "detection": detection, "category": category,
                "consistent": consistent, "contradictions": contradictions, "parsed": parsed}

    def __call__(self, response: str, facts: dict) -> float:
        return self.details(response, facts)["score"]


def make_relevance_reward(judge: RelevanceJudge | None = None, name: str = "relevance_reward"):
    """Relevance reward r^LLM in [0, 1] from `judge` (RuleRelevanceJudge by default); None without facts."""
    judge = judge or RuleRelevanceJudge()

    def explain(text, abnormal=None, category=None, region=None, modality=None):
        if abnormal is None and not isinstance(category, str):
            return {"reward": None, "why": "no facts"}
        facts = {"abnormal": abnormal, "category": category, "region": region, "modality": modality}
        if isinstance(judge, RuleRelevanceJudge):
            out = judge.details(text, facts)
        else:
            s = judge(text, facts)
            out = {"score": float(s) if isinstance(s, (int, float)) and math.isfinite(s) else 0.0}
        out["reward"] = out["score"]
        return out

    return make_reward(name, explain, ("abnormal", "category", "region", "modality"), 0.0, 1.0, doc=__doc__)


# ---------------------------------------------------------------- per-query normalisation
def _groups(n: int, group_ids=None, group_size: int | None = None) -> list[list[int]]:
    if isinstance(group_ids, (list, tuple)) and len(group_ids) == n:
        by: dict = {}
        for i, g in enumerate(group_ids):
            by.setdefault(repr(g), []).append(i)  # repr: ids may be unhashable (lists) in odd datasets
        return list(by.values())
    if group_size and group_size > 0:
        return [list(range(s, min(n, s + group_size))) for s in range(0, n, group_size)]
    return [list(range(n))] if n else []


def max_normalize(values, group_ids=None, group_size: int | None = None) -> list[float | None]:
    """r_i / max_{j in group(i)} r_j; all 0 in a group whose max is <= 0; None (and non-finite) stays None.

    Without group_ids or group_size the whole list is one query's candidates."""
    vals = [float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]
    out: list[float | None] = [None] * len(vals)
    for idx in _groups(len(vals), group_ids, group_size):
        present = [vals[i] for i in idx if vals[i] is not None]
        top = max(present) if present else 0.0
        for i in idx:
            if vals[i] is not None:
                out[i] = vals[i] / top if top > 0 else 0.0
    return out


SCALES = ("mean", "sum")


def aar_total(relevance, alr, vrr=None, group_ids=None, group_size: int | None = None,
              scale: str = "sum", normalize: bool = True) -> list[float]:
    """r_t = relevance + alr / max(alr) + vrr / max(vrr) per item, maxima over each query's candidates.

    None terms (normal images have no ALR; VRR not computed) add 0. With non-negative inputs each normalised term is
    in [0, 1], so with scale="sum" r_t is in [0, 3] for a relevance in [0, 1]. scale="mean": r_t divided by the
    number of terms that apply to the item's query (1 + [any candidate has an ALR] + [any has a VRR]), in [0, 1].
    normalize=False: the raw ALR and VRR, no max-normalisation (UMed's "w/o max-norm" ablation)."""
    if scale not in SCALES:
        raise ValueError(f"aar_total: scale must be one of {SCALES}, got {scale!r}")
    n = len(relevance)
    alr_n, vrr_n = (alr if alr is not None else [None] * n), (vrr if vrr is not None else [None] * n)
    if normalize:
        alr_n, vrr_n = max_normalize(alr_n, group_ids, group_size), max_normalize(vrr_n, group_ids, group_size)
    rel = [float(r) if isinstance(r, (int, float)) and math.isfinite(r) else 0.0 for r in relevance]
    total = [r + (a or 0.0) + (v or 0.0) for r, a, v in zip(rel, alr_n, vrr_n)]
    if scale == "sum":
        return total
    out = list(total)
    for idx in _groups(n, group_ids, group_size):
        # Per query, not per item: a candidate whose ALR is missing still counts the term its query has.
        terms = 1 + any(alr_n[i] is not None for i in idx) + any(vrr_n[i] is not None for i in idx)
        for i in idx:
            out[i] = total[i] / terms
    return out


def make_aar_reward(group_size: int | None = None, group_key: str | None = "id", vrr_fn=None,
                    judge: RelevanceJudge | None = None, name: str = "aar_reward", scale: str = "mean"):
    """The whole AAR reward as one TRL function: relevance + normalised ALR (+ normalised VRR from `vrr_fn`, a TRL-
    signature function returning the raw attention mass per completion), divided by the number of terms that apply
    to the query (scale="mean", range [0, 1]; "sum": the paper's literal sum, range [0, 3]). Groups: equal values
    of the `group_key` column when TRL passes it, else chunks of `group_size`."""
    if scale not in SCALES:
        raise ValueError(f"make_aar_reward: scale must be one of {SCALES}, got {scale!r}")
    relevance = make_relevance_reward(judge)

    def aar(prompts=None, completions=None, **kw):
        comps = list(completions or [])
        rel = relevance(prompts, comps, **kw)
        alr = alr_reward(prompts, comps, **kw)
        vrr = vrr_fn(prompts, comps, **kw) if vrr_fn is not None else None
        ids = kw.get(group_key) if group_key else None
        return aar_total(rel, alr, vrr, ids if isinstance(ids, (list, tuple)) else None, group_size, scale)

    aar.__name__ = aar.__qualname__ = name
    aar.__doc__ = aar_total.__doc__
    def explain(completion, **row):
        out = {"relevance": relevance.explain(completion, **row), "alr": alr_reward.explain(completion, **row),
               "note": "ALR/VRR are divided by the max over the query's candidates"
                       + (", the total by the number of terms that apply" if scale == "mean" else "")
                       + "; see aar_total"}
        if vrr_fn is not None and hasattr(vrr_fn, "explain"):
            out["vrr"] = {k: v for k, v in vrr_fn.explain(completion, **row).items() if k in ("reward", "anchor")}
        return out

    aar.explain = explain
    aar.range = (0.0, 1.0) if scale == "mean" else (0.0, 3.0)
    if hasattr(vrr_fn, "bind_policy"):  # VRR read from the policy's attention: the trainer binds it through AAR
        aar.bind_policy = vrr_fn.bind_policy
    return aar


alr_reward = make_reward("alr_reward", explain_alr, ("bboxes", "abnormal", "image", "image_size"), 0.0, 1.0)
relevance_reward = make_relevance_reward()

__all__ = ["DEFAULT_IMAGE_SIZE", "SCALES", "RelevanceJudge", "RuleRelevanceJudge", "aar_total", "alr_reward",
           "explain_alr", "image_wh", "make_aar_reward", "make_relevance_reward", "max_normalize", "relevance_reward"]

"""The papers' headline claims, each judged by a paired test on items (repro.stats): per-row scores of the two
arms, paired by seed and item, clustered by image; Holm across the claims of a paper; verdicts reproduced /
opposite / below_paper / inconclusive / not_trained (repro.stats.verdict). Rows that only check that a reward did
what it pays for are kind "check", shown apart from the papers' claims and never counted as reproduced.

One claim per independent observation: Dr-LLaVA's standard question order is its headline claim here; each
robustness variant (different conversations) is a claim of its own in stage 06 (DR_ROBUSTNESS, judged on 04's models
scored there); diagnosis accuracy and path consistency of the same standard conversations are shown in its table,
not counted again. A comparison whose arms did not train (see common.arm_status) is "not_trained", whatever its
difference.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import pandas as pd

from repro.data import schema
from repro.papers import continued, controls

MAU = tuple(schema.MAU_SOURCES)
DR_VARIANTS = ("shuffled", "reversed", "hint_correct", "hint_wrong", "confirm_correct", "confirm_wrong")
NUMBERS = ("difference", "ci_low", "ci_high", "p_value", "mde")
BINARY = {"mau_correct", "accuracy", "closed_correct", "conversation_correct",
          "diagnosis_correct", "format", "called_normal"}


@dataclass(frozen=True)
class Claim:
    paper: str
    claim: str
    treat: str
    base: str
    metric: str
    expect: str = "higher"
    variant: str | None = None          # Dr-LLaVA: which conversations (question order / hints)
    sources: tuple[str, ...] | None = None
    kind: str = "claim"                 # claim | check (a reward did what it pays for) | control (stats.KINDS)

    @property
    def comparison(self) -> str:
        return f"{self.treat} - {self.base}"


DR = "SFT+PPO (rule reward)"
CLAIMS = [
    Claim("umed", "AAR beats SFT on MAU accuracy", "SFT+AAR", "SFT", "mau_correct", sources=MAU),
    Claim("umed", "AAR beats plain PPO (relevance only)", "SFT+AAR", "SFT+PPO", "mau_correct", sources=MAU),
    # MAU needs IoU >= 0.5, which few boxes reach at this scale: the continuous IoU on abnormal images says whether
    # the boxes moved at all (what ALR pays for; issue 27)
    Claim("umed", "AAR beats SFT on mean IoU (abnormal images)", "SFT+AAR", "SFT", "iou", sources=MAU),
    Claim("zhu", "GRPO beats SFT on accuracy", "SFT+grpo", "SFT", "accuracy"),
    Claim("zhu", "semantic reward raises similarity", "SFT+grpo_semantic", "SFT+grpo", "similarity", kind="check"),
    Claim("zhu", "Dr.GRPO beats GRPO on accuracy", "SFT+dr_grpo", "SFT+grpo", "accuracy"),
    Claim("zhu", "CWR beats ECR on accuracy", "SFT+cwr", "SFT+ecr", "accuracy"),
    # the paper's ECR finding is an accuracy LOSS against GRPO (50.17 vs 58.04); that ECR lengthens is a check
    Claim("zhu", "ECR lowers accuracy vs GRPO", "SFT+ecr", "SFT+grpo", "accuracy", expect="lower"),
    Claim("zhu", "ECR lengthens responses", "SFT+ecr", "SFT+grpo", "log_length", kind="check"),
    Claim("zhu", "SFT start beats base start (GRPO)", "SFT+grpo", "base+grpo", "accuracy", kind="check"),
    # the paper's init study itself (instruct init: perplexity 14.16 -> 13.28), on the per-item NLL of the reference
    # reasoning (papers.perplexity). Checks: our SFT start was trained on exactly this target format, the base never
    # saw it, so a lower NLL is what SFT paid for, not evidence about initialisation
    Claim("zhu", "init study: the SFT start gives the reference reasoning lower perplexity than the base start",
          "SFT", "base", "nll", expect="lower", kind="check"),
    Claim("zhu", "init study: GRPO from the SFT start gives lower reference perplexity than from the base start",
          "SFT+grpo", "base+grpo", "nll", expect="lower", kind="check"),
    Claim("mmedpo", "DPO beats SFT on closed VQA", "DPO", "SFT", "closed_correct"),
    Claim("mmedpo", "MMedPO beats DPO on closed VQA", "MMedPO", "DPO", "closed_correct"),
    Claim("mmedpo", "MMedPO beats DPO on open VQA", "MMedPO", "DPO", "open_recall"),
    Claim("mmedpo", "MMedPO beats DPO on report generation (ROUGE-L)", "MMedPO", "DPO", "rouge_l"),
    Claim("drllava", "rule-reward PPO raises conversation accuracy (standard order)", DR, "SFT",
          "conversation_correct", variant="standard"),
    # RL against compute-matched continued SFT on the same prompts (repro.papers.continued): is it the method, or
    # simply more training on the task? (Zhu et al. compare GRPO with SFT on the same data.)
    Claim("umed", "AAR beats compute-matched continued SFT on MAU accuracy", "SFT+AAR", continued.METHOD,
          "mau_correct", sources=MAU),
    Claim("zhu", "GRPO beats SFT on the same data (compute-matched continued SFT)", "SFT+grpo", continued.METHOD,
          "accuracy"),
    Claim("mmedpo", "DPO beats compute-matched continued SFT on closed VQA", "DPO", continued.METHOD,
          "closed_correct"),
    Claim("drllava", "rule-reward PPO beats compute-matched continued SFT (standard order)", DR, continued.METHOD,
          "conversation_correct", variant="standard"),
    # the pipeline's controls (repro.papers.controls): judged like claims, never counted as claims
    Claim("umed", "null control: AAR at lr 0 beats SFT on MAU accuracy (must not reproduce)", controls.NULL, "SFT",
          "mau_correct", sources=MAU, kind="control"),
    Claim("umed", "positive control: a reward paying 'normal' raises the normal-call rate (must reproduce)",
          controls.POSITIVE, "SFT", "called_normal", kind="control"),
]
# Dr-LLaVA's robustness variants, judged in stage 06 on the models 04 trained (04 scores the standard order only)
DR_ROBUSTNESS = [Claim("drllava", f"robustness: rule-reward PPO raises conversation accuracy ({v})", DR, "SFT",
                       "conversation_correct", variant=v) for v in DR_VARIANTS]


def scores(run: dict, method: str, metric: str, variant: str | None = None, sources=None) -> pd.DataFrame:
    """Per-row scores of one arm (all its seeds) -> DataFrame[seed, item, cluster, score] (stats' input)."""
    r = run["rows"]
    keep = (r["method"] == method) & (r["metric"] == metric)
    if variant is not None:
        keep &= r["variant"].astype(str) == variant
    if sources is not None:
        keep &= r["source"].isin(list(sources))
    keep &= r["score"].notna()  # a metric undefined on some items (IoU on normal images) is undefined for both arms
    out = r.loc[keep, ["seed", "item", "cluster", "score"]].copy()
    out["seed"] = [None if pd.isna(s) else int(s) for s in out["seed"]]
    return out.reset_index(drop=True)


def method_learned(run: dict, method: str) -> dict | None:
    """The learned rule of a METHOD: its seeds' probe tables pooled (repro.papers.probe.learned over {seed: table},
    paired by seed and item, images resampled): did its own reward rise on the fixed validation probe, across
    seeds? None when no seed of it has a probe table (starts, arms without a probe)."""
    files = tuple(sorted((r["seed"], r["probe_file"], os.stat(r["probe_file"]).st_mtime_ns) for r in run["records"]
                         if r["method"] == method and r["seed"] is not None and r.get("probe_file")))
    return _pooled_rule(files) if files else None


@functools.lru_cache(maxsize=256)
def _pooled_rule(files: tuple[tuple[int, str, int], ...]) -> dict:
    """probe.learned over these (seed, probe file, its mtime) triples, once per set of files: every claim of a
    method asks the same question (trained() runs per claim and per table row), so each set is read and
    bootstrapped once; a rewritten file has a new mtime, so it is never served stale."""
    from repro.papers import probe

    return probe.learned({s: probe.read_table(f) for s, f, _ in files})


def trained(run: dict, *methods: str) -> tuple[bool, str]:
    """(every method trained, why not) from the run's records; starts count as trained. A method trained when every
    seed moved (end KL above min_kl) and, where its arms have probes, its probe reward rose pooled over its seeds
    (`method_learned`): a verdict is about the method, so one seed whose own probe stayed flat does not void it,
    and one seed that rose does not carry it. Without probe tables, every seed's own `trained` decides."""
    why = []
    for m in methods:
        recs = [r for r in run["records"] if r["method"] == m and r["seed"] is not None]
        if not recs:
            continue
        rule = method_learned(run, m)
        if rule is None:
            why += [f"{m} seed {r['seed']}: {r['why']}" for r in recs if not r["trained"]]
            continue
        why += [f"{m} seed {r['seed']}: {r['why']}" for r in recs if not r.get("moved", r["trained"])]
        if not rule["learned"]:
            why.append(f"{m} did not learn over seeds {rule['seeds']}: {rule['why']}")
    return not why, "; ".join(why)


def learning(run: dict, *methods: str) -> list[dict]:
    """The learned rule of each of `methods` that has probe tables (`method_learned`), as a claim carries it:
    [{method, difference, ci_low, ci_high, learned}] (repro.replication predicts from it whether a rerun learns).
    A method named twice (one arm at two steps) is one rule."""
    out = []
    for m in dict.fromkeys(methods):
        rule = method_learned(run, m)
        if rule is not None:
            out.append({"method": m, "learned": bool(rule["learned"]),
                        **{k: rule[k] for k in ("difference", "ci_low", "ci_high")}})
    return out


def judge(runs: dict, claims=CLAIMS, n_boot: int = 2000, rng_seed: int = 0, plan: dict | None = None) -> list[dict]:
    """One dict per claim whose two arms were run, the input of stats.claims_frame: {paper, claim, metric,
    comparison, expect ("higher"), trained (bool), not_trained_why, learning (`learning`), **stats.compare(...)}
    (compare's keys: difference, ci_low, ci_high, p_value, mde, n_items, n_clusters, seeds, test; NaN / 0 when not
    trained), and mde_planned from `plan` (repro.papers.plan: the validation sweep's variance at the claim's design
    size)."""
    from repro import stats
    from repro.papers import plan as plan_lib

    out = []
    for c in claims:
        run = runs.get(c.paper)
        if run is None:
            continue
        methods = {r["method"] for r in run["records"]}
        if c.treat not in methods or c.base not in methods:
            continue
        ok, why = trained(run, c.treat, c.base)
        treat = scores(run, c.treat, c.metric, c.variant, c.sources)
        if not ok and c.kind == "control" and len(treat):
            ok = True  # the null control is evaluated although it did not learn: judge it
        if ok:
            base = scores(run, c.base, c.metric, c.variant, c.sources)
            if not len(treat) or not len(base):
                continue
            result = stats.compare(treat, base, n_boot=n_boot, rng_seed=rng_seed, binary=c.metric in BINARY)
        else:  # an untrained arm is not evaluated: nothing to test, the verdict is "not_trained"
            seeds = sorted({r["seed"] for r in run["records"] if r["method"] in (c.treat, c.base)} - {None})
            result = {**dict.fromkeys(NUMBERS, float("nan")), "n_items": 0, "n_clusters": 0, "seeds": seeds,
                      "test": None}
        row = {"paper": c.paper, "claim": c.claim, "kind": c.kind, "metric": c.metric, "comparison": c.comparison,
               "expect": c.expect, "trained": ok, "not_trained_why": why, **result,
               "learning": learning(run, c.treat, c.base)}
        n_seeds = result["seeds"] if isinstance(result["seeds"], int) else len(result["seeds"])
        mde_planned = plan_lib.planned(plan, c.paper, c.metric, c.comparison, result["n_clusters"], n_seeds)
        out.append({**row, "paper_effect": paper_effect(row), "mde_planned": mde_planned})
    return out


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def paper_effect(claim: dict) -> float | None:
    """The paper's own difference for this comparison in our units (the mean over the paper's columns, e.g.
    SLAKE and VQA-RAD closed), or None where the paper does not report both arms (repro.ledger)."""
    from repro import ledger

    diffs, _ = ledger.paper_differences(claim)
    return sum(diffs) / len(diffs) if diffs else None


def why(row: dict, reason: str = "") -> str:
    """A short reason for a claim's verdict, from its numbers (the ledger's "why" column). A CI that excludes 0
    is never called undetectable: only a CI that holds 0 is compared with the MDE."""
    from repro import stats

    v = row.get("verdict")
    if v in ("not_trained", "not trained"):
        return f"not trained: {reason}" if reason else "not trained"
    d, lo, hi, p, mde = (row.get(k) for k in ("difference", "ci_low", "ci_high", "p_holm", "mde"))
    if not all(_finite(x) for x in (d, lo, hi, p)):
        return "no test (missing numbers)"
    ci = stats.ci_text(d, lo, hi)
    if v == "reproduced":
        return f"{ci} in the paper's direction, p_holm {p:.2g}"
    if v == "opposite":
        return f"{ci} against the paper's direction, p_holm {p:.2g}"
    if v == "below_paper":
        eff = row.get("paper_effect")
        return f"{ci}: the CI rules out the paper's effect ({eff:+.3f})" if _finite(eff) else f"{ci}: below_paper"
    if isinstance(row.get("pinned"), str):  # stats.claims_frame: a claim at a floor or ceiling became a check
        return f"{ci}: {row['pinned']} (a check, not a claim)"
    if d == lo == hi == 0:  # stats.compare: no item differs
        bound = f" (mde {mde:.3f}: the rule-of-three bound, stats.mde_no_difference)" if _finite(mde) else ""
        return f"the two arms score the same on every item: the method changed none of these answers{bound}"
    if lo > 0 or hi < 0:
        return f"{ci}: the CI excludes 0, but not significant after Holm (p_holm {p:.2g})"
    if _finite(mde) and abs(d) < mde:
        return f"{ci}: smaller than this evaluation can detect (mde {mde:.3f})"
    return f"{ci}: not significant after Holm (p_holm {p:.2g})"


def ledger(runs: dict, **kw) -> pd.DataFrame:
    """The claims ledger: stats.claims_frame (Holm per paper, verdicts) of judge(runs), with a short "why" per
    claim (an untrained claim names the arm and its reason)."""
    from repro import stats

    items = judge(runs, **kw)
    frame = stats.claims_frame(items)
    df = frame.reset_index() if "paper" not in frame.columns else frame.copy()
    reasons = {(c["paper"], c["claim"]): c["not_trained_why"] for c in items}
    df["why"] = [why(r, reasons.get((r["paper"], r["claim"]), "")) for r in df.to_dict("records")]
    return df

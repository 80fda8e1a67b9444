"""Stage 06's tables, figures and claims from the studies' runs. Claims are paired tests of per-row scores
(repro.stats.compare, the same test as stage 04's papers.claims.judge) with 04's claim fields; Holm runs over the
claims of one paper in this stage (stats.claims_frame)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from repro import stats
from repro.papers import claims as claims_lib
from repro.papers.claims import BINARY, MAU, NUMBERS

DR = claims_lib.DR
DR_VARIANTS = ("standard",) + claims_lib.DR_VARIANTS
# UMed-LVLM's generalization analyses (docs/methods.md §4(f)): UMed-LVLM vs its start MedVInt, MAU accuracy
PAPER_UMED = {"unseen categories": "0.35 (MedVInt 0.05)", "without tbx11k": "0.57", "without deeplesion": "0.42",
              "CT only": "generalises (no number)"}
PAPER_LABEL = "paper (UMed-LVLM text, docs/methods.md §4(f))"


# ----------------------------------------------------------------------------------------------- claims
def pair_claim(run: dict, paper: str, claim: str, treat: str, base: str, metric: str, *, treat_variant=None,
               base_variant=None, sources=None, treat_scores=None, base_scores=None, n_boot: int = 2000,
               kind: str = "claim") -> dict | None:
    """One claim dict (papers.claims.judge's shape) comparing two arms of `run` on `metric`; None when an arm
    was not run or has no rows. treat_scores / base_scores: precomputed stats inputs (Dr-LLaVA's drops)."""
    methods = {r["method"] for r in run["records"]}
    if treat not in methods or base not in methods:
        return None
    ok, why = claims_lib.trained(run, treat, base)
    if ok:
        t = treat_scores if treat_scores is not None else claims_lib.scores(run, treat, metric, treat_variant, sources)
        b = base_scores if base_scores is not None else claims_lib.scores(run, base, metric, base_variant, sources)
        if not len(t) or not len(b):
            return None
        t, b = _common_seeds(t), _common_seeds(b)
        shared = set(t["seed"].dropna()) & set(b["seed"].dropna())
        if shared:  # a cross-stage claim (04's arms beside 06's) pairs the seeds both ran
            t, b = (x[x["seed"].isna() | x["seed"].isin(shared)] for x in (t, b))
        try:
            result = stats.compare(t, b, n_boot=n_boot, binary=metric in BINARY and treat_scores is None)
        except ValueError as e:  # arms on different items (e.g. other eval sizes): say so, do not guess
            warnings.warn(f"claim {claim!r} not judged: {e}", stacklevel=2)
            return None
    else:
        seeds = sorted({r["seed"] for r in run["records"] if r["method"] in (treat, base)} - {None})
        result = {**dict.fromkeys(NUMBERS, float("nan")), "n_items": 0, "n_clusters": 0, "seeds": seeds, "test": None}
    return {"paper": paper, "claim": claim, "kind": kind, "metric": metric, "comparison": f"{treat} - {base}",
            "expect": "higher", "trained": ok, "not_trained_why": why, **result,
            "learning": claims_lib.learning(run, treat, base)}


def ledger(items: list[dict | None]) -> pd.DataFrame:
    """stats.claims_frame of the claims (Holm per paper), the not-trained reason in `why` (as papers.claims)."""
    items = [c for c in items if c is not None]
    frame = stats.claims_frame(items)
    reasons = {(c["paper"], c["claim"]): c["not_trained_why"] for c in items if not c["trained"]}
    if len(frame):
        keys = zip(frame["paper"], frame["claim"], strict=True)
        frame["why"] = [claims_lib.why(r, reasons.get(k, "")) for k, r in zip(keys, frame.to_dict("records"),
                                                                              strict=True)]
    else:
        frame["why"] = pd.Series(dtype=str)
    return frame


def _common_seeds(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(seed=[None if s is None or (isinstance(s, float) and math.isnan(s)) else int(s)
                           for s in df["seed"]])


def mean_ci(scores: pd.DataFrame) -> tuple[float, float, int]:
    """(mean, 95% half-width, n clusters) of per-row scores [seed, item, cluster, score]: items averaged over seeds,
    then clusters (images) as the independent units (normal approximation)."""
    if not len(scores):
        return float("nan"), float("nan"), 0
    items = scores.groupby(["cluster", "item"])["score"].mean().groupby("cluster").mean()
    n = len(items)
    half = 1.96 * float(items.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    return float(items.mean()), half, n


def _cell(run, method, metric, variant=None, sources=None) -> str:
    """"mean ± 95%" of one arm, "(not trained)" for an arm that did not move (it is not evaluated), "—" if absent."""
    if not claims_lib.trained(run, method)[0]:
        return "(not trained)"
    m, h, _ = mean_ci(claims_lib.scores(run, method, metric, variant, sources))
    return "—" if not math.isfinite(m) else f"{m:.3f} ± {h:.3f}" if math.isfinite(h) else f"{m:.3f}"


# ----------------------------------------------------------------------------------------------- UMed
def umed_conditions(run: dict) -> list[str]:
    return [r["method"][len("SFT ["):-1] for r in run["records"] if r["method"].startswith("SFT [")]


def umed_table(run: dict, sft_records: list[dict]) -> pd.DataFrame:
    """One row per condition: its SFT's train rows, whether its start (held-out-free base + short SFT) trained on a
    held-out image or label (studies.umed_heldout), MAU accuracy of SFT and SFT+AAR on its test rows (± 95%)."""
    n_train = {r["method"][len("SFT ["):-1]: r["metrics"].get("train_rows") for r in sft_records}
    saw = {r["method"][len("SFT ["):-1]: r.get("base_saw_heldout") for r in sft_records}
    rows = []
    for c in umed_conditions(run):
        test = claims_lib.scores(run, f"SFT [{c}]", "mau_correct", sources=MAU)
        rows.append({"condition": c, "SFT train rows": n_train.get(c), "start saw held-out": saw.get(c),
                     "test items": test["item"].nunique(),
                     "SFT": _cell(run, f"SFT [{c}]", "mau_correct", sources=MAU),
                     "SFT+AAR": _cell(run, f"SFT+AAR [{c}]", "mau_correct", sources=MAU),
                     PAPER_LABEL: PAPER_UMED.get(c, "")})
    return pd.DataFrame(rows)


def umed_claims(run: dict) -> list[dict | None]:
    return [pair_claim(run, "umed", f"AAR beats SFT out of distribution ({c})", f"SFT+AAR [{c}]", f"SFT [{c}]",
                       "mau_correct", sources=MAU) for c in umed_conditions(run)]


def scale_frame(run: dict) -> pd.DataFrame:
    """fraction, method (SFT / SFT+AAR), mean, half-width: the data-scale curve, every point (100 % included) the
    same recipe from the same held-out-free base."""
    out = []
    for c in umed_conditions(run):
        if c.endswith("% data"):
            f = float(c[:-len("% data")]) / 100
            for m in ("SFT", "SFT+AAR"):
                mean, half, _ = mean_ci(claims_lib.scores(run, f"{m} [{c}]", "mau_correct", sources=MAU))
                out.append({"fraction": f, "method": m, "mean": mean, "half": half, "source": "06"})
    return pd.DataFrame(out, columns=["fraction", "method", "mean", "half", "source"]).sort_values(
        ["method", "fraction"]).reset_index(drop=True)


def scale_figure(frame: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for m, g in frame.groupby("method"):
        ax.errorbar(100 * g["fraction"], g["mean"], yerr=g["half"].fillna(0), marker="o", capsize=3, label=m)
    ax.set_xlabel("share of the training data (%)")
    ax.set_ylabel("MAU accuracy (test, ± 95%)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("UMed-LVLM: data scale (held-out-free base, one recipe)")
    ax.legend()
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- Dr-LLaVA
def drllava_frame(run: dict) -> pd.DataFrame:
    """variant, method, mean, half: conversation accuracy of SFT and rule-reward PPO per question order / hint
    (`run`: studies.drllava_run's)."""
    out = []
    for v in DR_VARIANTS:
        for m in ("SFT", DR):
            mean, half, n = mean_ci(claims_lib.scores(run, m, "conversation_correct", v))
            out.append({"variant": v, "method": m, "mean": mean, "half": half, "images": n})
    return pd.DataFrame(out)


def drllava_figure(frame: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(DR_VARIANTS))
    for k, (m, g) in enumerate(frame.groupby("method", sort=False)):
        g = g.set_index("variant").reindex(DR_VARIANTS)
        label = m if g["mean"].notna().any() else f"{m} (not evaluated: not trained)"
        ax.bar(x + (k - 0.5) * 0.38, g["mean"].fillna(0), 0.38, yerr=g["half"].fillna(0), capsize=3, label=label)
    ax.set_xticks(x, [v.replace("_", "\n") for v in DR_VARIANTS])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("conversation accuracy (± 95%)")
    ax.set_title("Dr-LLaVA: robustness to question order and hints (stage 04's models)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def drops(run: dict, method: str, variant: str) -> pd.DataFrame:
    """Per image and seed: conversation accuracy under `variant` minus under the standard order -> stats' input
    [seed, item, cluster, score] (the item is the image: both conversations are of the same image)."""
    r = run["rows"]
    r = r[(r["method"] == method) & (r["metric"] == "conversation_correct") & r["variant"].isin(["standard", variant])]
    if not len(r):
        return pd.DataFrame(columns=["seed", "item", "cluster", "score"])
    seeds = r["seed"].astype(object).where(r["seed"].notna(), -1)
    wide = r.assign(seed=seeds).pivot_table(index=["seed", "cluster"], columns="variant", values="score",
                                             aggfunc="mean").dropna()
    if variant not in wide or "standard" not in wide:
        return pd.DataFrame(columns=["seed", "item", "cluster", "score"])
    out = (wide[variant] - wide["standard"]).rename("score").reset_index()
    out["seed"] = [None if s == -1 else int(s) for s in out["seed"]]
    out["item"] = out["cluster"]
    return out[["seed", "item", "cluster", "score"]]


def drllava_claims(run: dict, plan: dict | None = None) -> list[dict | None]:
    """Two questions per variant, on 04's models (`run`: studies.drllava_run, 04's standard-order rows and this
    stage's variant rows): does PPO raise conversation accuracy under the variant (claims.DR_ROBUSTNESS, judged as
    04 judges its claims, with 04's planned MDE from `plan`), and does it lose LESS than SFT when the order or hints
    change? difference = mean over images of (PPO's drop) - (SFT's drop), drop = variant - standard."""
    items = claims_lib.judge({"drllava": run}, claims_lib.DR_ROBUSTNESS, plan=plan)
    return items + [pair_claim(run, "drllava", f"robustness: rule-reward PPO loses less than SFT from standard to {v}",
                               DR, "SFT", "conversation_drop", treat_scores=drops(run, DR, v),
                               base_scores=drops(run, "SFT", v)) for v in claims_lib.DR_VARIANTS]


# ----------------------------------------------------------------------------------------------- Zhu
def _split_label(v: str) -> tuple[int, str]:
    step, _, part = str(v).partition(":")
    return int(step), part


def zhu_frame(run: dict) -> pd.DataFrame:
    """step, part (trained kinds / held-out kind), metric (accuracy / length), mean, half over the checkpoints."""
    r = run["rows"]
    r = r[r["metric"].isin(["accuracy", "length"]) & r["variant"].astype(str).str.contains(":")]
    out = []
    for (v, metric), g in r.groupby(["variant", "metric"]):
        step, part = _split_label(v)
        mean, half, n = mean_ci(g[["seed", "item", "cluster", "score"]])
        out.append({"step": step, "part": part, "metric": metric, "mean": mean, "half": half, "images": n})
    return pd.DataFrame(out, columns=["step", "part", "metric", "mean", "half", "images"]).sort_values(
        ["metric", "part", "step"]).reset_index(drop=True)


def zhu_figure(frame: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric, label in zip(axes, ("accuracy", "length"), ("MCQ accuracy (± 95%)", "response length (words)"),
                                 strict=True):
        for part, g in frame[frame["metric"] == metric].groupby("part"):
            ax.errorbar(g["step"], g["mean"], yerr=g["half"].fillna(0), marker="o", capsize=3, label=part)
        ax.set_xlabel("GRPO step (0 = start)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle("Zhu et al.: over training steps, on trained and held-out question kinds")
    fig.tight_layout()
    return fig


def zhu_claims(run: dict, start: str, arm: str) -> list[dict | None]:
    steps = sorted({_split_label(v)[0] for v in run["rows"]["variant"].astype(str) if ":" in v} - {0})
    if not steps:
        return [pair_claim(run, "zhu", f"GRPO beats {start} on the {p}", arm, start, "accuracy")
                for p in ("held-out kind", "trained kinds")]
    first, last = steps[0], steps[-1]
    out = [pair_claim(run, "zhu", f"GRPO beats {start} on the {p} (question kind never in the RL data)"
                      if p == "held-out kind" else f"GRPO beats {start} on the {p}", arm, start, "accuracy",
                      treat_variant=f"{last}:{p}", base_variant=f"0:{p}") for p in ("held-out kind", "trained kinds")]
    if last > first:
        out.append(pair_claim(run, "zhu", f"accuracy rises from step {first} to step {last} (trained kinds)",
                              arm, arm, "accuracy", treat_variant=f"{last}:trained kinds",
                              base_variant=f"{first}:trained kinds"))
    return out


# ----------------------------------------------------------------------------------------------- MMedPO
def mmedpo_table(run: dict) -> pd.DataFrame:
    """One row per (start, method): closed VQA accuracy, open recall and ROUGE-L (± 95%)."""
    out = []
    for r in dict.fromkeys(x["method"] for x in run["records"]):
        label = r.split(" [")[1][:-1] if " [" in r else "LLaVA, SFT start (04)"
        out.append({"start": label, "method": r.split(" [")[0], **{
            m: _cell(run, r, m) for m in ("closed_correct", "open_recall", "rouge_l")}})
    return pd.DataFrame(out)


def mmedpo_claims(run: dict, labels: list[str]) -> list[dict | None]:
    out = []
    for lab in labels:
        start = "base" if lab == "base start" else "SFT"
        out += [pair_claim(run, "mmedpo", f"MMedPO beats DPO on closed VQA ({lab})", f"MMedPO [{lab}]",
                           f"DPO [{lab}]", "closed_correct"),
                pair_claim(run, "mmedpo", f"MMedPO beats its start on closed VQA ({lab})", f"MMedPO [{lab}]",
                           f"{start} [{lab}]", "closed_correct")]
        if lab == "base start":
            out.append(pair_claim(run, "mmedpo", "SFT start beats base start (MMedPO, closed VQA)", "MMedPO",
                                  "MMedPO [base start]", "closed_correct", kind="check"))
    return out

"""Stage 05's tables, claims and figures: each paper's ablation rows beside the paper's own ("paper (Table N)"),
the paired claims (repro.papers.claims.judge -> repro.stats.claims_frame, Holm per paper, exactly as stage 04), the
UMed accuracy-vs-IoU-threshold curve from per-row IoUs, and one forest plot per paper (repro.ledger.forest_figure).

Two families per paper, each Holm-corrected on its own:
  claims       the rows the paper reports (UMed Table 6, MMedPO's component table, Zhu's init study, Dr-LLaVA's
               consistency term): a verdict on the paper's direction; saved under metrics.claims.
  exploratory  our ablations the paper does not report (max-normalisation, weight modes, KL 0, group size, reward
               variants): "reproduced" there reads "the full method is significantly higher"; metrics.exploratory.
"""

from __future__ import annotations

import math

import pandas as pd

from repro import report, results, stats
from repro.papers import ablations as ab
from repro.papers.claims import MAU, Claim

CLAIM_FIELDS = stats.CLAIM_COLUMNS + ["why"]  # the saved claim fields, as stage 04's
DR = ab.drllava.METHOD


def _source(paper: str, table: str) -> str:
    return results.paper_numbers(paper)["tables"][table]["source"]


def _paper_diff(table: str, paper: str, treat_row: str, base_row: str, cols: list[str], scale: float = 1.0) -> float:
    """The paper's difference treat - base, mean over `cols`, in our units (fractions)."""
    t = results.paper_table(paper, table)
    return float(sum(t.loc[treat_row, c] - t.loc[base_row, c] for c in cols) / len(cols) / scale)


def _umed_full_minus(row: str) -> float:
    full = results.paper_table("umed_lvlm", "table2_mau").loc["UMed-LVLM", "Avg"]
    return float(full - results.paper_table("umed_lvlm", "table6_ablation").loc[row, "Avg"])


# (Claim, the paper's difference in our units or None, where the paper says it)
def paper_claims() -> list[tuple[Claim, float | None, str]]:
    L = ab.label
    mm = [("text w/ weights", "clinical weights help text pairs", "text-dispref w/ CRS", "text-dispref w/o CRS",
           "DPO (with weights)", "DPO"),
          ("visual w/o weights", "clinical weights help visual pairs", "visual w/ CRS", "visual w/o CRS", "MMedPO",
           L("mmedpo", "visual w/o weights")),
          ("single judge", "a judge panel beats a single judge", "multi Med-LLM", "single Med-LLM", "MMedPO",
           L("mmedpo", "single judge")),
          ("global noise", "lesion-local noise beats global noise", "local lesion noise", "global noise", "MMedPO",
           L("mmedpo", "global noise")),
          # the same claim with the global arm stopped at the local arm's KL: not confounded by how far each moved
          (ab.MATCHED, "lesion-local noise beats global noise at matched KL", "local lesion noise", "global noise",
           "MMedPO", L("mmedpo", ab.MATCHED))]
    out = [(Claim("umed", f"full AAR beats {a}", ab.UMED_FULL, L("umed", a), "mau_correct", sources=MAU),
            _umed_full_minus(a), "Table 6 (Avg), full = UMed-LVLM of Table 2") for a in ("w/o VRR", "w/o ALR")]
    out.append((Claim("umed", "full AAR beats w/o AAR (SFT+PPO)", ab.UMED_FULL, ab.UMED_PPO, "mau_correct",
                      sources=MAU), _umed_full_minus("w/o AAR"), "Table 6 (Avg), full = UMed-LVLM of Table 2"))
    for _, text, prow_t, prow_b, treat, base in mm:
        out.append((Claim("mmedpo", f"{text} (closed VQA)", treat, base, "closed_correct"),
                    _paper_diff("ablation", "mmedpo", prow_t, prow_b, ["SLAKE", "VQA-RAD"], 100),
                    "ablation table, mean of SLAKE and VQA-RAD"))
        out.append((Claim("mmedpo", f"{text} (report ROUGE-L)", treat, base, "rouge_l"),
                    _paper_diff("ablation", "mmedpo", prow_t, prow_b, ["IU-Xray"], 100), "ablation table, IU-Xray"))
    out.append((Claim("zhu", "init study: SFT start beats base start (GRPO)", "SFT+grpo", "base+grpo", "accuracy",
                      kind="check"),
                None, "init study: perplexity 14.16 -> 13.28 only (no accuracy)"))
    # One claim per observation: path consistency and conversation accuracy are read off the same 200 standard
    # conversations, so only the quantity the term pays for is tested; the table shows the other levels.
    out.append((Claim("drllava", "the path-consistency term raises path consistency", DR,
                      L("drllava", "w/o path term"), "path_consistency", variant="standard", kind="check"),
                None, "the paper's design (its tables were not retrieved)"))
    return out


def exploratory_claims(acfg: ab.AblationConfig) -> list[tuple[Claim, None, str]]:
    L, out = ab.label, []
    if "w/o max-norm" in acfg.umed:
        out.append(Claim("umed", "full AAR beats w/o max-normalisation", ab.UMED_FULL, L("umed", "w/o max-norm"),
                         "mau_correct", sources=MAU))
    for a, text in (("VRR frozen copy", "VRR from the policy's own attention beats a frozen copy's"),
                    ("AAR mean", "AAR as the paper's sum beats the mean of its terms")):
        if a in acfg.umed:  # sensitivity rows of the full method's two knobs (issue 27)
            out.append(Claim("umed", text, ab.UMED_FULL, L("umed", a), "mau_correct", sources=MAU))
    for a, text in (("weights literal", "raw weights beat the printed rule's constant 0.75"),
                    ("weights normalize", "raw weights beat set-normalised weights")):
        if a in acfg.mmedpo:  # sensitivity rows of the full method's weight mode (ab.MMEDPO_KNOBS)
            out += [Claim("mmedpo", f"{text} ({m})", "MMedPO", L("mmedpo", a), m)
                    for m in ("closed_correct", "rouge_l")]
    if "beta 0" in acfg.zhu:
        out += [Claim("zhu", f"KL penalty (default beta) vs beta 0: {m}", "SFT+grpo", L("zhu", "beta 0"), m)
                for m in ("accuracy", "format")]
    if "small G" in acfg.zhu:
        out.append(Claim("zhu", "full group size beats the small group", "SFT+grpo", L("zhu", "small G"),
                         "accuracy"))
    for a in ("gated", "released"):
        if a in acfg.drllava:
            out.append(Claim("drllava", f"our rule reward beats the {a} reward (standard order)", DR,
                             L("drllava", a), "conversation_correct", variant="standard"))  # 04 and 05 score it
    return [(c, None, "not reported by the paper") for c in out]


def judge(runs: dict, items: list, n_boot: int, exploratory: bool = False, plan: dict | None = None) -> pd.DataFrame:
    """claims.judge + stats.claims_frame (Holm per paper) of `items` [(Claim, paper difference, source)], with the
    paper's difference (paper_value, our units) and where the paper says it (paper_source)."""
    from repro import stats
    from repro.papers import claims as claims_lib

    found = claims_lib.judge(runs, [c for c, _, _ in items], n_boot=n_boot, plan=plan)
    extra = {(c.paper, c.claim): (v, s) for c, v, s in items}
    for f in found:
        f["paper_value"], f["paper_source"] = extra[(f["paper"], f["claim"])]
        f["paper_effect"] = f["paper_value"]  # the ablation table's difference: below_paper is judged against it
        # how far each arm moved from its start: a difference between arms of very unequal KL is partly the step size
        treat, base = f["comparison"].split(" - ", 1)
        f["kl_treated"], f["kl_control"] = (arm_kl(runs[f["paper"]], m) for m in (treat, base))
    frame = stats.claims_frame(found)
    if len(frame):  # stage 04's one-line why (an untrained claim names the arm and its reason)
        frame = frame.reset_index() if "paper" not in frame.columns else frame.copy()
        reasons = {(f["paper"], f["claim"]): f["not_trained_why"] for f in found}
        frame["why"] = [claims_lib.why(r, reasons.get((r["paper"], r["claim"]), "")) for r in frame.to_dict("records")]
        frame["why"] = [w + unmatched(runs, r) for w, r in zip(frame["why"], frame.to_dict("records"))]
        if exploratory:  # no paper direction: the hypothesis is "with the component > without it"
            frame["why"] = [w.replace("in the paper's direction", "in favour of the component").replace(
                "against the paper's direction", "against the component") for w in frame["why"]]
    return frame


def arm_kl(run: dict, method: str) -> float | None:
    """An arm's end KL to its start (record kl_end, nats per sequence), the mean over its seeds; None for a start."""
    vals = [r["kl_end"] for r in run["records"] if r["method"] == method and r.get("kl_end") is not None]
    return float(sum(vals) / len(vals)) if vals else None


def unmatched(runs: dict, row: dict) -> str:
    """"; KL not matched ..." when the claim's control is the matched-KL arm and a seed never reached its target
    (the global arm moved less than the full one: stopping early cannot match that), else ""."""
    base = str(row.get("comparison", "")).split(" - ", 1)[-1]
    miss = [r["matched_kl"] for r in runs.get(row.get("paper"), {}).get("records", [])
            if r.get("method") == base and r.get("matched_kl") and not r["matched_kl"]["reached"]]
    return "".join(f"; KL not matched: {m['kl']:.3g} < target {m['target']:.3g} after all {m['planned_steps']} steps"
                   for m in miss[:1])


def records(frame: pd.DataFrame) -> list[dict]:
    """The claims in the saved form: CLAIM_FIELDS (as stage 04) plus paper_value, paper_source and both arms' KL."""
    if not len(frame):
        return []
    keep = [c for c in CLAIM_FIELDS + ["paper_value", "paper_source", "kl_treated", "kl_control"]
            if c in frame.columns]
    out = frame[keep].to_dict(orient="records")
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in out]


# ----------------------------------------------------------------------------------------------- tables
def umed_table(run: dict) -> pd.DataFrame:
    cols = list(report.MAU_NAMES) + ["mau_avg", "mean_iou"]
    ours = report.table(run["records"], cols).rename(columns={**report.MAU_NAMES, "mau_avg": "Avg",
                                                              "mean_iou": "mean IoU"})
    names = {ab.UMED_PPO: "SFT+PPO (= w/o AAR)", ab.UMED_FULL: "SFT+AAR (full)"}

    def rename(m: str) -> str:  # keep the " (not trained)" mark of report.table
        core = m.removesuffix(" (not trained)")
        return names[core] + m[len(core):] if core in names else m

    ours = ours.rename(index=rename)
    t6 = results.paper_table("umed_lvlm", "table6_ablation")
    full = results.paper_table("umed_lvlm", "table2_mau").loc[["MedVInt (SFT)", "UMed-LVLM"]]
    paper = pd.concat([full, t6])
    paper.index.name = "method"
    return report.side_by_side(ours, paper, f"paper UMed-LVLM ({_source('umed_lvlm', 'table6_ablation')}; full = "
                                            f"UMed-LVLM, {_source('umed_lvlm', 'table2_mau')})")


def mmedpo_table(run: dict) -> pd.DataFrame:
    """Our arms' test metrics and their end KL (how far each moved: local vs global noise is compared at matched
    KL too), beside the paper's ablation table."""
    cols = ["closed_acc", "open_recall", "bleu", "rouge_l"]
    names = {"closed_acc": "closed (%)", "open_recall": "open recall (%)", "bleu": "BLEU (%)", "rouge_l": "ROUGE-L (%)",
             "kl_end": "KL (nats)"}
    recs = [{**r, "metrics": {**r.get("metrics", {}), "kl_end": r.get("kl_end")}} for r in run["records"]]
    ours = report.table(recs, cols, digits=1, percent=tuple(cols)).rename(columns=names)
    ours.insert(len(cols), "KL (nats)", report.table(recs, ["kl_end"], digits=2)["kl_end"])
    paper = results.paper_table("mmedpo", "ablation").rename(columns=lambda c: f"{c} avg (%)")
    paper.index.name = "method"
    return report.side_by_side(ours, paper, f"paper MMedPO ({_source('mmedpo', 'ablation')}; percent)")


def zhu_table(run: dict) -> pd.DataFrame:
    ours = report.table(run["records"], ["accuracy", "length", "similarity", "format"], digits=2,
                        percent=("accuracy",)).rename(columns={"accuracy": "accuracy (%)"})
    paper = results.paper_table("zhu2025", "headline").loc[["best SFT", "GRPO (base)"]].rename(
        columns={"accuracy": "accuracy (%)"})
    paper.index.name = "method"
    return report.side_by_side(ours, paper, f"paper Zhu et al. ({_source('zhu2025', 'headline')}; the init study "
                                            "reports perplexity only)")


def drllava_table(run: dict) -> pd.DataFrame:
    """No paper block: Dr-LLaVA's tables were not retrieved (docs/methods.md §1(f))."""
    return report.side_by_side(report.drllava_rl_table(run), None)


TABLES = {"umed": umed_table, "mmedpo": mmedpo_table, "zhu": zhu_table, "drllava": drllava_table}


# ----------------------------------------------------------------------------------------------- IoU curve
def iou_curve(rows: pd.DataFrame, thresholds, sources=MAU) -> pd.DataFrame:
    """MAU-style accuracy as a function of the IoU threshold t, from per-row scores: an abnormal row (IoU known)
    is right when detection and category are right and IoU >= t; a normal row (IoU NaN) keeps its mau_correct.
    At t = 0.5 this is mau_correct itself. -> DataFrame[method, seed, threshold, accuracy, n_items]."""
    r = rows[rows["source"].isin(list(sources)) & rows["metric"].isin(
        ["mau_correct", "detection_correct", "category_correct", "iou"])]
    if not len(r):
        return pd.DataFrame(columns=["method", "seed", "threshold", "accuracy", "n_items"])
    r = r.assign(seed=r["seed"].fillna(-1))  # a start has no seed; NaN keys would drop out of the grouping
    wide = r.groupby(["method", "seed", "item", "metric"], sort=False)["score"].first().unstack("metric").reset_index()
    if "iou" not in wide:  # rows saved before per-row IoU existed
        return pd.DataFrame(columns=["method", "seed", "threshold", "accuracy", "n_items"])
    out = []
    for t in thresholds:
        abn = wide["iou"].notna()
        ok = (wide["detection_correct"] * wide["category_correct"] * (wide["iou"] >= t)).where(abn,
                                                                                              wide["mau_correct"])
        g = wide.assign(ok=ok).groupby(["method", "seed"], sort=False)["ok"]
        out += [{"method": m, "seed": None if s == -1 else int(s), "threshold": float(t), "accuracy": float(v.mean()),
                 "n_items": len(v)} for (m, s), v in g]
    return pd.DataFrame(out)


def iou_figure(curve: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    mean = curve.groupby(["method", "threshold"], sort=False)["accuracy"].mean().reset_index()
    for m, d in mean.groupby("method", sort=False):
        ax.plot(d["threshold"], d["accuracy"], marker="o", ms=3, label=m)
    ax.axvline(0.5, color="grey", ls=":", lw=0.8)
    ax.set(xlabel="IoU threshold for a correct box", ylabel="MAU-style accuracy",
           title="UMed-LVLM: accuracy vs IoU threshold (paper: diagnosis saturates at IoU ~ 0.6)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- forest plots
def forest(claims: list[dict], exploratory: list[dict], paper: str):
    """One paper's forest plot: every ablation's difference (full - ablation) with its 95% CI; a black x marks the
    paper's own difference; exploratory rows carry "[ours]"."""
    from repro import ledger

    recs = [c for c in claims if c["paper"] == paper]
    recs += [{**c, "claim": f"{c['claim']} [ours]"} for c in exploratory if c["paper"] == paper]
    frame = ledger.build({"05_ablations": {"metrics": {"claims": recs}}})
    fig = ledger.forest_figure(frame)
    fig.suptitle(f"{ledger.PAPER_TITLES.get(paper, paper)} ablations: with the component − without it, 95% CI", x=0.01,
                 ha="left")
    return fig

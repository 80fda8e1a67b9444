"""Stage-04 tables, curves and the claims ledger, from the records of repro.experiments.

Tables put our rows (mean ± 95% CI over seeds) first and the paper's reported rows beside them under their own
label; the two blocks are never mixed. `claims(runs)` states, per paper, whether its headline direction reproduced
here, judged from the CI of the difference to the baseline (experiments.verdict), with the measured numbers.
"""

from __future__ import annotations

import pandas as pd

from repro import experiments as X
from repro import results
from repro.data import schema

MAU_SOURCES = list(schema.MAU_SOURCES)
MAU_NAMES = {f"mau_{s}": schema.SOURCES[s]["paper_name"] for s in MAU_SOURCES}


def _with_paper(ours: pd.DataFrame, paper: pd.DataFrame | None, label: str) -> pd.DataFrame:
    blocks = {"ours (this repo, mean ± 95% CI)": ours}
    if paper is not None:
        blocks[label] = paper.map(lambda v: f"{v:.3f}" if isinstance(v, float) else v)
    return pd.concat(blocks, names=["who", "method"])


def umed_table(records) -> pd.DataFrame:
    cols = list(MAU_NAMES) + ["mau_avg", "mean_iou"]
    ours = X.table(records, cols).rename(columns={**MAU_NAMES, "mau_avg": "Avg", "mean_iou": "mean IoU"})
    paper = results.paper_table("umed_lvlm", "table2_mau").loc[["MedVInt (SFT)", "MedVInt (SFT+PPO)", "UMed-LVLM"]]
    src = results.paper_numbers("umed_lvlm")["tables"]["table2_mau"]["source"]
    return _with_paper(ours, paper, f"paper UMed-LVLM ({src}; UMed-LVLM = SFT+AAR)")


def zhu_table(records) -> pd.DataFrame:
    ours = X.table(records, ["accuracy", "length", "similarity", "format"], digits=2, percent=("accuracy",))
    ours = ours.rename(columns={"accuracy": "accuracy (%)"})
    paper = results.paper_table("zhu2025", "headline").rename(columns={"accuracy": "accuracy (%)"})
    src = results.paper_numbers("zhu2025")["tables"]["headline"]["source"]
    return _with_paper(ours, paper, f"paper Zhu et al. ({src}; PMC-VQA, Qwen2-VL-2B)")


def mmedpo_table(records) -> pd.DataFrame:
    cols = ["closed_acc", "open_recall", "bleu", "rouge_l"]
    ours = X.table(records, cols, digits=1, percent=tuple(cols)).rename(
        columns={"closed_acc": "closed (%)", "open_recall": "open recall (%)", "bleu": "BLEU (%)",
                 "rouge_l": "ROUGE-L (%)"})
    paper = results.paper_table("mmedpo", "main").loc[["LLaVA-Med v1.5", "+DPO", "+MMedPO"]]
    src = results.paper_numbers("mmedpo")["tables"]["main"]["source"]
    return _with_paper(ours, paper, f"paper MMedPO ({src}; percent)")


DR_COLUMNS = ["question_acc", "conversation_acc", "diagnosis_acc", "path_consistency"]
DR_VARIANTS = ["shuffled", "reversed", "hint_correct", "hint_wrong", "confirm_correct", "confirm_wrong"]


def drllava_table(records) -> pd.DataFrame:
    """Main columns, then the diagnosis accuracy under each robustness variant (the paper's tables were not
    retrieved: docs/methods.md §1(f), so there is no paper block)."""
    cols = DR_COLUMNS + [f"{v}_diagnosis_acc" for v in DR_VARIANTS]
    return X.table(records, cols).rename(columns={f"{v}_diagnosis_acc": f"diag. {v}" for v in DR_VARIANTS})


def curves_figure(runs: dict):
    """Rows: papers; columns: reward, KL, response length; one line per method (mean over seeds, band min..max)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    quantities = ["reward", "kl", "length"]
    papers = [p for p in X.PAPERS if p in runs]
    fig, axes = plt.subplots(max(len(papers), 1), 3, figsize=(15, 3.2 * max(len(papers), 1)), squeeze=False)
    titles = {"umed": "UMed-LVLM (PPO)", "zhu": "Zhu et al. (GRPO)", "mmedpo": "MMedPO (DPO: reward margin)",
              "drllava": "Dr-LLaVA (multi-turn PPO)"}
    for i, paper in enumerate(papers):
        long = X.curves_long(runs[paper])
        for j, q in enumerate(quantities):
            ax = axes[i][j]
            d = long[long["quantity"] == q] if len(long) else long
            if len(d):
                d = d.assign(value=pd.to_numeric(d["value"], errors="coerce")).dropna(subset=["value"])
            if len(d):
                sns.lineplot(data=d, x="step", y="value", hue="method", errorbar=("pi", 100), ax=ax,
                             legend=(j == 0))
                if j == 0 and ax.get_legend() is not None:
                    ax.legend(fontsize=7, ncol=2)
            else:
                ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
            ax.set_title(f"{titles[paper]}: {q}", fontsize=10)
            ax.set_xlabel("step")
    fig.suptitle("Training curves of stage 04", fontweight="bold")
    fig.tight_layout()
    return fig


# (paper, claim, method, baseline, metric, expected direction)
CLAIMS = [
    ("umed", "AAR beats SFT on MAU accuracy", "SFT+AAR", "SFT", "mau_avg", "higher"),
    ("umed", "AAR beats plain PPO (relevance only)", "SFT+AAR", "SFT+PPO", "mau_avg", "higher"),
    ("zhu", "GRPO beats SFT on accuracy", "SFT+grpo", "SFT", "accuracy", "higher"),
    ("zhu", "semantic reward raises similarity", "SFT+grpo_semantic", "SFT+grpo", "similarity", "higher"),
    ("zhu", "Dr.GRPO beats GRPO on accuracy", "SFT+dr_grpo", "SFT+grpo", "accuracy", "higher"),
    ("zhu", "CWR beats ECR on accuracy", "SFT+cwr", "SFT+ecr", "accuracy", "higher"),
    ("zhu", "ECR lengthens responses", "SFT+ecr", "SFT+grpo", "length", "higher"),
    ("zhu", "SFT start beats base start (GRPO)", "SFT+grpo", "base+grpo", "accuracy", "higher"),
    ("mmedpo", "DPO beats SFT on closed VQA", "DPO", "SFT", "closed_acc", "higher"),
    ("mmedpo", "MMedPO beats DPO on closed VQA", "MMedPO", "DPO", "closed_acc", "higher"),
    ("mmedpo", "MMedPO beats DPO on open VQA", "MMedPO", "DPO", "open_recall", "higher"),
    ("drllava", "rule-reward PPO raises conversation accuracy", "SFT+PPO (rule reward)", "SFT", "conversation_acc",
     "higher"),
    ("drllava", "rule-reward PPO raises diagnosis accuracy", "SFT+PPO (rule reward)", "SFT", "diagnosis_acc",
     "higher"),
    ("drllava", "rule-reward PPO raises path consistency", "SFT+PPO (rule reward)", "SFT", "path_consistency",
     "higher"),
]


def claims(runs: dict) -> pd.DataFrame:
    """One row per headline claim whose methods were run: difference (mean ± CI over seeds) and the verdict."""
    rows = []
    for paper, claim, method, baseline, metric, expect in CLAIMS:
        recs = runs.get(paper) or []
        names = {r["method"] for r in recs}
        if method not in names or baseline not in names:
            continue
        d = X.difference(recs, method, baseline, metric)
        rows.append({"paper": paper, "claim": claim, "metric": metric, "comparison": f"{method} - {baseline}",
                     "difference": round(d["diff"], 4), "ci95": round(d["ci"], 4), "seeds": d["n"],
                     "verdict": X.verdict(d, expect)})
    return pd.DataFrame(rows, columns=["paper", "claim", "metric", "comparison", "difference", "ci95", "seeds",
                                       "verdict"]).set_index(["paper", "claim"])

"""Dataset cards and distribution figures for stage 01 (what a reader checks before trusting any table)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

TASK_DESCRIPTIONS = {
    "vqa": "closed (yes/no) and open VQA, VQA-RAD/SLAKE-like (MMedPO)",
    "mcq": "4-option multiple choice with <think>/<answer> targets, PMC-VQA-like (Zhu et al.)",
    "instruct": "abnormal-aware instructions: detect -> localize (bbox) -> recognize (UMed-LVLM)",
    "conv": "5-turn clinician conversations from the decision tree (Dr-LLaVA); eval splits carry all variants",
    "report": "findings reports, IU-Xray-like (MMedPO report generation)",
}


def dataset_card(manifest: dict) -> pd.DataFrame:
    """One row per task: rows per split and what the task is for."""
    rows = []
    for task, info in manifest["tasks"].items():
        r = {"task": task, **{f"{s} rows": n for s, n in info["rows"].items()},
             "purpose": TASK_DESCRIPTIONS.get(task, "real data set (gpu profile)")}
        rows.append(r)
    df = pd.DataFrame(rows).set_index("task").fillna(0)
    for c in df.columns:
        if c.endswith("rows"):
            df[c] = df[c].astype(int)
    return df


def class_counts(dd) -> pd.DataFrame:
    """Images per (source, category) over all splits of a task DatasetDict (one image = one id)."""
    df = pd.concat([d.select_columns(["id", "source", "category"]).to_pandas() for d in dd.values()])
    df = df.drop_duplicates("id")
    return df[["source", "category"]].value_counts().rename("images").reset_index()


def plot_distributions(vqa_train, mcq_train, counts: pd.DataFrame):
    """Three panels: images per class and source, share of 'yes' in closed VQA per source, MCQ answer letters."""
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [2.2, 1.2, 0.8]})
    c = counts.copy()
    c["class"] = c["source"] + ": " + c["category"]
    sns.barplot(data=c.sort_values(["source", "category"]), y="class", x="images", hue="source", dodge=False,
                ax=axes[0], legend=False)
    axes[0].set_title("Images per class (all splits)")
    axes[0].set_ylabel("")
    v = vqa_train.select_columns(["source", "answer", "answer_type"]).to_pandas()
    closed = v[v.answer_type == "closed"].assign(yes=lambda d: d.answer.str.lower().eq("yes"))
    share = closed.groupby("source")["yes"].mean().sort_values()
    sns.barplot(x=share.values, y=share.index, ax=axes[1], color=sns.color_palette()[0])
    axes[1].axvline(closed["yes"].mean(), ls="--", c="k", lw=1, label=f"overall {closed['yes'].mean():.2f}")
    axes[1].set_xlim(0, 1)
    axes[1].set_title("Closed VQA: share of 'yes' (train)")
    axes[1].legend(loc="lower right")
    m = mcq_train.select_columns(["answer"]).to_pandas()["answer"].value_counts().sort_index()
    sns.barplot(x=m.index, y=m.values, ax=axes[2], color=sns.color_palette()[2])
    axes[2].set_title("MCQ answer letters (train)")
    fig.suptitle("SynthMed: what the model will see", y=1.02)
    fig.tight_layout()
    return fig


def open_answer_counts(vqa_train, top: int = 12) -> pd.DataFrame:
    v = vqa_train.select_columns(["answer", "answer_type"]).to_pandas()
    return v[v.answer_type == "open"]["answer"].value_counts().head(top).rename("rows").to_frame()

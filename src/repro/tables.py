"""Tables in the layout of the papers, ours beside the paper's (labelled, never mixed into our rows).

`side_by_side(ours, paper)` stacks two blocks under a row index level "who" ("ours" / "paper (<source>)"), with the
paper's columns renamed to ours where they mean the same thing, so a reader compares column by column.
"""

from __future__ import annotations

import pandas as pd

from repro import results
from repro.data import schema

MAU_COLUMNS = [schema.SOURCES[s]["paper_name"] for s in schema.MAU_SOURCES]  # DeepLesion, KidneyStone, KVASIR, ...


def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame | None, paper_label: str = "paper") -> pd.DataFrame:
    blocks = {"ours (this repo)": ours}
    if paper is not None:
        blocks[paper_label] = paper
    out = pd.concat(blocks, names=["who", ours.index.name or "row"])
    return out


def mau_table(evals: dict[str, dict]) -> pd.DataFrame:
    """UMed-LVLM Table 2 layout: MAU-style accuracy per source (five MAU sources) and their average."""
    rows = {}
    for name, ev in evals.items():
        by = ev["instruct"]["by_source"]
        vals = [by.get(s, {}).get("mau_acc", float("nan")) for s in schema.MAU_SOURCES]
        rows[name] = vals + [pd.Series(vals).mean()]
    df = pd.DataFrame.from_dict(rows, orient="index", columns=MAU_COLUMNS + ["Avg"])
    df.index.name = "model"
    return df


def mau_with_paper(evals: dict[str, dict], paper_rows=("MedVInt", "MedVInt (SFT)")) -> pd.DataFrame:
    paper = results.paper_table("umed_lvlm", "table2_mau").loc[list(paper_rows)]
    paper.index.name = "model"
    src = results.paper_numbers("umed_lvlm")["tables"]["table2_mau"]["source"]
    return side_by_side(mau_table(evals), paper, f"paper UMed-LVLM ({src})")


def drllava_table(evals: dict[str, dict], variants=None) -> pd.DataFrame:
    """Question-, conversation-, diagnosis-level accuracy and path consistency; one row per (model, variant)."""
    rows = []
    for name, ev in evals.items():
        conv = ev["conv"]
        rows.append({"model": name, "variant": "all", **_pick(conv)})
        for var, m in (conv.get("by_variant") or {}).items():
            if var != "all" and (variants is None or var in variants):
                rows.append({"model": name, "variant": var, **_pick(m)})
    return pd.DataFrame(rows).set_index(["model", "variant"])


def _pick(m: dict) -> dict:
    return {k: m.get(k, float("nan")) for k in ("question_acc", "conversation_acc", "diagnosis_acc",
                                                "path_consistency")}


def vqa_table(evals: dict[str, dict]) -> pd.DataFrame:
    """Closed accuracy, open recall, MCQ accuracy, report BLEU / ROUGE-L, in percent like the papers."""
    rows = {}
    for name, ev in evals.items():
        rows[name] = {"closed acc": ev["vqa"]["closed_acc"], "open recall": ev["vqa"]["open_recall"],
                      "MCQ acc": ev["mcq"]["acc"], "report BLEU": ev["report"]["bleu"],
                      "report ROUGE-L": ev["report"]["rouge_l"]}
    df = pd.DataFrame.from_dict(rows, orient="index") * 100
    df.index.name = "model"
    return df


def vqa_with_paper(evals: dict[str, dict]) -> pd.DataFrame:
    """Ours beside MMedPO's LLaVA-Med v1.5 row (SLAKE / VQA-RAD / IU-Xray) and Zhu et al.'s best SFT (PMC-VQA)."""
    mm = results.paper_table("mmedpo", "main").loc[["LLaVA-Med v1.5"]]
    zhu = results.paper_table("zhu2025", "headline").loc[["best SFT"]]
    paper = pd.DataFrame({
        "closed acc": [mm["SLAKE Closed"].iloc[0], mm["VQA-RAD Closed"].iloc[0], None],
        "open recall": [mm["SLAKE Open"].iloc[0], mm["VQA-RAD Open"].iloc[0], None],
        "MCQ acc": [None, None, zhu["accuracy"].iloc[0]],
        "report BLEU": [mm["IU-Xray BLEU"].iloc[0], None, None],
        "report ROUGE-L": [mm["IU-Xray ROUGE-L"].iloc[0], None, None],
    }, index=["MMedPO: LLaVA-Med v1.5 on SLAKE (reports: IU-Xray)", "MMedPO: LLaVA-Med v1.5 on VQA-RAD",
              "Zhu et al.: best SFT on PMC-VQA"])
    paper.index.name = "model"
    return side_by_side(vqa_table(evals), paper, "paper (MMedPO main comparison; Zhu et al. headline)")


def per_source_table(ev: dict) -> pd.DataFrame:
    """One model's main metric of every task, per source (rows) — where the model is strong or weak."""
    cols = {("vqa", "closed_acc"): "closed acc", ("vqa", "open_recall"): "open recall", ("mcq", "acc"): "MCQ acc",
            ("instruct", "mau_acc"): "MAU acc", ("instruct", "mean_iou"): "mean IoU",
            ("conv", "diagnosis_acc"): "Dr-LLaVA diagnosis", ("report", "rouge_l"): "report ROUGE-L"}
    data = {}
    for (task, key), label in cols.items():
        by = ev.get(task, {}).get("by_source", {})
        data[label] = {src: m.get(key) for src, m in by.items()}
    df = pd.DataFrame(data)
    df.index.name = "source"
    return df

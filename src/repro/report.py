"""Tables in the layout of the papers, ours beside the paper's (labelled "paper <name> (<source>)", e.g. "paper
UMed-LVLM (Table 2, MAU test set)", never mixed into our rows), stage 04's starting points, arms and training curves.

`side_by_side(ours, paper, label)` stacks two blocks under a row index level "who", with the paper's columns
renamed to ours where they mean the same thing, so a reader compares column by column. Stage-04 tables show mean ±
95% CI over seeds (repro.stats.ci95) and mark a method "(not trained)" when any of its arms did not train.
"""

from __future__ import annotations

import math

import pandas as pd

from repro import results, stats
from repro.data import schema

MAU_COLUMNS = [schema.SOURCES[s]["paper_name"] for s in schema.MAU_SOURCES]  # DeepLesion, KidneyStone, KVASIR, ...
MAU_NAMES = {f"mau_{s}": schema.SOURCES[s]["paper_name"] for s in schema.MAU_SOURCES}
OURS = "ours (this repo)"


def _source(paper: str, table: str) -> str:
    """The plain source label of a paper's table in paper_numbers.json (e.g. "Table 2, MAU test set")."""
    return results.paper_numbers(paper)["tables"][table]["source"]


def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame | None, paper_label: str = "paper") -> pd.DataFrame:
    """Our block, then the paper's block (numbers formatted as in ours), under the index level "who"."""
    blocks = {OURS: ours}
    if paper is not None:
        if any(isinstance(v, str) for v in ours.to_numpy().ravel()):  # ours is formatted "mean ± ci": match it
            paper = paper.map(lambda v: f"{v:.3f}" if isinstance(v, float) else v)
        blocks[paper_label] = paper
    return pd.concat(blocks, names=["who", ours.index.name or "row"])


# ----------------------------------------------------------------------------------------------- stage 02 tables
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
    return side_by_side(mau_table(evals), paper, f"paper UMed-LVLM ({_source('umed_lvlm', 'table2_mau')})")


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


# ----------------------------------------------------------------------------------------------- stage 04 tables
def _label(records: list[dict], method: str) -> str:
    from repro.papers import claims

    ok, _ = claims.trained({"records": records}, method)  # the method's rule: moved, and learned over its seeds
    return method if ok else f"{method} (not trained)"


def table(records: list[dict], columns: list[str], digits: int = 3, percent: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per method (first-seen order), "mean ± 95% CI over seeds" per metric ("mean" alone for one value);
    metrics in `percent` x100. A method with an untrained arm is labelled "(not trained)"."""
    from repro import stats

    order = list(dict.fromkeys(r["method"] for r in records))
    out = {}
    for m in order:
        cells = {}
        for col in columns:
            vals = [r["metrics"].get(col) for r in records if r["method"] == m]
            vals = [float(v) * (100 if col in percent else 1) for v in vals if v is not None]
            mean, half = stats.ci95(vals) if vals else (float("nan"), float("nan"))
            cells[col] = f"{mean:.{digits}f}" if not math.isfinite(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"
        out[_label(records, m)] = cells
    df = pd.DataFrame.from_dict(out, orient="index", columns=columns)
    df.index.name = "method"
    return df


def external_columns(records: list[dict]) -> list[str]:
    """The extra external-test columns present in the records (papers.measure.external: "<name>_closed_acc", e.g.
    MedMNIST for UMed-LVLM / Dr-LLaVA under `*_external_test`); an extra column, never a claim."""
    from repro.data import protocols

    names = [f"{n}_closed_acc" for n, sub in protocols.KNOBS["external_test"].items() if sub]
    return [c for c in names if any(c in r.get("metrics", {}) for r in records)]


def umed_table(run: dict) -> pd.DataFrame:
    # normals and abnormals apart beside MAU: a threshold flip (normals called normal up, abnormals down) shows here
    extra = [c for c in ("normal_acc", "abnormal_acc") if any(c in r.get("metrics", {}) for r in run["records"])]
    cols = list(MAU_NAMES) + ["mau_avg", "mean_iou"] + extra + external_columns(run["records"])
    names = {**MAU_NAMES, "mau_avg": "Avg", "mean_iou": "mean IoU", "normal_acc": "normal images",
             "abnormal_acc": "abnormal images"}
    ours = table(run["records"], cols).rename(columns=names)
    paper = results.paper_table("umed_lvlm", "table2_mau").loc[["MedVInt (SFT)", "MedVInt (SFT+PPO)", "UMed-LVLM"]]
    paper.index.name = "method"
    return side_by_side(ours, paper, f"paper UMed-LVLM ({_source('umed_lvlm', 'table2_mau')}; UMed-LVLM = SFT+AAR)")


def zhu_table(run: dict) -> pd.DataFrame:
    ours = table(run["records"], ["accuracy", "length", "similarity", "format"], digits=2, percent=("accuracy",))
    ours = ours.rename(columns={"accuracy": "accuracy (%)"})
    paper = results.paper_table("zhu2025", "headline").rename(columns={"accuracy": "accuracy (%)"})
    paper.index.name = "method"
    return side_by_side(ours, paper, f"paper Zhu et al. ({_source('zhu2025', 'headline')}; PMC-VQA, Qwen2-VL-2B)")


def mmedpo_table(run: dict) -> pd.DataFrame:
    cols = ["closed_acc", "open_recall", "bleu", "rouge_l"]
    names = {"closed_acc": "closed (%)", "open_recall": "open recall (%)", "bleu": "BLEU (%)", "rouge_l": "ROUGE-L (%)"}
    ours = table(run["records"], cols, digits=1, percent=tuple(cols)).rename(columns=names)
    paper = results.paper_table("mmedpo", "main").loc[["LLaVA-Med v1.5", "+DPO", "+MMedPO"]]
    paper.index.name = "method"
    return side_by_side(ours, paper, f"paper MMedPO ({_source('mmedpo', 'main')}; percent)")


DR_COLUMNS = ["question_acc", "conversation_acc", "diagnosis_acc", "path_consistency"]
DR_VARIANTS = ["shuffled", "reversed", "hint_correct", "hint_wrong", "confirm_correct", "confirm_wrong"]


def drllava_rl_table(run: dict) -> pd.DataFrame:
    """Standard-order columns, then conversation accuracy under each robustness variant the records hold (stage 04
    scores the standard order only; 06 the variants), the paper's tables were not retrieved: docs/methods.md §1(f),
    so there is no paper block."""
    held = {k for r in run["records"] for k in r.get("metrics", {})}
    cols = DR_COLUMNS + [f"{v}_conversation_acc" for v in DR_VARIANTS if f"{v}_conversation_acc" in held]
    cols += external_columns(run["records"])
    return table(run["records"], cols).rename(columns={f"{v}_conversation_acc": f"conv. {v}" for v in DR_VARIANTS})


def starts_table(starts: dict) -> pd.DataFrame:
    """Starting points on the validation split: greedy, sampled pass@1 and pass@k (k = the group size)."""
    df = pd.DataFrame.from_dict(starts, orient="index")
    df.index.name = "paper"
    if len(df):
        df["headroom (pass@k - pass@1)"] = df["passk"] - df["pass1"]
    return df


ARM_COLUMNS = ["paper", "method", "seed", "learned", "probe", "pass1", "greedy_val", "kl_end", "reward_first",
               "reward_last", "moved", "trained", "control", "why"]


def arms_table(runs: dict) -> pd.DataFrame:
    """metrics.arms[]: one row per trained arm: learned (its probe reward rose, repro.papers.probe.learned) with
    the probe's {reward_start, reward_end, ci_low, ci_high, ...}, the target metric sampled (pass1) and greedy on
    the probe at step 0 and at the end, end KL, first / last training reward, moved (end KL > min_kl), trained
    (= moved and learned; an arm without a probe: moved), control (null / positive, else None) and why not."""
    from repro.papers import measure

    rows = [{"paper": p, "method": r["method"], "seed": r["seed"], "learned": r.get("learned"),
             "probe": r.get("probe"), "pass1": r.get("pass1"), "greedy_val": r.get("greedy_val"),
             "kl_end": r["kl_end"], "reward_first": r["reward_first"], "reward_last": r["reward_last"],
             "moved": bool(r.get("moved", r["trained"])), "trained": bool(r["trained"]),
             "control": r.get("control"), "why": r["why"]}  # control: null / positive (repro.papers.controls)
            for p, run in runs.items() for r in run["records"] if not measure.is_start(r)]
    return pd.DataFrame(rows, columns=ARM_COLUMNS)


def arms_readable(arms: pd.DataFrame) -> pd.DataFrame:
    """arms_table for reading (the saved .md / .csv): the probe as "change [CI]" and the probe's target metric as
    "start -> end", instead of the dicts metrics.arms keeps."""
    def change(p) -> str:
        if not isinstance(p, dict) or p.get("difference") is None:
            return ""
        return stats.ci_text(p["difference"], p["ci_low"], p["ci_high"])

    def span(d) -> str:
        return f"{d['start']:.2f} -> {d['end']:.2f}" if isinstance(d, dict) and None not in (
            d.get("start"), d.get("end")) else ""

    out = arms.assign(probe=arms["probe"].map(change), pass1=arms["pass1"].map(span),
                      greedy_val=arms["greedy_val"].map(span))
    return out.rename(columns={"probe": "probe reward change [95% CI]", "pass1": "probe pass@1",
                               "greedy_val": "probe greedy"})


def before_after(run: dict, seed: int = 0, width: int = 160) -> pd.DataFrame:
    """The same first test rows answered by the start and by every arm of one paper (seed `seed`): one row per
    (task, item) with the prompt, the reference answer and each method's greedy answer (a conversation's turns
    joined by " / "), from the records' `samples` (papers.measure.evaluate). Empty when no record has samples
    (results written before they were kept)."""
    def text(x) -> str:
        t = " / ".join(map(str, x)) if isinstance(x, (list, tuple)) else str(x)
        t = " ".join(t.split())
        return t if len(t) <= width else t[:width - 3] + "..."

    cols, rows = [], {}
    for r in run["records"]:
        if r.get("seed") not in (None, seed) or not r.get("samples"):
            continue
        cols.append(r["method"])
        for task, items in r["samples"].items():
            for k, it in enumerate(items):
                row = rows.setdefault((task, k), {"task": task, "item": k, "prompt": text(it.get("prompt", "")),
                                                  "reference": text(it.get("truth", ""))})
                row[r["method"]] = text(it.get("prediction", ""))
    return pd.DataFrame(list(rows.values()), columns=["task", "item", "prompt", "reference", *cols])


def probe_long(runs: dict) -> pd.DataFrame:
    """Every arm's probe points: paper, method, seed, step, reward, target_pass1, target_greedy (means over items)."""
    parts = [pd.DataFrame(r["probe_points"]).assign(paper=p, method=r["method"], seed=r["seed"])
             for p, run in runs.items() for r in run["records"] if r.get("probe_points")]
    cols = ["paper", "method", "seed", "step", "reward", "target_pass1", "target_greedy"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def train_log(runs: dict) -> pd.DataFrame:
    """Every arm's per-step training log (each reward component, KL, entropy, clip fraction, explained variance,
    share of zero-variance groups, grad norm...: whatever its trainer logs), one long frame with paper, method, seed."""
    parts = [pd.DataFrame(r["log"]).assign(paper=p, method=r["method"], seed=r["seed"])
             for p, run in runs.items() for r in run["records"] if r.get("log")]
    if not parts:
        return pd.DataFrame(columns=["paper", "method", "seed", "step"])
    df = pd.concat(parts, ignore_index=True)
    first = ["paper", "method", "seed", "step"]
    return df[[c for c in first if c in df] + [c for c in df.columns if c not in first]]


def probe_figure(runs: dict, titles: dict | None = None):
    """The learning curves on the fixed validation probe: one row per paper, columns = the arm's own probe reward,
    the target metric sampled (pass@1) and greedy, vs training step; one line per method, band = min..max over
    seeds. None when no arm has a probe."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = probe_long(runs)
    if not len(long):
        return None
    papers = list(dict.fromkeys(long["paper"]))
    cols = [("reward", "own training reward"), ("target_pass1", "target metric, sampled (pass@1)"),
            ("target_greedy", "target metric, greedy")]
    fig, axes = plt.subplots(len(papers), 3, figsize=(17, 3.0 * len(papers)), squeeze=False)
    for row, paper in zip(axes, papers, strict=True):
        d = long[long["paper"] == paper]
        for ax, (q, label) in zip(row, cols, strict=True):
            sns.lineplot(data=d, x="step", y=q, hue="method", marker="o", errorbar=("pi", 100), ax=ax,
                         legend=(q == "target_greedy"))
            ax.set_title(f"{(titles or {}).get(paper, paper)}: {label}", fontsize=10)
            ax.set_xlabel("training step")
            if q == "target_greedy":  # one legend per paper, beside its row, never over a curve
                ax.legend(title="method", loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, title_fontsize=9)
    fig.suptitle("Fixed validation probe (same items and sampling seed at every point)", fontsize=11)
    fig.tight_layout()
    return fig


def curves_figure(run: dict, title: str):
    """One paper's training curves: reward, KL, response length; one line per method (band = min..max)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    parts = [pd.DataFrame(r["curve"]).assign(method=_label(run["records"], r["method"]), seed=r["seed"])
             for r in run["records"] if r.get("curve")]
    long = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["step", "method"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.2))
    for ax, q in zip(axes, ["reward", "kl", "length"], strict=True):
        d = long[["step", "method", q]].dropna() if q in long else pd.DataFrame()
        if len(d):
            d = d.assign(**{q: pd.to_numeric(d[q], errors="coerce")}).dropna()
            sns.lineplot(data=d, x="step", y=q, hue="method", errorbar=("pi", 100), ax=ax, legend=(q == "reward"))
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_title(f"{title}: {q}", fontsize=10)
    fig.tight_layout()
    return fig


def rows_frame(runs: dict) -> pd.DataFrame:
    """Every evaluated model's per-row scores of every paper, one long frame (saved beside the results)."""
    parts = [run["rows"] for run in runs.values() if len(run["rows"])]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def save_rows(rows: pd.DataFrame, cfg) -> str:
    """Per-row scores of every evaluated model -> results/<profile>/<stem>_scores.csv.gz (small: ids, seed, metric,
    score; no predictions), so anyone can rerun the paired tests. Returns the path relative to the repo."""
    import os

    from repro import paths

    out = paths.RESULTS / cfg.profile / f"{cfg.stem}_scores.csv.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    rows.to_csv(tmp, index=False, compression="gzip", float_format="%.6g")
    os.replace(tmp, out)
    return str(out.relative_to(paths.ROOT))

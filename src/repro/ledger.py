"""The claims ledger of every stage: one row per claim with the paper's number, ours with its CI, p, p_holm,
verdict and a one-line why; counts by verdict; a forest plot of all claims grouped by paper.

Input: the results JSONs `results/<profile>/<stem>.json` (repro.results.save), of which stages 04, 05 and 06 carry
`metrics.claims[]`. A claim has (repro.stats.CLAIM_COLUMNS) paper, claim, metric, comparison, difference, ci_low,
ci_high, p_value, p_holm, mde, n_items, seeds, verdict, and optionally why / not_trained_why / expect / trained /
paper_value. Older results carry only difference and `ci95` (half-width of a t-interval over seeds) and a verdict
such as "inconclusive (CI contains 0)": the interval is then difference ± ci95 and every absent field reads "—".
Nothing here trains or evaluates; a missing or unreadable stage is reported and the rest still builds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from repro import replication, results, stats

STAGES = ("01_data", "02_sft", "03_rewards", "04_rl", "05_ablations", "06_generalization")
PAPERS = ("umed", "zhu", "mmedpo", "drllava")
PAPER_TITLES = {"umed": "UMed-LVLM", "zhu": "Zhu et al. 2025 (GRPO)", "mmedpo": "MMedPO", "drllava": "Dr-LLaVA"}
VERDICTS = (*stats.VERDICTS, "unknown")  # stats.verdict_class gives "unknown" to a verdict it cannot read
COLORS = {"reproduced": "#1b9e77", "opposite": "#d95f02", "below_paper": "#7570b3", "inconclusive": "#7f7f7f",
          "not_trained": "#c7c7c7", "unknown": "#e7298a"}
LEDGER_COLUMNS = ["stage", "paper", "claim", "kind", "metric", "comparison", "paper_number", "paper_difference",
                  "difference", "ci_low", "ci_high", "p_value", "p_holm", "mde", "mde_planned", "n_items", "seeds",
                  "verdict", "why", "learning", "agreement", "stable_at"]
DASH = "—"


# ----------------------------------------------------------------------------------------------- loading
def missing_message(stem: str, profile: str) -> str:
    return (f"stage {stem}: no results for profile {profile} — run make reproduce PROFILE={profile} "
            f"ONLY={stem[:2]}")


def load_results(results_dir: Path, profile: str, stages=STAGES) -> tuple[dict[str, dict], dict[str, str]]:
    """({stem: record} of the stages found, {stem: one-line message} of those missing or unreadable)."""
    found, notes = {}, {}
    for stem in stages:
        f = Path(results_dir) / f"{stem}.json"
        if not f.exists():
            notes[stem] = missing_message(stem, profile)
            continue
        try:
            rec = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            notes[stem] = f"stage {stem}: {f} is not valid JSON ({e}); rerun it: make reproduce ONLY={stem[:2]}"
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("metrics"), dict):
            notes[stem] = f"stage {stem}: {f} has no 'metrics' mapping; rerun it: make reproduce ONLY={stem[:2]}"
            continue
        found[stem] = rec
    return found, notes


# ----------------------------------------------------------------------------------------------- one claim
_num = replication.finite  # a finite float, or None


def interval(claim: dict) -> tuple[float | None, float | None]:
    """(ci_low, ci_high): the claim's own bounds, else difference ± ci95 (older results), else (None, None)."""
    lo, hi = _num(claim.get("ci_low")), _num(claim.get("ci_high"))
    if lo is not None and hi is not None:
        return lo, hi
    d, half = _num(claim.get("difference")), _num(claim.get("ci95"))
    if d is not None and half is not None:
        return d - half, d + half
    return None, None


verdict_class = stats.verdict_class  # the verdict's class for colours and counts ("unknown" if none)


# Where the paper reports both arms of a comparison: our arm name -> the paper's row, and our metric's family ->
# the paper's table and columns (docs/methods.md §1(f)-§4(f)). The paper's number is the difference of its rows.
# "SFT (continued)" (repro.papers.continued) stands for the paper's SFT row where the paper's SFT saw the RL data
PAPER_ARMS = {
    "umed": ("umed_lvlm", {"SFT": "MedVInt (SFT)", "SFT (continued)": "MedVInt (SFT)", "SFT+PPO": "MedVInt (SFT+PPO)",
                           "SFT+AAR": "UMed-LVLM"}),
    "mmedpo": ("mmedpo", {"SFT": "LLaVA-Med v1.5", "DPO": "+DPO", "MMedPO": "+MMedPO"}),
    "zhu": ("zhu2025", {"SFT": "best SFT", "SFT (continued)": "best SFT", "SFT+grpo": "GRPO (base)",
                        "SFT+grpo_semantic": "+ semantic-alignment reward",
                        "SFT+dr_grpo": "Dr.GRPO", "SFT+ecr": "ECR", "SFT+cwr": "CWR"}),
}
PAPER_COLUMNS = {  # (paper, metric prefix) -> (table, columns, divisor to our units: percent -> fraction)
    ("umed", "mau"): ("table2_mau", ["Avg"], 1),
    ("mmedpo", "closed"): ("main", ["SLAKE Closed", "VQA-RAD Closed"], 100),
    ("mmedpo", "open"): ("main", ["SLAKE Open", "VQA-RAD Open"], 100),
    ("mmedpo", "rouge"): ("main", ["IU-Xray ROUGE-L"], 100),
    ("mmedpo", "bleu"): ("main", ["IU-Xray BLEU"], 100),
    ("zhu", "accuracy"): ("headline", ["accuracy"], 100),
}


def paper_differences(claim: dict, numbers: dict | None = None) -> tuple[list[float], str | None]:
    """([the paper's difference per column, in our units (fractions)], its text) for this comparison; the claim's
    `paper_value` (text only) when given; ([], None) when the paper does not report both arms. Text: "+0.080 (Avg:
    UMed-LVLM 0.75 vs MedVInt (SFT) 0.67) [Table 2, ...]", the paper's values as printed."""
    if claim.get("paper_value") not in (None, ""):
        v = _num(claim["paper_value"])
        return ([v] if v is not None else []), str(claim["paper_value"])
    arms = PAPER_ARMS.get(claim.get("paper"))
    treat, _, base = str(claim.get("comparison", "")).partition(" - ")
    key = next((k for k in PAPER_COLUMNS if k[0] == claim.get("paper")
                and str(claim.get("metric", "")).startswith(k[1])), None)
    if not arms or key is None or treat not in arms[1] or base not in arms[1]:
        return [], None
    numbers = numbers if numbers is not None else results.paper_numbers()
    table_name, cols, scale = PAPER_COLUMNS[key]
    table = numbers.get(arms[0], {}).get("tables", {}).get(table_name)
    rows = dict(zip(table["index"], table["rows"])) if table else {}
    t_row, b_row = rows.get(arms[1][treat]), rows.get(arms[1][base])
    if t_row is None or b_row is None:
        return [], None
    diffs, parts = [], []
    for col in cols:
        j = table["columns"].index(col)
        diffs.append((t_row[j] - b_row[j]) / scale)
        parts.append(f"{diffs[-1]:+.3f} ({col}: {arms[1][treat]} {t_row[j]:g} vs {arms[1][base]} {b_row[j]:g})")
    return diffs, "; ".join(parts) + f" [{table.get('source', table_name)}]"


def paper_number(claim: dict, numbers: dict | None = None) -> str | None:
    """The text of paper_differences (None when the paper does not report both arms)."""
    return paper_differences(claim, numbers)[1]


def _why(claim: dict) -> str:
    why = claim.get("why") or claim.get("not_trained_why") or ""
    why = " ".join(str(why).split())
    return why if len(why) <= 160 else why[:157] + "..."


def _seeds(x):
    if isinstance(x, list):
        return len(x)
    return x


# ----------------------------------------------------------------------------------------------- the ledger
def _observation(c: dict) -> tuple | None:
    """What makes a claim's observation: the two arms and metric it compares and its result. A later stage that
    re-reads an earlier stage's arms for the same comparison (05's init study repeats 04's claim, on 04's arms)
    has the same observation; None when the claim has no number to match on."""
    d = _num(c.get("difference"))
    if d is None:
        return None
    return c.get("paper"), c.get("comparison"), c.get("metric"), round(d, 12), c.get("n_items")


def build(records: dict[str, dict], numbers: dict | None = None) -> pd.DataFrame:
    """One row per claim of every stage (in stage order), LEDGER_COLUMNS; absent numbers are NaN. One row per
    independent observation: a claim that repeats an earlier stage's observation (`_observation`) is not counted
    again. agreement / stable_at: how likely a rerun keeps the verdict, and the evidence multiple at which two
    runs would agree 90 % of the time (repro.replication; NaN where not predicted)."""
    rows, seen = [], set()  # seen: the observations of the stages before this one
    for stem in sorted(records):
        claims = records[stem].get("metrics", {}).get("claims") or []
        if not isinstance(claims, list):
            raise ValueError(f"results {stem}.json: metrics.claims is {type(claims).__name__}, expected a list")
        mine = set()
        for k, c in enumerate(claims):
            if not isinstance(c, dict) or "claim" not in c:
                raise ValueError(f"results {stem}.json: metrics.claims[{k}] has no 'claim' field (value {c!r:.80})")
            obs = _observation(c)
            if obs is not None and obs in seen:
                continue
            mine.add(obs)
            lo, hi = interval(c)
            p_diffs, p_text = paper_differences(c, numbers)
            rows.append({"stage": stem, "paper": c.get("paper") or DASH, "claim": c["claim"],
                         "kind": c.get("kind") or "claim",
                         "metric": c.get("metric"), "comparison": c.get("comparison"), "paper_number": p_text,
                         "paper_difference": sum(p_diffs) / len(p_diffs) if p_diffs else None,
                         "difference": _num(c.get("difference")),
                         "ci_low": lo, "ci_high": hi, "p_value": _num(c.get("p_value")),
                         "p_holm": _num(c.get("p_holm")), "mde": _num(c.get("mde")),
                         "mde_planned": _num(c.get("mde_planned")), "n_items": c.get("n_items"),
                         "seeds": _seeds(c.get("seeds")), "verdict": c.get("verdict") or DASH, "why": _why(c),
                         "learning": c.get("learning") if isinstance(c.get("learning"), list) else None})
        seen |= mine
    df = pd.DataFrame(rows, columns=LEDGER_COLUMNS[:-2])
    for col in ("paper_difference", "difference", "ci_low", "ci_high", "p_value", "p_holm", "mde", "mde_planned"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return replication.annotate(df)[LEDGER_COLUMNS]


def _fmt(x, spec: str) -> str:
    v = _num(x)
    return DASH if v is None else format(v, spec)


def _p(x) -> str:
    v = _num(x)
    if v is None:
        return DASH
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _scale_text(f) -> str:
    """stable_at as read: "x8" (8 times this run's evidence), ">x32" (none of replication.SCALES), "—" (none)."""
    try:
        f = float(f)
    except (TypeError, ValueError):
        return DASH
    if math.isinf(f):
        return f">x{replication.SCALES[-1]}"
    return DASH if math.isnan(f) else f"x{f:g}"


def display_frame(ledger: pd.DataFrame) -> pd.DataFrame:
    """The ledger for reading: ours as "diff [lo, hi]", p's to 3 places, "—" for anything not known."""
    out = pd.DataFrame({
        "stage": ledger["stage"], "paper": ledger["paper"], "claim": ledger["claim"], "kind": ledger["kind"],
        "paper's number": [v if isinstance(v, str) and v else DASH for v in ledger["paper_number"]],
        "ours (95% CI)": [f"{_fmt(d, '+.3f')} [{_fmt(lo, '+.3f')}, {_fmt(hi, '+.3f')}]"
                          for d, lo, hi in zip(ledger["difference"], ledger["ci_low"], ledger["ci_high"])],
        "p": [_p(v) for v in ledger["p_value"]], "p_holm": [_p(v) for v in ledger["p_holm"]],
        "mde planned / observed": [f"{_fmt(a, '.3f')} / {_fmt(b, '.3f')}"
                                   for a, b in zip(ledger["mde_planned"], ledger["mde"])],
        "verdict": ledger["verdict"], "why": [w or DASH for w in ledger["why"]],
    })
    if _has_rerun(ledger):  # repro.rerun_record: the verdict of the recorded rerun (verify --record)
        out.insert(out.columns.get_loc("verdict") + 1, "on the rerun",
                   [{True: "held", False: f"-> {v} ({k})", None: DASH}[held_flag(h)]
                    for h, v, k in zip(ledger["held"], ledger["rerun_verdict"], ledger["change"])])
    if "agreement" in ledger:  # repro.replication: how likely a rerun keeps the verdict
        out["a rerun agrees"] = [_fmt(a, ".2f") for a in ledger["agreement"]]
        out["stable at"] = [_scale_text(f) for f in ledger["stable_at"]]
    return out.reset_index(drop=True)


def held_flag(h) -> bool | None:
    """A ledger's `held` cell: True / False as recorded by repro.rerun_record, None where no rerun compared it."""
    return bool(h) if isinstance(h, bool | np.bool_) else None


def _has_rerun(ledger: pd.DataFrame) -> bool:
    return "held" in ledger and any(held_flag(h) is not None for h in ledger["held"])


def _flipped(row) -> bool:
    return held_flag(row.get("held")) is False


def markdown(df: pd.DataFrame) -> str:
    """A plain Markdown table of a frame of strings/numbers (no index); '|' in cells is escaped."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [DASH if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


claims_only = replication.claims_only  # the rows of kind "claim"


def counts(ledger: pd.DataFrame) -> pd.DataFrame:
    """Claims (kind "claim" only) per verdict class (rows: papers and "all"; columns: VERDICTS present, then
    total)."""
    ledger = claims_only(ledger)
    cls = ledger["verdict"].map(verdict_class)
    tab = pd.crosstab(ledger["paper"], cls) if len(ledger) else pd.DataFrame()
    cols = [v for v in VERDICTS if v in tab.columns]
    tab = tab.reindex(columns=cols, fill_value=0)
    if len(tab):
        tab.loc["all"] = tab.sum()
    tab["total"] = tab.sum(axis=1) if len(tab) else []
    tab.index.name = "paper"
    return tab.astype(int)


def summary(ledger: pd.DataFrame, notes: dict[str, str] | None = None) -> str:
    """One line: "14 claims: 0 reproduced, 3 opposite, 0 below_paper, 11 inconclusive, 0 not_trained (and 2 checks
    and controls, not counted); stages without results: 05_ablations"."""
    mine = claims_only(ledger)
    cls = mine["verdict"].map(verdict_class).tolist()
    parts = [f"{cls.count(v)} {v}" for v in VERDICTS if v != "unknown" or "unknown" in cls]
    line = f"{len(mine)} claims: " + ", ".join(parts)
    if len(ledger) > len(mine):
        line += f" (and {len(ledger) - len(mine)} checks and controls, not counted)"
    return line + (f"; stages without results: {', '.join(sorted(notes))}" if notes else "")


# ----------------------------------------------------------------------------------------------- forest plot
def _panel(row) -> tuple[str, str]:
    """(paper, unit group) of a claim: differences of rates live in [-1, 1] and share a panel; any other metric
    (response length in tokens, ...) gets a panel of its own so that its scale does not flatten the rates."""
    vals = [v for v in (_num(row["difference"]), _num(row["ci_low"]), _num(row["ci_high"])) if v is not None]
    return row["paper"], ("" if all(abs(v) <= 1 for v in vals) else str(row["metric"]))


def forest_figure(ledger: pd.DataFrame):
    """Difference with its 95% CI per claim, one panel per paper (own x scale; a metric outside [-1, 1] gets its
    own panel), coloured by verdict class; a claim without an interval is a hollow marker, without a difference
    nothing is drawn; a black x is the paper's own difference (mean over its columns); the dashed line is 0; a
    broken CI and a * mark a claim whose verdict changed on the recorded rerun (column `held`, repro.rerun_record)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    keys = [_panel(r) for _, r in ledger.iterrows()]
    panels = list(dict.fromkeys(keys)) or [("(no claims)", "")]
    heights = [max(keys.count(k), 1) for k in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.9 + 0.32 * sum(heights) + 0.55 * len(panels)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, key in zip(axes[:, 0], panels):
        sub = ledger[[k == key for k in keys]].reset_index(drop=True) if keys else ledger
        for i, r in sub.iterrows():
            y = len(sub) - 1 - i
            color = COLORS[verdict_class(r["verdict"])]
            d, lo, hi = _num(r["difference"]), _num(r["ci_low"]), _num(r["ci_high"])
            if lo is not None and hi is not None:  # dashed: the verdict changed on the recorded rerun
                ax.plot([lo, hi], [y, y], color=color, lw=2.2, solid_capstyle="butt", dash_capstyle="butt",
                        ls=(0, (2.5, 1.5)) if _flipped(r) else "-")
            if d is not None:
                ax.plot([d], [y], "o", color=color, mfc=color if lo is not None else "white", ms=6)
            if _num(r["paper_difference"]) is not None:
                ax.plot([r["paper_difference"]], [y], "x", color="black", ms=7, mew=1.8)
        ax.axvline(0, color="black", ls="--", lw=0.8)
        ax.set_yticks(range(len(sub)))
        ax.set_yticklabels([f"{r['claim']} [{r['stage'][:2]}]" + ("" if r["kind"] in (None, "claim") else
                                                                   f" ({r['kind']})") + (" *" if _flipped(r) else "")
                            for _, r in sub[::-1].iterrows()], fontsize=8)
        ax.set_ylim(-0.6, max(len(sub), 1) - 0.4)
        title = PAPER_TITLES.get(key[0], str(key[0]))
        ax.set_title(f"{title} · {key[1]}" if key[1] else title, fontsize=10, loc="left")
        ax.tick_params(axis="x", labelsize=8)
        if not len(sub):
            ax.text(0.5, 0.5, "no claims", ha="center", va="center", transform=ax.transAxes, color="grey")
    axes[-1, 0].set_xlabel("difference, ours (treatment − baseline, metric units; [NN] = stage)")
    handles = [Line2D([], [], color=COLORS[v], marker="o", lw=2, label=v) for v in VERDICTS
               if v in set(ledger["verdict"].map(verdict_class))]
    if ledger["paper_difference"].notna().any():
        handles.append(Line2D([], [], color="black", marker="x", ls="", mew=1.8, label="the paper's difference"))
    if any(_flipped(r) for _, r in ledger.iterrows()):
        handles.append(Line2D([], [], color="grey", lw=2, ls=(0, (2.5, 1.5)), label="* verdict changed on the rerun"))
    if handles:
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), fontsize=8, ncol=len(handles),
                   frameon=False)
    fig.suptitle("Claims ledger: every claim's difference with its 95% CI", x=0.01, ha="left")
    inch = 1 / fig.get_figheight()  # legend strip at the bottom, title at the top: fixed heights in inches
    fig.tight_layout(rect=(0, 0.4 * inch, 1, 1 - 0.35 * inch))
    return fig

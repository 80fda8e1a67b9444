"""The planned minimum detectable effect of each claim (issue 26): what the test could detect, fixed from the
validation sweep before any test item is read.

Run as: python -m repro.papers.plan --profile cpu      (prints the plan for the params' test sizes and seeds and
        writes it to figures/<profile>/04_rl_plan.md: committed with the sweep, before any test item is read)

Inputs (all from validation, results/<profile>/04_rl_sweep.json): at each paper's chosen knobs (`sweep.choose`),
    - the per-seed change of the greedy target metric from step 0 (`val_metric - val_metric_start`),
    - the 95% CI of that change pooled over the probe's items and the sweep's seeds (`val_ci_low/high`),
    - the probe's size n_val (the sweep run's `--probe-rows`).
Two variance components come out of them:
    seed_sd   the standard deviation over seeds of the mean change (ddof 1);
    item_sd   the per-image standard deviation of the paired change: the CI's standard error
              SE = (hi - lo) / (2 * 1.96) holds both parts, SE^2 = item_sd^2 / n_val + seed_sd^2 / S, so
              item_sd = sqrt(max(SE^2 - seed_sd^2 / S, 0) * n_val).
The plan for a test of C images and S' seeds is `stats.mde_planned(item_sd, C, seed_sd=seed_sd, n_seeds=S')`.
A claim between two trained arms (e.g. Dr.GRPO vs GRPO) moves on both sides, so its item_sd is taken sqrt(2)
larger than an arm-vs-start claim's (two independent changes from one start). Only claims on the paper's target
metric (the one the sweep measured) get a plan; the others (similarity, lengths, ROUGE) get None.
"""

from __future__ import annotations

import argparse
import math

import pandas as pd

Z95 = 1.959963984540054  # the two-sided 95% normal quantile of the sweep's percentile CI
# what the sweep measured (MMedPO: greedy closed VQA of its DPO arm)
TARGET = {"zhu": "accuracy", "umed": "mau_correct", "drllava": "conversation_correct", "mmedpo": "closed_correct"}
PLAN_COLUMNS = ["paper", "metric", "item_sd", "seed_sd", "n_val", "sweep_seeds", "test_images", "seeds",
                "mde_vs_start", "mde_between_arms"]
STARTS = {"SFT", "base"}  # arms that are a start, not a trained arm (a claim against one moves on one side only)


def components(rows: pd.DataFrame, choice: dict, n_val: int) -> dict | None:
    """{item_sd, seed_sd, n_val, n_seeds, val_change} of one paper at its chosen (lr, batch, steps), or None when the
    sweep has no such rows or no CI there."""
    if not choice or "lr" not in choice:
        return None
    d = rows[(rows["lr"] == choice["lr"]) & (rows["batch_size"] == choice["batch_size"])
             & (rows["step"] == choice["steps"])]
    if not len(d) or d["val_ci_low"].isna().all() or n_val < 1:
        return None
    change = (d["val_metric"] - d["val_metric_start"]).to_numpy(dtype=float)
    seed_sd = float(pd.Series(change).std(ddof=1)) if len(change) > 1 else 0.0
    se = float(d["val_ci_high"].iloc[0] - d["val_ci_low"].iloc[0]) / (2 * Z95)
    item_var = max(se**2 - seed_sd**2 / len(change), 0.0) * n_val
    return {"item_sd": math.sqrt(item_var), "seed_sd": seed_sd, "n_val": int(n_val), "n_seeds": len(change),
            "val_change": float(change.mean())}


def probe_rows(runs: list[dict], paper: str) -> int:
    """The probe size of the sweep run(s) that covered `paper` (their `--probe-rows`; the last one wins)."""
    sizes = [r.get("grid", {}).get("probe_rows") for r in runs if paper in r.get("papers", [])]
    sizes = [s for s in sizes if s]
    return int(sizes[-1]) if sizes else 0


def plans(sweep_record: dict, default_rows: dict | None = None) -> dict[str, dict]:
    """{paper: components} from the sweep file's record (rows, choice, runs). default_rows: {paper: probe size} for
    a paper whose sweep runs left `--probe-rows` at the params' value (their grid records None)."""
    from repro.papers import sweep

    rows = sweep._with_ci(pd.DataFrame(sweep_record.get("rows", []), columns=sweep.COLUMNS))
    out = {}
    for paper, choice in (sweep_record.get("choice") or {}).items():
        n_val = probe_rows(sweep_record.get("runs", []), paper) or (default_rows or {}).get(paper, 0)
        c = components(rows[rows["paper"] == paper], choice, n_val)
        if c is not None:
            out[paper] = c
    return out


def planned(plan: dict | None, paper: str, metric: str, comparison: str, n_clusters: int, n_seeds: int) -> float | None:
    """The planned MDE of one claim (None without a plan for this paper and metric). comparison: "treat - base"."""
    from repro import stats

    c = (plan or {}).get(paper)
    if c is None or TARGET.get(paper) != metric or n_clusters < 1 or n_seeds < 1:
        return None
    base = comparison.partition(" - ")[2]
    both_trained = base not in STARTS
    sd = c["item_sd"] * (math.sqrt(2) if both_trained else 1.0)
    seed_sd = c["seed_sd"] * (math.sqrt(2) if both_trained else 1.0)
    return stats.mde_planned(sd, n_clusters, seed_sd=seed_sd, n_seeds=n_seeds)


def load(profile: str) -> dict[str, dict]:
    """plans() of results/<profile>/04_rl_sweep.json ({} when the profile has no sweep)."""
    import json

    from repro import paths

    f = paths.RESULTS / profile / "04_rl_sweep.json"
    return plans(json.loads(f.read_text()), params_probe_rows(profile)) if f.exists() else {}


# the probe's items when <paper>_probe_rows is 0 ("every validation item"): task and conversation variant
WHOLE_PROBE = {"drllava": ("conv", "standard"), "umed": ("instruct", None), "zhu": ("mcq", None),
               "mmedpo": ("vqa", None)}


def params_probe_rows(profile: str) -> dict[str, int]:
    """{paper: probe size} from the profile's stage-04 params: <paper>_probe_rows, or, when it is 0, the number of
    validation rows the probe then reads (counted in the profile's stage-01 data; 0 when there is none)."""
    from repro import paths
    from repro.config import load_params
    from repro.papers import probe

    params = load_params(profile, "04_rl", check_paths=False)
    out = {}
    for paper, (task, variant) in WHOLE_PROBE.items():
        n = int(params.get(f"{paper}_probe_rows", 0) or 0)
        if not n:
            try:
                n = len(probe.val_rows(paths.data_dir(profile), task, 0, variant))
            except (FileNotFoundError, OSError, ValueError):
                n = 0
        out[paper] = n
    return out


def table(plan: dict, sizes: dict[str, int], n_seeds: int) -> pd.DataFrame:
    """One row per paper: the components and the planned MDE against the start and between two trained arms for a
    test of sizes[paper] images and n_seeds seeds."""
    out = []
    for paper, c in plan.items():
        n = sizes.get(paper, 0)
        out.append({"paper": paper, "metric": TARGET[paper], "item_sd": c["item_sd"], "seed_sd": c["seed_sd"],
                    "n_val": c["n_val"], "sweep_seeds": c["n_seeds"], "test_images": n, "seeds": n_seeds,
                    "mde_vs_start": planned(plan, paper, TARGET[paper], "x - SFT", n, n_seeds),
                    "mde_between_arms": planned(plan, paper, TARGET[paper], "x - y", n, n_seeds)})
    return pd.DataFrame(out, columns=PLAN_COLUMNS)


def test_images(params: dict, data=None) -> dict[str, int]:
    """Test images per claim of each planned paper under these stage-04 params (a claim's clusters). A limit of 0
    ("all") counts the test split's images in `data` (stage 01's folder; 0 when it is not given or not there)."""
    out = {"zhu": int(params.get("zhu_eval_limit", 0)), "umed": int(params.get("umed_eval_limit", 0)),
           "drllava": int(params.get("drllava_eval_limit", 0)) // 7,  # 7 conversation variants per image
           "mmedpo": int(params.get("mmedpo_eval_limit", 0))}  # VQA rows (a closed-VQA claim reads its closed ones)
    for paper, n in out.items():
        if not n and data is not None:
            out[paper] = count_images(data, *WHOLE_PROBE[paper])
    return out


def count_images(data, task: str, variant: str | None) -> int:
    """Distinct test images of `task` (of one conversation variant) in the stage-01 folder `data` (0 when absent)."""
    from repro.papers import probe

    try:
        return len({str(r["id"]) for r in probe.val_rows(data, task, 0, variant, split="test")})
    except (FileNotFoundError, OSError, ValueError):
        return 0


def main(argv=None) -> int:
    from repro import paths
    from repro.config import load_params
    from repro.results import to_markdown

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    a = ap.parse_args(argv)
    params = load_params(a.profile, "04_rl")
    seeds = len(params.get("seeds", [params.get("seed", 0)]))
    md = to_markdown(table(load(a.profile), test_images(params, paths.data_dir(a.profile)), seeds).round(4))
    out = paths.figures_dir(a.profile) / "04_rl_plan.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md + "\n")
    print(md)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

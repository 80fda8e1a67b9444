"""The validation sweep that chooses each paper's RL knobs (issue 25): lr x prompts per step x steps x seeds, every
cell judged on the fixed validation probe (repro.papers.probe), never on test.

Run as: python -m repro.papers.sweep --profile cpu [--papers drllava umed zhu mmedpo] [--lrs 1e-5 3e-5 1e-4]
        [--batches 4 8] [--steps 24] [--seeds 0 1] [--points 4] [--probe-rows 64]
        python -m repro.papers.sweep --profile cpu --merge OTHER/results/cpu/04_rl_sweep.json  (a sweep run elsewhere)

Each (paper, lr, batch, seed) is one stage-04 arm trained for the longest `steps` with the probe scored at `points`
points along it; a shorter run is the same run stopped earlier (constant lr, and each step is a pure function of
(seed, step, weights)), so every probe point is a row of the sweep: (lr, batch, step, seed). Not so for MMedPO:
its DPO follows a cosine schedule over the run's length, so each `--steps` is its own run (`--points 1`). The
cells are arms in the stage's worker pool (cached by key under runs/<profile>/models/rl, marked probe_only: not
evaluated on test).

Choice, per paper: among the (lr, batch, step) settings whose greedy target metric on the probe did not fall (the
paired CI of its change from step 0, over items and seeds, reaches 0: on a few dozen probe items one answer moves
the mean by 0.02, so "the mean did not drop" would be a coin flip), the one with the largest probe-reward gain
(mean over seeds). Written to
results/<profile>/04_rl_sweep.json (rows + choice; stage 04 copies it into metrics.sweep) and
figures/<profile>/04_rl_sweep.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import pandas as pd

from repro.papers import common

SWEEPABLE = ("umed", "zhu", "drllava", "mmedpo")
# each paper's swept arm; MMedPO's is plain DPO: DPO and MMedPO share the knobs, and DPO is the arm that must learn
# for either comparison to count (MMedPO's weights and visual pairs only add signal)
METHOD = {"umed": "SFT+AAR", "zhu": "SFT+grpo", "drllava": "SFT+PPO (rule reward)", "mmedpo": "DPO"}
COLUMNS = ["paper", "lr", "batch_size", "step", "seed", "probe_gain", "reward", "reward_start", "val_metric",
           "val_metric_start", "val_pass1", "val_ci_low", "val_ci_high", "seconds"]


def cell_jobs(paper: str, cfg, stage: common.Stage, lrs, batches, steps: int, seeds, points: int) -> list[common.Job]:
    """One probe-only arm per (lr, batch, seed) of the paper's method arm (METHOD)."""
    from repro.papers import MODULES

    template = next(j for j in MODULES[paper].jobs(cfg, stage) if j.method == METHOD[paper])
    out = []
    for lr in lrs:
        for b in batches:
            c = dataclasses.replace(cfg, lr=float(lr), batch_size=int(b), steps=int(steps), probe_points=int(points))
            for s in seeds:
                out.append(common.Job(paper, template.method, int(s), template.fn, c, stage,
                                      {**template.extra, "probe_only": True}))
    return out


def rows_of(recs: list[dict], jobs: list[common.Job]) -> pd.DataFrame:
    """Sweep rows from the cells' records: one per (cell, probe point after step 0)."""
    out = []
    for rec, job in zip(recs, jobs, strict=True):
        pts = pd.DataFrame(rec.get("probe_points") or [])
        if not len(pts) or 0 not in set(pts["step"]):
            continue
        first = pts[pts["step"] == 0].iloc[0]
        for _, p in pts[pts["step"] > 0].iterrows():
            out.append({"paper": job.paper, "lr": job.cfg.lr, "batch_size": job.cfg.batch_size, "step": int(p["step"]),
                        "seed": job.seed, "probe_gain": float(p["reward"] - first["reward"]),
                        "reward": float(p["reward"]), "reward_start": float(first["reward"]),
                        "val_metric": float(p["target_greedy"]), "val_metric_start": float(first["target_greedy"]),
                        "val_pass1": float(p["target_pass1"]), "seconds": rec.get("seconds")})
    rows = pd.DataFrame(out, columns=COLUMNS)
    return rows.drop(columns=["val_ci_low", "val_ci_high"]).merge(val_cis(jobs), how="left",
                                                                  on=["paper", "lr", "batch_size", "step"])[COLUMNS]


def val_cis(jobs: list[common.Job]) -> pd.DataFrame:
    """Per (paper, lr, batch, step): the 95% CI of the greedy validation metric's change from step 0, paired over the
    probe's items and the setting's seeds (repro.stats.compare on the cells' probe.csv), the noise the choice rule
    must look through: on 48-64 probe items one answer moves the mean by 0.02."""
    from repro.papers import probe

    tables: dict[tuple, dict] = {}
    for job in jobs:
        f = job.folder / "probe.csv"
        if f.exists():
            t = probe.read_table(f)
            tables.setdefault((job.paper, job.cfg.lr, job.cfg.batch_size), {})[job.seed] = t
    out = []
    for (paper, lr, batch), by_seed in tables.items():
        steps = sorted(set.intersection(*(set(t["step"]) for t in by_seed.values())) - {0})
        for step in steps:
            cut = {s: t[t["step"].isin([0, step])] for s, t in by_seed.items()}
            r = probe.learned(cut, col="target_greedy")
            out.append({"paper": paper, "lr": lr, "batch_size": batch, "step": int(step),
                        "val_ci_low": r["ci_low"], "val_ci_high": r["ci_high"]})
    return pd.DataFrame(out, columns=["paper", "lr", "batch_size", "step", "val_ci_low", "val_ci_high"])


SCHEDULED = ("mmedpo",)  # papers whose lr schedule spans the run: a run's length is part of its cell


def merge(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """The sweep file's rows after a run: `new` plus every row of `old` whose cell the run did not redo. A cell is
    (paper, lr, batch, seed) (its probe points are one run's), and also the step for SCHEDULED papers."""
    def cells(d: pd.DataFrame) -> list[tuple]:
        return [(p, lr, b, s, st if p in SCHEDULED else None)
                for p, lr, b, s, st in d[["paper", "lr", "batch_size", "seed", "step"]].itertuples(index=False)]

    ran = set(cells(new))
    keep = [c not in ran for c in cells(old)]
    return pd.concat([old[keep], new], ignore_index=True) if len(old) else new


def merge_runs(old: list[dict], new: list[dict]) -> list[dict]:
    """The sweep file's run records: a command run again replaces its older record, unless it is the same run
    (same `finished_at`) folded in again by --merge: then the record already in the file stays (it may carry a
    note or a provenance filled in since)."""
    def finished(r: dict):
        return (r.get("provenance") or {}).get("finished_at")

    latest = {r.get("command"): r for r in old}
    for r in new:
        same = latest.get(r.get("command"))
        if same is None or finished(same) is None or finished(same) != finished(r):
            latest[r.get("command")] = r
    return list(latest.values())


def _with_ci(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with the val_ci_* columns (NaN where a file predates them)."""
    return rows.reindex(columns=list(dict.fromkeys([*rows.columns, "val_ci_low", "val_ci_high"])))


def choose(rows: pd.DataFrame) -> dict:
    """{paper: {lr, batch_size, step, probe_gain, val_metric_change, val_ci}} by the rule of the module docstring: a
    setting is eligible when its greedy validation metric did not fall, i.e. the paired CI of its change (items x
    seeds, `val_cis`) reaches 0 or above (without a CI: the mean change >= 0). A paper with no eligible setting gets
    {"none": reason}."""
    out = {}
    rows = _with_ci(rows)
    for paper, d in rows.groupby("paper"):
        cols = ["probe_gain", "val_change", "val_ci_low", "val_ci_high"]
        agg = d.assign(val_change=d["val_metric"] - d["val_metric_start"]).groupby(
            ["lr", "batch_size", "step"], as_index=False)[cols].mean()
        kept = agg["val_ci_high"].where(agg["val_ci_high"].notna(), agg["val_change"]) >= 0
        ok = agg[kept]
        if not len(ok):
            out[paper] = {"none": "every setting lowered the greedy validation metric"}
            continue
        best = ok.sort_values(["probe_gain", "step"], ascending=[False, True]).iloc[0]
        out[paper] = {"lr": float(best["lr"]), "batch_size": int(best["batch_size"]), "steps": int(best["step"]),
                      "probe_gain": float(best["probe_gain"]), "val_metric_change": float(best["val_change"]),
                      "val_ci": [float(best["val_ci_low"]), float(best["val_ci_high"])]}
    return out


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """The sweep's readable table: per (paper, lr, prompts per step, step) the mean over seeds of the probe-reward
    gain and of the greedy validation metric's change, with the seeds' range of the gain."""
    d = _with_ci(rows).assign(val_change=rows["val_metric"] - rows["val_metric_start"])
    g = d.groupby(["paper", "lr", "batch_size", "step"], as_index=False)
    out = g.agg(seeds=("seed", "nunique"), probe_gain=("probe_gain", "mean"), gain_min=("probe_gain", "min"),
                gain_max=("probe_gain", "max"), val_metric_change=("val_change", "mean"),
                val_ci_low=("val_ci_low", "mean"), val_ci_high=("val_ci_high", "mean"))
    return out.rename(columns={"batch_size": "prompts_per_step"})


def load(profile: str) -> dict:
    """metrics.sweep of stage 04: {paper: {"rows": [...], "choice": {...}}} from results/<profile>/04_rl_sweep.json
    ({} when no sweep was run for this profile)."""
    from repro import paths

    f = paths.RESULTS / profile / "04_rl_sweep.json"
    if not f.exists():
        return {}
    rec = json.loads(f.read_text())
    rows = pd.DataFrame(rec["rows"], columns=COLUMNS)
    return {p: {"rows": d.drop(columns="paper").to_dict(orient="records"), "choice": rec["choice"].get(p)}
            for p, d in rows.groupby("paper")}


def figure(rows: pd.DataFrame):
    """Probe-reward gain (top) and greedy validation metric change (bottom) vs step, one panel per paper, one line
    per (lr, batch), band = the seeds."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    papers = list(dict.fromkeys(rows["paper"]))
    fig, axes = plt.subplots(2, len(papers), figsize=(5 * len(papers), 6.5), squeeze=False)
    for j, paper in enumerate(papers):
        d = rows[rows["paper"] == paper].assign(
            setting=lambda x: "lr " + x["lr"].map("{:.0e}".format) + ", " + x["batch_size"].astype(str) + " prompts",
            val_change=lambda x: x["val_metric"] - x["val_metric_start"])
        panels = [("probe_gain", "probe reward gain"), ("val_change", "greedy val metric change")]
        for i, (q, label) in enumerate(panels):
            ax = axes[i][j]
            sns.lineplot(data=d, x="step", y=q, hue="setting", marker="o", errorbar=("pi", 100), ax=ax,
                         legend=(i == 1))
            if i == 1:
                ax.legend(title="setting", loc="upper center", bbox_to_anchor=(0.5, -0.4), fontsize=8)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_title(f"{paper}: {label}", fontsize=10)
    fig.suptitle("Validation sweep (fixed probe; band = seeds)", fontsize=11)
    fig.tight_layout()
    return fig


def publish(profile: str, rows: pd.DataFrame, runs: list[dict]) -> dict:
    """Fold `rows` (and the `runs` that made them) into results/<profile>/04_rl_sweep.json (merge: a cell redone
    replaces its rows) and redraw figures/<profile>/04_rl_sweep.{csv,md,png,pdf}. Returns the file's record."""
    from repro import paths, plots, results

    out = paths.RESULTS / profile / "04_rl_sweep.json"
    old = json.loads(out.read_text()) if out.exists() else {"rows": [], "choice": {}, "runs": []}
    rows = merge(pd.DataFrame(old["rows"], columns=COLUMNS), rows)
    record = {"choice": choose(rows), "rows": rows.to_dict(orient="records"),
              "runs": merge_runs(old.get("runs", []), runs)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results.clean(record), indent=1) + "\n")
    tmp.replace(out)
    figs = paths.figures_dir(profile)
    figs.mkdir(parents=True, exist_ok=True)
    rows.to_csv(figs / "04_rl_sweep.csv", index=False)
    table = summary(rows).assign(lr=lambda d: d["lr"].map("{:.0e}".format))
    (figs / "04_rl_sweep.md").write_text(results.to_markdown(table))
    if len(rows):
        plots.setup_style()
        fig = figure(rows)
        for ext in ("png", "pdf"):
            fig.savefig(figs / f"04_rl_sweep.{ext}")
    return record


def main(argv=None) -> int:
    from repro import results
    from repro.config import load_params
    from repro.papers import configs_from, stage_from

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--papers", nargs="+", default=list(SWEEPABLE), choices=SWEEPABLE)
    ap.add_argument("--lrs", nargs="+", type=float, default=[1e-5, 3e-5, 1e-4])
    ap.add_argument("--batches", nargs="+", type=int, default=[4, 8])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--probe-rows", type=int, default=None, help="probe items per cell (default: the params')")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--merge", default=None, help="fold another sweep file's rows and runs into this profile's "
                                                  "(a sweep run in another checkout); trains nothing")
    a = ap.parse_args(argv)
    if a.merge:
        other = json.loads(Path(a.merge).read_text())
        record = publish(a.profile, pd.DataFrame(other["rows"], columns=COLUMNS), other.get("runs", []))
        print(json.dumps(record["choice"], indent=1))
        return 0
    t0 = time.time()
    params = load_params(a.profile, "04_rl")
    stage = stage_from(params)
    stage = dataclasses.replace(stage, eval_split="val", workers=a.workers or stage.workers)
    cfgs = configs_from(params)
    if a.probe_rows is not None:
        cfgs = {p: dataclasses.replace(c, probe_rows=a.probe_rows) for p, c in cfgs.items()}
    jobs = [j for p in a.papers for j in cell_jobs(p, cfgs[p], stage, a.lrs, a.batches, a.steps, a.seeds, a.points)]
    recs, _ = common.run_jobs(jobs, stage.n_workers())
    args = sys.argv[1:] if argv is None else list(argv)
    run = {"command": " ".join(["python -m repro.papers.sweep", *args]), "papers": a.papers,
           "grid": {"lrs": a.lrs, "batches": a.batches, "steps": a.steps, "seeds": a.seeds, "points": a.points,
                    "probe_rows": a.probe_rows},
           "provenance": results.provenance(argparse.Namespace(profile=a.profile, stem="04_rl"), t0)}
    record = publish(a.profile, rows_of(recs, jobs), [run])
    print(json.dumps(record["choice"], indent=1))
    print(f"{len(jobs)} cells, {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

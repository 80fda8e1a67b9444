"""Judge stage 04's claims over several whole runs pooled: each run's start becomes the start of its own seeds.

Why (issue 26): every seed of one run shares stage 02's start, so a claim's CI holds the RL seeds' noise but not the
start's, and a rerun on another float path (another start) changes verdicts that sit near a boundary. Two whole
runs are two draws of the start: pooling them as a start per seed (what stage 02's `start_seeds` would buy, at the
price of a second run) says which verdicts survive once the start's variation is inside the CI.

How: run k's seed s becomes seed s + k * OFFSET; its deterministic rows (the start, seed None) are copied to each of
its seeds, so every arm is paired with its own run's start (stats.pair by seed and item; both runs score the same
test items, 01's data being the same bytes). The learned rule pools every seed's probe table; the planned MDE is
the committed plan's at the pooled seed count. The bootstrap resamples the pooled seeds as independent, so with
runs of three seeds it understates the start's share (two starts cannot estimate it well anyway).

Only 04: its results keep every arm's records and per-row scores (results/<profile>/04_rl_scores.csv.gz), and its
claims are one list (repro.papers.claims.CLAIMS); 05 keeps no scores file and 06 builds its claims per study.

Run as: python tools/pool_runs.py RUN_ROOT [RUN_ROOT ...]   (each a checkout holding results/<profile>/04_rl*)
Prints each run's verdict beside the pooled one; --out FILE.json writes the table, the learned rules and each run's
commit and kernels (committed: results/cpu/pooled_04_aten-default.json, the committed run and its aten-default rerun).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

OFFSET = 100  # seed s of run k -> s + k * OFFSET (training seeds are small integers)
STAGE = "04_rl"


def load_run(root: Path, stage: str, profile: str) -> tuple[dict, dict]:
    """(results record, {paper: {"records", "rows"}}) of one run's stage, from its results JSON and scores file."""
    f = root / "results" / profile / f"{stage}.json"
    try:
        rec = json.loads(f.read_text())
        rows = pd.read_csv(root / "results" / profile / f"{stage}_scores.csv.gz",  # gzip by its suffix
                           dtype={"item": str, "cluster": str, "variant": str})
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"pool_runs: {root}: cannot read {stage}'s results ({e})") from None
    runs = {}
    for paper, records in (rec.get("metrics") or {}).get("runs", {}).items():
        gone = [r["probe_file"] for r in records if r.get("probe_file") and not Path(r["probe_file"]).exists()]
        if gone:  # the learned rule reads every seed's probe table: only where that run's arms were trained
            raise SystemExit(f"pool_runs: {f}: {paper}'s probe table {gone[0]} is not on this machine (the learned "
                             "rule needs each seed's table; pool on the machine that ran it)")
        runs[paper] = {"records": records, "rows": rows[rows["paper"] == paper].reset_index(drop=True)}
    if not runs:
        raise SystemExit(f"pool_runs: {f}: no metrics.runs (not a stage with arms)")
    return rec, runs


def relabel(runs: dict, k: int) -> dict:
    """Run k's seeds moved to s + k * OFFSET; each deterministic row copied to every seed of its paper's arms."""
    out = {}
    for paper, run in runs.items():
        seeds = sorted({int(r["seed"]) for r in run["records"] if r["seed"] is not None})
        recs = [{**r, "seed": None if r["seed"] is None else int(r["seed"]) + k * OFFSET} for r in run["records"]]
        rows = run["rows"].copy()
        det = rows["seed"].isna()
        seeded = rows[~det].assign(seed=lambda d: d["seed"].astype(int) + k * OFFSET)
        copies = [rows[det].assign(seed=s + k * OFFSET) for s in seeds]
        out[paper] = {"records": recs, "rows": pd.concat([seeded, *copies], ignore_index=True)}
    return out


def pool(all_runs: list[dict]) -> dict:
    """{paper: {"records", "rows"}} of every run, relabelled (relabel) and concatenated."""
    pooled: dict[str, dict] = {}
    for k, runs in enumerate(all_runs):
        for paper, run in relabel(runs, k).items():
            p = pooled.setdefault(paper, {"records": [], "rows": []})
            p["records"] += run["records"]
            p["rows"].append(run["rows"])
    return {p: {"records": v["records"], "rows": pd.concat(v["rows"], ignore_index=True)} for p, v in pooled.items()}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", type=Path)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from repro.papers import claims
    from repro.papers import plan as plan_lib

    loaded = [load_run(r, STAGE, args.profile) for r in args.roots]
    plan = plan_lib.load(args.profile)
    pooled = claims.ledger(pool([runs for _, runs in loaded]), plan=plan)
    table = pooled[["paper", "claim", "kind", "difference", "ci_low", "ci_high", "mde_planned", "verdict"]].copy()
    for k, (rec, _) in enumerate(loaded):
        each = {(c["paper"], c["claim"]): c["verdict"] for c in rec["metrics"].get("claims", [])}
        table.insert(3 + k, f"run {k}", [each.get((p, c), "—") for p, c in zip(table["paper"], table["claim"])])
    table["per_seed"] = [" / ".join(f"{x:+.3f}" for x in s) if isinstance(s, list) else "—"
                         for s in pooled["per_seed"]]
    with pd.option_context("display.max_colwidth", 70, "display.width", 250, "display.float_format", "{:+.3f}".format):
        print(table.to_string(index=False))
    rules = {(p, r["method"]): r for p, ls in zip(pooled["paper"], pooled["learning"]) if isinstance(ls, list)
             for r in ls}
    print("\nlearned rule over the pooled seeds (probe gain, 95% CI):")
    for (p, m), r in rules.items():
        print(f"  {p:8s} {m:40s} {r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] "
              f"{'learned' if r['learned'] else 'NOT learned'}")
    if args.out:
        runs = [{"root": str(r), "sha": (rec["provenance"].get("git") or {}).get("sha"),
                 "cpu_capability": (rec["provenance"].get("hardware") or {}).get("cpu_capability")}
                for r, (rec, _) in zip(args.roots, loaded)]
        out = {"command": "python tools/pool_runs.py " + " ".join(argv), "stage": STAGE, "runs": runs,
               "seed_offset": OFFSET, "claims": json.loads(table.to_json(orient="records")),
               "learned": [{"paper": p, "method": m, **{k: r[k] for k in ("difference", "ci_low", "ci_high",
                                                                          "learned")}} for (p, m), r in rules.items()]}
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

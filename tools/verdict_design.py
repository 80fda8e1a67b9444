"""Which design would make stage 04's verdicts survive a rerun (another CPU)? Seeds or test items, per claim.

Run as: python tools/verdict_design.py [--profile cpu] [--items 1 2 3] [--seeds 3 6 9] [--target 0.9]

Reads the committed per-item scores (results/<profile>/04_rl_scores.csv.gz) and claims (04_rl.json, through the
stage-07 ledger). For each claim of kind "claim": its standard error split into the part from test images and the
part from training seeds (repro.stats.se_parts), and for each design (x k test items, S seeds) the standard error
    SE' = sqrt(SE_items^2 / k + SE_seeds^2 * S_now / S)
and the chance that two runs of that design agree on the verdict, the truth taken at the measured difference
(repro.replication.two_run_agreement). Prints the per-claim table, then the expected share of 04's verdicts that
two runs of each design would disagree on. Items beyond the test split need a larger split (stage 01's
split_fractions / image counts); seeds cost a training run each.
"""

from __future__ import annotations

import argparse
import math

import pandas as pd

from repro import ledger, paths, replication, stats
from repro.papers import claims as claims_lib


def components(scores: pd.DataFrame) -> dict[str, tuple[float, float, int, int]]:
    """claim text -> (SE from images, SE from seeds, images, seeds) for stage 04's claims (kind "claim")."""
    out = {}
    for c in claims_lib.CLAIMS:
        if c.kind != "claim":
            continue
        run = {"rows": scores[scores["paper"] == c.paper]}
        t = claims_lib.scores(run, c.treat, c.metric, c.variant, c.sources)
        b = claims_lib.scores(run, c.base, c.metric, c.variant, c.sources)
        if len(t) and len(b):
            p = stats.pair(t, b)
            out[c.claim] = (*stats.se_parts(p), len(p.sizes), len(p.seeds))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--items", type=float, nargs="+", default=[1, 2, 3], help="test-item multiples")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 6, 9], help="training seeds")
    ap.add_argument("--target", type=float, default=replication.TARGET)
    args = ap.parse_args(argv)
    res = paths.RESULTS / args.profile
    records, _ = ledger.load_results(res, args.profile, stages=("04_rl",))
    led = ledger.build(records)
    led = led[led["kind"] == "claim"]
    parts = components(pd.read_csv(res / "04_rl_scores.csv.gz"))
    designs = [(k, s) for s in args.seeds for k in args.items]
    rows, agree = [], {d: [] for d in designs}
    for r in led.to_dict("records"):
        if r["claim"] not in parts or not math.isfinite(r["agreement"]):
            continue
        se_c, se_s, n_c, n_s = parts[r["claim"]]
        line = {"claim": replication.short_label(r["claim"], 60), "verdict": r["verdict"], "diff": r["difference"],
                "images": n_c, "SE images": se_c, "SE seeds": se_s, "agrees now": r["agreement"]}
        for k, s in designs:
            a = replication.two_run_agreement(r, se=math.sqrt(se_c**2 / k + se_s**2 * n_s / s))
            agree[(k, s)].append(a)
            line[f"x{k:g} items, {s} seeds"] = a
        rows.append(line)
    pd.set_option("display.width", 250)
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    print(f"\nexpected share of 04's {len(rows)} predicted verdicts two runs disagree on "
          f"(target <= {1 - args.target:.0%})")
    table = pd.DataFrame({f"{s} seeds": {f"x{k:g} items": sum(1 - a for a in agree[(k, s)]) / max(len(rows), 1)
                                         for k in args.items} for s in args.seeds})
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()

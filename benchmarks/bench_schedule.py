"""How stage 04's arms pack onto workers: per-paper pools vs one pool, job order vs longest first, 1-8 workers.

Run as: .venv/bin/python benchmarks/bench_schedule.py [--profile cpu]

A model, not a timing: it replays the measured single-thread seconds of every job of a finished run
(`metrics.runs` of results/<profile>/04_rl.json, and the starting points' seconds from their arm files under
runs/<profile>/models/rl/ when that folder is there) through list scheduling: each job, in submission order, goes
to the worker that frees first. The makespans are wall-time lower bounds (no process start-up, no contention);
the measured wall time of the run is printed beside them. Why: it says what a scheduling change buys before
paying for a cpu run, and what a bigger machine would take (more workers, the same one-thread jobs).
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def makespan(seconds: list[float], workers: int) -> float:
    """Greedy list scheduling in the given order: each job starts on the worker that frees first."""
    free = [0.0] * max(1, workers)
    for s in seconds:
        heapq.heapreplace(free, free[0] + s)
    return max(free)


STAGE = "04_rl"  # 05 and 06 read 04's arms back (0 s in their runs): their records would mislead


def jobs_of(profile: str) -> tuple[list[tuple[str, str, float]], float | None]:
    """([(paper, method, seconds)] of every job the run recorded, in the notebook's job order), its wall time."""
    from repro import paths

    rl = paths.models_dir(profile) / "rl"
    recs = json.loads((ROOT / "results" / profile / f"{STAGE}.json").read_text())
    runs = recs["metrics"].get("runs", {})
    out = []
    for paper in ("umed", "zhu", "mmedpo", "drllava"):
        start = sorted(rl.glob(f"{paper}/start-*/arm.json"), key=lambda f: f.stat().st_mtime)
        if start:
            out.append((paper, "start", json.loads(start[-1].read_text())["seconds"]))
        out += [(paper, r["method"], float(r["seconds"])) for r in runs.get(paper, [])]
    return out, recs["provenance"].get("wall_time_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    a = ap.parse_args()
    f = ROOT / "results" / a.profile / f"{STAGE}.json"
    if not f.exists():
        print(f"{f} not found: run the stage first (python -m repro run --profile {a.profile})")
        return
    jobs, wall = jobs_of(a.profile)
    total = sum(s for _, _, s in jobs)
    print(f"{a.profile} {STAGE}: {len(jobs)} jobs, {total:.0f} single-thread seconds "
          f"({'with' if any(m == 'start' for _, m, _ in jobs) else 'WITHOUT'} the starting points); "
          f"measured wall {wall or float('nan'):.0f} s")
    print(f"{'workers':>7} | {'per-paper pools':>15} | {'one pool':>9} | {'one pool, longest first':>23} | "
          f"{'ratio per-paper / LPT':>21}")
    for w in (1, 2, 4, 8):
        per_paper = sum(makespan([s for p, _, s in jobs if p == paper], w)
                        for paper in dict.fromkeys(p for p, _, _ in jobs))
        one = makespan([s for _, _, s in jobs], w)
        lpt = makespan(sorted((s for _, _, s in jobs), reverse=True), w)
        print(f"{w:>7} | {per_paper:>13.0f} s | {one:>7.0f} s | {lpt:>21.0f} s | {per_paper / lpt:>21.2f}")


if __name__ == "__main__":
    main()

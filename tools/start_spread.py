"""How far apart are the starts of one recipe? Stage 04's four starting points (validation greedy / pass@1 / pass@k,
the jobs 04 runs) of each SFT start on disk: models/sft and every models/sft-s<seed> that stage 02's `start_seeds`
trained.

Run as: python tools/start_spread.py [--profile cpu] [--seeds 0 1 2] [--threads 1]

Seed 0 (or whichever is not in a models/sft-s<seed> folder) reads models/sft. The starts are cached like 04's arms
(runs/<profile>/models/rl/<paper>/start-s<seed>-...), so a second call only prints. Prints one row per seed and
paper and the spread (max - min) of the greedy start per paper.
"""

from __future__ import annotations

import argparse
import dataclasses

import pandas as pd
import torch

from repro import config, papers, paths
from repro.papers import common


def starts(profile: str, seeds: list[int]) -> pd.DataFrame:
    p04 = config.load_params(profile, "04_rl", check_paths=False)
    own = [s for s in seeds if (paths.models_dir(profile) / f"sft-s{s}" / "final").exists()]
    stage = dataclasses.replace(papers.stage_from(p04), start_seeds=own, workers=1)
    cfgs = papers.configs_from(p04)
    rows = []
    for s in seeds:
        for paper, mod in papers.MODULES.items():
            rec, _ = common.run_job(dataclasses.replace(mod.start_job(cfgs[paper], stage), seed=s))
            rows.append({"seed": s, "start": common.start_name(stage, "sft", s), "paper": paper,
                         **{k: rec["metrics"][k] for k in ("greedy", "pass1", "passk")}})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (04's arms run on one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    table = starts(args.profile, args.seeds)
    print(table.round(3).to_string(index=False))
    spread = table.groupby("paper")["greedy"].agg(lambda g: g.max() - g.min())
    print("greedy spread (max - min) over the starts:", spread.round(3).to_dict())


if __name__ == "__main__":
    main()

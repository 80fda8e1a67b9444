"""What a probe point costs at two sizes: UMed-LVLM's probe (AAR on probe_k sampled answers per validation
instruction, VRR from a frozen eager copy of the start, plus the greedy answer) on the profile's SFT start, one
thread, timed back to back.

Run as: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_probe.py [--profile cpu] [--rows 100 0] [--k 4]
        (needs stages 01-02 of the profile; rows 0 = every validation row)

Prints seconds per point for each size and the ratio to the first: what `umed_probe_rows` costs per probe point
of every probed UMed arm (two points per arm at `umed_probe_points: 1`; step 0 is shared by a start's seeds).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, like an arm in its worker

import torch  # noqa: E402

from repro import evaluation as ev  # noqa: E402
from repro import paths  # noqa: E402
from repro.models import load_vlm  # noqa: E402
from repro.papers import probe, umed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--rows", type=int, nargs="+", default=[100, 0], help="probe sizes (0 = every validation row)")
    ap.add_argument("--k", type=int, default=4, help="sampled answers per item (umed_probe_k)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data, sft = paths.data_dir(args.profile), paths.models_dir(args.profile) / "sft" / "final"
    model, processor = load_vlm(sft)
    fns = [umed.aar_reward(umed.UMedConfig(vrr_source="frozen", aar_scale="sum"), sft)]  # as an arm's probe
    first = None
    for n in args.rows:
        spec = probe.Spec(task="instruct", rows=probe.val_rows(data, "instruct", n), reward_fns=fns,
                          metric="mau_correct", k=args.k, max_new_tokens=ev.MAX_NEW_TOKENS["instruct"])
        t0 = time.perf_counter()
        probe.score(model, processor, spec)
        sec = time.perf_counter() - t0
        first = first or sec
        print(f"probe rows {n or 'all'} ({len(spec.rows)} items) x k={args.k}: {sec:6.1f} s per point, "
              f"{sec / first:.2f}x the first size")


if __name__ == "__main__":
    main()

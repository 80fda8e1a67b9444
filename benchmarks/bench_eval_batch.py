"""Greedy evaluation throughput against the batch size (stage 04/06's `eval_batch_size`) and the new-token budget.

Run as: .venv/bin/python benchmarks/bench_eval_batch.py [--profile cpu] [--rows 256] [--threads 1] [--budgets]

Times evaluation.generate on the first `rows` test rows of each single-turn task (and generate_conversation on a
quarter as many conversations) at each batch size, back to back on the same model, and prints rows/s relative to
batch 32 (the ratio is what means something on a noisy machine) and how many answers differ from batch 32's
(greedy answers should not depend on the batch; a few can flip where two logits tie to float precision, since
left padding changes the shapes the kernels see). --budgets instead compares each task's budget
(evaluation.MAX_NEW_TOKENS) with twice that budget at batch 32: speed-up and answers that differ. Needs the
profile's SFT model (stage 02) and data (stage 01).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--tasks", nargs="+", default=["mcq", "instruct", "vqa", "report", "conv"])
    ap.add_argument("--budgets", action="store_true", help="budget vs twice the budget instead of batch sizes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from repro import evaluation as ev
    from repro import paths
    from repro.models import load_vlm

    model_dir, data = paths.models_dir(args.profile) / "sft" / "final", paths.data_dir(args.profile)
    if not (model_dir / "config.json").exists():
        raise SystemExit(f"{model_dir}: no SFT model; run stages 01-02 of profile {args.profile} first")
    model, processor = load_vlm(model_dir, device="cpu", dtype="fp32")
    ref = "twice the budget" if args.budgets else "batch 32"
    print(f"{args.profile} SFT model, {args.threads} thread(s); rows/s, speed-up and answers that differ vs {ref}")
    for task in args.tasks:
        n = args.rows // 4 if task == "conv" else args.rows
        rows = ev.load_rows(data, task, "test", n)
        budget = ev.MAX_NEW_TOKENS[task]
        gen = ev.generate_conversation if task == "conv" else ev.generate
        # (batch, budget) pairs, the reference first
        settings = ([(32, 2 * budget), (32, budget)] if args.budgets
                    else [(32, budget)] + [(bs, budget) for bs in sorted(set(args.sizes) - {32})])
        gen(model, processor, rows[:8], budget, 8, progress=False)  # warm-up, so the reference is not charged it
        runs = {}
        for bs, new in settings:
            t = time.perf_counter()
            preds = gen(model, processor, rows, new, bs, progress=False)
            runs[(bs, new)] = (time.perf_counter() - t, preds)
        ref_s, ref = runs[settings[0]]
        for (bs, new), (s, preds) in runs.items():
            diff = sum(a != b for a, b in zip(preds, ref, strict=True))
            print(f"  {task:9s} batch {bs:4d} budget {new:4d}: {len(rows) / s:7.1f} rows/s  x{ref_s / s:4.2f}  "
                  f"{diff}/{len(rows)} differ")


if __name__ == "__main__":
    main()

"""Generation with rows leaving the batch at EOS and an in-place KV cache (repro.train.decode) against plain
`model.generate`, on a trained model of a finished run, in one process: time ratios and whether the answers agree.

Run as: .venv/bin/python benchmarks/bench_decode.py [--profile cpu] [--model sft] [--rows 256] [--convs 96]

Needs stages 01-02 of the profile (runs/<profile>/data, runs/<profile>/models/<model>/final). Three workloads, each
timed both ways back to back (greedy MCQ answers, MCQ answers sampled at temperature 1, five-turn conversations with
the turn cache), one torch thread as stage 04's workers use. "plain" swaps decode.generate for the model's own
generate and decode.GrowingCache for DynamicCache. Greedy answers must be identical; sampled ones come from another
random stream, so only their time is compared.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager


@contextmanager
def plain_generation():
    """repro's generation paths with model.generate and a DynamicCache, as before repro.train.decode."""
    from transformers import DynamicCache

    from repro.train import decode

    saved = decode.generate, decode.GrowingCache, decode.growing
    decode.generate = lambda model, fn, generation_config=None, **kw: fn(generation_config=generation_config, **kw)
    decode.GrowingCache = lambda ddp_cache_data=None, spare=0: DynamicCache(ddp_cache_data=ddp_cache_data)
    decode.growing = lambda cache: cache
    try:
        yield
    finally:
        decode.generate, decode.GrowingCache, decode.growing = saved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--model", default="sft")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--convs", type=int, default=96)
    args = ap.parse_args()

    import torch

    from repro import evaluation as ev
    from repro import paths
    from repro.models import load_vlm

    torch.set_num_threads(1)
    folder = paths.models_dir(args.profile) / args.model / "final"
    if not folder.exists():
        raise SystemExit(f"{folder}: no trained model — run stages 01-02 of profile '{args.profile}' first")
    model, processor = load_vlm(folder, device="cpu", dtype="fp32")
    model.eval()
    data = paths.data_dir(args.profile)
    mcq = ev.load_rows(data, "mcq", "test", limit=args.rows)
    conv = ev.load_rows(data, "conv", "test", limit=args.convs)
    work = {
        "mcq greedy": lambda: ev.generate(model, processor, mcq, ev.MAX_NEW_TOKENS["mcq"], 32, progress=False),
        "mcq sampled T=1": lambda: ev.generate(model, processor, mcq, ev.MAX_NEW_TOKENS["mcq"], 32, 1.0,
                                               progress=False),
        "conversations": lambda: ev.generate_conversation(model, processor, conv, ev.MAX_NEW_TOKENS["conv"], 32,
                                                          progress=False),
    }
    print(f"{args.profile}/{args.model}: {len(mcq)} MCQ rows, {len(conv)} conversations, batch 32, 1 thread")
    print(f"{'workload':18} {'plain s':>8} {'decode s':>9} {'ratio':>6}  answers")
    for name, fn in work.items():
        torch.manual_seed(0)
        with plain_generation():
            t = time.perf_counter()
            a = fn()
            plain_s = time.perf_counter() - t
        torch.manual_seed(0)
        t = time.perf_counter()
        b = fn()
        fast_s = time.perf_counter() - t
        same = sum(x == y for x, y in zip(a, b, strict=True))
        print(f"{name:18} {plain_s:8.1f} {fast_s:9.1f} {fast_s / plain_s:6.2f}  {same}/{len(a)} identical")


if __name__ == "__main__":
    main()

"""SynthMed generation rate (images/s) on one core.

Run as: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_synthmed.py [--n-per-class 100] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import time

# One core: set before numpy loads so BLAS/OpenMP pools stay single-threaded even if the caller forgot.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from repro.data import synthmed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-per-class", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--difficulty", type=float, default=0.5)
    args = ap.parse_args()
    counts = synthmed.default_counts(args.n_per_class)
    synthmed.generate(0, synthmed.default_counts(1), args.size, args.difficulty)  # warm the per-size caches
    t0 = time.perf_counter()
    recs = synthmed.generate(1, counts, args.size, args.difficulty)
    dt = time.perf_counter() - t0
    print(f"all sources: {len(recs)} images of {args.size}x{args.size} in {dt:.2f} s -> {len(recs) / dt:,.0f} images/s")
    for source, per_cat in counts.items():
        t0 = time.perf_counter()
        n = len(synthmed.generate(2, {source: per_cat}, args.size, args.difficulty))
        print(f"  {source:13s} {n / (time.perf_counter() - t0):8,.0f} images/s")


if __name__ == "__main__":
    main()

"""SynthMed generation rate (images/s) on one core, and what drawing with repro.libm costs against numpy's kernels.

Run as: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_synthmed.py [--n-per-class 100] [--size 64]

The libm line times the same generation twice back to back, once as the code draws (repro.libm: the C library's
scalar functions, the same bytes on every CPU) and once with numpy's CPU-dispatched np.exp / np.sin / np.cos /
np.power swapped in (as before), and prints the ratio; the per-size caches are cleared before each.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import contextmanager

# One core: set before numpy loads so BLAS/OpenMP pools stay single-threaded even if the caller forgot.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from repro import libm  # noqa: E402
from repro.data import synthmed, synthmed_draw, synthmed_lesions, synthmed_marrow  # noqa: E402


@contextmanager
def numpy_kernels():
    """repro.libm's functions replaced by numpy's own (what SynthMed called before it drew with libm)."""
    saved = libm.exp, libm.sin, libm.cos, libm.pow
    libm.exp, libm.sin, libm.cos = np.exp, np.sin, np.cos
    libm.pow = lambda x, p: np.asarray(x) ** p
    try:
        yield
    finally:
        libm.exp, libm.sin, libm.cos, libm.pow = saved


def _timed(counts, size, difficulty) -> float:
    for cached in (synthmed_draw._axes, synthmed_draw._pools, synthmed_lesions._ribs, synthmed_marrow._sprites):
        cached.cache_clear()
    t0 = time.perf_counter()
    synthmed.generate(1, counts, size, difficulty)
    return time.perf_counter() - t0


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
    t_libm = _timed(counts, args.size, args.difficulty)
    with numpy_kernels():
        t_numpy = _timed(counts, args.size, args.difficulty)
    print(f"libm vs numpy kernels (caches cleared): {t_libm:.2f} s vs {t_numpy:.2f} s -> {t_libm / t_numpy:.2f}x")


if __name__ == "__main__":
    main()

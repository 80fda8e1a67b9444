"""exp / sin / cos / pow with the same bits on every CPU, for anything that draws data.

Why: numpy picks its transcendental kernels by the CPU it runs on. On an AVX512 machine np.exp, np.sin, np.cos
and `x ** 1.15` run SVML or numpy's AVX512 kernels, on an AVX2 machine the C library or numpy's FMA kernels, and on
a CPU without FMA yet another path (on one AVX2 machine np.sin of float32 gives other bits with
NPY_DISABLE_CPU_FEATURES=X86_V3). The results differ in the last bit, and a last bit now and then moves a pixel
across a uint8 rounding step: SynthMed was not the same bytes on AVX2 and AVX512 machines (stage 01's
records_fingerprint 62b06b... against 7e7a8e...), so "the sealed test split" was not one set of pixels.

How: each value goes through Python's `math` module (the C library's scalar function, which numpy's dispatch does
not touch), element by element. The C library is the same on every machine of this project (Debian's glibc), and it
takes the same (FMA) variant of these functions on every AVX2 and AVX512 CPU, so the bits are the same too (a CPU
without FMA would take glibc's SSE2 variant). float32 input gives float32 output (computed in float64, then
rounded), so callers keep their dtypes. The cost is a Python call per element: SynthMed takes 1.2x the time of
numpy's kernels (benchmarks/bench_synthmed.py; seconds for the cpu profile's 3,800 images). On AVX2 machines these
are the bits numpy gave there (its float64 exp / sin / cos and float32 pow are the C library's on AVX2; float32 sin
is numpy's own, and rounding it from float64 moved no pixel), so the data of AVX2 machines did not change
(62b06b...). On AVX512 machines it changes to that too, if numpy's kernels were all that differed there: not yet
seen on one (no AVX512 machine since); test_libm's dispatch test compares AVX512 kernels with the baseline on one.

Use these, not np.exp / np.sin / np.cos / np.power / a non-integer `**`, in code that makes data
(tests/unit/test_libm.py checks the data modules for it).
"""

from __future__ import annotations

import math
from itertools import repeat

import numpy as np


def _apply(fn, x, *args):
    """fn (a `math` function of one value and fixed extra arguments) element by element.

    Types follow numpy's ufuncs, so a call site keeps its arithmetic: a float32 array or scalar gives float32,
    anything else float64, and a scalar gives a numpy scalar (np.float64 is a strong type in numpy's promotion:
    `float32_array * np.cos(t)` is float64 where `float32_array * math.cos(t)` would stay float32)."""
    a = np.asarray(x)
    out_dtype = np.float32 if a.dtype == np.float32 else np.float64
    if a.ndim == 0:
        return out_dtype(fn(float(a), *args))
    flat = a.astype(np.float64).ravel().tolist()
    out = np.fromiter(map(fn, flat, *(repeat(float(v)) for v in args)), dtype=np.float64, count=len(flat))
    return out.reshape(a.shape).astype(out_dtype)


def exp(x):
    return _apply(math.exp, x)


def sin(x):
    return _apply(math.sin, x)


def cos(x):
    return _apply(math.cos, x)


def pow(x, p: float):  # noqa: A001 - the name of the function it stands for
    """x ** p for a non-integer p (x >= 0); p is first rounded to x's dtype, as numpy's `x ** p` does.
    Integer powers need none of this: numpy's x ** 2 is an exact multiplication."""
    p = float(np.float32(p)) if np.asarray(x).dtype == np.float32 else float(p)
    return _apply(math.pow, x, p)

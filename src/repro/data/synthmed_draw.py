"""SynthMed drawing primitives: cached coordinate axes and noise pools, anti-aliased ellipses painted in place.

Shared by the lesion scenes (synthmed_lesions.py) and the bone-marrow fields (synthmed_marrow.py). Geometry is in
normalised coordinates (-1..1, y down; 1 unit = size/2 px) so any image size works. Speed comes from caching axes
and noise pools per image size (lru_cache) and from painting small shapes only inside their bounding window.
The helpers keep their leading underscore: they are internal to the synthmed* modules, not a public API.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from repro import libm

# ---- caches


@lru_cache(maxsize=32)
def _axes(size: int) -> np.ndarray:
    """Pixel-centre coordinates in -1..1; X is axes[None, :], Y is axes[:, None] (broadcasting, no full grid)."""
    return ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)


def _blurred_noise(rng: np.random.Generator, n: int, sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian-blurred white noise (periodic FFT blur; built once per size, so speed is moot)."""
    white = rng.standard_normal((n, n))
    f = np.fft.fftfreq(n)
    kernel = libm.exp(-2 * (np.pi * sigma_px) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    out = np.fft.ifft2(np.fft.fft2(white) * kernel).real
    return ((out - out.mean()) / out.std()).astype(np.float32)


@lru_cache(maxsize=32)
def _pools(size: int) -> dict[str, np.ndarray]:
    # Fixed seed: the pools are part of the generator, not of the sample, so crops of them stay deterministic.
    rng = np.random.default_rng(20240531)
    n = 3 * size
    return {
        "white": rng.standard_normal((n, n)).astype(np.float32),
        "fine": _blurred_noise(rng, n, max(0.8, size / 64)),
        "coarse": _blurred_noise(rng, n, size / 10),
    }


def _crop(rng: np.random.Generator, kind: str, size: int, shape=None) -> np.ndarray:
    """A random size x size window of a cached noise pool (free: a view, optionally flipped)."""
    pool = _pools(size)[kind]
    h, w = shape or (size, size)
    y, x = rng.integers(0, pool.shape[0] - h + 1), rng.integers(0, pool.shape[1] - w + 1)
    win = pool[y : y + h, x : x + w]
    return win[::-1] if rng.random() < 0.5 else win


# ---- shapes


def _clip01(x):
    """In-place clip to 0..1 with bare ufuncs (np.clip's Python wrapper costs more than the math at 64x64)."""
    return np.minimum(np.maximum(x, 0, out=x), 1, out=x)


def _window(size, cx, cy, ext):
    """Pixel slices covering centre +- ext (normalised units), clipped to the image."""
    half = size / 2
    x0, x1 = int(max(0, np.floor((cx - ext + 1) * half))), int(min(size, np.ceil((cx + ext + 1) * half) + 1))
    y0, y1 = int(max(0, np.floor((cy - ext + 1) * half))), int(min(size, np.ceil((cy + ext + 1) * half) + 1))
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def _ellipse(size, cx, cy, rx, ry, angle=0.0, win=None, soft=1.0):
    """Anti-aliased ellipse alpha (0..1) inside window `win` (default: its own bounding window).

    alpha > 0.5 exactly where the normalised distance d < 1, so `alpha > 0.5` is the hard mask.
    """
    win = win or _window(size, cx, cy, max(rx, ry) + 2.0 / size)
    ax = _axes(size)
    dx, dy = ax[win[1]][None, :] - cx, ax[win[0]][:, None] - cy
    if angle:
        c, s = libm.cos(angle), libm.sin(angle)
        dx, dy = dx * c + dy * s, dy * c - dx * s
    d = (dx / rx) ** 2 + (dy / ry) ** 2
    # Edge ramp ~`soft` pixels wide: d changes by about 2/r_px per pixel near the rim.
    k = min(rx, ry) * size / 4 / soft
    return win, _clip01((1 - d) * k + 0.5)


def _union_window(size, shapes, pad=2.0):
    xs = [s[0] for s in shapes]
    ys = [s[1] for s in shapes]
    ext = [max(s[2], s[3]) for s in shapes]
    x0, x1 = min(x - e for x, e in zip(xs, ext)), max(x + e for x, e in zip(xs, ext))
    y0, y1 = min(y - e for y, e in zip(ys, ext)), max(y + e for y, e in zip(ys, ext))
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2 + pad / size
    return _window(size, cx, cy, half)


def _blobs(size, shapes, win=None):
    """Union (max) of ellipses (cx, cy, rx, ry[, angle]) on one shared window."""
    win = win or _union_window(size, shapes)
    alpha = None
    for s in shapes:
        _, a = _ellipse(size, *s[:4], angle=s[4] if len(s) > 4 else 0.0, win=win)
        alpha = a if alpha is None else np.maximum(alpha, a)
    return win, alpha


def _paint(canvas, win, alpha, value):
    """Composite towards `value` (scalar or RGB) with alpha, in place."""
    region = canvas[win]
    if canvas.ndim == 3:
        alpha = alpha[..., None]
    region += alpha * (np.asarray(value, dtype=np.float32) - region)


def _full(size):
    return slice(0, size), slice(0, size)

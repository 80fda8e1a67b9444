"""SynthMed: procedural, seeded medical-looking images that follow the data contract of `schema.py`.

Every source has its own anatomy (CT slices, chest X-rays, colonoscopy, bone-marrow aspirate) and every
category a distinct shape/texture/intensity, so a tiny 64x64 ViT has real structure to learn and a lesion
mask/bbox to be rewarded on. Geometry is in normalised coordinates (-1..1, y down) so any image size works.

Record `extra` keys:
  CT / X-ray / endoscopy: size ("small"|"medium"|"large", from the bbox side), location (3x3 grid word of the
      bbox centre in *image* terms: "upper left", "upper", ..., "center", ..., "lower right"), site (organ the
      lesion sits in: deeplesion = its region, "kidney", "lung", "lung base" (effusion), "heart" (cardiomegaly),
      "upper lobe" (tuberculosis), "colon wall"); all "" for normal images.
      Chest X-rays also carry ctr (cardiothoracic ratio; > 0.5 means cardiomegaly).
  bone_marrow: quality, blast_frac, plasma_frac, n_nucleated, diagnosis (Dr-LLaVA decision-tree facts).
      Bone marrow has bboxes [] and an all-zero mask (no single lesion), so `mask.any() == bool(bboxes)` holds
      for every record.
Every image draws one lesion at most (one bbox). difficulty 0..1 lowers lesion contrast (x1 -> x0.35), shrinks
lesions (x1.2 -> x0.75), raises sensor noise (sd 0.012 -> 0.082 of full scale) and, for bone marrow, brings the
blast/plasma fractions closer to (never across) the decision thresholds and varies the stain more.
Speed comes from caching grids, noise pools and cell sprites per image size, and from painting small shapes only
inside their bounding window.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from functools import lru_cache

import numpy as np

from repro.data.schema import NORMAL, SOURCES

# Smallest lesion, in pixels across, by default: the floor that keeps a tiny lesion from vanishing at 64 px.
# A larger floor (data knob min_lesion_px) makes the smallest lesions (nodules, kidney stones: 3-5 px at 64 px)
# big enough for an 8-px-patch ViT to box them.
MIN_LESION_PX = 1.2

# ---- caches


@lru_cache(maxsize=32)
def _axes(size: int) -> np.ndarray:
    """Pixel-centre coordinates in -1..1; X is axes[None, :], Y is axes[:, None] (broadcasting, no full grid)."""
    return ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)


def _blurred_noise(rng: np.random.Generator, n: int, sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian-blurred white noise (periodic FFT blur; built once per size, so speed is moot)."""
    white = rng.standard_normal((n, n))
    f = np.fft.fftfreq(n)
    kernel = np.exp(-2 * (np.pi * sigma_px) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
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
        c, s = np.cos(angle), np.sin(angle)
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


# ---- lesion bookkeeping

_LOC = [["upper left", "upper", "upper right"], ["left", "center", "right"], ["lower left", "lower", "lower right"]]


def _finish_lesion(size, mask, win, alpha, site):
    """Write alpha>0.5 into the mask; return bbox + extra (size word, location word, site)."""
    hard = alpha > 0.5
    if not hard.any():  # tiny images: keep at least the brightest pixel so every lesion has a box
        hard = (alpha >= alpha.max()) & (alpha > 0)
    mask[win] |= hard.astype(np.uint8)
    ys, xs = np.nonzero(mask)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    side = max(box[2] - box[0], box[3] - box[1]) / size
    size_word = "small" if side < 0.15 else "medium" if side < 0.3 else "large"
    col = min(2, int(3 * (box[0] + box[2]) / 2 / size))
    row = min(2, int(3 * (box[1] + box[3]) / 2 / size))
    return [box], {"size": size_word, "location": _LOC[row][col], "site": site}


class _Knobs:
    """Difficulty -> lesion contrast, lesion size scale and noise level (monotone in difficulty); min_lesion_px ->
    the smallest lesion radius in normalised units (a lesion `min_lesion_px` pixels across: 1 unit = size/2 px)."""

    def __init__(self, difficulty: float, min_lesion_px: float | None = None, size: int = 64):
        d = float(np.clip(difficulty, 0.0, 1.0))
        self.contrast = 1.0 - 0.65 * d
        self.scale = 1.2 - 0.45 * d
        self.noise = 0.012 + 0.07 * d
        self.min_r = float(MIN_LESION_PX if min_lesion_px is None else min_lesion_px) / size


# ---- CT


def _ct_body(size, rng):
    g = np.full((size, size), 0.03, np.float32)  # air
    rx, ry = rng.uniform(0.82, 0.92), rng.uniform(0.62, 0.74)
    _paint(g, *_ellipse(size, 0, 0.05, rx, ry, win=_full(size)), 0.33)  # subcutaneous fat (darker than muscle)
    _paint(g, *_ellipse(size, 0, 0.05, rx - 0.07, ry - 0.07, win=_full(size)), 0.46)  # muscle / soft tissue
    _paint(g, *_ellipse(size, 0, 0.05 + ry - 0.22, 0.1, 0.09), 0.92)  # vertebral body
    return g, rx, ry


def _render_ct(size, rng, category, region, k, mask):
    g, rx, ry = _ct_body(size, rng)
    tex = _crop(rng, "fine", size)
    lesion_site = region
    if region == "lung":
        sides = []
        for sx in (-1, 1):
            cx, cy = sx * rng.uniform(0.36, 0.44), rng.uniform(-0.08, 0.0)
            lrx, lry = rng.uniform(0.27, 0.33), ry - rng.uniform(0.12, 0.2)
            _paint(g, *_ellipse(size, cx, cy, lrx, lry, win=_full(size)), 0.07)
            sides.append((cx, cy, lrx, lry))
        g += 0.02 * tex
        for _ in range(rng.integers(3, 7)):  # vessels: tiny bright dots so a nodule is not the only bright dot
            cx, cy, lrx, lry = sides[rng.integers(2)]
            t, r = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.7)
            _paint(g, *_ellipse(size, cx + r * lrx * np.cos(t), cy + r * lry * np.sin(t), 0.025, 0.025), 0.3)
        cx, cy, lrx, lry = sides[rng.integers(2)]
        room = (lrx * 0.55, lry * 0.6)
    elif region == "liver":
        cx, cy = -rng.uniform(0.3, 0.4), rng.uniform(-0.1, 0.0)
        lrx, lry = rng.uniform(0.42, 0.5), ry - rng.uniform(0.1, 0.18)
        _paint(g, *_ellipse(size, cx, cy, lrx, lry, angle=rng.uniform(-0.3, 0.1), win=_full(size)), 0.64)
        _paint(g, *_ellipse(size, rng.uniform(0.35, 0.5), -0.15, 0.2, 0.16), 0.12)  # stomach air
        _paint(g, *_ellipse(size, 0.12, 0.05 + ry - 0.42, 0.07, 0.07), 0.78)  # aorta (contrast-enhanced)
        g += 0.025 * tex
        room = (lrx * 0.5, lry * 0.5)
    elif region == "abdomen":
        bowel = _crop(rng, "coarse", size)
        body = _ellipse(size, 0, 0.05, rx - 0.12, ry - 0.15, win=_full(size))[1]
        g += body * (0.09 * bowel + 0.04 * tex)  # loop-like texture: coarse blobs of wall and content
        for _ in range(rng.integers(4, 8)):  # gas bubbles inside bowel loops
            _paint(g, *_ellipse(size, rng.uniform(-0.6, 0.6), rng.uniform(-0.4, 0.3), 0.05, 0.04), 0.06)
        cx, cy, room = 0.0, -0.05, (0.4, 0.25)
    else:  # pelvis: bony ring, femoral heads, bladder
        pcx, pcy, prx, pry = 0.0, rng.uniform(0.0, 0.12), rng.uniform(0.5, 0.6), rng.uniform(0.38, 0.46)
        ring_w, ring = _ellipse(size, pcx, pcy, prx, pry, win=_full(size))
        inner = _ellipse(size, pcx, pcy, prx - 0.09, pry - 0.09, win=_full(size))[1]
        _paint(g, ring_w, _clip01(ring - inner), 0.9)
        for sx in (-1, 1):
            _paint(g, *_ellipse(size, sx * (prx + 0.12), pcy + 0.15, 0.13, 0.13), 0.88)
        _paint(g, *_ellipse(size, 0, pcy - 0.1, 0.2, 0.16), 0.3)  # bladder (fluid)
        g += 0.025 * tex
        cx, cy, room = pcx, pcy, (prx * 0.45, pry * 0.45)
    if category == NORMAL:
        return g, [], {"size": "", "location": "", "site": ""}
    lx, ly = cx + rng.uniform(-1, 1) * room[0], cy + rng.uniform(-1, 1) * room[1]
    c, s = k.contrast, k.scale
    if category == "nodule":  # small, bright, round, sharp
        r = max(rng.uniform(0.05, 0.08) * s, k.min_r)
        win, a = _ellipse(size, lx, ly, r, r * rng.uniform(0.9, 1.1))
        g[win] += a * 0.4 * c
    elif category == "cyst":  # darker fluid, smooth round, thin bright rim
        r = rng.uniform(0.11, 0.16) * s
        e, rim = rng.uniform(0.85, 1.0), 3.0 / size  # rim ~1.5 px thick
        win, outer = _ellipse(size, lx, ly, r, r * e)
        inner = _ellipse(size, lx, ly, r - rim, (r - rim) * e, win=win)[1]
        g[win] += c * (0.18 * _clip01(outer - inner) - 0.32 * inner)
        a = outer
    else:  # mass: large, irregular, lobulated, heterogeneous
        r = rng.uniform(0.17, 0.24) * s
        shapes = [(lx, ly, r, r * 0.8, rng.uniform(0, 3))]
        for _ in range(rng.integers(2, 5)):
            t = rng.uniform(0, 2 * np.pi)
            shapes.append(
                (
                    lx + 0.6 * r * np.cos(t),
                    ly + 0.6 * r * np.sin(t),
                    r * rng.uniform(0.45, 0.7),
                    r * rng.uniform(0.35, 0.6),
                    rng.uniform(0, 3),
                )
            )
        win, a = _blobs(size, shapes)
        het = _crop(rng, "fine", size, a.shape)
        sign = 1.0 if region == "lung" or rng.random() < 0.5 else -1.0  # lung masses are always denser than air
        g[win] += a * c * (sign * 0.26 + 0.09 * het)
    site = {"lung": "lung", "liver": "liver", "abdomen": "abdomen", "pelvis": "pelvis"}[lesion_site]
    boxes, extra = _finish_lesion(size, mask, win, a, site)
    return g, boxes, extra


def _render_kidney(size, rng, category, k, mask):
    g, rx, ry = _ct_body(size, rng)
    g += 0.025 * _crop(rng, "fine", size)
    kid = []
    for sx in (-1, 1):
        cx, cy = sx * rng.uniform(0.4, 0.5), rng.uniform(0.1, 0.25)
        krx, kry, ang = rng.uniform(0.13, 0.16), rng.uniform(0.2, 0.24), sx * rng.uniform(0.2, 0.45)
        _paint(g, *_ellipse(size, cx, cy, krx, kry, angle=ang), 0.68)  # enhancing cortex
        _paint(g, *_ellipse(size, cx - sx * 0.05, cy, krx * 0.4, kry * 0.45, angle=ang), 0.38)  # renal sinus
        kid.append((cx, cy, krx, kry, ang))
    _paint(g, *_ellipse(size, -0.3, -0.35, 0.35, 0.22), 0.58)  # liver edge above the right kidney
    if category == NORMAL:
        return g, [], {"size": "", "location": "", "site": ""}
    cx, cy, krx, kry, _ = kid[rng.integers(2)]
    r = max(rng.uniform(0.035, 0.06) * k.scale, k.min_r)
    win, a = _ellipse(size, cx + rng.uniform(-0.4, 0.4) * krx, cy + rng.uniform(-0.5, 0.5) * kry, r, r * 0.9)
    _paint(g, win, a, 0.68 + 0.32 * (0.4 + 0.6 * k.contrast))  # stones stay brighter than bone at any difficulty
    boxes, extra = _finish_lesion(size, mask, win, a, "kidney")
    return g, boxes, extra


# ---- chest X-ray


@lru_cache(maxsize=32)
def _ribs(size: int) -> np.ndarray:
    """Rib stripes, 2x taller than the image so a vertical crop shifts the rib phase for free."""
    ax = _axes(size)
    y = np.concatenate([ax, ax + 2.0])[:, None]
    return (np.clip(np.sin(2 * np.pi * 4.2 * (y - 0.28 * ax[None, :] ** 2)), 0, 1) ** 2).astype(np.float32)


def _render_cxr(size, rng, source, category, k, mask):
    g = np.full((size, size), 0.08, np.float32)
    _paint(g, *_ellipse(size, 0, 0.35, rng.uniform(0.92, 1.0), 1.25, win=_full(size)), 0.5)  # soft tissue
    lungs = []
    lung_alpha = np.zeros((size, size), np.float32)
    for sx in (-1, 1):
        cx, cy = sx * rng.uniform(0.37, 0.43), rng.uniform(-0.12, -0.04)
        lrx, lry = rng.uniform(0.26, 0.31), rng.uniform(0.55, 0.63)
        win, a = _ellipse(size, cx, cy, lrx, lry, win=_full(size))
        lung_alpha = np.maximum(lung_alpha, a)
        lungs.append((cx, cy, lrx, lry))
    g += lung_alpha * (0.16 - g)
    off = rng.integers(0, size)
    g += 0.1 * lung_alpha * _ribs(size)[off : off + size]
    _paint(g, *_ellipse(size, 0, 0, 0.09, 1.1, win=_full(size)), 0.72)  # spine / mediastinum
    for sx in (-1, 1):  # clavicles
        _paint(g, *_ellipse(size, sx * 0.33, -0.72, 0.32, 0.035, angle=-sx * 0.25), 0.7)
    thorax = (lungs[1][0] + lungs[1][2]) - (lungs[0][0] - lungs[0][2])
    ctr = rng.uniform(0.36, 0.44) if category != "cardiomegaly" else rng.uniform(0.6, 0.68) - 0.12 * (1 - k.contrast)
    hrx = ctr * thorax / 2
    hcx, hcy, hry = 0.08 + 0.2 * hrx, rng.uniform(0.28, 0.36), rng.uniform(0.22, 0.27) * (0.6 + ctr)
    hwin, ha = _ellipse(size, hcx, hcy, hrx, hry, angle=-0.2)
    _paint(g, hwin, ha, 0.74)
    g += 0.03 * _crop(rng, "fine", size)
    if source == "tbx11k":
        g = np.clip(g, 0, 1) ** 1.15  # a different scanner look so the two chest sources are not pixel-identical
    extra = {"size": "", "location": "", "site": "", "ctr": round(float(ctr), 3)}
    if category == NORMAL:
        return g, [], extra
    side = rng.integers(2)
    cx, cy, lrx, lry = lungs[side]
    c = k.contrast
    if category == "nodule":
        r = max(rng.uniform(0.05, 0.08) * k.scale, k.min_r)
        win, a = _ellipse(size, cx + rng.uniform(-0.5, 0.5) * lrx, cy + rng.uniform(-0.55, 0.35) * lry, r, r)
        g[win] += a * 0.35 * c
        site = "lung"
    elif category == "effusion":  # basal fluid; meniscus rises towards the lateral chest wall
        win, lung = _ellipse(size, cx, cy, lrx, lry)  # this lung only
        ax = _axes(size)
        lat = (ax[win[1]][None, :] - cx) * (1 if side == 1 else -1) / lrx  # -1 medial .. +1 lateral
        level = cy + lry * (1 - rng.uniform(0.5, 0.8) * k.scale)
        surface = level - 0.1 * (lat + 1) ** 2
        fluid = _clip01((ax[win[0]][:, None] - surface) * (size / 3) + 0.5)
        heart = np.zeros_like(g)
        heart[hwin] = ha
        a = fluid * lung * (1 - heart[win])  # fluid seen beside, not through, the heart shadow
        _paint(g, win, a, 0.16 + 0.5 * c)
        site = "lung base"
    elif category == "cardiomegaly":
        win, a = hwin, ha  # the lesion is the (enlarged) heart shadow itself
        site = "heart"
    else:  # tuberculosis: patchy upper-lobe opacities, sometimes with a cavity
        ux, uy = cx + rng.uniform(-0.3, 0.3) * lrx, cy - lry * rng.uniform(0.45, 0.6)
        spread = 0.13 * k.scale
        shapes = [
            (
                ux + rng.uniform(-1, 1) * spread,
                uy + rng.uniform(-0.8, 0.8) * spread,
                max(rng.uniform(0.045, 0.08) * k.scale, k.min_r),
                max(rng.uniform(0.04, 0.07) * k.scale, k.min_r),
                rng.uniform(0, 3),
            )
            for _ in range(rng.integers(4, 8))
        ]
        shapes[0] = (ux, uy, *shapes[0][2:])  # the cluster centre lies inside the lung, so the mask is never empty
        win, a = _blobs(size, shapes)
        a = a * (lung_alpha[win] > 0.5)
        g[win] += a * c * (0.38 + 0.1 * _crop(rng, "fine", size, a.shape))
        if rng.random() < 0.4:  # cavity: dark lucent centre with an opaque wall
            s0 = shapes[0]
            _, ca = _ellipse(size, s0[0], s0[1], 0.6 * s0[2], 0.6 * s0[2], win=win)
            g[win] -= ca * a * 0.3 * c
        site = "upper lobe"
    boxes, ex = _finish_lesion(size, mask, win, a, site)
    extra.update(ex)
    return g, boxes, extra


# ---- endoscopy


def _render_endo(size, rng, category, k, mask):
    ax = _axes(size)
    lx, ly = rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.35)
    d2 = (ax[None, :] - lx) ** 2 + (ax[:, None] - ly) ** 2
    r = np.sqrt(d2)
    lr = rng.uniform(0.22, 0.32)
    # Lumen: light falls off with depth, so brightness grows with the distance from the lumen centre.
    light = np.clip(r / (lr * 2.2), 0.08, 1.0) ** 0.8
    folds = 0.06 * np.sin(2 * np.pi * r * rng.uniform(2.5, 3.5) + rng.uniform(0, 6))  # haustral rings
    tone = 1 + 0.08 * _crop(rng, "coarse", size)
    base = np.array([0.86, 0.44, 0.4], np.float32) * rng.uniform(0.9, 1.05, 3).astype(np.float32)
    img = (light * tone + folds)[..., None] * base
    fov = (ax[None, :] ** 2 + ax[:, None] ** 2) < 1.12  # round endoscope field of view, black corners
    img *= fov[..., None]
    for _ in range(rng.integers(0, 3)):  # wet-mucosa glints, so a highlight alone does not mean polyp
        t, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0.45, 0.8)
        _paint(img, *_ellipse(size, rr * np.cos(t), rr * np.sin(t), 0.03, 0.02), (1.0, 0.97, 0.95))
    if category == NORMAL:
        return img, [], {"size": "", "location": "", "site": ""}
    pr = rng.uniform(0.16, 0.28) * k.scale
    t = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(lr + pr, 0.75 - pr * 0.3)
    px, py = np.clip(lx + dist * np.cos(t), -0.7, 0.7), np.clip(ly + dist * np.sin(t), -0.7, 0.7)
    # Raised dome: paler than mucosa and out of the lumen's shadow, lit from the scope (upper left), casting a
    # dark crescent on the far side, with a fine pit-pattern texture.
    wide, ring = _ellipse(size, px + 0.3 * pr, py + 0.3 * pr, pr * 1.12, pr * 1.12)
    img[wide] *= 1 - 0.45 * k.contrast * ring[..., None]
    win, a = _ellipse(size, px, py, pr, pr * rng.uniform(0.8, 1.0), angle=rng.uniform(0, 3))
    sx = (ax[win[1]][None, :] - px) / pr
    sy = (ax[win[0]][:, None] - py) / pr
    shade = (1.0 + 0.4 * (-0.7 * sx - 0.7 * sy) + 0.06 * _crop(rng, "fine", size, a.shape))[..., None]
    polyp = np.array([0.96, 0.6, 0.52], np.float32) * shade
    img[win] += a[..., None] * (0.3 + 0.7 * k.contrast) * (polyp - img[win])
    _paint(
        img,
        *_ellipse(size, px - 0.35 * pr, py - 0.35 * pr, 0.25 * pr + 1 / size, 0.18 * pr + 1 / size),
        (1.0, 1.0, 1.0),
    )  # specular highlight on the dome
    boxes, extra = _finish_lesion(size, mask, win, a, "colon wall")
    return img, boxes, extra


# ---- bone marrow

_N_VARIANTS = 12
_CELL_R = {"rbc": 0.085, "blast": 0.15, "plasma": 0.12, "other": 0.1}  # radius as a fraction of the image side


def _sprite_canvas(rpx):
    n = int(np.ceil(2 * rpx + 3))
    c = np.arange(n, dtype=np.float32) - (n - 1) / 2
    return c[None, :], c[:, None], n


def _disc(x, y, cx, cy, rx, ry, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, (y - cy) * c - (x - cx) * s
    d = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    return np.clip((1 - d) * min(rx, ry) + 0.5, 0, 1)


def _make_sprite(kind, size, rng):
    """(transmittance 1-alpha, premultiplied RGB) of one cell drawn in pixels; built once per image size."""
    rpx = max(1.0, _CELL_R[kind] * size / 2)
    x, y, n = _sprite_canvas(rpx * 1.2)
    rgb = np.zeros((n, n, 3), np.float32)

    def layer(a, col):
        nonlocal rgb
        rgb += a[..., None] * (np.asarray(col, np.float32) - rgb)

    if kind == "rbc":  # pale red biconcave disc with central pallor
        a = _disc(x, y, 0, 0, rpx, rpx * rng.uniform(0.85, 1.0), rng.uniform(0, 3)) * 0.85
        layer(a / 0.85, (0.86, 0.36, 0.42))
        layer(_disc(x, y, 0, 0, rpx * 0.4, rpx * 0.4) * 0.35, (0.95, 0.7, 0.72))
    elif kind == "blast":  # large; big round nucleus with fine chromatin and a nucleolus; scant cytoplasm
        a = _disc(x, y, 0, 0, rpx, rpx * rng.uniform(0.9, 1.0), rng.uniform(0, 3))
        layer(a, (0.62, 0.6, 0.86))
        nuc = _disc(x, y, rng.uniform(-0.08, 0.08) * rpx, 0, rpx * 0.82, rpx * 0.8)
        layer(nuc, (0.5, 0.3, 0.66))
        rgb += nuc[..., None] * 0.05 * rng.standard_normal((n, n, 1)).astype(np.float32)  # fine chromatin
        layer(_disc(x, y, rpx * 0.25, -rpx * 0.2, rpx * 0.2, rpx * 0.2) * 0.7, (0.66, 0.5, 0.8))  # nucleolus
    elif kind == "plasma":  # oval; eccentric dark nucleus; deep-blue cytoplasm with a pale perinuclear halo
        ang = rng.uniform(0, 2 * np.pi)
        a = _disc(x, y, 0, 0, rpx * 1.15, rpx * 0.82, ang)
        layer(a, (0.3, 0.4, 0.78))
        ox, oy = 0.45 * rpx * np.cos(ang), 0.45 * rpx * np.sin(ang)
        layer(_disc(x, y, -0.15 * ox, -0.15 * oy, rpx * 0.3, rpx * 0.3) * 0.6, (0.7, 0.75, 0.92))
        layer(_disc(x, y, ox, oy, rpx * 0.52, rpx * 0.5, ang), (0.2, 0.08, 0.28))
    else:  # other nucleated (granulocytes etc.): smaller, pinkish-grey cytoplasm, 2-4 nuclear lobes
        a = _disc(x, y, 0, 0, rpx, rpx * rng.uniform(0.85, 1.0), rng.uniform(0, 3))
        layer(a, (0.86, 0.74, 0.8))
        t0 = rng.uniform(0, 2 * np.pi)
        for i in range(rng.integers(2, 5)):
            t = t0 + i * rng.uniform(0.9, 1.4)
            lobe = _disc(x, y, 0.42 * rpx * np.cos(t), 0.42 * rpx * np.sin(t), rpx * 0.32, rpx * 0.3)
            layer(lobe, (0.34, 0.15, 0.45))
    rgb *= a[..., None] > 0.01  # keep the premultiplication exact outside the cell
    return (1 - a[..., None]).astype(np.float32), (rgb * a[..., None]).astype(np.float32)


@lru_cache(maxsize=32)
def _sprites(size: int) -> dict[str, list]:
    rng = np.random.default_rng(7)
    return {kind: [_make_sprite(kind, size, rng) for _ in range(_N_VARIANTS)] for kind in _CELL_R}


def _stamp(img, sprite, cx, cy, gain):
    trans, prem = sprite
    n, size = trans.shape[0], img.shape[0]
    x0, y0 = int(cx) - n // 2, int(cy) - n // 2
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(size, x0 + n), min(size, y0 + n)
    if xa >= xb or ya >= yb:
        return
    region = img[ya:yb, xa:xb]
    region *= trans[ya - y0 : yb - y0, xa - x0 : xb - x0]
    sp = prem[ya - y0 : yb - y0, xa - x0 : xb - x0]
    region += sp if gain == 1.0 else gain * sp


def _marrow_counts(category, rng, difficulty):
    """Integer cell counts whose fractions satisfy Dr-LLaVA's rules with a margin (>= 0.05 at any difficulty)."""
    quality = {"blood": "blood", "clot": "clot"}.get(category, "adequate")
    if quality == "adequate":
        n = int(rng.integers(16, 27))
        if category == "AML":
            lo = 0.45 - 0.17 * difficulty
            nb = max(int(round(rng.uniform(lo, lo + 0.2) * n)), int(0.25 * n) + 1)
            npl = int(rng.integers(0, 2))
        elif category == "MM":
            lo = 0.33 - 0.15 * difficulty
            npl = max(int(round(rng.uniform(lo, lo + 0.15) * n)), int(0.15 * n) + 1)
            nb = int(rng.integers(0, 2))
        else:
            nb, npl = int(rng.integers(0, 2)), int(rng.integers(0, 2))
        n_rbc = int(rng.integers(8, 20))
    else:
        n = int(rng.integers(1, 5)) if quality == "blood" else int(rng.integers(2, 6))
        nb, npl = 0, int(rng.random() < 0.2)
        n_rbc = int(rng.integers(45, 65)) if quality == "blood" else int(rng.integers(12, 25))
    return quality, n, nb, npl, n_rbc


def _render_marrow(size, rng, category, difficulty, k):
    quality, n, nb, npl, n_rbc = _marrow_counts(category, rng, difficulty)
    bg = np.array([0.95, 0.87, 0.91] if quality != "blood" else [0.93, 0.78, 0.8], np.float32)
    img = np.empty((size, size, 3), np.float32)
    img[:] = bg
    img += 0.03 * _crop(rng, "coarse", size)[..., None]
    if quality == "clot":  # dense dark particle/fibrin clumps covering a large part of the field
        for _ in range(rng.integers(2, 4)):
            cx, cy, r = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.32)
            shapes = [
                (
                    cx + rng.uniform(-r, r),
                    cy + rng.uniform(-r, r),
                    r * rng.uniform(0.4, 0.8),
                    r * rng.uniform(0.3, 0.6),
                    rng.uniform(0, 3),
                )
                for _ in range(rng.integers(4, 8))
            ]
            win, a = _blobs(size, shapes)
            grain = 0.7 + 0.3 * _crop(rng, "white", size, a.shape)[..., None]
            _paint(img, win, a, 0)  # start dark, then tint: particles are purple-black and grainy
            img[win] += a[..., None] * grain * np.array([0.33, 0.18, 0.42], np.float32)
        for _ in range(rng.integers(3, 6)):  # fibrin strands
            _paint(
                img,
                *_ellipse(
                    size,
                    rng.uniform(-0.8, 0.8),
                    rng.uniform(-0.8, 0.8),
                    rng.uniform(0.3, 0.6),
                    0.02,
                    angle=rng.uniform(0, 3),
                ),
                (0.72, 0.55, 0.7),
            )
    kinds = ["rbc"] * n_rbc + ["other"] * (n - nb - npl) + ["blast"] * nb + ["plasma"] * npl
    total = len(kinds)
    grid = int(np.ceil(np.sqrt(total * 1.25)))
    slots = rng.permutation(grid * grid)[:total]
    jitter = rng.uniform(0.15, 0.85, (total, 2))
    pos = (np.stack([slots % grid, slots // grid], 1) + jitter) / grid * size
    sprites = _sprites(size)
    var = rng.integers(0, _N_VARIANTS, total)
    gains = 1 + (0.05 + 0.2 * difficulty) * rng.uniform(-1, 1, total)  # stain variation grows with difficulty
    gains[:n_rbc] = 1.0  # RBC variants differ enough; skipping the gain keeps blood-heavy patches fast
    for kind, v, (x, y), gain in zip(kinds, var.tolist(), pos.astype(int).tolist(), gains.tolist()):
        _stamp(img, sprites[kind][v], x, y, gain)  # RBCs first: nucleated cells lie on top
    diagnosis = category if category != NORMAL else "normal"
    extra = {
        "quality": quality,
        "blast_frac": round(nb / n, 4),
        "plasma_frac": round(npl / n, 4),
        "n_nucleated": n,
        "diagnosis": diagnosis,
    }
    return img, [], extra


# ---- public API


def render(
    source: str,
    category: str,
    rng: np.random.Generator,
    image_size: int = 64,
    difficulty: float = 0.5,
    region: str | None = None,
    min_lesion_px: float | None = None,
) -> dict:
    """One image record (all RECORD_KEYS but `id`) of `source`/`category`, drawn with `rng`."""
    spec = SOURCES[source]
    if category != NORMAL and category not in spec["categories"]:
        raise ValueError(f"unknown category {category!r} for source {source!r}")
    region = region or spec["regions"][int(rng.integers(len(spec["regions"])))]
    if region not in spec["regions"]:
        raise ValueError(f"unknown region {region!r} for source {source!r}")
    size, k = int(image_size), _Knobs(difficulty, min_lesion_px, int(image_size))
    mask = np.zeros((size, size), np.uint8)
    if source == "deeplesion":
        img, boxes, extra = _render_ct(size, rng, category, region, k, mask)
    elif source == "kidney_stone":
        img, boxes, extra = _render_kidney(size, rng, category, k, mask)
    elif source in ("nih_cxr", "tbx11k"):
        img, boxes, extra = _render_cxr(size, rng, source, category, k, mask)
    elif source == "kvasir":
        img, boxes, extra = _render_endo(size, rng, category, k, mask)
    elif source == "bone_marrow":
        img, boxes, extra = _render_marrow(size, rng, category, float(np.clip(difficulty, 0, 1)), k)
    else:  # pragma: no cover - SOURCES lookup above already failed
        raise ValueError(source)
    # Sensor noise last, from a cached pool crop (cheap) scaled by difficulty.
    noise = k.noise * _crop(rng, "white", size)
    img = img + (noise[..., None] if img.ndim == 3 else noise)
    img = (_clip01(img) * 255 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    abnormal = extra["diagnosis"] in ("AML", "MM") if source == "bone_marrow" else category != NORMAL
    return {
        "image": img,
        "source": source,
        "modality": spec["modality"],
        "region": region,
        "category": category,
        "abnormal": bool(abnormal),
        "bboxes": boxes,
        "mask": mask,
        "extra": extra,
    }


def _stream_key(seed: int, source: str, category: str, index: int) -> np.random.SeedSequence:
    # crc32 of the names (not their list position) so adding a source or class never reshuffles the others.
    return np.random.SeedSequence(
        [int(seed) & 0xFFFFFFFF, zlib.crc32(source.encode()), zlib.crc32(category.encode()), int(index)]
    )


def _slug(text: str) -> str:
    return text.replace(" ", "_")


def generate(seed: int, counts: dict[str, dict[str, int]], image_size: int = 64, difficulty: float = 0.5,
             min_lesion_px: float | None = None) -> list[dict]:
    """Records for counts[source][category] images each, in the order of `counts`.

    Image i of (source, category) depends only on (seed, source, category, i, image_size, difficulty,
    min_lesion_px).
    Ids are "<source>-<category>-<i:06d>" (spaces -> "_"), unique within one call; the seed is not part of the id,
    so data sets drawn with different seeds reuse ids for different images.
    """
    records = []
    for source, per_cat in counts.items():
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        for category, n in per_cat.items():
            for i in range(int(n)):
                rng = np.random.default_rng(_stream_key(seed, source, category, i))
                rec = {"id": f"{source}-{_slug(category)}-{i:06d}"}
                rec.update(render(source, category, rng, image_size, difficulty, min_lesion_px=min_lesion_px))
                records.append(rec)
    return records


def default_counts(n_per_class: int, n_normal: int | None = None, sources=None) -> dict[str, dict[str, int]]:
    """{source: {"normal": n_normal, category: n_per_class, ...}} for every (or the given) source."""
    n_normal = n_per_class if n_normal is None else n_normal
    return {
        s: {NORMAL: int(n_normal), **{c: int(n_per_class) for c in SOURCES[s]["categories"]}}
        for s in (sources or list(SOURCES))
    }


def fingerprint(records) -> str:
    """sha256 over ids, metadata, image and mask bytes: equal iff the data set is bit-identical."""
    h = hashlib.sha256()
    for r in records:
        meta = {key: r[key] for key in ("id", "source", "modality", "region", "category", "abnormal", "bboxes")}
        h.update(json.dumps([meta, r["extra"]], sort_keys=True, default=str).encode())
        h.update(np.ascontiguousarray(r["image"]).tobytes())
        h.update(np.ascontiguousarray(r["mask"]).tobytes())
    return h.hexdigest()

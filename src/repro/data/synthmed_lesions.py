"""SynthMed lesion scenes: CT slices (deeplesion regions, kidney stones), chest X-rays and colonoscopy frames.

Each `_render_*` draws the anatomy of one source, then at most one lesion of the record's category, writes its hard
mask into `mask` (in place) and returns (image, bboxes, extra): a float image (H, W), or (H, W, 3) RGB for
endoscopy, that synthmed.render clips to 0..1; `extra` holds the size / location / site words of synthmed.py's
docstring (chest X-rays add ctr). Lesion contrast, size and the smallest radius come from the difficulty knobs `k`
(synthmed._Knobs). Built on synthmed_draw.py's primitives.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from repro import libm
from repro.data.schema import NORMAL
from repro.data.synthmed_draw import _axes, _blobs, _clip01, _crop, _ellipse, _full, _paint

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
            _paint(g, *_ellipse(size, cx + r * lrx * libm.cos(t), cy + r * lry * libm.sin(t), 0.025, 0.025), 0.3)
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
                    lx + 0.6 * r * libm.cos(t),
                    ly + 0.6 * r * libm.sin(t),
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
    return (np.clip(libm.sin(2 * np.pi * 4.2 * (y - 0.28 * ax[None, :] ** 2)), 0, 1) ** 2).astype(np.float32)


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
        g = libm.pow(np.clip(g, 0, 1), 1.15)  # another scanner look: the two chest sources differ
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
    light = libm.pow(np.clip(r / (lr * 2.2), 0.08, 1.0), 0.8)
    folds = 0.06 * libm.sin(2 * np.pi * r * rng.uniform(2.5, 3.5) + rng.uniform(0, 6))  # haustral rings
    tone = 1 + 0.08 * _crop(rng, "coarse", size)
    base = np.array([0.86, 0.44, 0.4], np.float32) * rng.uniform(0.9, 1.05, 3).astype(np.float32)
    img = (light * tone + folds)[..., None] * base
    fov = (ax[None, :] ** 2 + ax[:, None] ** 2) < 1.12  # round endoscope field of view, black corners
    img *= fov[..., None]
    for _ in range(rng.integers(0, 3)):  # wet-mucosa glints, so a highlight alone does not mean polyp
        t, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0.45, 0.8)
        _paint(img, *_ellipse(size, rr * libm.cos(t), rr * libm.sin(t), 0.03, 0.02), (1.0, 0.97, 0.95))
    if category == NORMAL:
        return img, [], {"size": "", "location": "", "site": ""}
    pr = rng.uniform(0.16, 0.28) * k.scale
    t = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(lr + pr, 0.75 - pr * 0.3)
    px, py = np.clip(lx + dist * libm.cos(t), -0.7, 0.7), np.clip(ly + dist * libm.sin(t), -0.7, 0.7)
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

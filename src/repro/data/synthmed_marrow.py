"""SynthMed bone-marrow aspirate fields: cell counts that follow Dr-LLaVA's decision rules, drawn as cell sprites.

`_render_marrow` picks the sample quality and integer cell counts for the category (`_marrow_counts`: blast /
plasma fractions on the right side of the decision thresholds with a margin), scatters RBCs and nucleated cells on
a jittered grid and stamps pre-drawn sprites (12 variants per cell kind, built once per image size and reused,
so a field costs stamps rather than drawings). It returns the RGB image, no bboxes (no single lesion; the mask stays all
zero) and the decision-tree facts in `extra` (quality, blast_frac, plasma_frac, n_nucleated, diagnosis).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from repro import libm
from repro.data.schema import NORMAL
from repro.data.synthmed_draw import _blobs, _crop, _ellipse, _paint

# ---- bone marrow

_N_VARIANTS = 12
_CELL_R = {"rbc": 0.085, "blast": 0.15, "plasma": 0.12, "other": 0.1}  # radius as a fraction of the image side


def _sprite_canvas(rpx):
    n = int(np.ceil(2 * rpx + 3))
    c = np.arange(n, dtype=np.float32) - (n - 1) / 2
    return c[None, :], c[:, None], n


def _disc(x, y, cx, cy, rx, ry, angle=0.0):
    c, s = libm.cos(angle), libm.sin(angle)
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
        ox, oy = 0.45 * rpx * libm.cos(ang), 0.45 * rpx * libm.sin(ang)
        layer(_disc(x, y, -0.15 * ox, -0.15 * oy, rpx * 0.3, rpx * 0.3) * 0.6, (0.7, 0.75, 0.92))
        layer(_disc(x, y, ox, oy, rpx * 0.52, rpx * 0.5, ang), (0.2, 0.08, 0.28))
    else:  # other nucleated (granulocytes etc.): smaller, pinkish-grey cytoplasm, 2-4 nuclear lobes
        a = _disc(x, y, 0, 0, rpx, rpx * rng.uniform(0.85, 1.0), rng.uniform(0, 3))
        layer(a, (0.86, 0.74, 0.8))
        t0 = rng.uniform(0, 2 * np.pi)
        for i in range(rng.integers(2, 5)):
            t = t0 + i * rng.uniform(0.9, 1.4)
            lobe = _disc(x, y, 0.42 * rpx * libm.cos(t), 0.42 * rpx * libm.sin(t), rpx * 0.32, rpx * 0.3)
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

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
Modules: this one holds the public API (render, generate, default_counts, fingerprint) and the difficulty knobs;
synthmed_draw.py the drawing primitives and caches, synthmed_lesions.py the CT / X-ray / endoscopy scenes with their
lesions, synthmed_marrow.py the bone-marrow fields.
"""

from __future__ import annotations

import hashlib
import json
import zlib

import numpy as np

from repro.data.schema import NORMAL, SOURCES
from repro.data.synthmed_draw import _clip01, _crop
from repro.data.synthmed_lesions import _render_ct, _render_cxr, _render_endo, _render_kidney
from repro.data.synthmed_marrow import _render_marrow

# Smallest lesion, in pixels across, by default: the floor that keeps a tiny lesion from vanishing at 64 px.
# A larger floor (data knob min_lesion_px) makes the smallest lesions (nodules, kidney stones: 3-5 px at 64 px)
# big enough for an 8-px-patch ViT to box them.
MIN_LESION_PX = 1.2


class _Knobs:
    """Difficulty -> lesion contrast, lesion size scale and noise level (monotone in difficulty); min_lesion_px ->
    the smallest lesion radius in normalised units (a lesion `min_lesion_px` pixels across: 1 unit = size/2 px)."""

    def __init__(self, difficulty: float, min_lesion_px: float | None = None, size: int = 64):
        d = float(np.clip(difficulty, 0.0, 1.0))
        self.contrast = 1.0 - 0.65 * d
        self.scale = 1.2 - 0.45 * d
        self.noise = 0.012 + 0.07 * d
        self.min_r = float(MIN_LESION_PX if min_lesion_px is None else min_lesion_px) / size


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


def redraw(records: list[dict], seed: int, image_size: int = 64, difficulty: float = 0.5,
           min_lesion_px: float | None = None) -> list[dict]:
    """The same slots drawn again from another seed: record "<source>-<category>-<i>" becomes image i of
    (source, category) as `generate(seed, ...)` draws it. Ids, sources, categories and order are kept, the pixels,
    lesions and boxes are new: a split redrawn from a seed nobody has read is a sealed split."""
    out = []
    for r in records:
        i = int(str(r["id"]).rsplit("-", 1)[1])
        rec = {"id": r["id"]}
        rec.update(render(r["source"], r["category"], np.random.default_rng(_stream_key(seed, r["source"],
                                                                                       r["category"], i)),
                          image_size, difficulty, min_lesion_px=min_lesion_px))
        out.append(rec)
    return out


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

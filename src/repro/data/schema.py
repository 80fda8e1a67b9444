"""The data contract shared by SynthMed, the task builders, the real-data loaders, rewards and eval.

One *image record* (a plain dict) describes one image; every task row built from it carries the same metadata
columns, so any metric can be broken down per source and any generalization split is a filter on a column.

Image record keys (SynthMed and the real loaders produce the same):
    id        str     unique, stable for a given seed ("deeplesion-000123")
    image     np.ndarray uint8, H x W x 3 (grey modalities have three equal channels)
    source    str     one of SOURCES
    modality  str     SOURCES[source]["modality"]
    region    str     body region, one of SOURCES[source]["regions"]
    category  str     abnormality category, one of SOURCES[source]["categories"], or NORMAL
    abnormal  bool    category != NORMAL (for bone marrow: diagnosis in {AML, MM})
    bboxes    list of [x1, y1, x2, y2] pixel ints, x2/y2 exclusive; [] for normal images
    mask      np.ndarray uint8 H x W, 1 inside the abnormality (all zeros for normal images)
    extra     dict    source-specific facts, e.g. bone marrow: quality, blast_frac, plasma_frac, diagnosis

Bounding boxes in *text* use one documented format everywhere (targets, parsers, rewards):
    "[x1, y1, x2, y2]" with each coordinate an integer percentage 0..100 of the image width/height.
Percentages keep the text independent of the image size (64 px here, 224+ px for real models).

Task rows (HF datasets saved under runs/<profile>/data/<task>/<split>; one row per example). Every task has
    image     PIL image (datasets.Image feature)
    task      str     "vqa" | "mcq" | "instruct" | "conv" | "report"
    messages  list of {"role": "user"|"assistant", "content": str}; the image belongs to the first user turn
    + META_COLUMNS (bboxes as pixel lists; real datasets without boxes use [])
and per task:
    vqa       question, answer, answer_type ("closed" yes/no | "open")
    mcq       question, options (4 str), answer (letter A-D), answer_text; target "<think>..</think><answer>X</answer>"
    instruct  answer (detect -> localize -> recognize target), bbox_text ("" for normal images)
    conv      turn_categories (list[int] 1..5 in the order asked), turn_labels (reference labels, same order),
              variant ("standard"|"shuffled"|"reversed"|"hint_correct"|"hint_wrong"|"confirm_correct"|"confirm_wrong"),
              diagnosis
    report    answer (findings text)
"""

from __future__ import annotations

import re

NORMAL = "normal"

# The five MAU-like sources of UMed-LVLM plus Dr-LLaVA's bone marrow.
SOURCES: dict[str, dict] = {
    "deeplesion": {
        "modality": "CT",
        "regions": ["lung", "liver", "abdomen", "pelvis"],
        "categories": ["nodule", "cyst", "mass"],
        "paper_name": "DeepLesion",
    },
    "kidney_stone": {
        "modality": "CT",
        "regions": ["kidney"],
        "categories": ["kidney stone"],
        "paper_name": "KidneyStone",
    },
    "nih_cxr": {
        "modality": "X-ray",
        "regions": ["chest"],
        "categories": ["nodule", "effusion", "cardiomegaly"],
        "paper_name": "NIH",
    },
    "tbx11k": {
        "modality": "X-ray",
        "regions": ["chest"],
        "categories": ["tuberculosis"],
        "paper_name": "TBX11K",
    },
    "kvasir": {
        "modality": "endoscopy",
        "regions": ["colon"],
        "categories": ["polyp"],
        "paper_name": "KVASIR",
    },
    "bone_marrow": {
        "modality": "microscopy",
        "regions": ["bone marrow"],
        # Dr-LLaVA's five diagnoses; "normal" is NORMAL so that per-source tables stay uniform.
        "categories": ["AML", "MM", "blood", "clot"],
        "paper_name": "Bone marrow (Dr-LLaVA)",
    },
}
MAU_SOURCES = ["deeplesion", "kidney_stone", "kvasir", "nih_cxr", "tbx11k"]  # UMed-LVLM Table 2 order
BONE_MARROW_CLASSES = ["normal", "AML", "MM", "blood", "clot"]
RECORD_KEYS = ("id", "image", "source", "modality", "region", "category", "abnormal", "bboxes", "mask", "extra")

# Metadata columns copied onto every task row (everything but the pixels and the mask).
META_COLUMNS = ("id", "source", "modality", "region", "category", "abnormal", "bboxes")

_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX_RE = re.compile(r"\[" + ",".join([_NUM] * 4) + r"\]")


def format_bbox(box, width: int, height: int) -> str:
    """Pixel box [x1, y1, x2, y2] -> "[p1, p2, p3, p4]" in integer percent of width/height."""
    x1, y1, x2, y2 = box
    p = [round(100 * x1 / width), round(100 * y1 / height), round(100 * x2 / width), round(100 * y2 / height)]
    return "[" + ", ".join(str(max(0, min(100, v))) for v in p) + "]"


def parse_bbox(text: str) -> list[float] | None:
    """First "[a, b, c, d]" in `text` as a box in percent, or None.

    Total on any string: returns None when there is no well-formed box or when it is degenerate
    (x2 <= x1 or y2 <= y1) or outside 0..100.
    """
    if not isinstance(text, str):
        return None
    m = _BOX_RE.search(text)
    if m is None:
        return None
    try:
        x1, y1, x2, y2 = (float(g) for g in m.groups())
    except ValueError:  # pragma: no cover - regex guarantees numbers
        return None
    if not (0 <= x1 < x2 <= 100 and 0 <= y1 < y2 <= 100):
        return None
    return [x1, y1, x2, y2]


def bbox_to_percent(box, width: int, height: int) -> list[float]:
    x1, y1, x2, y2 = box
    return [100 * x1 / width, 100 * y1 / height, 100 * x2 / width, 100 * y2 / height]


DEFAULT_IMAGE_SIZE = 64  # SynthMed's size


def image_wh(image=None, image_size=None) -> tuple[int, int]:
    """(width, height) from an image_size value (int or (w, h)), a PIL image, a numpy array, else DEFAULT_IMAGE_SIZE.

    Shared by the metrics and the rewards so that both convert pixel boxes to percent with the same size.
    """
    if isinstance(image_size, (int, float)) and not isinstance(image_size, bool) and image_size > 0:
        return int(image_size), int(image_size)
    if isinstance(image_size, (list, tuple)) and len(image_size) == 2 and all(
            isinstance(v, (int, float)) and v > 0 for v in image_size):
        return int(image_size[0]), int(image_size[1])
    size = getattr(image, "size", None)
    if isinstance(size, tuple) and len(size) == 2:  # PIL: (width, height)
        return int(size[0]), int(size[1])
    shape = getattr(image, "shape", None)
    if isinstance(shape, tuple) and len(shape) >= 2:  # numpy: (height, width, ...)
        return int(shape[1]), int(shape[0])
    return DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE


def iou(a, b) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes in the same units; 0 for empty boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0

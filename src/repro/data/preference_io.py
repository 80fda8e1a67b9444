"""MMedPO preference set on disk: its columns, writing it atomically, reading it back, and the oracle lesion masks.

COLUMNS and `features()` are the schema of the saved `DatasetDict({"train": ...})` (the column table is in
preference.py's docstring); `to_dataset` turns curated pairs into a Dataset (images as RGB PIL), `save_atomic`
writes it so a failed run keeps the previous set, and `load_preference` reads it back. `oracle_masks` reads the
true lesion masks from stage 01's image records for the "oracle" heatmap. Every name here is also importable from
repro.data.preference, which uses them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from repro.chat import rgb

COLUMNS = ("prompt", "chosen", "rejected", "images", "rejected_images", "weight", "kind", "id", "source", "category",
           "score")


def oracle_masks(data_dir, ids: set[str], split: str = "train") -> dict[str, np.ndarray]:
    """Lesion masks (0/1, H x W) of the images with these ids, from runs/<p>/data/images/<split>."""
    from datasets import load_from_disk

    p = Path(data_dir) / "images"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no image records (masks) — rerun stage 01")
    ds = load_from_disk(str(p))[split]
    keep = [i for i, x in enumerate(ds["id"]) if x in ids]
    return {r["id"]: np.asarray(r["mask"], dtype=np.uint8) for r in ds.select(keep)}


def features():
    from datasets import Features, Image, List, Value

    return Features({"prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string"),
                     "images": List(Image()), "rejected_images": List(Image()), "weight": Value("float64"),
                     "kind": Value("string"), "id": Value("string"), "source": Value("string"),
                     "category": Value("string"), "score": Value("float64")})


def to_dataset(pairs: list[dict]):
    from datasets import Dataset

    rows = [{**{k: p[k] for k in COLUMNS}, "images": [rgb(im) for im in p["images"]],
             "rejected_images": [rgb(im) for im in p["rejected_images"]]} for p in pairs]
    return Dataset.from_list(rows, features=features())


def save_atomic(dd, out_dir: Path) -> None:
    """save_to_disk into a sibling folder, then swap it in: a failed run keeps the previous set."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dd.save_to_disk(str(tmp))
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def load_preference(path):
    """The saved preference DatasetDict (clear error when stage 03 has not written it)."""
    from datasets import load_from_disk

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no preference set — run stage 03 (python -m repro run --only 03)")
    return load_from_disk(str(p))

"""VQA data sets as exported from the Hugging Face hub: `.parquet` files or a `datasets` `save_to_disk` folder.

This is how many people hold VQA-RAD (e.g. flaviagiammarino/vqa-rad: data/train-*.parquet, data/test-*.parquet)
and SLAKE today. Columns (matched case-insensitively):
    image        required: the `datasets.Image` struct {bytes, path}, raw bytes, or a file path (relative paths are
                 resolved against the export's folder)
    question     required
    answer       required
    answer_type  optional CLOSED/OPEN; without it a yes/no answer is closed and any other answer open (the usual
                 reading of these exports, which drop the release's answer type)
    q_lang       optional (SLAKE): only "en" rows are kept
    modality, location / image_organ, qid / id   optional metadata
The split of a parquet file is read from its name (train-00000-of-00001.parquet -> train), that of a
DatasetDict folder from its sub-folder; a file whose name names no split holds split None (take it with split=None).
Parquet files are taken from the folder and its data/ only, and a table carrying another set's own columns (MARKERS)
and none of this set's is refused with an error naming the file: an export of one set never loads as another.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from repro.data import real

_SPLIT_WORDS = {"train": "train", "training": "train", "test": "test", "testing": "test", "val": "val",
                "valid": "val", "validate": "val", "validation": "val", "dev": "val"}
_REQUIRED = ("image", "question", "answer")


# Columns only one data set's exports carry (lower case): a table with another set's and none of its own is that
# other set, whatever folder it was found in.
MARKERS = {"vqa_rad": ("phrase_type", "image_organ", "qid_linked_id", "question_rephrase", "image_case_url"),
           "slake": ("q_lang", "location", "img_name", "img_id", "content_type", "base_type", "triple"),
           "pmc_vqa": ("figure_path", "choice a", "answer_label", "anwser")}
LABELS = {"vqa_rad": "VQA-RAD", "slake": "SLAKE", "pmc_vqa": "PMC-VQA"}


def check_columns(path, columns, source: str) -> None:
    """DataError naming the file when its columns are another data set's (see MARKERS)."""
    cols = {c.lower() for c in columns}
    if cols & set(MARKERS.get(source, ())):
        return
    for other, marks in MARKERS.items():
        hits = [c for c in marks if c in cols]
        if other != source and hits:
            raise real.DataError(f"{path}: has {LABELS[other]}'s column{'s' * (len(hits) > 1)} {', '.join(hits)}, "
                                 f"so it is not {LABELS.get(source, source)}; point {source}_dir at its own files")


def split_name(name) -> str | None:
    """"train" | "val" | "test" from a file or folder name ("test-00000-of-00001.parquet" -> "test"), else None."""
    if name is None:
        return None
    for word in re.split(r"[^a-z]+", str(name).lower()):
        if word in _SPLIT_WORDS:
            return _SPLIT_WORDS[word]
    return None


def is_save_to_disk(folder) -> bool:
    d = Path(folder)
    return (d / "dataset_dict.json").is_file() or ((d / "state.json").is_file() and any(d.glob("*.arrow")))


def parquet_files(folder) -> list[Path]:
    """Parquet files of the export in `folder`: in the folder itself or under its data/ (where hub snapshots keep
    them), sorted. Never deeper elsewhere: a parquet file in another sub-folder is another export, often of another
    data set."""
    folder = Path(folder)
    return sorted([*folder.glob("*.parquet"), *(folder / "data").rglob("*.parquet")])


def tables(folder) -> list[tuple[Path, str | None, object]]:
    """[(file, split, pyarrow.Table)] of the export in `folder` (save_to_disk folder, or parquet files)."""
    folder = Path(folder)
    out = []
    if is_save_to_disk(folder):
        from datasets import load_from_disk

        if (folder / "dataset_dict.json").is_file():
            try:
                names = json.loads((folder / "dataset_dict.json").read_text())["splits"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise real.DataError(f"{folder / 'dataset_dict.json'}: cannot read the split list ({e})") from e
            parts = [(folder / n, split_name(n) or n) for n in names]
        else:
            parts = [(folder, split_name(folder.name))]
        for path, split in parts:
            try:
                ds = load_from_disk(str(path))
            except (OSError, ValueError) as e:
                raise real.DataError(f"{path}: cannot read the save_to_disk folder ({e})".replace("\n", " ")) from e
            out.append((path, split, ds.with_format("arrow")[:]))  # arrow: image bytes stay undecoded
        return out
    import pyarrow.parquet as pq

    for f in parquet_files(folder):
        try:
            out.append((f, split_name(f.name), pq.read_table(f)))
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError subclasses; all mean "not a parquet file"
            raise real.DataError(f"{f}: cannot read parquet ({e})".replace("\n", " ")) from e
    return out


def _decode(value, base: Path, where: str, size) -> np.ndarray:
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        data, path = value, None
    elif isinstance(value, str):
        data, path = None, value
    else:
        raise real.DataError(f"{where}: column 'image' holds {type(value).__name__}, expected an image")
    if data:
        try:
            with Image.open(io.BytesIO(data)) as im:
                return real.to_array(im, size)
        except (OSError, ValueError) as e:
            raise real.DataError(f"{where}: cannot decode image ({e})".replace("\n", " ")) from e
    if path:
        p = Path(path) if Path(path).is_absolute() else base / path
        try:
            return real.load_image(p, size)
        except real.DataError as e:
            raise real.DataError(f"{e} (asked by {where})") from e
    raise real.DataError(f"{where}: column 'image' is empty")


def load_vqa_export(folder, source: str, split: str | None = "test", size=None,
                    limit: int | None = None) -> list[dict]:
    """VQA rows (task-row schema, like real.load_vqa_rad) from the hub export in `folder`; `source` names the set."""
    want = split_name(split) if split is not None else None
    if split is not None and want is None:
        raise ValueError(f"split must be train, val, test or None, got {split!r}")
    found = tables(folder)
    if not found:
        raise real.DataError(f"{folder}: no parquet files or save_to_disk folder")
    chosen = [t for t in found if want is None or t[1] == want]
    if not chosen:
        have = ", ".join(f"{Path(f).name} ({s or 'no split in its name'})" for f, s, _ in found)
        raise real.DataError(f"{folder}: no {split} split among {have}")
    rows = []
    for path, part, table in chosen:
        cols = {c.lower(): c for c in table.column_names}
        missing = [repr(c) for c in _REQUIRED if c not in cols]
        if missing:
            raise real.missing_columns(path, missing, table.column_names)
        check_columns(path, cols, source)
        base = path if path.is_dir() else path.parent
        for i, item in enumerate(table.to_pylist()):
            item = {k.lower(): v for k, v in item.items()}
            if "q_lang" in item and item["q_lang"] != "en":
                continue
            where = f"{path} row {i}"
            answer = item["answer"]
            if "answer_type" in cols:
                atype = real._answer_type(item["answer_type"], path, i)
            else:
                atype = "closed" if str(answer).strip().lower() in ("yes", "no") else "open"
            modality = str(item.get("modality") or real.UNKNOWN).strip()
            modality = real._MODALITY_NAMES.get(modality.lower(), modality)
            region = str(item.get("location") or item.get("image_organ") or real.UNKNOWN).strip().lower()
            id_ = item.get("qid", item.get("id"))
            meta = real._meta(f"{source}-{part or 'all'}-{i if id_ is None else id_}", source, modality=modality,
                              region=region)
            image = _decode(item["image"], base, where, size)
            rows.append(real._vqa_row(image, meta, item["question"], answer, atype))
            if limit is not None and len(rows) >= limit:
                return rows
    return rows

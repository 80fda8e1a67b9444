"""Loaders for real datasets from local paths (nothing is downloaded): VQA-RAD, SLAKE, PMC-VQA, IU-Xray, MedMNIST.

This module reads each dataset's original release files given their paths; real_hub.py reads hub exports
(parquet / `save_to_disk` arrow) and real_layouts.py finds which layout a folder holds (`load_dir`).

They return task rows with the same schema as tasks.py (numpy RGB uint8 image, task, messages, META_COLUMNS,
per-task columns). What a dataset does not give is filled with placeholders: modality/region "unknown",
category "unknown", bboxes [], and `abnormal` None (the datasets do not label it; None keeps "unknown"
distinguishable from False). Every problem with the files raises DataError with a one-line message that
names the file and, where relevant, the row and key.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from repro.data import schema
from repro.data.tasks import mcq_prompt, mcq_target

UNKNOWN = "unknown"


class DataError(ValueError):
    """A real-data file is missing or malformed."""


class NotFound(DataError):
    """No file of the asked data set or split where it was looked for (as opposed to a file found but wrong: the
    caller may then try another split, never after a found file turned out wrong)."""


def missing_columns(path, missing: list[str], have) -> DataError:
    """One-line error naming every missing column (entries already quoted, e.g. "'Answer_label' or 'Answer'") and
    the columns the file has."""
    s = "s" if len(missing) > 1 else ""
    return DataError(f"{path}: missing column{s} {', '.join(missing)} (has {', '.join(have) or 'no columns'})")


def to_array(im: Image.Image, size=None) -> np.ndarray:
    """PIL image -> RGB uint8 H x W x 3; `size` (int or (w, h)) resizes bilinearly."""
    im = im.convert("RGB")
    if size is not None:
        im = im.resize((size, size) if isinstance(size, int) else tuple(size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8).copy()


def load_image(path, size=None) -> np.ndarray:
    """RGB uint8 H x W x 3 from an image file; `size` (int or (w, h)) resizes bilinearly."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return to_array(im, size)
    except (OSError, ValueError) as e:  # UnidentifiedImageError is an OSError; truncated files fail on convert
        raise DataError(f"{path}: cannot read image ({e})".replace("\n", " ")) from e


def _need_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def _need_dir(path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: folder not found")
    return path


def _read_json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: bad JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
    return data


def _get(item, key: str, path: Path, i: int):
    if not isinstance(item, dict) or key not in item:
        raise DataError(f"{path}: row {i} lacks key {key!r}")
    return item[key]


def _meta(id_: str, source: str, modality=UNKNOWN, region=UNKNOWN, category=UNKNOWN, abnormal=None) -> dict:
    return {"id": id_, "source": source, "modality": modality, "region": region, "category": category,
            "abnormal": abnormal, "bboxes": []}


def _answer_type(value, path: Path, i: int) -> str:
    t = str(value).strip().lower()
    if t not in ("closed", "open"):
        raise DataError(f"{path}: row {i} has answer_type {value!r}, expected CLOSED or OPEN")
    return t


def _vqa_row(image, meta: dict, question: str, answer, answer_type: str) -> dict:
    q, a = str(question).strip(), str(answer).strip()
    if a.lower() in ("yes", "no"):  # builders write lowercase yes/no; keep exact match comparable
        a = a.lower()
    messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"image": image, "task": "vqa", "messages": messages, **meta, "question": q, "answer": a,
            "answer_type": answer_type}


class _Images:
    """Loads each image file once per loader call (VQA datasets ask many questions about one image)."""

    def __init__(self, folder: Path, size):
        self.folder, self.size, self.cache = folder, size, {}

    def __call__(self, name: str, where: str) -> np.ndarray:
        if name not in self.cache:
            try:
                self.cache[name] = load_image(self.folder / str(name), self.size)
            except DataError as e:  # say which annotation row asked for the image
                raise DataError(f"{e} (asked by {where})") from e
        return self.cache[name]


def load_vqa_rad(json_path, image_dir, size=None, split: str | None = None, limit: int | None = None) -> list[dict]:
    """VQA-RAD public json (list of {image_name, question, answer, answer_type, phrase_type, image_organ, ...}).

    split "test" keeps phrase_type test_freeform/test_para, "train" the others, None everything.
    region = image_organ lowercased (head/chest/abd); VQA-RAD gives no modality field.
    """
    path = _need_file(json_path)
    images = _Images(_need_dir(image_dir), size)
    rows = []
    for i, item in enumerate(_read_json_list(path)):
        is_test = str(_get(item, "phrase_type", path, i)).startswith("test")
        if split is not None and is_test != (split == "test"):
            continue
        question, answer = _get(item, "question", path, i), _get(item, "answer", path, i)
        atype = _answer_type(_get(item, "answer_type", path, i), path, i)
        name = _get(item, "image_name", path, i)
        region = str(item.get("image_organ") or UNKNOWN).strip().lower()
        meta = _meta(f"vqa_rad-{item.get('qid', i)}", "vqa_rad", region=region)
        rows.append(_vqa_row(images(name, f"{path} row {i}"), meta, question, answer, atype))
        if limit is not None and len(rows) >= limit:
            break
    return rows


# The release names its validation file validate.json, the hub copy (BoKelvin/SLAKE) validation.json.
_SLAKE_FILES = {"train": ("train.json",), "val": ("validate.json", "validation.json"), "test": ("test.json",)}
_SLAKE_FILES["validate"] = _SLAKE_FILES["validation"] = _SLAKE_FILES["val"]
_MODALITY_NAMES = {"x-ray": "X-ray", "ct": "CT", "mri": "MRI"}


def load_slake(root, split: str = "train", size=None, limit: int | None = None) -> list[dict]:
    """SLAKE root with train.json / validate.json (or validation.json) / test.json and imgs/; English only."""
    if split not in _SLAKE_FILES:
        raise ValueError(f"split must be one of {sorted(_SLAKE_FILES)}, got {split!r}")
    root = Path(root)
    names = _SLAKE_FILES[split]
    path = _need_file(next((root / n for n in names if (root / n).is_file()), root / names[0]))
    images = _Images(_need_dir(root / "imgs"), size)
    rows = []
    for i, item in enumerate(_read_json_list(path)):
        if _get(item, "q_lang", path, i) != "en":
            continue
        question, answer = _get(item, "question", path, i), _get(item, "answer", path, i)
        atype = _answer_type(_get(item, "answer_type", path, i), path, i)
        modality = str(item.get("modality") or UNKNOWN).strip()
        modality = _MODALITY_NAMES.get(modality.lower(), modality)
        region = str(item.get("location") or UNKNOWN).strip().lower()
        meta = _meta(f"slake-{item.get('qid', i)}", "slake", modality=modality, region=region)
        image = images(_get(item, "img_name", path, i), f"{path} row {i}")
        rows.append(_vqa_row(image, meta, question, answer, atype))
        if limit is not None and len(rows) >= limit:
            break
    return rows


_PMC_COLUMNS = ("Figure_path", "Question", "Choice A", "Choice B", "Choice C", "Choice D")
_PMC_ANSWER = ("Answer_label", "Answer", "Anwser")  # the letter column first; the card spells it "Anwser" too
_LETTER_RE = re.compile(r"^\s*([A-D])\s*(?:[:.)]|$)")
_CHOICE_PREFIX = re.compile(r"^\s*[A-D]\s*[:.)]\s*")


def load_pmc_vqa(csv_path, image_dir, size=None, limit: int | None = None) -> list[dict]:
    """PMC-VQA csv (Figure_path, Question, Choice A-D, Answer_label and/or Answer) -> mcq rows (build_mcq's format).

    train.csv / test.csv carry Answer (option text) and Answer_label (letter), test_clean.csv only Answer; the
    letter column is used when present. Choices lose their "A:" prefix; the answer may be a letter, "B:text" or the
    option text. The target carries no
    real reasoning (the dataset has none): "<think>The answer is {text}.</think><answer>X</answer>".
    """
    path = _need_file(csv_path)
    images = _Images(_need_dir(image_dir), size)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        missing = [repr(c) for c in _PMC_COLUMNS if c not in fields]
        answer_col = next((c for c in _PMC_ANSWER if c in fields), None)
        if answer_col is None:
            missing.append(" or ".join(repr(c) for c in _PMC_ANSWER[:2]))
        if missing:
            raise missing_columns(path, missing, fields)
        rows = []
        for i, item in enumerate(reader):
            options = [_CHOICE_PREFIX.sub("", item[f"Choice {c}"] or "").strip() for c in "ABCD"]
            raw = (item[answer_col] or "").strip()
            m = _LETTER_RE.match(raw)
            if m:
                letter = m.group(1)
            elif _CHOICE_PREFIX.sub("", raw).strip() in options:
                letter = "ABCD"[options.index(_CHOICE_PREFIX.sub("", raw).strip())]
            else:
                raise DataError(f"{path}: row {i} has {answer_col} {raw!r} that is neither a letter nor an option")
            text = options["ABCD".index(letter)]
            question = (item["Question"] or "").strip()
            meta = _meta(f"pmc_vqa-{i}", "pmc_vqa")
            messages = [{"role": "user", "content": mcq_prompt(question, options)},
                        {"role": "assistant", "content": mcq_target(f"The answer is {text}.", letter)}]
            facts = {"modality": UNKNOWN, "region": UNKNOWN, "finding": UNKNOWN}
            image = images(item["Figure_path"], f"{path} row {i}")
            rows.append({"image": image, "task": "mcq", "messages": messages, **meta,
                         "question": question, "options": options, "answer": letter, "answer_text": text,
                         "question_kind": UNKNOWN, "reason_facts": facts})
            if limit is not None and len(rows) >= limit:
                break
    return rows


_REPORT_PROMPT = "Describe the findings in this image."  # tasks.BANKS["report"]'s first train wording
IU_SPLITS = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}


def load_iu_xray(annotation_path, image_dir, split: str = "test", size=None, view: int = 0,
                 limit: int | None = None) -> list[dict]:
    """IU-Xray as R2Gen ships it: annotation.json = {"train"|"val"|"test": [{id, report, image_path[], ...}]} and
    images/<study>/<k>.png -> report rows (task "report", answer = the findings text).

    A study has several views (mostly frontal 0.png and lateral 1.png); the rows are single-image, so `view` picks
    one (0 = the first listed; a study with fewer views uses its last). modality X-ray, region chest.
    """
    if split not in IU_SPLITS:
        raise ValueError(f"split must be one of {sorted(IU_SPLITS)}, got {split!r}")
    path = _need_file(annotation_path)
    images = _Images(_need_dir(image_dir), size)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: bad JSON ({e.msg} at line {e.lineno})") from e
    key = IU_SPLITS[split]
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataError(f"{path}: expected a JSON object with a list under key {key!r}")
    rows = []
    for i, item in enumerate(data[key]):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise DataError(f"{path}: {where} is not an object")
        for k in ("id", "report", "image_path"):
            if k not in item:
                raise DataError(f"{path}: {where} lacks key {k!r}")
        views = item["image_path"] if isinstance(item["image_path"], list) else [item["image_path"]]
        if not views or not all(isinstance(v, str) and v for v in views):
            raise DataError(f"{path}: {where} has image_path {item['image_path']!r}, expected a list of files")
        report = " ".join(str(item["report"]).split())
        meta = _meta(f"iu_xray-{item['id']}", "iu_xray", modality="X-ray", region="chest")
        image = images(views[min(view, len(views) - 1)], f"{path} {where}")
        messages = [{"role": "user", "content": _REPORT_PROMPT}, {"role": "assistant", "content": report}]
        rows.append({"image": image, "task": "report", "messages": messages, **meta, "answer": report})
        if limit is not None and len(rows) >= limit:
            break
    return rows


# Label names, modality and region of the MedMNIST flags used by UMed-LVLM (others: pass class_names).
MEDMNIST_INFO = {
    "pneumoniamnist": {"classes": ["normal", "pneumonia"], "modality": "X-ray", "region": "chest"},
    "breastmnist": {"classes": ["malignant", "normal"], "modality": "ultrasound", "region": "breast"},
}
_MEDMNIST_Q = {"closed": "Is there {positive} in this image?", "open": "Which class best describes this image?"}


def load_medmnist(npz_path, split: str = "test", size=None, as_rows: bool = True, class_names=None,
                  limit: int | None = None) -> list[dict]:
    """MedMNIST .npz ({split}_images, {split}_labels) -> image records, or VQA rows when `as_rows`.

    Records follow schema.RECORD_KEYS with source = the file stem (e.g. "pneumoniamnist"), category = the
    class name and abnormal = (class != "normal") when a "normal" class exists, else None. Rows: for two-class
    sets with a "normal" class, one closed question "Is there {other class} in this image?" (yes/no; eval can
    score p(yes) for the AUC), otherwise one open question answered by the class name.
    """
    path = _need_file(npz_path)
    name = path.stem.split("_")[0].lower()
    try:
        data = np.load(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read npz ({e})") from e
    for key in (f"{split}_images", f"{split}_labels"):
        if key not in data.files:
            raise DataError(f"{path}: missing key {key!r}")
    imgs, labels = data[f"{split}_images"], np.asarray(data[f"{split}_labels"])
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise DataError(f"{path}: key '{split}_labels' is multi-label {labels.shape}; not supported")
    labels = labels.reshape(-1).astype(int)
    if len(labels) != len(imgs) or imgs.ndim not in (3, 4):
        raise DataError(f"{path}: key '{split}_images' has shape {imgs.shape} for {len(labels)} labels")
    info = MEDMNIST_INFO.get(name, {})
    classes = list(class_names or info.get("classes") or [f"class {k}" for k in range(int(labels.max()) + 1)])
    if labels.min() < 0 or labels.max() >= len(classes):
        raise DataError(f"{path}: key '{split}_labels' has labels outside 0..{len(classes) - 1}")
    modality, region = info.get("modality", UNKNOWN), info.get("region", UNKNOWN)
    n = len(labels) if limit is None else min(limit, len(labels))
    out = []
    for i in range(n):
        image, category = to_array(Image.fromarray(np.asarray(imgs[i], dtype=np.uint8)), size), classes[labels[i]]
        abnormal = (category != schema.NORMAL) if schema.NORMAL in classes else None
        rec = {"id": f"{name}-{split}-{i:05d}", "image": image, "source": name, "modality": modality,
               "region": region, "category": category, "abnormal": abnormal, "bboxes": [],
               "mask": np.zeros(image.shape[:2], np.uint8), "extra": {"label": int(labels[i])}}
        out.append(_medmnist_row(rec, classes) if as_rows else rec)
    return out


def _medmnist_row(rec: dict, classes: list[str]) -> dict:
    meta = {k: rec[k] for k in schema.META_COLUMNS}
    if len(classes) == 2 and schema.NORMAL in classes:
        positive = next(c for c in classes if c != schema.NORMAL)
        answer = "yes" if rec["category"] == positive else "no"
        return _vqa_row(rec["image"], meta, _MEDMNIST_Q["closed"].format(positive=positive), answer, "closed")
    return _vqa_row(rec["image"], meta, _MEDMNIST_Q["open"], rec["category"], "open")

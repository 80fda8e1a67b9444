"""Find which layout a data folder holds and load it: params name a folder, `load_dir` does the rest.

Layouts recognised (the folder itself, or one sub-folder of the usual name, e.g. data/slake/Slake1.0/):
    vqa_rad   release: "VQA_RAD Dataset Public.json" + "VQA_RAD Image Folder/" (or images/);
              hub export: *.parquet (any depth, e.g. data/test-*.parquet) or a save_to_disk folder
    slake     release (Slake1.0/) or hub copy (BoKelvin/SLAKE): train.json, validate.json | validation.json,
              test.json + imgs/ (unzipped imgs.zip); hub export as for vqa_rad
    pmc_vqa   train.csv | train_2.csv, test.csv | test_2.csv, test_clean.csv + images/ (images_2/ for the _2
              files; figures/ accepted)
    iu_xray   annotation.json (R2Gen's {"train","val","test"} lists) + images/
    medmnist  a .npz file, or a folder of them (every .npz is loaded; each file is its own source)
Anything else raises real.DataError in one line saying which files were looked for.
"""

from __future__ import annotations

from pathlib import Path

from repro.data import real, real_hub

VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
NAMES = ("vqa_rad", "slake", "pmc_vqa", "iu_xray", "medmnist")
_SUBFOLDERS = {"vqa_rad": ("VQA_RAD", "vqa_rad", "VQA-RAD"), "slake": ("Slake1.0", "SLAKE", "slake"),
               "pmc_vqa": ("PMC-VQA", "pmc_vqa", "pmc-vqa"), "iu_xray": ("iu_xray", "IU_Xray", "iu-xray")}
_HUB = "*.parquet files or a datasets save_to_disk folder (dataset_dict.json / state.json)"
_PMC_CSV = {"train": ("train.csv", "train_2.csv"), "test": ("test.csv", "test_2.csv"),
            "test_clean": ("test_clean.csv",)}


def _roots(folder: Path, name: str) -> list[Path]:
    return [folder] + [folder / s for s in _SUBFOLDERS.get(name, ()) if (folder / s).is_dir()]


def _first_dir(root: Path, names) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def _has_hub_export(root: Path) -> bool:
    return real_hub.is_save_to_disk(root) or bool(real_hub.parquet_files(root))


def _vqa_rad(folder: Path, split, size, limit):
    if split not in (None, "train", "test"):
        raise ValueError(f"VQA-RAD has train and test splits only (or None for both), got {split!r}")
    for root in _roots(folder, "vqa_rad"):
        if (root / VQA_RAD_JSON).is_file():
            images = _first_dir(root, ("VQA_RAD Image Folder", "images"))
            if images is None:
                raise real.DataError(f"{root}: has {VQA_RAD_JSON!r} but no image folder; looked for "
                                     "'VQA_RAD Image Folder/' and 'images/'")
            return real.load_vqa_rad(root / VQA_RAD_JSON, images, size=size, split=split, limit=limit)
        if _has_hub_export(root):
            return real_hub.load_vqa_export(root, "vqa_rad", split, size=size, limit=limit)
    raise real.DataError(f"{folder}: no VQA-RAD layout found; looked for {VQA_RAD_JSON!r} with "
                         f"'VQA_RAD Image Folder/' or 'images/', and for {_HUB}")


def _slake(folder: Path, split, size, limit):
    files = {n for names in real._SLAKE_FILES.values() for n in names}
    for root in _roots(folder, "slake"):
        if any((root / f).is_file() for f in files):
            if not (root / "imgs").is_dir():
                hint = " (unzip imgs.zip there)" if (root / "imgs.zip").is_file() else ""
                raise real.DataError(f"{root}: has the SLAKE json files but no imgs/ folder{hint}")
            return real.load_slake(root, split=split or "test", size=size, limit=limit)
        if _has_hub_export(root):
            return real_hub.load_vqa_export(root, "slake", split, size=size, limit=limit)
    raise real.DataError(f"{folder}: no SLAKE layout found; looked for train.json / validate.json / test.json with "
                         f"imgs/ (also under Slake1.0/), and for {_HUB}")


def _pmc_vqa(folder: Path, split, size, limit):
    if split not in _PMC_CSV:
        raise ValueError(f"PMC-VQA split must be one of {sorted(_PMC_CSV)}, got {split!r}")
    for root in _roots(folder, "pmc_vqa"):
        csv = next((root / n for n in _PMC_CSV[split] if (root / n).is_file()), None)
        if csv is None:
            continue
        names = ("images_2", "images", "figures") if csv.stem.endswith("_2") else ("images", "figures")
        images = _first_dir(root, names)
        if images is None:
            raise real.DataError(f"{root}: has {csv.name} but no image folder; looked for "
                                 + ", ".join(f"'{n}/'" for n in names) + " (unzip images.zip there)")
        return real.load_pmc_vqa(csv, images, size=size, limit=limit)
    raise real.DataError(f"{folder}: no PMC-VQA csv found for split {split!r}; looked for "
                         + " or ".join(_PMC_CSV[split]) + " with images/")


def _iu_xray(folder: Path, split, size, limit):
    for root in _roots(folder, "iu_xray"):
        if (root / "annotation.json").is_file():
            if not (root / "images").is_dir():
                raise real.DataError(f"{root}: has annotation.json but no images/ folder")
            return real.load_iu_xray(root / "annotation.json", root / "images", split=split or "test", size=size,
                                     limit=limit)
    raise real.DataError(f"{folder}: no IU-Xray layout found; looked for annotation.json with images/ "
                         "(also under iu_xray/)")


def _medmnist(path: Path, split, size, limit):
    if path.is_file():
        return real.load_medmnist(path, split=split or "test", size=size, limit=limit)
    files = sorted(path.glob("*.npz"))
    if not files:
        raise real.DataError(f"{path}: no MedMNIST file found; looked for *.npz (e.g. pneumoniamnist.npz or "
                             "pneumoniamnist_224.npz)")
    return [r for f in files for r in real.load_medmnist(f, split=split or "test", size=size, limit=limit)]


_LOADERS = {"vqa_rad": _vqa_rad, "slake": _slake, "pmc_vqa": _pmc_vqa, "iu_xray": _iu_xray, "medmnist": _medmnist}


def load_dir(name: str, folder, split: str | None = "test", size=None, limit: int | None = None) -> list[dict]:
    """Rows of data set `name` (one of NAMES) from `folder`, whatever layout of the module docstring it holds.

    split: "train" | "test" (PMC-VQA also "test_clean"; SLAKE, IU-Xray and MedMNIST also "val"); None takes
    every split of VQA-RAD and of hub exports, and the test split of SLAKE, IU-Xray and MedMNIST. Rows follow the
    task-row schema (vqa; mcq for PMC-VQA; report for IU-Xray).
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; expected one of {NAMES}")
    path = Path(folder)
    if not path.exists():
        raise real.DataError(f"{path}: folder not found ({name})")
    return _LOADERS[name](path, split, size, limit)

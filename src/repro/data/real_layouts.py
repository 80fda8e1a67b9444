"""Find which layout a data folder holds and load it: params name a folder, `load_dir` does the rest.

Layouts recognised (in the folder itself, or in one sub-folder of the set's usual name, e.g. data/slake/Slake1.0/):
    vqa_rad   release: "VQA_RAD Dataset Public.json" + "VQA_RAD Image Folder/" (or images/);
              hub export: *.parquet in the folder or under its data/ (data/test-*.parquet), or a save_to_disk folder
    slake     release (Slake1.0/) or hub copy (BoKelvin/SLAKE): train.json, validate.json | validation.json,
              test.json + imgs/ (unzipped imgs.zip); hub export as for vqa_rad
    pmc_vqa   train.csv | train_2.csv, test.csv | test_2.csv, test_clean.csv + images/ (images_2/ for the _2
              files; figures/ accepted)
    iu_xray   annotation.json (R2Gen's {"train","val","test"} lists) + images/
    medmnist  a .npz file, or a folder of them (every .npz is loaded; each file is its own source)
A folder is recognised by the files of *that* set only: release file names, and for hub exports the place of the
files (a parquet file in some other sub-folder is another export) and their columns (real_hub.check_columns). A
layout in the set's named sub-folder wins over a hub export loose in the folder itself; two layouts of the set
otherwise (release and export side by side, or in the folder and in its sub-folder) are a one-line DataError
naming both. Nothing found raises real.NotFound in one line saying which files were looked for; a file found but
wrong raises DataError naming that file and what is wrong with it.
Relative folders are read from the repository root (paths.param_path), as params validation reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from repro import paths
from repro.data import real, real_hub

VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
NAMES = ("vqa_rad", "slake", "pmc_vqa", "iu_xray", "medmnist")
LABELS = {"vqa_rad": "VQA-RAD", "slake": "SLAKE", "pmc_vqa": "PMC-VQA", "iu_xray": "IU-Xray", "medmnist": "MedMNIST"}
_SUBFOLDERS = {"vqa_rad": ("VQA_RAD", "vqa_rad", "VQA-RAD"), "slake": ("Slake1.0", "SLAKE", "slake"),
               "pmc_vqa": ("PMC-VQA", "pmc_vqa", "pmc-vqa"), "iu_xray": ("iu_xray", "IU_Xray", "iu-xray")}
_HUB = ("*.parquet files (in the folder or under data/) or a datasets save_to_disk folder (dataset_dict.json / "
        "state.json)")
_PMC_CSV = {"train": ("train.csv", "train_2.csv"), "test": ("test.csv", "test_2.csv"),
            "test_clean": ("test_clean.csv",)}
# the files whose names mark a release layout of each set
_RELEASE = {"vqa_rad": (VQA_RAD_JSON,), "slake": tuple(dict.fromkeys(n for v in real._SLAKE_FILES.values() for n in v)),
            "pmc_vqa": tuple(n for v in _PMC_CSV.values() for n in v), "iu_xray": ("annotation.json",)}
_HUB_SETS = ("vqa_rad", "slake")


@dataclass(frozen=True)
class Layout:
    kind: str    # "release" | "hub export"
    root: Path   # the folder holding it
    mark: Path   # the file that shows it (named in errors)


def _roots(folder: Path, name: str) -> list[Path]:
    """The folder and its sub-folders of the set's usual names, each once (VQA_RAD/ and vqa_rad/ are one folder on
    a case-insensitive file system)."""
    out, seen = [], set()
    for root in [folder] + [folder / s for s in _SUBFOLDERS.get(name, ()) if (folder / s).is_dir()]:
        st = os.stat(root)
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            out.append(root)
    return out


def _first_dir(root: Path, names) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def _release(root: Path, name: str) -> Layout | None:
    mark = next((root / n for n in _RELEASE[name] if (root / n).is_file()), None)
    return Layout("release", root, mark) if mark else None


def _hub_export(root: Path, name: str) -> Layout | None:
    if name not in _HUB_SETS:
        return None
    if real_hub.is_save_to_disk(root):
        mark = root / "dataset_dict.json" if (root / "dataset_dict.json").is_file() else root / "state.json"
        return Layout("hub export", root, mark)
    files = real_hub.parquet_files(root)
    return Layout("hub export", root, files[0]) if files else None


def _two(name: str, a: Layout, b: Layout) -> real.DataError:
    return real.DataError(f"two {LABELS[name]} layouts, {a.kind} {a.mark} and {b.kind} {b.mark}: keep one, or point "
                          f"{name}_dir at the one to read")


def find_layout(name: str, folder: Path) -> Layout | None:
    """The one layout of data set `name` in `folder` (module docstring), or None."""
    found = {root: [x for x in (_release(root, name), _hub_export(root, name)) if x] for root in _roots(folder, name)}
    for layouts in found.values():
        if len(layouts) > 1:
            raise _two(name, *layouts[:2])
    top = found.pop(folder)
    named = [layouts[0] for layouts in found.values() if layouts]
    if len(named) > 1:
        raise _two(name, *named[:2])
    if named and top and top[0].kind == "release":
        raise _two(name, top[0], named[0])
    # the named sub-folder wins over an export loose in the folder (often another set's, beside it)
    return named[0] if named else (top[0] if top else None)


def _not_found(folder: Path, what: str) -> real.NotFound:
    return real.NotFound(f"{folder}: no {what}")


def _vqa_rad(folder: Path, split, size, limit):
    if split not in (None, "train", "test"):
        raise ValueError(f"VQA-RAD has train and test splits only (or None for both), got {split!r}")
    layout = find_layout("vqa_rad", folder)
    if layout is None:
        raise _not_found(folder, f"VQA-RAD layout found; looked for {VQA_RAD_JSON!r} with 'VQA_RAD Image Folder/' "
                                 f"or 'images/' (also under VQA_RAD/), and for {_HUB}")
    if layout.kind == "hub export":
        return real_hub.load_vqa_export(layout.root, "vqa_rad", split, size=size, limit=limit)
    images = _first_dir(layout.root, ("VQA_RAD Image Folder", "images"))
    if images is None:
        raise real.DataError(f"{layout.root}: has {VQA_RAD_JSON!r} but no image folder; looked for "
                             "'VQA_RAD Image Folder/' and 'images/'")
    return real.load_vqa_rad(layout.mark, images, size=size, split=split, limit=limit)


def _slake(folder: Path, split, size, limit):
    layout = find_layout("slake", folder)
    if layout is None:
        raise _not_found(folder, "SLAKE layout found; looked for train.json / validate.json / test.json with imgs/ "
                                 f"(also under Slake1.0/), and for {_HUB}")
    if layout.kind == "hub export":
        return real_hub.load_vqa_export(layout.root, "slake", split, size=size, limit=limit)
    if not (layout.root / "imgs").is_dir():
        hint = " (unzip imgs.zip there)" if (layout.root / "imgs.zip").is_file() else ""
        raise real.DataError(f"{layout.root}: has the SLAKE json files but no imgs/ folder{hint}")
    return real.load_slake(layout.root, split=split or "test", size=size, limit=limit)


def _pmc_vqa(folder: Path, split, size, limit):
    if split not in _PMC_CSV:
        raise ValueError(f"PMC-VQA split must be one of {sorted(_PMC_CSV)}, got {split!r}")
    layout = find_layout("pmc_vqa", folder)
    # the split's csv in the one folder that holds PMC-VQA: a split absent there is NotFound (the caller may take
    # test_clean for test), a csv found but wrong is a DataError naming it
    csv = next((layout.root / n for n in _PMC_CSV[split] if (layout.root / n).is_file()), None) if layout else None
    if csv is None:
        where = f" in {layout.root}" if layout else " (also under PMC-VQA/)"
        raise _not_found(folder, f"PMC-VQA csv found for split {split!r}; looked for "
                                 + " or ".join(_PMC_CSV[split]) + f" with images/{where}")
    names = ("images_2", "images", "figures") if csv.stem.endswith("_2") else ("images", "figures")
    images = _first_dir(layout.root, names)
    if images is None:
        raise real.DataError(f"{layout.root}: has {csv.name} but no image folder; looked for "
                             + ", ".join(f"'{n}/'" for n in names) + " (unzip images.zip there)")
    return real.load_pmc_vqa(csv, images, size=size, limit=limit)


def _iu_xray(folder: Path, split, size, limit):
    layout = find_layout("iu_xray", folder)
    if layout is None:
        raise _not_found(folder, "IU-Xray layout found; looked for annotation.json with images/ (also under iu_xray/)")
    if not (layout.root / "images").is_dir():
        raise real.DataError(f"{layout.root}: has annotation.json but no images/ folder")
    return real.load_iu_xray(layout.mark, layout.root / "images", split=split or "test", size=size, limit=limit)


def _medmnist(path: Path, split, size, limit):
    if path.is_file():
        return real.load_medmnist(path, split=split or "test", size=size, limit=limit)
    files = sorted(path.glob("*.npz"))
    if not files:
        raise real.NotFound(f"{path}: no MedMNIST file found; looked for *.npz (e.g. pneumoniamnist.npz or "
                             "pneumoniamnist_224.npz)")
    return [r for f in files for r in real.load_medmnist(f, split=split or "test", size=size, limit=limit)]


_LOADERS = {"vqa_rad": _vqa_rad, "slake": _slake, "pmc_vqa": _pmc_vqa, "iu_xray": _iu_xray, "medmnist": _medmnist}


def load_dir(name: str, folder, split: str | None = "test", size=None, limit: int | None = None) -> list[dict]:
    """Rows of data set `name` (one of NAMES) from `folder`, whatever layout of the module docstring it holds.

    folder: absolute, or relative to the repository root (paths.param_path) whatever the working directory.
    split: "train" | "test" (PMC-VQA also "test_clean"; SLAKE, IU-Xray and MedMNIST also "val"); None takes
    every split of VQA-RAD and of hub exports, and the test split of SLAKE, IU-Xray and MedMNIST. Rows follow the
    task-row schema (vqa; mcq for PMC-VQA; report for IU-Xray).
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; expected one of {NAMES}")
    path = paths.param_path(folder)
    if not path.exists():
        rel = "" if Path(folder).expanduser().is_absolute() else f" ({folder!r} is read from the repository root)"
        raise real.NotFound(f"{path}: folder not found ({name}){rel}")
    return _LOADERS[name](path, split, size, limit)

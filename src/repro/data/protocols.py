"""The papers' real-data protocols (gpu profile): which data folder each stage reads, chosen by one knob per paper.

Stage 01 turns the real folders named in params into *data dirs* shaped like the SynthMed one, so every later
stage reads them with the same code (evaluation.load_rows / evaluate, grpo.grpo_dataset, sft.sft_dataset,
preference.build_preference) — only the folder changes:

    <data_dir>/real_pmc_vqa/mcq/{train,test}            Zhu et al.: SFT and GRPO on PMC-VQA train, accuracy on test
    <data_dir>/real_mmedpo/vqa/{train,test}             MMedPO: VQA-RAD + SLAKE (row `source` tells them apart)
    <data_dir>/real_mmedpo/report/{train,test}          MMedPO: IU-Xray reports (BLEU, ROUGE-L)
    <data_dir>/real_medmnist/vqa/test                   UMed-LVLM / Dr-LLaVA: MedMNIST as an external test

Knobs (params), each mapped by `data_dir_for` to the folder a stage passes on as its data_dir:
    zhu_data       synthmed | pmc_vqa
    mmedpo_data    synthmed | real       (stage 03 curates the preference set from it, stage 04 evaluates on it)
    external_test  none | medmnist       (UMed-LVLM and Dr-LLaVA stay on SynthMed; this is an extra test set)
Per-dataset scores of a combined folder come from the metrics' by_source breakdown (vqa_rad, slake, iu_xray).
"""

from __future__ import annotations

from pathlib import Path

# knob -> {value: sub-folder of data_dir ("" = the SynthMed data dir itself, None = nothing)}
KNOBS: dict[str, dict[str, str | None]] = {
    "zhu_data": {"synthmed": "", "pmc_vqa": "real_pmc_vqa"},
    "mmedpo_data": {"synthmed": "", "real": "real_mmedpo"},
    "external_test": {"none": None, "medmnist": "real_medmnist"},
}
# data set name (build._REAL_KEYS) -> (protocol folder, task) it feeds
FEEDS = {"pmc_vqa": ("real_pmc_vqa", "mcq"), "vqa_rad": ("real_mmedpo", "vqa"), "slake": ("real_mmedpo", "vqa"),
         "iu_xray": ("real_mmedpo", "report"), "medmnist": ("real_medmnist", "vqa")}
# splits read from each data set; PMC-VQA's test.csv may be missing where only test_clean.csv was kept
SPLITS = {"pmc_vqa": {"train": ("train",), "test": ("test", "test_clean")}, "medmnist": {"test": ("test",)}}
DEFAULT_SPLITS = {"train": ("train",), "test": ("test",)}


def data_dir_for(data_dir, knob: str, value: str) -> Path | None:
    """The folder a stage reads for `knob` = `value` (None for external_test: none). Unknown knob/value or a folder
    stage 01 did not write: one-line error saying which params key of stage 01 fills it."""
    if knob not in KNOBS:
        raise ValueError(f"unknown data knob {knob!r}; expected one of {sorted(KNOBS)}")
    choices = KNOBS[knob]
    if value not in choices:
        raise ValueError(f"{knob}: value {value!r} is not one of {sorted(choices)}")
    sub = choices[value]
    if sub is None:
        return None
    out = Path(data_dir) / sub if sub else Path(data_dir)
    if sub and not out.is_dir():
        names = sorted(n for n, (folder, _) in FEEDS.items() if folder == sub)
        keys = ", ".join(f"{n}_path" if n == "medmnist" else f"{n}_dir" for n in names)
        raise FileNotFoundError(f"{out}: no real data for {knob}: {value} — set {keys} in params/<profile>/"
                                "01_data.yaml and rerun stage 01")
    return out


def _split_rows(name: str, folder: str, split: str, image_size: int, limit: int | None) -> list[dict]:
    """Rows of the first of the split's files that exists (SPLITS). Only an absent file moves on to the next: a file
    found but wrong (e.g. a test.csv without its answer columns) raises its own error, never the next one's."""
    from repro.data import real, real_layouts

    absent = []
    for s in SPLITS.get(name, DEFAULT_SPLITS)[split]:
        try:
            return real_layouts.load_dir(name, folder, split=s, size=image_size, limit=limit)
        except real.NotFound as e:
            absent.append(str(e))
    raise real.NotFound("; and ".join(absent))


def real_task_rows(sources: dict[str, str], image_size: int, max_rows: int = 0) -> dict[str, dict[str, dict]]:
    """{protocol folder: {task: {split: rows}}} from the real folders in `sources` (build._REAL_KEYS -> path;
    empty = not used). max_rows > 0 keeps the first max_rows rows of each data set's split (real train sets are
    large: PMC-VQA has ~150k questions, held in memory as arrays before they are saved)."""
    from repro.data.build import _REAL_KEYS

    out: dict[str, dict[str, dict]] = {}
    for key, name in _REAL_KEYS.items():
        if not sources.get(key):
            continue
        folder, task = FEEDS[name]
        for split in SPLITS.get(name, DEFAULT_SPLITS):
            rows = _split_rows(name, sources[key], split, image_size, max_rows or None)
            out.setdefault(folder, {}).setdefault(task, {}).setdefault(split, []).extend(rows)
    return out


def save_real_tasks(out_dir, sources: dict[str, str], image_size: int, max_rows: int = 0) -> dict[str, dict]:
    """Write the protocol folders under `out_dir` (DatasetDict per task, build.to_dataset rows); returns the manifest
    entries {"<folder>/<task>": {"rows": {split: n}, "sources": {split: {source: n}}}}."""
    from collections import Counter

    from datasets import DatasetDict

    from repro.data.build import to_dataset

    manifest = {}
    for folder, by_task in real_task_rows(sources, image_size, max_rows).items():
        for task, by_split in by_task.items():
            empty = [s for s, rows in by_split.items() if not rows]
            if empty:
                raise ValueError(f"{folder}/{task}: split {empty[0]!r} has no rows in the real data given "
                                 f"({', '.join(sorted({r['source'] for rows in by_split.values() for r in rows}))})")
            DatasetDict({s: to_dataset(rows) for s, rows in by_split.items()}).save_to_disk(
                str(Path(out_dir) / folder / task))
            manifest[f"{folder}/{task}"] = {
                "rows": {s: len(rows) for s, rows in by_split.items()},
                "sources": {s: dict(Counter(r["source"] for r in rows)) for s, rows in by_split.items()}}
    return manifest

"""Stage 06's held-out-free starting points (issue 27, item 4). Stage 02's base and SFT were trained on every train
image, including the images and labels UMed's conditions hold out, so an "unseen" category or source was not
unseen: vision pretraining and base training had seen it. Here the stage-02 recipe (vision pretraining + base
training, knobs read from params/<profile>/02_sft.yaml) is rerun from stage 02's untrained `init` on the train rows
with the held-out parts removed, and every condition's short SFT starts from such a base.

Two bases, not one per condition (one base costs ~4-5 min of one core at cpu size):
    "held-out-free"   without every condition's held-out part except the cross-modal one (held categories,
                      left-out sources); serves unseen categories, each left-out source and the data fractions
    "<modality> only" the cross-modal condition's base: its held-out part is whole modalities, and removing them
                      from the shared base would leave it one source (kidney stones) to learn from
A condition's held-out images are its test-split rows plus, for a condition that holds out labels (categories,
sources, modalities), every image of any split carrying them; `saw_heldout` intersects them with the image ids
recorded by the jobs that trained the start (base and SFT), so `base_saw_heldout` is measured, not asserted.

Zhu's held-out question kind has a third base, the "kind-free base" (`kindfree_arm`): stage 02's base recipe on the
train rows of `base_tasks` whose `question_kind` is not the held-out one, started from stage 02's vision-pretrained
tower (no need to rerun it: that pretraining never sees a question, see kindfree_arm). It records the question kinds
of the rows it kept (<folder>/train_kinds.json); `saw_kind` reads them, so Zhu's `base_saw_heldout` is measured too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from repro import config, paths
from repro.generalization import subsets
from repro.papers import common

LABEL_KINDS = ("categories", "source", "modality")  # conditions that hold out labels, not only test images
SHARED = "held-out-free"
KINDFREE = "kindfree"  # ZhuStudy.init of the kind-free base (bases.kindfree_arm)
RECIPE_KEYS = ("model_name_or_path", "vision_steps", "base_tasks", "base_steps", "batch_size", "lr", "seed",
               "freeze_vision", "lora_r")


@dataclasses.dataclass
class Recipe:
    """A base job's config (what enters its cache key): stage 02's vision + base knobs and nothing of the study,
    so a change of a UMed knob (SFT steps, PPO lr) reuses the bases."""

    model_name_or_path: str = ""
    vision_steps: int = 0
    base_tasks: list = dataclasses.field(default_factory=list)
    base_steps: int = 0
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    freeze_vision: bool = False
    lora_r: int = 0


def recipe02(profile: str) -> Recipe:
    """Stage 02's vision + base knobs for `profile`: its notebook's defaults overridden by its params file."""
    declared = {k: d for k, (_, d) in config.declared_parameters("02_sft").items()}
    params = {**declared, **config.load_params(profile, "02_sft", check_paths=False)}
    return Recipe(**{k: params[k] for k in RECIPE_KEYS})


def heldout_spec(train: dict, test: dict) -> dict | None:
    """The rows a condition's start must never have trained on, as a subset spec (None: only its test images)."""
    return test if train["kind"] in LABEL_KINDS else None


def base_of(conditions: dict[str, tuple[dict, dict]]) -> dict[str, str]:
    """{condition: base name}: the cross-modal condition gets its own base, every other one the shared base."""
    return {c: f"{train['value']} only" if train["kind"] == "modality" else SHARED
            for c, (train, _) in conditions.items()}


def exclusions(conditions: dict[str, tuple[dict, dict]]) -> dict[str, list[dict]]:
    """{base name: the held-out specs its training rows leave out}: the union over the conditions it serves."""
    out: dict[str, list[dict]] = {}
    for c, base in base_of(conditions).items():
        spec = heldout_spec(*conditions[c])
        out.setdefault(base, [])
        if spec is not None and spec not in out[base]:
            out[base].append(spec)
    return out


def keep_indices(meta: list[dict], exclude: list[dict]) -> list[int]:
    """Indices of the rows (dicts with source / category / modality) matched by none of the held-out specs."""
    for i, m in enumerate(meta):
        m["_i"] = i
    held = {m["_i"] for spec in exclude for m in subsets.select(meta, spec)}
    return [i for i in range(len(meta)) if i not in held]


def _meta(ds) -> list[dict]:
    return ds.select_columns([c for c in ("id", "source", "category", "modality") if c in ds.column_names]).to_list()


def base_arm(job: common.Job):
    """Vision pretraining + base training (stage 02's recipe: job.cfg, a Recipe) on the train rows left after
    job.extra["exclude"]; writes the ids of every image it trained on to <folder>/train_ids.json (a superset:
    every row the filter kept, whether or not a batch drew it)."""
    from repro.data import build
    from repro.train import sft, vision

    e, data = job.extra, common.data_dir(job.stage)
    r, ids = dataclasses.asdict(job.cfg), set()
    if r["model_name_or_path"]:  # a real checkpoint is already pretrained elsewhere (no SynthMed image in it)
        init = paths.model_ref(r["model_name_or_path"])
    else:  # stage 02's freshly built model: random weights, tokenizer only (its corpus: sft.corpus says why)
        init = paths.models_dir(job.stage.profile) / "init"
        if not (init / "config.json").exists():
            raise FileNotFoundError(f"{init} not found: run stage 02 first")
    vis = None
    if r["vision_steps"] and not r["model_name_or_path"]:
        images = _meta(build.load_task(data, "images")["train"])
        keep = keep_indices(images, e["exclude"])
        ids |= {images[i]["id"] for i in keep}
        vis = vision.pretrain(init, job.folder / "vision", data, steps=r["vision_steps"], seed=r["seed"],
                              progress=False, train_indices=keep)
        init = vis["final_dir"]

    def row_filter(task, ds):
        meta = _meta(ds)
        keep = keep_indices(meta, e["exclude"])
        ids.update(meta[i]["id"] for i in keep)
        return keep

    mix = sft.sft_dataset(data, list(r["base_tasks"]), seed=r["seed"], batch_size=r["batch_size"],
                          steps=r["base_steps"], row_filter=row_filter)
    lora = {"r": r["lora_r"], "lora_alpha": 2 * r["lora_r"]} if r["lora_r"] else None
    info = sft.train(init, job.folder / "base", mix, max_steps=r["base_steps"], batch_size=r["batch_size"],
                     lr=r["lr"], seed=r["seed"], lora=lora, sequential=True, freeze_vision=r["freeze_vision"],
                     run_key={"recipe": r, "exclude": e["exclude"]})
    write_ids(job.folder, ids)
    losses = [h["loss"] for h in info["log_history"] if "loss" in h]
    return {"metrics": {"train_images": len(ids), "vision_seconds": vis["seconds"] if vis else 0.0,
                        "base_seconds": info["seconds"], "loss_last": losses[-1] if losses else None},
            "curve": [], "kl_end": None, "reward_first": None, "reward_last": None, "trained": True,
            "why": "held-out-free start (the trained rule is for RL arms)", "final_dir": str(info["final_dir"]),
            "folder": str(job.folder), "exclude": e["exclude"]}, pd.DataFrame(columns=common.ROW_COLUMNS)


def write_ids(folder: Path, ids) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "train_ids.json").write_text(json.dumps(sorted(ids)))


def read_ids(folder) -> set[str] | None:
    """The image ids a job recorded training on; None when it recorded none (then nothing can be claimed)."""
    f = Path(folder) / "train_ids.json"
    return set(json.loads(f.read_text())) if f.exists() else None


def heldout_ids(data_dir, train: dict, test: dict, eval_split: str = "test") -> set[str]:
    """A condition's held-out image ids: its test rows, and for a label condition every image carrying the labels."""
    from repro.data import build

    images = build.load_task(data_dir, "images")
    spec = heldout_spec(train, test)
    out = {m["id"] for m in subsets.select(_meta(images[eval_split]), test)}
    if spec is not None:
        out |= {m["id"] for split in images.values() for m in subsets.select(_meta(split), spec)}
    return out


def saw_heldout(trained_on: list[set[str] | None], held: set[str]) -> bool | None:
    """True when any job of the start's chain trained on a held-out image; None when one recorded no ids."""
    if any(ids is None for ids in trained_on):
        return None
    return any(ids & held for ids in trained_on)


# ----------------------------------------------------------------------------------------------- Zhu's kind-free base
def kind_filter(heldout_kind: str, kinds: dict | None = None):
    """sft.sft_dataset's row_filter: the rows whose question_kind is not `heldout_kind` (every row of a task without
    the column: reports and instructions ask no question kind). `kinds`, when given, collects per task the
    question_kind counts of the kept rows ({task: {kind: n}}, {"": n} for a task without the column)."""
    def keep(task, ds):
        if "question_kind" not in ds.column_names:
            idx, seen = list(range(len(ds))), [""] * len(ds)
        else:
            col = ds["question_kind"]
            idx = [i for i, k in enumerate(col) if k != heldout_kind]
            seen = [col[i] for i in idx]
        if kinds is not None:
            counts = kinds.setdefault(task, {})
            for k in seen:
                counts[k] = counts.get(k, 0) + 1
        return idx

    return keep


def vision_start(recipe: Recipe, profile: str) -> str:
    """Where stage 02's base training started: its vision-pretrained tower (models/<profile>/vision), 02's
    untrained `init` when vision_steps is 0, or the real checkpoint of model_name_or_path."""
    if recipe.model_name_or_path:
        return paths.model_ref(recipe.model_name_or_path)
    d = paths.models_dir(profile) / ("vision" if recipe.vision_steps else "init")
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"{d} not found: run stage 02 first "
                                f"(python -m repro run --profile {profile} --only 02)")
    return str(d)


def kindfree_arm(job: common.Job):
    """Zhu's kind-free base: stage 02's base training (job.cfg, a Recipe: base_tasks, base_steps, lr, batch size,
    ...) on the train rows of every base task without job.extra["heldout_kind"] (kind_filter), from stage 02's
    vision-pretrained tower. That tower may be reused as is: its pretraining (repro.train.vision) fits heads on the
    train images and their class / body-region / lesion-box labels, never on a question or an answer text, so it
    never saw any question kind (it did learn to see what a region or modality question asks about, as any
    pretrained vision encoder has). Writes the question kinds of every row the filter kept to
    <folder>/train_kinds.json (a superset of what the batches drew), which saw_kind reads."""
    from repro.train import sft

    r, e = dataclasses.asdict(job.cfg), job.extra
    init = vision_start(job.cfg, job.stage.profile)
    kinds: dict[str, dict[str, int]] = {}
    mix = sft.sft_dataset(common.data_dir(job.stage), list(r["base_tasks"]), seed=r["seed"],
                          batch_size=r["batch_size"], steps=r["base_steps"],
                          row_filter=kind_filter(e["heldout_kind"], kinds))
    lora = {"r": r["lora_r"], "lora_alpha": 2 * r["lora_r"]} if r["lora_r"] else None
    info = sft.train(init, job.folder / "base", mix, max_steps=r["base_steps"], batch_size=r["batch_size"],
                     lr=r["lr"], seed=r["seed"], lora=lora, sequential=True, freeze_vision=r["freeze_vision"],
                     run_key={"recipe": r, "without_question_kind": e["heldout_kind"]})
    write_kinds(job.folder, kinds)
    losses = [h["loss"] for h in info["log_history"] if "loss" in h]
    return {"metrics": {"train_rows": sum(sum(c.values()) for c in kinds.values()), "base_seconds": info["seconds"],
                        "loss_last": losses[-1] if losses else None},
            "curve": [], "kl_end": None, "reward_first": None, "reward_last": None, "trained": True,
            "why": "start without the held-out question kind (the trained rule is for RL arms)",
            "final_dir": str(info["final_dir"]), "folder": str(job.folder), "kinds": kinds,
            "heldout_kind": e["heldout_kind"]}, pd.DataFrame(columns=common.ROW_COLUMNS)


def write_kinds(folder: Path, kinds: dict) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "train_kinds.json").write_text(json.dumps(kinds, sort_keys=True))


def read_kinds(folder) -> dict | None:
    f = Path(folder) / "train_kinds.json"
    return json.loads(f.read_text()) if f.exists() else None


def saw_kind(folder, heldout_kind: str) -> bool | None:
    """Did the base in `folder` train on a row of `heldout_kind`? From its recorded kinds; None when it recorded
    none (then nothing can be claimed)."""
    kinds = read_kinds(folder) if folder else None
    if kinds is None:
        return None
    return any(heldout_kind in counts for counts in kinds.values())

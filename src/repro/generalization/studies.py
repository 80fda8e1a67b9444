"""The jobs of each stage-06 study, in the order they depend on each other, and their runs ({"paper", "records",
"rows"}, the shape of a stage-04 run, so papers.claims.scores / trained read them). Arms run through
papers.common.run_jobs (parallel workers, one cached result file per arm).

UMed: phase 0 trains the held-out-free bases (repro.generalization.bases: stage 02's vision + base recipe without
the held-out rows; shared by every seed), phase 1 one short SFT per condition from its base (seed 0: the start
every RL seed shares), phase 2 evaluates each SFT on its condition's test rows and trains + evaluates SFT+AAR per
seed. Every data fraction, 100 % included, runs this recipe (no stage-04 model: it saw every held-out image).
Dr-LLaVA: stage 04's models (its SFT start and PPO arms) scored on the robustness variants of 04's test images.
Zhu: the kind-free base (repro.generalization.bases.kindfree_arm: 02's base recipe without the held-out question
kind; or 02's base / SFT, which saw it), its evaluation on both question parts, then one longer GRPO run per seed
with checkpoints.
MMedPO: a short SFT of the tiny Qwen2.5-VL, then its start and DPO / MMedPO arms on it and on the stage-02 base.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from repro import config, papers
from repro.data import build
from repro.generalization import MMedPOStudy, UMedStudy, ZhuStudy, arms, bases, subsets
from repro.papers import common

FN = "repro.generalization.arms:"
QWEN = "Qwen2.5-VL"


def _stamp(folder) -> int | None:
    f = Path(folder) / "model.safetensors"
    return f.stat().st_mtime_ns if f.exists() else None


def _run(paper: str, jobs: list[common.Job], stage: common.Stage, only_cached: bool) -> dict:
    recs, rows = common.run_jobs(jobs, stage.n_workers(), only_cached)
    return {"paper": paper, "records": recs, "rows": rows}


def merge(*runs: dict) -> dict:
    """Runs of one paper as one (records and rows concatenated): a study beside stage 04's arms."""
    runs = [r for r in runs if r]
    return {"paper": runs[0]["paper"], "records": [x for r in runs for x in r["records"]],
            "rows": pd.concat([r["rows"] for r in runs], ignore_index=True)}


def stage04(profile: str) -> tuple[dict, common.Stage]:
    """Stage 04's configs and stage from params/<profile>/04_rl.yaml (its arms are read, never retrained)."""
    params = config.load_params(profile, "04_rl", check_paths=False)
    return papers.configs_from(params), papers.stage_from(params)


def run04(paper: str, profile: str) -> dict | None:
    """Stage 04's run of `paper` from its arm files (None when stage 04 has not run with its params)."""
    configs, stage = stage04(profile)
    run = papers.MODULES[paper].run(configs[paper], stage, only_cached=True)
    return run if run["records"] else None


# ----------------------------------------------------------------------------------------------- Dr-LLaVA
def drllava_jobs(stage: common.Stage) -> list[common.Job]:
    """Stage 04's Dr-LLaVA models scored on the robustness variants (04 scores the standard order): each SFT start
    04 evaluates and every PPO arm of 04 that moved (one that did not is its start again: neither stage scores it).
    Keyed by the model file's time, so a retrained 04 arm is scored again. Only 04's arms on disk are listed."""
    from repro.papers import claims as claims_lib
    from repro.papers import drllava

    configs, st04 = stage04(stage.profile)
    cfg = configs["drllava"]
    out = []
    for j in drllava.jobs(cfg, st04):
        if j.fn == "repro.papers.measure:eval_arm":
            model = common.model_dir(st04, "sft", j.seed)
        elif j.method == drllava.METHOD:
            cached = common._load_cached(j)
            if cached is None or not cached[0].get("metrics"):
                continue
            model = j.folder / "train" / "final"
        else:  # continued SFT: its claim reads the standard order only
            continue
        out.append(common.Job("ood_drllava", j.method, j.seed, FN + "drllava_eval", cfg, stage,
                              {"model": str(model), "stamp": _stamp(model), "limit": cfg.eval_limit,
                               "variants": list(claims_lib.DR_VARIANTS), "start": j.method == "SFT"}))
    return out


def drllava_run(stage: common.Stage, only_cached: bool = False) -> tuple[dict | None, dict]:
    """(04's Dr-LLaVA run with this stage's variant rows added to its rows, this stage's own run of those
    evaluations). The records stay 04's: whether an arm trained is decided there. (None, empty run) before 04."""
    base = run04("drllava", stage.profile)
    new = _run("drllava", drllava_jobs(stage) if base else [], stage, only_cached)
    if base is None:
        return None, new
    return {**base, "rows": pd.concat([base["rows"], new["rows"]], ignore_index=True)}, new


# ----------------------------------------------------------------------------------------------- UMed
def heldout_of(study: UMedStudy, stage: common.Stage) -> list[str]:
    return list(study.heldout) or build.load_manifest(common.data_dir(stage))["splits"]["heldout_categories"]


def umed_conditions(study: UMedStudy, stage: common.Stage) -> dict[str, tuple[dict, dict]]:
    fractions = subsets.check_fractions(study.fractions)
    return subsets.conditions(heldout_of(study, stage), study.loso, study.modality, fractions, stage.seed)


def base_jobs(study: UMedStudy, stage: common.Stage) -> dict[str, common.Job]:
    """{base name: its job}: stage 02's vision + base recipe on the train rows without its held-out specs."""
    recipe = bases.recipe02(stage.profile)
    return {b: common.Job("ood_umed_base", f"base [{b}]", None, "repro.generalization.bases:base_arm", recipe, stage,
                          {"exclude": exclude})
            for b, exclude in bases.exclusions(umed_conditions(study, stage)).items()}


def umed_bases(study: UMedStudy, stage: common.Stage, only_cached: bool = False) -> tuple[dict, dict[str, str]]:
    """The held-out-free bases (trained unless on disk) -> (their run, {base name: its folder or ""})."""
    run = _run("umed", list(base_jobs(study, stage).values()), stage, only_cached)
    return run, {r["method"][len("base ["):-1]: r.get("final_dir") or "" for r in run["records"]}


def umed_sft_jobs(study: UMedStudy, stage: common.Stage, base_dirs: dict[str, str]) -> dict[str, common.Job]:
    conds, of = umed_conditions(study, stage), bases.base_of(umed_conditions(study, stage))
    return {c: common.Job("ood_umed_sft", f"SFT [{c}]", None, FN + "sft_arm", study, stage,
                          {"init": base_dirs[of[c]], "stamp": _stamp(base_dirs[of[c]]), "tasks": list(study.sft_tasks),
                           "train": train, "steps": study.sft_steps, "batch_size": study.sft_batch_size,
                           "lr": study.sft_lr})
            for c, (train, _) in conds.items() if base_dirs.get(of[c])}


def umed_jobs(study: UMedStudy, ppo_cfg, stage: common.Stage, sft_dirs: dict[str, str]) -> list[common.Job]:
    out = []
    for c, (train, test) in umed_conditions(study, stage).items():
        init = sft_dirs[c]
        base = {"init": init, "stamp": _stamp(init), "test": test, "limit": study.eval_limit}
        out.append(common.Job("ood_umed", f"SFT [{c}]", None, FN + "eval_arm", study, stage,
                              {**base, "model": init, "tasks": ["instruct"]}))
        out += [common.Job("ood_umed", f"SFT+AAR [{c}]", s, FN + "umed_arm", ppo_cfg, stage, {**base, "train": train})
                for s in stage.seeds]
    return out


def umed_phase1(study: UMedStudy, stage: common.Stage, only_cached: bool = False) -> tuple[dict, dict]:
    """Phase 0 and 1 (the bases, then the short SFT per condition; each run unless on disk) -> (bases' run,
    SFTs' run)."""
    base_run, base_dirs = umed_bases(study, stage, only_cached)
    return base_run, _run("umed", list(umed_sft_jobs(study, stage, base_dirs).values()), stage, only_cached)


def umed_phase2(study: UMedStudy, ppo_cfg, stage: common.Stage, only_cached: bool = False):
    """Phases 0-1 -> (bases' run, SFTs' run, phase 2's jobs: each SFT's evaluation and its SFT+AAR arms)."""
    base_run, sft = umed_phase1(study, stage, only_cached)
    dirs = {r["method"][len("SFT ["):-1]: r.get("final_dir") for r in sft["records"]}
    jobs = [j for j in umed_jobs(study, ppo_cfg, stage, {c: dirs.get(c) or "" for c in umed_conditions(study, stage)})
            if j.extra["init"]]
    return base_run, sft, jobs


def umed_heldout(study: UMedStudy, stage: common.Stage, base_run: dict, sft_run: dict) -> dict[str, bool | None]:
    """{condition: did its start (base, then short SFT) train on a held-out image or label?, base name: did it
    train on one of any condition it serves?}, from the image ids the jobs recorded (bases.saw_heldout; None when
    one recorded none)."""
    conds, of = umed_conditions(study, stage), bases.base_of(umed_conditions(study, stage))
    folders = {**{r["method"][len("base ["):-1]: r.get("folder") for r in base_run["records"]},
               **{r["method"]: r.get("folder") for r in sft_run["records"]}}
    ids = {k: bases.read_ids(f) if f else None for k, f in folders.items()}
    out, held_by_base = {}, {}
    for c, (train, test) in conds.items():
        held = bases.heldout_ids(common.data_dir(stage), train, test, stage.eval_split)
        held_by_base.setdefault(of[c], set()).update(held)
        out[c] = bases.saw_heldout([ids.get(of[c]), ids.get(f"SFT [{c}]")], held)
    out.update({b: bases.saw_heldout([ids.get(b)], held) for b, held in held_by_base.items()})
    return out


def umed_run(study: UMedStudy, ppo_cfg, stage: common.Stage, only_cached: bool = False) -> dict:
    base_run, sft, jobs = umed_phase2(study, ppo_cfg, stage, only_cached)
    run = _run("umed", jobs, stage, only_cached)
    run["bases"], run["sft"] = base_run["records"], sft["records"]
    saw = umed_heldout(study, stage, base_run, sft)
    for r in run["records"] + run["sft"] + run["bases"]:
        r["base_saw_heldout"] = saw.get(r["method"].split(" [", 1)[-1][:-1])
    return run


# ----------------------------------------------------------------------------------------------- Zhu
def zhu_labels(study: ZhuStudy) -> tuple[str, str]:
    """(the start's method name, the GRPO arm's method name): "SFT" / "base" as stage 04 names 02's starts, "kind-free
    base" for bases.kindfree_arm's start."""
    if study.init == bases.KINDFREE:
        return "kind-free base", f"kind-free base+{study.variant}"
    if study.init not in papers.zhu.INIT_LABELS:
        raise ValueError(f"ood_zhu_init must be {bases.KINDFREE}, base or sft, got {study.init!r}")
    return papers.zhu.INIT_LABELS[study.init], papers.zhu.method(study.init, study.variant)


def zhu_base_jobs(study: ZhuStudy, stage: common.Stage) -> list[common.Job]:
    """The kind-free base's job (none for the "sft" / "base" starts): stage 02's base recipe without the held-out
    question kind, from 02's vision tower. One per (recipe, held-out kind, vision weights): every seed shares it."""
    if study.init != bases.KINDFREE:
        return []
    recipe = bases.recipe02(stage.profile)
    return [common.Job("ood_zhu_base", f"kind-free base [{study.heldout_kind}]", None,
                       "repro.generalization.bases:kindfree_arm", recipe, stage,
                       {"heldout_kind": study.heldout_kind,
                        "stamp": _stamp(bases.vision_start(recipe, stage.profile))})]


def zhu_base(study: ZhuStudy, stage: common.Stage, only_cached: bool = False) -> tuple[dict, str | None]:
    """The kind-free base (trained unless on disk) -> (its run, its folder; None for the "sft" / "base" starts or
    when it is not on disk)."""
    run = _run("zhu", zhu_base_jobs(study, stage), stage, only_cached)
    return run, next((r.get("final_dir") for r in run["records"]), None)


def zhu_jobs(study: ZhuStudy, grpo_cfg, stage: common.Stage, base_dir: str | None = None) -> list[common.Job]:
    """The start's evaluation and one GRPO run per seed. init "sft" / "base": stage 02's checkpoints; "kindfree":
    `base_dir`, the kind-free base's folder (no job without it)."""
    init, stamp = study.init, None
    if init == bases.KINDFREE:
        if not base_dir:
            return []
        init, stamp = base_dir, _stamp(base_dir)
    parts = arms.zhu_parts(study.heldout_kind)
    start_name, name = zhu_labels(study)
    start = [common.Job("ood_zhu", start_name, s, FN + "eval_arm", study, stage,
                        {"model": init, "stamp": stamp, "tasks": ["mcq"], "limit": study.eval_limit,
                         "labels": {f"0:{p}": spec for p, spec in parts.items()},
                         "extra_fn": "repro.papers.zhu:mcq_extra"})
             for s in (common.sft_seeds(stage) if init == "sft" else [None])]  # a start per seed (Stage.start_seeds)
    for job in start:
        if stamp is None:  # as before the kind-free start: the cached arms of the "sft" / "base" starts keep their keys
            job.extra.pop("stamp")
    extra = {"init": init, "variant": study.variant, "heldout_kind": study.heldout_kind, "steps": study.steps,
             "checkpoints": study.checkpoints, "limit": study.eval_limit}
    if stamp is not None:
        extra["stamp"] = stamp
    return start + [common.Job("ood_zhu", name, s, FN + "zhu_arm", grpo_cfg, stage, dict(extra)) for s in stage.seeds]


def zhu_run(study: ZhuStudy, grpo_cfg, stage: common.Stage, only_cached: bool = False) -> dict:
    """The kind-free base when init is "kindfree" (trained unless on disk), then the start's evaluation and the
    GRPO arms; run["bases"] holds the base's record (arms_summary lists it)."""
    base_run, base_dir = zhu_base(study, stage, only_cached)
    run = _run("zhu", zhu_jobs(study, grpo_cfg, stage, base_dir), stage, only_cached)
    run["bases"] = base_run["records"]
    return run


# ----------------------------------------------------------------------------------------------- MMedPO
def mmedpo_sft_jobs(study: MMedPOStudy, stage: common.Stage) -> list[common.Job]:
    if not study.qwen:
        return []
    return [common.Job("ood_mmedpo_sft", f"SFT [{QWEN}]", None, FN + "sft_arm", study, stage,
                       {"init": "qwen", "tasks": list(study.qwen_sft_tasks), "train": {"kind": "all"},
                        "steps": study.qwen_sft_steps, "batch_size": study.qwen_sft_batch_size,
                        "lr": study.qwen_sft_lr})]


def mmedpo_jobs(study: MMedPOStudy, dpo_cfg, stage: common.Stage, qwen_dir: str | None) -> list[common.Job]:
    starts = {}
    if study.qwen and qwen_dir:
        starts[QWEN] = qwen_dir
    if study.base_start:
        starts["base start"] = "base"
    out = []
    for label, init in starts.items():
        stamp = _stamp(init) if init not in ("base", "sft") else None
        out.append(common.Job("ood_mmedpo", f"{'SFT' if init != 'base' else 'base'} [{label}]", None,
                              FN + "eval_arm", dpo_cfg, stage,
                              {"model": init, "stamp": stamp, "tasks": ["vqa", "report"],
                               "limit": dpo_cfg.eval_limit}))
        out += [common.Job("ood_mmedpo", f"{m} [{label}]", s, FN + "dpo_arm", dpo_cfg, stage,
                           {"init": init, "stamp": stamp}) for s in stage.seeds for m in papers.mmedpo.METHODS]
    return out


def mmedpo_qwen(study: MMedPOStudy, stage: common.Stage, only_cached: bool = False) -> tuple[dict, str | None]:
    """The short SFT of the tiny Qwen2.5-VL (run unless on disk) -> (its run, its folder; None when off)."""
    sft = _run("mmedpo", mmedpo_sft_jobs(study, stage), stage, only_cached) if study.qwen else {"records": []}
    return sft, next((r.get("final_dir") for r in sft["records"]), None)


def mmedpo_run(study: MMedPOStudy, dpo_cfg, stage: common.Stage, only_cached: bool = False) -> dict:
    sft, qwen_dir = mmedpo_qwen(study, stage, only_cached)
    run = _run("mmedpo", mmedpo_jobs(study, dpo_cfg, stage, qwen_dir), stage, only_cached)
    run["sft"] = sft["records"]
    return run


# ----------------------------------------------------------------------------------------------- all at once
def run_all(umed: tuple[UMedStudy, object], mmedpo: tuple[MMedPOStudy, object], zhu: tuple[ZhuStudy, object],
            stage: common.Stage) -> int:
    """Every study's jobs in three pools instead of six: (1) the held-out-free bases and Zhu's kind-free base with
    every arm that needs none of them (MMedPO from the stage-02 base, the Qwen SFT; Zhu's run when it starts from a
    stage-02 model; 04's Dr-LLaVA models on the robustness variants), (2) the short SFTs from those bases with the
    arms that start from the Qwen SFT or the kind-free base, (3) the arms that start from the short SFTs. Longest
    first in each, so the workers finish together. The notebook's sections then read their arms back. Returns the
    number of jobs.
    (study, its trainer config) pairs: (UMedStudy, UMedConfig), (MMedPOStudy, MMedPOConfig), (ZhuStudy, ZhuConfig)."""
    (us, uc), (ms, mc), (zs, zc) = umed, mmedpo, zhu
    first = list(base_jobs(us, stage).values()) + mmedpo_sft_jobs(ms, stage) + zhu_base_jobs(zs, stage)
    first += zhu_jobs(zs, zc, stage)  # none for the kind-free start: its arms wait for its base (second pool)
    first += mmedpo_jobs(ms, mc, stage, None)  # without the Qwen folder: the base-start arms only
    first += drllava_jobs(stage)  # 04's Dr-LLaVA models on the robustness variants
    common.run_jobs(first, stage.n_workers())
    done = {j.folder for j in first}
    second = list(umed_sft_jobs(us, stage, umed_bases(us, stage, only_cached=True)[1]).values())
    second += [j for j in zhu_jobs(zs, zc, stage, zhu_base(zs, stage, only_cached=True)[1]) if j.folder not in done]
    second += [j for j in mmedpo_jobs(ms, mc, stage, mmedpo_qwen(ms, stage, only_cached=True)[1])
               if j.folder not in done]  # the base-start arms ran in the first pool
    common.run_jobs(second, stage.n_workers())
    third = umed_phase2(us, uc, stage, only_cached=True)[2]
    common.run_jobs(third, stage.n_workers())
    return len(first) + len(second) + len(third)


def zhu_heldout(study: ZhuStudy, stage: common.Stage) -> bool | None:
    """Did Zhu's start train on a row of the held-out question kind? The kind-free base: from the question kinds its
    job recorded (bases.saw_kind; None when it has not run). Stage 02's base or SFT: 02 drew its rows from the whole
    train split of its tasks, so any train row of those tasks with that kind counts as seen."""
    from repro.data import build

    if study.init == bases.KINDFREE:
        return bases.saw_kind(zhu_base_jobs(study, stage)[0].folder, study.heldout_kind)
    tasks = set(bases.recipe02(stage.profile).base_tasks)
    tasks |= set(_sft02(stage.profile)["sft_tasks"]) if study.init == "sft" else set()
    for t in sorted(tasks):
        ds = build.load_task(common.data_dir(stage), t)["train"]
        if "question_kind" in ds.column_names and study.heldout_kind in set(ds["question_kind"]):
            return True
    return False


def _sft02(profile: str) -> dict:
    declared = {k: d for k, (_, d) in config.declared_parameters("02_sft").items()}
    return {"sft_tasks": {**declared, **config.load_params(profile, "02_sft", check_paths=False)}["sft_tasks"]}


def arms_summary(runs: dict[str, dict | None], zhu_saw: bool | None) -> list[dict]:
    """One row per arm of this stage: what it is and whether its start trained on its condition's held-out images
    or labels (`base_saw_heldout`: UMed from the recorded image ids, Zhu from zhu_heldout: its kind-free base's
    recorded question kinds or stage 02's task mixture; None where a study holds nothing out: MMedPO's
    compatibility arms)."""
    out = []
    for paper, run in runs.items():
        for r in (run or {}).get("records", []) + (run or {}).get("bases", []):
            saw = r.get("base_saw_heldout") if paper == "umed" else zhu_saw if paper == "zhu" else None
            out.append({"paper": paper, "method": r["method"], "seed": r["seed"], "trained": r["trained"],
                        "why": r.get("why", ""), "base_saw_heldout": saw})
    return out

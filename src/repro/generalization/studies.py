"""The jobs of each stage-06 study, in the order they depend on each other, and their runs ({"paper", "records",
"rows"}, the shape of a stage-04 run, so papers.claims.scores / trained read them). Arms run through
papers.common.run_jobs (parallel workers, one cached result file per arm).

UMed: phase 1 trains one short SFT per condition (seed 0: the start every RL seed shares), phase 2 evaluates each
SFT on its condition's test rows and trains + evaluates SFT+AAR per seed. The 100% data point is stage 04's run.
Zhu: the SFT start on both question parts, then one longer GRPO run per seed with checkpoints.
MMedPO: a short SFT of the tiny Qwen2.5-VL, then its start and DPO / MMedPO arms on it and on the stage-02 base.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from repro import config, papers
from repro.data import build
from repro.generalization import MMedPOStudy, UMedStudy, ZhuStudy, arms, subsets
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


# ----------------------------------------------------------------------------------------------- UMed
def heldout_of(study: UMedStudy, stage: common.Stage) -> list[str]:
    return list(study.heldout) or build.load_manifest(common.data_dir(stage))["splits"]["heldout_categories"]


def umed_conditions(study: UMedStudy, stage: common.Stage) -> dict[str, tuple[dict, dict]]:
    fractions = subsets.check_fractions(study.fractions)
    if not study.full_from_04 and 1.0 in fractions:
        fractions = [f for f in fractions if f < 1.0]
        conds = subsets.conditions(heldout_of(study, stage), study.loso, study.modality, fractions, stage.seed)
        return {**conds, "100% data": subsets.pair("fraction", 1.0, stage.seed)}
    return subsets.conditions(heldout_of(study, stage), study.loso, study.modality, fractions, stage.seed)


def umed_sft_jobs(study: UMedStudy, stage: common.Stage) -> dict[str, common.Job]:
    return {c: common.Job("ood_umed_sft", f"SFT [{c}]", None, FN + "sft_arm", study, stage,
                          {"init": "base", "tasks": list(study.sft_tasks), "train": train, "steps": study.sft_steps,
                           "batch_size": study.sft_batch_size, "lr": study.sft_lr})
            for c, (train, _) in umed_conditions(study, stage).items()}


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


def umed_phase2(study: UMedStudy, ppo_cfg, stage: common.Stage, only_cached: bool = False):
    """Phase 1 (the short SFT per condition; run unless on disk) -> (its run, phase 2's jobs: each SFT's
    evaluation and its SFT+AAR arms)."""
    sft = _run("umed", list(umed_sft_jobs(study, stage).values()), stage, only_cached)
    dirs = {r["method"][len("SFT ["):-1]: r.get("final_dir") for r in sft["records"]}
    jobs = [j for j in umed_jobs(study, ppo_cfg, stage, {c: dirs.get(c) or "" for c in umed_conditions(study, stage)})
            if j.extra["init"]]
    return sft, jobs


def umed_run(study: UMedStudy, ppo_cfg, stage: common.Stage, only_cached: bool = False) -> dict:
    sft, jobs = umed_phase2(study, ppo_cfg, stage, only_cached)
    run = _run("umed", jobs, stage, only_cached)
    run["sft"] = sft["records"]
    return run


# ----------------------------------------------------------------------------------------------- Zhu
def zhu_jobs(study: ZhuStudy, grpo_cfg, stage: common.Stage) -> list[common.Job]:
    parts = arms.zhu_parts(study.heldout_kind)
    start = common.Job("ood_zhu", "SFT" if study.init == "sft" else "base", None, FN + "eval_arm", study, stage,
                       {"model": study.init, "tasks": ["mcq"], "limit": study.eval_limit,
                        "labels": {f"0:{p}": spec for p, spec in parts.items()},
                        "extra_fn": "repro.papers.zhu:mcq_extra"})
    name = papers.zhu.method(study.init, study.variant)
    return [start] + [common.Job("ood_zhu", name, s, FN + "zhu_arm", grpo_cfg, stage,
                                 {"init": study.init, "variant": study.variant, "heldout_kind": study.heldout_kind,
                                  "steps": study.steps, "checkpoints": study.checkpoints, "limit": study.eval_limit})
                      for s in stage.seeds]


def zhu_run(study: ZhuStudy, grpo_cfg, stage: common.Stage, only_cached: bool = False) -> dict:
    return _run("zhu", zhu_jobs(study, grpo_cfg, stage), stage, only_cached)


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
    """Every study's jobs in two pools instead of five: (1) the short SFTs with every arm that needs none of them
    (Zhu's run, MMedPO from the stage-02 base), (2) the arms that start from those SFTs. Longest first in each, so
    the workers finish together. The notebook's sections then read their arms back. Returns the number of jobs.
    (study, its trainer config) pairs: (UMedStudy, UMedConfig), (MMedPOStudy, MMedPOConfig), (ZhuStudy, ZhuConfig)."""
    (us, uc), (ms, mc), (zs, zc) = umed, mmedpo, zhu
    first = list(umed_sft_jobs(us, stage).values()) + mmedpo_sft_jobs(ms, stage) + zhu_jobs(zs, zc, stage)
    first += mmedpo_jobs(ms, mc, stage, None)  # without the Qwen folder: the base-start arms only
    common.run_jobs(first, stage.n_workers())
    _, then = umed_phase2(us, uc, stage, only_cached=True)
    done = {j.folder for j in first}
    then += [j for j in mmedpo_jobs(ms, mc, stage, mmedpo_qwen(ms, stage, only_cached=True)[1])
             if j.folder not in done]  # the base-start arms ran in the first pool
    common.run_jobs(then, stage.n_workers())
    return len(first) + len(then)

"""Stage 04, one module per paper: each has a config dataclass (every knob it reads, one default each), `run(cfg,
stage)` and `start_job(cfg, stage)`; `common` holds the shared orchestration and `claims` the paired claims.

    stage = papers.Stage(profile="smoke")                     # or papers.stage_from(params)
    cfg = papers.umed.UMedConfig(steps=40)                    # or papers.umed.UMedConfig.from_params(params)
    run = papers.umed.run(cfg, stage)                         # {"paper", "records", "rows"}

Params files are flat: stage keys unprefixed (profile, seed, seeds, workers, eval_batch_size, eval_split), paper
knobs prefixed with the paper (umed_lr, drllava_kl_beta, zhu_generations, mmedpo_beta, ...). `declared()` lists them all
for repro.config, which rejects any other key with a one-line ConfigError.
"""

from __future__ import annotations

from repro.papers import common, drllava, measure, mmedpo, probe, umed, zhu
from repro.papers.common import PAPERS, Stage

MODULES = {"umed": umed, "zhu": zhu, "mmedpo": mmedpo, "drllava": drllava}
CONFIGS = {"umed": umed.UMedConfig, "zhu": zhu.ZhuConfig, "mmedpo": mmedpo.MMedPOConfig,
           "drllava": drllava.DrLLaVAConfig}

__all__ = ["PAPERS", "Stage", "common", "measure", "probe", "drllava", "mmedpo", "umed", "zhu",
           "MODULES", "CONFIGS", "declared", "stage_from", "configs_from", "start_points", "run_all", "load_runs"]


def declared() -> dict[str, tuple[str, object]]:
    """Every stage-04 params key -> (type name, default), from the dataclasses (the one place defaults live)."""
    out = common.declared(Stage)
    for paper, cls in CONFIGS.items():
        out.update(common.declared(cls, f"{paper}_"))
    return out


def stage_from(params) -> Stage:
    return common.from_params(Stage, params)


def configs_from(params) -> dict:
    """{paper: its config} from flat params (a dict or the notebook's cfg namespace)."""
    return {p: CONFIGS[p].from_params(params) for p in PAPERS}


def start_points(configs: dict, stage: Stage) -> dict:
    """{paper: {metric, greedy, pass1, passk, k, n_items, model}} on the validation split, the four in parallel."""
    papers = [p for p in PAPERS if p in configs]
    recs, _ = common.run_jobs([MODULES[p].start_job(configs[p], stage) for p in papers], stage.n_workers())
    return {r["paper"]: r["metrics"] for r in recs}


def run_all(configs: dict, stage: Stage) -> int:
    """Every job of stage 04 (the four starting points, each paper's starts and trained arms) in ONE pool of
    workers, longest first, so no core idles while one paper's last arm finishes before the next paper starts.
    Each paper's `run` (and `start_points`) then reads its arms back from disk. Returns the number of jobs."""
    papers = [p for p in PAPERS if p in configs]
    jobs = [MODULES[p].start_job(configs[p], stage) for p in papers]
    jobs += [j for p in papers for j in MODULES[p].jobs(configs[p], stage)]
    common.run_jobs(jobs, stage.n_workers())
    return len(jobs)


def load_runs(configs: dict, stage: Stage) -> dict:
    """The runs whose arms are all on disk for these knobs ({paper: run}); trains nothing."""
    out = {}
    for p in PAPERS:
        run = MODULES[p].run(configs[p], stage, only_cached=True)
        if len(run["records"]) == len(MODULES[p].jobs(configs[p], stage)):
            out[p] = run
    return out

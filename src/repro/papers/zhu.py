"""Zhu et al. 2025 (docs/methods.md §2): GRPO on multiple choice from two starts (base and SFT), with its
variants: + semantic reward, Dr.GRPO (no std division, no 1/|o| length normalisation), ECR (longer reasoning,
unconditionally) and CWR (longer reasoning only when correct).

Columns: accuracy, response length (words), similarity and format rate. Similarity compares the reasoning in
<think> with the reference reasoning (rewards.vqa.similarity_scores): a judge that is NOT the semantic training
reward (judging the semantic arm by its own reward would be circular). A base start that never writes the
rewarded format gets zero reward variance in every group; its arms are reported as "not trained", never as
results. Every model is scored on all MCQ rows of the test images (`evaluate`: the one-per-image test rows plus the
images' other question kinds that stage 01 puts in split test_extra), so every claim has about twice the items.

The initialisation study is also measured as the paper measures it: the perplexity of the reference reasoning (each
test row's `<think>..</think><answer>..</answer>` target) under every evaluated model, teacher-forced
(repro.papers.perplexity). Per item the mean NLL per target token is a row of metric "nll" beside accuracy (the
paired claims read it, lower is better); each start's and arm's record carries `perplexity` = {nll, perplexity,
n_items} (`perplexity_table` lines them up).

Data (`zhu_data`, repro.data.protocols): "synthmed" (default) or "pmc_vqa" — GRPO prompts, the start evaluations
and the MCQ test then come from the PMC-VQA folder stage 01 writes (its train / test splits; the starting point's
pass@k reads train rows, as that folder has no validation split). The two starts stay stage 02's base and SFT
models, the stand-ins for the paper's scratch and instruct initialisations (docs/methods.md §2(a): GRPO starts
from those, not from an SFT on PMC-VQA); the paper's SFT-on-PMC-VQA *baseline* row is not trained here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd

from repro.config import ConfigError
from repro.papers import common, continued, measure, perplexity, probe

PAPER = "zhu"
PREFIX = "zhu_"
VARIANTS = ("grpo", "grpo_semantic", "dr_grpo", "ecr", "cwr")
METRICS = ("accuracy", "length", "similarity", "format")  # the table's columns, one per-row score each
NLL = "nll"  # per item: mean NLL per token of the reference answer (papers.perplexity); lower is better
INIT_LABELS = {"base": "base", "sft": "SFT"}


@dataclass
class ZhuConfig:
    """Every knob the Zhu et al. run reads (params keys: zhu_<name>)."""

    train_rows: int = 64        # MCQ train rows (seeded random subset; 0 = all)
    eval_limit: int = 40        # MCQ test rows (0 = all)
    start_rows: int = 32        # validation rows for the starting point
    inits: list = field(default_factory=lambda: ["base", "sft"])
    variants: list = field(default_factory=lambda: list(VARIANTS))
    # variants also run from the base start; None = all of `variants` (the paper's grid). The claims need only
    # base+grpo (the init study), so a small machine can run ["grpo"] and save four arms.
    base_variants: list | None = None
    steps: int = 2
    batch_size: int = 2         # prompts per step
    generations: int = 4        # completions per prompt, the group (the paper: 8); also pass@k's k
    lr: float = 1e-5
    beta: float = 0.04          # KL coefficient (TRL's k3 estimator), the DeepSeekMath value
    max_completion_length: int = 96   # tokens = evaluation's MCQ budget; grpo checks it fits ECR's cap
    mask_truncated: bool = True       # a completion cut by the length limit gets no gradient
    match_update_size: bool = True    # Dr.GRPO at the update size of GRPO (trainer knob of repro.train.grpo)
    min_kl: float = 1e-4        # nats per token (TRL logs the mean per-token KL)
    probe_rows: int = 16        # validation MCQ rows of the probe (0 = the whole split)
    probe_k: int = 4            # sampled completions per probe item (training temperature)
    probe_points: int = 3       # probe points after step 0 (repro.papers.probe.points)
    data: str = "synthmed"      # synthmed | pmc_vqa (repro.data.protocols knob zhu_data)
    continued_sft: bool = False  # also run the compute-matched continued-SFT arm (repro.papers.continued)

    # in an arm's cache key only when not the default
    KEY_IF_SET: ClassVar[dict] = {"data": "synthmed", "base_variants": None}
    NOT_IN_KEY: ClassVar[tuple] = ("continued_sft",)  # adds an arm; changes no arm's result

    @classmethod
    def from_params(cls, params) -> ZhuConfig:
        return common.from_params(cls, params, PREFIX)


def method(init: str, variant: str) -> str:
    return f"{INIT_LABELS[init]}+{variant}"


def arm_grid(cfg: ZhuConfig) -> list[tuple[str, str]]:
    """(init, variant) of every trained arm: all variants from the SFT start, base_variants from the base."""
    unknown = sorted(set(cfg.base_variants or []) - set(cfg.variants))
    if unknown:
        raise ConfigError(f"key 'zhu_base_variants' has value(s) {unknown} not in zhu_variants {cfg.variants}")
    base = cfg.variants if cfg.base_variants is None else [v for v in cfg.variants if v in cfg.base_variants]
    return [(i, v) for i in cfg.inits for v in (base if i == "base" else cfg.variants)]


def start_jobs(cfg: ZhuConfig, stage: common.Stage, inits=None) -> list[common.Job]:
    """The greedy test evaluation of each start (stage 02's base / SFT), scored as the arms are (`evaluate`)."""
    d = common.protocol_extra("zhu_data", cfg.data)
    return [common.Job(PAPER, INIT_LABELS[i], s, "repro.papers.zhu:eval_start", cfg, stage, {"model": i, **d})
            for i in (inits or cfg.inits) for s in (common.sft_seeds(stage) if i == "sft" else [None])]


def jobs(cfg: ZhuConfig, stage: common.Stage) -> list[common.Job]:
    d = common.protocol_extra("zhu_data", cfg.data)
    return start_jobs(cfg, stage) + [common.Job(PAPER, method(i, v), s, "repro.papers.zhu:arm", cfg, stage,
                                                {"init": i, "variant": v, **d})
                                     for s in stage.seeds for i, v in arm_grid(cfg)] + continued.jobs(PAPER, cfg,
                                                                                                      stage, d)


def start_job(cfg: ZhuConfig, stage: common.Stage) -> common.Job:
    d = common.protocol_extra("zhu_data", cfg.data)
    return common.Job(PAPER, "start", stage.seed, "repro.papers.measure:start_arm", cfg, stage,
                      {"model": "sft", "task": "mcq", "metric": "accuracy", "k": cfg.generations,
                       "limit": cfg.start_rows, **d, **({"split": "train"} if d else {})})


def mcq_extra(task: str, rows_df, rows) -> dict:
    """Zhu's other columns per row: length (words), log_length (ln(1 + words), the scale of the length claim),
    similarity (vqa.similarity_scores: the reasoning against the reference reasoning, a judge apart from the
    semantic training reward), format (1 when the answer is <think>..</think><answer>..</answer>).

    Why the length claim reads log_length: a mean difference of ln-lengths is a relative change (0.05 = about 5 %
    longer), so its MDE is on the scale of the other claims' 5-point bar; words have no such bar."""
    from repro.rewards import vqa

    preds = list(rows_df["prediction"])
    sim = vqa.similarity_scores(preds, rows)
    words = [float(len(p.split())) for p in preds]
    return {"length": words, "log_length": [math.log1p(w) for w in words],
            "similarity": [float("nan") if v is None else float(v) for v in sim],
            "format": [float(vqa.format_ok(p)) for p in preds]}


def grpo_kwargs(cfg: ZhuConfig, seed: int, steps: int, **more) -> dict:
    """repro.train.grpo.train's knobs from Zhu's config (stage 04's arms and stage 06's longer run)."""
    from repro.train import grpo

    return common.supported_kwargs(grpo.train, max_steps=steps, num_generations=cfg.generations,
                                   batch_size=cfg.batch_size, lr=cfg.lr, beta=cfg.beta,
                                   max_completion_length=cfg.max_completion_length, seed=seed,
                                   save_steps=max(steps, 1), match_update_size=cfg.match_update_size,
                                   mask_truncated=cfg.mask_truncated, **more)


def grpo_curve(log_history: list[dict]):
    """TRL's log -> step, reward, reward_std, kl (nats per token), length (tokens)."""
    from repro.train import grpo

    c = grpo.curves(log_history)
    return c.reindex(columns=["step", "reward", "reward_std", "kl", "completion_length"]).rename(
        columns={"completion_length": "length"})


def arm(job: common.Job):
    from transformers import AutoProcessor

    from repro.train import grpo

    cfg: ZhuConfig = job.cfg
    ds = grpo.grpo_dataset(measure.job_data_dir(job), "train", limit=cfg.train_rows or None, seed=job.stage.seed)
    rec = probe.Recorder(probe_spec(job, job.extra["variant"]), probe.points(cfg.steps, cfg.probe_points),
                         job.folder / "probe.csv", shared=common.step0_file(job))
    start = common.model_dir(job.stage, job.extra["init"], job.seed)
    kw = grpo_kwargs(cfg, job.seed, cfg.steps, callbacks=[rec.trl(AutoProcessor.from_pretrained(str(start)))])
    info = grpo.train(start, job.folder / "train", ds, job.extra["variant"], **kw)
    out, rows = measure.finish_arm(job, info["final_dir"], grpo_curve(info["log_history"]), cfg.min_kl,
                                   evaluate_fn=lambda final, samples: evaluate(job, final, samples),
                                   probe_table=rec.table(), log=info["log_history"])
    return with_perplexity(out, rows), rows


def probe_spec(job: common.Job, variant: str) -> probe.Spec:
    """Zhu's probe: the variant's own GRPO reward (its reward functions and weights) on probe_k sampled completions
    per validation MCQ row at the training temperature, and MCQ accuracy (greedy and sampled)."""
    from repro import evaluation as ev
    from repro.train import grpo

    cfg: ZhuConfig = job.cfg
    v = grpo.get_variant(variant)
    rows = probe.val_rows(measure.job_data_dir(job), "mcq", cfg.probe_rows,
                          split="train" if job.extra.get("data") else "val")
    return probe.Spec(task="mcq", rows=rows, train_rows=[grpo.to_grpo_row(r) for r in rows],
                      reward_fns=list(v.rewards), weights=list(v.weights), metric="accuracy", k=cfg.probe_k,
                      max_new_tokens=min(cfg.max_completion_length, ev.MAX_NEW_TOKENS["mcq"]),
                      batch_size=job.stage.eval_batch_size)


def eval_start(job: common.Job):
    """A start (no training): `evaluate` of stage 02's job.extra["model"]."""
    samples: dict = {}
    flat, rows = evaluate(job, common.model_dir(job.stage, job.extra["model"], job.seed), samples)
    return with_perplexity(measure.start_record(flat, samples), rows), rows


def with_perplexity(rec: dict, rows: pd.DataFrame) -> dict:
    """`rec` with "perplexity": papers.perplexity.summary of its per-item NLL rows ({nll, perplexity, n_items});
    nothing added when it has none (an untrained arm is not evaluated)."""
    v = rows.loc[rows["metric"] == NLL, "score"] if len(rows) else []
    return {**rec, "perplexity": perplexity.summary(v)} if len(v) else rec


def perplexity_table(run: dict) -> pd.DataFrame:
    """Start / arm, seed, mean NLL, perplexity and items of every evaluated model, in run order (the starts first):
    stage 04's init study table. Read from the per-item "nll" rows, so an arm whose record is built elsewhere (the
    continued-SFT arm, repro.papers.continued, evaluated by `evaluate`) is listed too; an untrained arm has none."""
    cols = ["method", "start", "arm", "seed", "nll", "perplexity", "n_items"]
    rows = run.get("rows")
    if rows is None or not len(rows):
        return pd.DataFrame(columns=cols)
    nll = rows[rows["metric"] == NLL]
    out = []
    for rec in run["records"]:
        seed = rec["seed"]
        same = nll["seed"].isna() if seed is None else nll["seed"] == seed
        v = nll.loc[(nll["method"] == rec["method"]) & same, "score"]
        if len(v):
            start, _, arm = rec["method"].partition("+")
            if rec["method"] == continued.METHOD:  # SFT on GRPO's prompts, from the SFT start
                start, arm = INIT_LABELS["sft"], "continued SFT"
            s = perplexity.summary(v)
            out.append({"method": rec["method"], "start": start, "arm": arm or "(start)", "seed": seed,
                        **{k: s[k] for k in ("nll", "perplexity", "n_items")}})
    return pd.DataFrame(out, columns=cols).astype({"seed": "Int64"})  # starts have none


def evaluate(job: common.Job, model_dir, samples: dict | None = None) -> tuple[dict, pd.DataFrame]:
    """Greedy MCQ evaluation with Zhu's columns (mcq_extra) and the reference answer's NLL per item (metric "nll",
    papers.perplexity; flat "nll" and "perplexity") -> (flat metrics, per-row scores). On the test split the
    rows are every MCQ question of the test images: the split's one per image plus, when stage 01 wrote
    build.EXTRA_MCQ_SPLIT, the same images' other question kinds (items "mcq_extra:<id>:<n>", clustered by image
    like the rest, so the paired tests resample whole images). Why: two GRPO arms disagree on a quarter to a half of
    the items, and a 5-point MDE then needs ~1,000-1,500 items (params/cpu/01_data.yaml)."""
    from repro import models
    from repro.data import build

    cfg: ZhuConfig = job.cfg
    data = measure.job_data_dir(job)
    loaded = models.load_vlm(model_dir)  # once for both splits

    def extra(task: str, rows_df, rows) -> dict:  # mcq_extra's columns and the reference answer's NLL per item
        nll, _ = perplexity.item_nll(*loaded, rows, job.stage.eval_batch_size)
        return {**mcq_extra(task, rows_df, rows), NLL: nll.tolist()}

    flat, rows = measure.evaluate(model_dir, job.stage, ["mcq"], cfg.eval_limit, extra=extra, data=data,
                                  loaded=loaded, samples=samples)
    dd = build.load_task(data, "mcq")
    if job.stage.eval_split != "test" or build.EXTRA_MCQ_SPLIT not in dd:
        return _flat_perplexity(flat), rows
    # a limit picks whole images round-robin over the strata in data order, the same images in both splits
    limit = cfg.eval_limit * round(len(dd[build.EXTRA_MCQ_SPLIT]) / len(dd["test"]))
    _, more = measure.evaluate(model_dir, job.stage, ["mcq"], limit, split=build.EXTRA_MCQ_SPLIT, extra=extra,
                               data=data, loaded=loaded)
    more = more[more["cluster"].isin(set(rows["cluster"]))]
    more = more.assign(item="mcq_extra:" + more["item"].str.split(":", n=1).str[1])
    rows = pd.concat([rows, more], ignore_index=True)
    flat.update({m: float(rows.loc[rows["metric"] == m, "score"].mean()) for m in METRICS + (NLL,)})  # skips NaN
    return _flat_perplexity(flat), rows


def _flat_perplexity(flat: dict) -> dict:
    """flat metrics with "perplexity" = exp(mean per-item NLL) beside "nll" (when the NLL was computed)."""
    nll = flat.get(NLL)
    return {**flat, "perplexity": math.exp(nll)} if nll is not None and math.isfinite(nll) else flat


def run(cfg: ZhuConfig, stage: common.Stage, only_cached: bool = False) -> dict:
    recs, rows = common.run_jobs(jobs(cfg, stage), stage.n_workers(), only_cached)
    return {"paper": PAPER, "records": recs, "rows": rows}

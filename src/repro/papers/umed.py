"""UMed-LVLM (docs/methods.md §4): PPO from the SFT model with the relevance reward alone ("SFT+PPO") and with
the abnormal-aware reward AAR = relevance + ALR/max(ALR) + VRR/max(VRR) ("SFT+AAR", maxima over the k candidates
of the same query). VRR reads the attention of a frozen eager copy of the SFT model over the policy's completion
(a fixed attention "reward model"; the paper uses the policy's own attention).

    cfg = UMedConfig(steps=40)                       # or UMedConfig.from_params(params)
    run = umed.run(cfg, stage)                       # {"records", "rows"}; rows = per-row test scores
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from repro import evaluation as ev
from repro.papers import common, continued, controls, measure, probe

PAPER = "umed"
PREFIX = "umed_"
METHODS = ("SFT+PPO", "SFT+AAR")


@dataclass
class UMedConfig:
    """Every knob the UMed-LVLM run reads (params keys: umed_<name>)."""

    train_rows: int = 64        # instruct train rows the PPO prompts are drawn from (0 = all)
    eval_limit: int = 40        # instruct test rows, spread over sources and classes (0 = all)
    start_rows: int = 32        # validation rows for the starting point
    steps: int = 2              # PPO steps per arm
    batch_size: int = 4         # prompts per step
    k: int = 4                  # candidates per prompt (AAR max-normalises over them; also pass@k's k)
    ppo_epochs: int = 2
    lr: float = 1e-5
    kl_beta: float = 0.05       # KL penalty per token to the SFT model
    gamma: float = 1.0
    lam: float = 1.0            # a sequence reward at the last token: no bootstrapping needed
    baseline: str = "loo"       # per-prompt leave-one-out baseline of the sequence reward
    whiten_advantages: bool = False
    value_lr: float = 1e-4
    value_warmup_steps: int = 0
    vrr_fallback: str = "zero"  # an answer naming no abnormality earns VRR 0 (the paper's sum over an empty set)
    vrr_source: str = "policy"  # policy: the attention of the model being trained (the paper); frozen: the SFT copy's
    aar_scale: str = "sum"      # sum: relevance + ALR/max + VRR/max (the paper); mean: divided by the terms that apply
    min_kl: float = 0.01        # nats per sequence: below this end KL the arm counts as "not trained"
    probe_rows: int = 16        # validation instructions of the probe (0 = the whole split)
    probe_k: int = 4            # sampled answers per probe item (training temperature)
    probe_points: int = 3       # probe points after step 0 (repro.papers.probe.points)
    external_test: str = "none"  # none | medmnist: an extra test set, one more column, no claim (repro.data.protocols)
    controls: bool = False      # also run the pipeline's null and positive control arms (repro.papers.controls)
    control_steps: int = 0      # PPO steps of the two controls (0 = steps): their outcome is known before they run
    control_probe_rows: int = -1  # probe rows of the two controls (-1 = probe_rows): their learned rule needs no
    #                               power (lr 0 changes no answer; the planted reward moves its probe by ~+0.6)
    continued_sft: bool = False  # also run the compute-matched continued-SFT arm (repro.papers.continued)
    plain_ppo: bool = True      # also run SFT+PPO (relevance only): the claim "AAR beats plain PPO" and 05's w/o AAR

    # in an arm's cache key only when not these values (the ones that ran before the knob existed)
    KEY_IF_SET: ClassVar[dict] = {"external_test": "none", "vrr_source": "frozen", "aar_scale": "mean"}
    # add arms, or set the control arms' steps and probe (which enter their keys as `steps` and `probe_rows`); change
    # no other arm's result
    NOT_IN_KEY: ClassVar[tuple] = ("controls", "control_steps", "control_probe_rows", "continued_sft", "plain_ppo")

    @classmethod
    def from_params(cls, params) -> UMedConfig:
        return common.from_params(cls, params, PREFIX)


def jobs(cfg: UMedConfig, stage: common.Stage) -> list[common.Job]:
    ext = common.protocol_extra("external_test", cfg.external_test, "umed_external_test")
    start = common.sft_eval_jobs(PAPER, cfg, stage, {"model": "sft", "tasks": ["instruct"], "limit": cfg.eval_limit,
                                                     **ext})
    arms = [common.Job(PAPER, m, s, "repro.papers.umed:arm", cfg, stage, dict(ext))
            for s in stage.seeds for m in METHODS if cfg.plain_ppo or m != "SFT+PPO"]
    return start + arms + (controls.jobs(cfg, stage) if cfg.controls else []) + continued.jobs(PAPER, cfg, stage, ext)


def start_job(cfg: UMedConfig, stage: common.Stage) -> common.Job:
    return common.Job(PAPER, "start", stage.seed, "repro.papers.measure:start_arm", cfg, stage,
                      {"model": "sft", "task": "instruct", "metric": "mau_correct", "k": cfg.k,
                       "limit": cfg.start_rows})


def aar_reward(cfg: UMedConfig, start_dir):
    """AAR (relevance + ALR/max + VRR/max per query, combined by cfg.aar_scale) with VRR read from the attention of
    the policy being trained (vrr_source "policy": the trainer binds it) or of a frozen eager copy of the model at
    `start_dir` ("frozen", an ablation)."""
    from repro.rewards import localization

    return localization.make_aar_reward(group_key="query_id", vrr_fn=vrr_reward(cfg, start_dir), scale=cfg.aar_scale)


def vrr_reward(cfg: UMedConfig, start_dir):
    """VRR as the method reads it (cfg.vrr_source): from the policy being trained (bound by the trainer) or from a
    frozen eager copy of the model at `start_dir`. Stage 05's ablations read it through here too."""
    from repro.models import load_vlm
    from repro.rewards import attention

    if cfg.vrr_source not in ("policy", "frozen"):
        raise ValueError(f"umed_vrr_source: {cfg.vrr_source!r}, expected 'policy' or 'frozen'")
    if cfg.vrr_source == "policy":
        return attention.make_policy_vrr_reward(fallback=cfg.vrr_fallback)
    vrr_model, vrr_proc = load_vlm(start_dir, attn_implementation="eager")
    return attention.make_vrr_reward(vrr_model, vrr_proc, **common.supported_kwargs(
        attention.make_vrr_reward, fallback=cfg.vrr_fallback))


def ppo_config(cfg: UMedConfig, seed):
    """Our PPOConfig from UMed's knobs (stage 04's arms, and stage 06's, which start elsewhere)."""
    return common.ppo_config(steps=cfg.steps, batch_size=cfg.batch_size, k=cfg.k, ppo_epochs=cfg.ppo_epochs,
                             lr=cfg.lr, kl_beta=cfg.kl_beta, gamma=cfg.gamma, lam=cfg.lam, baseline=cfg.baseline,
                             whiten_advantages=cfg.whiten_advantages, value_lr=cfg.value_lr,
                             value_warmup_steps=cfg.value_warmup_steps,
                             max_new_tokens=ev.MAX_NEW_TOKENS["instruct"], seed=seed)


def arm(job: common.Job):
    """Train one PPO arm and evaluate it (runs in a worker)."""
    from repro.rewards import localization
    from repro.train import ppo

    cfg: UMedConfig = job.cfg
    sft = common.model_dir(job.stage, "sft", job.seed)
    rows = ev.load_rows(common.data_dir(job.stage), "instruct", "train", cfg.train_rows or None)
    if job.extra.get("rewards"):  # a stage-05 ablation: "module:function"(job, sft) -> its reward functions
        fns = common.resolve(job.extra["rewards"])(job, sft)
    elif job.method == "SFT+AAR":
        fns = [aar_reward(cfg, sft)]
    else:
        fns = [localization.make_relevance_reward()]
    rec = probe.Recorder(probe_spec(job, fns), probe.points(cfg.steps, cfg.probe_points), job.folder / "probe.csv",
                         shared=common.step0_file(job))
    info = ppo.train(sft, job.folder / "train", rows, fns, ppo_config(cfg, job.seed), progress=False, callback=rec)
    curve = common.ppo_curve(info["log_history"])
    rec_arm, rows_arm = measure.finish_arm(job, info["final_dir"], curve, cfg.min_kl, ["instruct"], cfg.eval_limit,
                                           probe_table=rec.table(), log=info["log_history"])
    if job.method == "SFT+AAR" and not job.extra.get("rewards"):
        rec_arm.update(vrr_source=cfg.vrr_source, aar_scale=cfg.aar_scale)
    return rec_arm, rows_arm


def probe_spec(job: common.Job, fns: list) -> probe.Spec:
    """UMed-LVLM's probe: the arm's own reward (relevance, or AAR normalised over the probe_k samples of an item)
    on sampled answers to validation instructions, and MAU-style accuracy (greedy and sampled)."""
    cfg: UMedConfig = job.cfg
    return probe.Spec(task="instruct", rows=probe.val_rows(measure.job_data_dir(job), "instruct", cfg.probe_rows),
                      reward_fns=list(fns), metric="mau_correct", k=cfg.probe_k,
                      max_new_tokens=ev.MAX_NEW_TOKENS["instruct"], batch_size=job.stage.eval_batch_size)


def run(cfg: UMedConfig, stage: common.Stage, only_cached: bool = False) -> dict:
    """Evaluate the SFT start and train + evaluate every (method, seed) arm -> {"records", "rows"}."""
    recs, rows = common.run_jobs(jobs(cfg, stage), stage.n_workers(), only_cached)
    return {"paper": PAPER, "records": recs, "rows": rows}

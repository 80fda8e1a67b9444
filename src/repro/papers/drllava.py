"""Dr-LLaVA (docs/methods.md §1): multi-turn PPO from the SFT model with the rule reward of the whole
conversation (per-turn correctness + consistency of adjacent turns with some valid diagnostic path, max 9 for five
turns), at gamma = lam = 1 as in the paper. Its own knobs (lr, kl_beta, ...), never UMed's.

Claims: the standard question order is this stage's observation (RL vs its start and vs continued SFT). The test
scores the standard order only (TEST_VARIANTS); each robustness variant (shuffled, reversed, hints, confirmations) is
a claim of stage 06, which scores these arms' models on them (repro.generalization.studies.drllava_jobs): every
robustness question in one place, and 04's evaluation 6/7 smaller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from repro import evaluation as ev
from repro.papers import common, continued, measure, probe

PAPER = "drllava"
PREFIX = "drllava_"
METHOD = "SFT+PPO (rule reward)"
# the conversations 04 (and 05) score, the continued-SFT arm's own (one list); in each job's extra, so in its key
TEST_VARIANTS = continued.VARIANTS[PAPER]


@dataclass
class DrLLaVAConfig:
    """Every knob the Dr-LLaVA run reads (params keys: drllava_<name>)."""

    train_rows: int = 64        # train conversations the rollouts are drawn from (0 = all)
    eval_limit: int = 35        # test conversations (all variants of each image stay together; 0 = all)
    start_rows: int = 16        # validation conversations (standard order) for the starting point
    steps: int = 2              # PPO steps per seed
    batch_size: int = 2         # images per step
    k: int = 2                  # conversations per image (leave-one-out baseline over them; pass@k's k)
    ppo_epochs: int = 2         # the paper's noptepochs
    lr: float = 1e-5
    kl_beta: float = 0.1        # the paper's KL_COEF
    gamma: float = 1.0          # the paper: gamma = lam = 1
    lam: float = 1.0
    baseline: str = "loo"
    whiten_advantages: bool = False
    value_lr: float = 1e-4
    value_warmup_steps: int = 0
    missing_eos_penalty: float = -2.0  # per answer cut by max_new_tokens (the paper's incomplete-response penalty)
    # Why 0.5 and turn credit (issue 25, tools/ppo_noise_scale.py on the cpu SFT start, 128 conversations): at
    # temperature 1 with the whole reward at the conversation's end the policy gradient had no detectable signal
    # (gradient noise scale infinite, split-half cosine -0.02), so every update was an lr-sized random step; each
    # turn's reward at its own last token and rollouts at temperature 0.5 gave B_noise ~270 (cosine 0.22), as
    # low as UMed's single-turn gradient (164), which learns.
    temperature: float = 0.5    # rollout (and probe) sampling temperature; logprobs use logits / temperature
    turn_credit: bool = True    # each turn's reward (correctness + consistency with the turn before) at its end
    min_kl: float = 0.01        # nats per conversation: below this end KL the arm counts as "not trained"
    probe_rows: int = 16        # validation conversations of the probe, standard order (0 = every val image)
    probe_k: int = 4            # sampled conversations per probe item (training temperature)
    probe_points: int = 3       # probe points after step 0 (repro.papers.probe.points)
    external_test: str = "none"  # none | medmnist: an extra test set, one more column, no claim (repro.data.protocols)
    continued_sft: bool = False  # also run the compute-matched continued-SFT arm (repro.papers.continued)

    KEY_IF_SET: ClassVar[dict] = {"external_test": "none"}  # in an arm's cache key only when not the default
    NOT_IN_KEY: ClassVar[tuple] = ("continued_sft",)  # adds an arm; changes no arm's result

    @classmethod
    def from_params(cls, params) -> DrLLaVAConfig:
        return common.from_params(cls, params, PREFIX)


def jobs(cfg: DrLLaVAConfig, stage: common.Stage) -> list[common.Job]:
    ext = common.protocol_extra("external_test", cfg.external_test, "drllava_external_test")
    start = common.sft_eval_jobs(PAPER, cfg, stage, {"model": "sft", "tasks": ["conv"], "limit": cfg.eval_limit,
                                                     "variants": TEST_VARIANTS, **ext})
    return start + [common.Job(PAPER, METHOD, s, "repro.papers.drllava:arm", cfg, stage,
                               {"variants": TEST_VARIANTS, **ext}) for s in stage.seeds] + \
        continued.jobs(PAPER, cfg, stage, ext)


def start_job(cfg: DrLLaVAConfig, stage: common.Stage) -> common.Job:
    return common.Job(PAPER, "start", stage.seed, "repro.papers.measure:start_arm", cfg, stage,
                      {"model": "sft", "task": "conv", "metric": "conversation_correct", "k": cfg.k,
                       "limit": cfg.start_rows, "variant": "standard",
                       **({"temperature": cfg.temperature} if cfg.temperature != 1.0 else {})})


def arm(job: common.Job):
    from repro.rewards import rules
    from repro.train import ppo

    cfg: DrLLaVAConfig = job.cfg
    sft = common.model_dir(job.stage, "sft", job.seed)
    rows = ev.load_rows(common.data_dir(job.stage), "conv", "train", cfg.train_rows or None)
    pc = common.ppo_config(steps=cfg.steps, batch_size=cfg.batch_size, k=cfg.k, ppo_epochs=cfg.ppo_epochs,
                           lr=cfg.lr, kl_beta=cfg.kl_beta, gamma=cfg.gamma, lam=cfg.lam, baseline=cfg.baseline,
                           whiten_advantages=cfg.whiten_advantages, value_lr=cfg.value_lr,
                           value_warmup_steps=cfg.value_warmup_steps, missing_eos_penalty=cfg.missing_eos_penalty,
                           temperature=cfg.temperature, turn_credit=cfg.turn_credit,
                           max_new_tokens=ev.MAX_NEW_TOKENS["conv"], seed=job.seed)
    # a stage-05 ablation names its reward: "module:function"(job) -> the reward function
    reward = common.resolve(job.extra["reward"])(job) if job.extra.get("reward") else rules.drllava_reward
    rec = probe.Recorder(probe_spec(job, reward), probe.points(cfg.steps, cfg.probe_points), job.folder / "probe.csv",
                         shared=common.step0_file(job))
    info = ppo.train(sft, job.folder / "train", rows, [reward], pc, multi_turn=True, progress=False, callback=rec)
    curve = common.ppo_curve(info["log_history"])
    return measure.finish_arm(job, info["final_dir"], curve, cfg.min_kl, ["conv"], cfg.eval_limit,
                              probe_table=rec.table(), log=info["log_history"])


def probe_spec(job: common.Job, reward) -> probe.Spec:
    """Dr-LLaVA's probe: its own training reward (rule reward + missing-EOS penalty) on probe_k sampled conversations
    per validation image, and conversation accuracy (greedy and sampled)."""
    cfg: DrLLaVAConfig = job.cfg
    rows = probe.val_rows(measure.job_data_dir(job), "conv", cfg.probe_rows, "standard")
    return probe.Spec(task="conv", rows=rows, reward_fns=[reward],
                      metric="conversation_correct", k=cfg.probe_k, max_new_tokens=ev.MAX_NEW_TOKENS["conv"],
                      multi_turn=True, missing_eos_penalty=cfg.missing_eos_penalty, temperature=cfg.temperature,
                      batch_size=job.stage.eval_batch_size)


def run(cfg: DrLLaVAConfig, stage: common.Stage, only_cached: bool = False) -> dict:
    recs, rows = common.run_jobs(jobs(cfg, stage), stage.n_workers(), only_cached)
    return {"paper": PAPER, "records": recs, "rows": rows}

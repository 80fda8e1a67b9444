"""The compute-matched continued-SFT arm (issues 26 and 27): what the same prompts buy with supervised learning.

"RL beats its SFT start" mixes two things: the RL method, and simply training the start further on the task. Zhu
et al. compare GRPO with SFT *trained on the same data*; the other papers' "beats SFT" claims are read the same way
here. For every paper, "SFT (continued)" starts from the stage-02 SFT model and takes, on the same task's training
rows, as many optimizer updates as the paper's RL arm, with as many rows per update as its prompts per step and
at its learning rate, on the reference answers (repro.train.sft: assistant tokens only, the vision tower frozen as
in stage 02). The claim "RL beats continued SFT" then stands beside "RL beats its start".

    updates    Zhu (TRL GRPO, one optimizer step per step): steps;  DPO / MMedPO: steps;
               UMed / Dr-LLaVA (our PPO): steps x ppo_epochs (one Adam step per epoch over the batch)
    rows       prompts per step (batch_size): one reference answer each
    lr         the paper's RL lr (its schedule: cosine with 5 % warmup, the SFT trainer's, not RL's constant lr)

Not learned / learned does not apply (its loss is not a reward): the arm is always evaluated on test, on what its
claims read: Dr-LLaVA's continued SFT only on the standard question order ("PPO beats continued SFT" is a
standard-order claim; the six other orders / hints would be ~85 % of its evaluation and enter no claim).
"""

from __future__ import annotations

import pandas as pd

from repro.papers import common, measure

METHOD = "SFT (continued)"
TASKS = {"umed": ("instruct",), "zhu": ("mcq",), "mmedpo": ("vqa", "report"), "drllava": ("conv",)}
VARIANTS = {"drllava": ["standard"]}  # conversation variants scored (in the job's extra: part of its key)


def updates(paper: str, cfg) -> int:
    """Optimizer updates of the paper's RL arm under `cfg` (see the module docstring)."""
    if paper in ("umed", "drllava"):
        return int(cfg.steps) * int(getattr(cfg, "ppo_epochs", 1))
    return int(cfg.steps)


def jobs(paper: str, cfg, stage: common.Stage, extra: dict | None = None) -> list[common.Job]:
    """One continued-SFT arm per seed when the paper's `continued_sft` knob is set (extra: the paper's data
    protocol, so the arm reads the same rows as the RL arms)."""
    if not getattr(cfg, "continued_sft", False):
        return []
    more = {"variants": VARIANTS[paper]} if paper in VARIANTS else {}
    return [common.Job(paper, METHOD, s, "repro.papers.continued:arm", cfg, stage,
                       {**(extra or {}), "control": "continued_sft", **more}) for s in stage.seeds]


def arm(job: common.Job):
    """Train the continued-SFT arm and evaluate it as the paper's arms are evaluated (runs in a worker)."""
    from repro.papers import MODULES
    from repro.train import sft

    cfg, paper = job.cfg, job.paper
    n = updates(paper, cfg)
    batch = int(cfg.batch_size)
    ds = sft.sft_dataset(measure.job_data_dir(job), tasks=TASKS[paper], split="train", seed=job.seed,
                         batch_size=batch, steps=n)
    start = common.model_dir(job.stage, "sft", job.seed)
    info = sft.train(start, job.folder / "train", ds, max_steps=n, batch_size=batch, lr=float(cfg.lr), seed=job.seed,
                     sequential=True, freeze_vision=True, save_steps=max(n, 1), logging_steps=1)
    curve = sft.loss_curve(info["log_history"])
    samples: dict = {}
    if paper == "zhu":
        flat, rows = MODULES["zhu"].evaluate(job, info["final_dir"], samples)
    else:
        flat, rows = measure.evaluate(info["final_dir"], job.stage, TASKS[paper], cfg.eval_limit,
                                      data=measure.job_data_dir(job), samples=samples,
                                      variants=job.extra.get("variants"))
    job.folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(info["log_history"]).to_csv(job.folder / "log.csv", index=False)
    loss = [float(x) for x in curve["loss"]] if len(curve) else []
    rec = {"metrics": flat, "curve": pd.DataFrame(curve).to_dict(orient="records"), "kl_end": None,
           "reward_first": None, "reward_last": None, "loss_first": loss[0] if loss else None,
           "loss_last": loss[-1] if loss else None, "updates": n, "trained": True, "moved": True, "learned": None,
           "control": "continued_sft", "why": "", "log": info["log_history"], "samples": samples}
    return rec, rows

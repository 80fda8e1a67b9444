"""Controls of the whole pipeline (issue 26), judged as rows of kind "control" in stage 04's claims.

A pipeline that can only say "reproduced" or "inconclusive" about the papers is not yet shown to tell them apart,
so two arms of known outcome run through the same trainer, probe, test evaluation and statistics as the papers'
arms (UMed-LVLM's PPO: our own trainer, single turn, the cheapest RL arm):

    null      UMed's AAR arm at lr 0: same prompts, batches, rollouts and value head, but the policy cannot move.
              It must not learn (its probe reward at the end equals step 0's) and its claim against the SFT start
              must not be reproduced. Unlike other arms that did not learn, it is evaluated on test: the point is
              that the evaluation and the paired test make no difference out of nothing. Its length changes
              nothing but its cost (lr 0: every step leaves the policy where it was).
    positive  UMed's PPO with a planted reward that pays one thing only: calling the image normal ("Detection: no
              abnormality"). The effect is known in advance: the share of test answers that call the image normal
              must rise, and the pipeline must call it reproduced. It saturates early (cpu profile: training
              reward 0.2-0.4 at step 1, 0.95-0.97 by step 12 in each of three seeds of a 48-step run).

Both run `control_steps` PPO steps (UMed's knob; 0 = its `steps`) on the first batches of the AAR arm's stream,
probed on `control_probe_rows` validation rows (-1 = UMed's `probe_rows`): the controls check the pipeline, not
the method, so they need not pay for the method's length or for a probe sized to see the method's small gain.
"""

from __future__ import annotations

import dataclasses

from repro.papers import common

NULL = "null control (AAR, lr 0)"
POSITIVE = "positive control (planted reward)"


def planted_explain(text: str) -> dict:
    """1 when the answer calls the image normal (parsed "Detection: no abnormality"), else 0."""
    from repro.data import tasks

    normal = tasks.parse_instruct(text)["abnormal"] is False
    return {"reward": float(normal), "why": "calls the image normal" if normal else "does not call it normal"}


def planted_reward():
    from repro.rewards import make_reward

    return make_reward("planted_normal_reward", planted_explain, (), 0.0, 1.0, doc=planted_explain.__doc__)


def planted_rewards(job, sft) -> list:
    """The positive control's reward functions (umed.arm's `extra["rewards"]` hook)."""
    return [planted_reward()]


def jobs(cfg, stage: common.Stage) -> list[common.Job]:
    """The control arms for every seed of the stage (UMed's config: its prompts and probe; `control_steps` steps)."""
    rows = cfg.probe_rows if cfg.control_probe_rows < 0 else cfg.control_probe_rows
    ctl = dataclasses.replace(cfg, steps=cfg.control_steps or cfg.steps, probe_rows=rows)
    out = []
    for s in stage.seeds:
        out.append(common.Job("umed", NULL, s, "repro.papers.umed:arm", dataclasses.replace(ctl, lr=0.0), stage,
                              {"control": "null"}))
        out.append(common.Job("umed", POSITIVE, s, "repro.papers.umed:arm", ctl, stage,
                              {"control": "positive", "rewards": "repro.papers.controls:planted_rewards"}))
    return out


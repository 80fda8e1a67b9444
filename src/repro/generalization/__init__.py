"""Stage 06: out-of-distribution studies of the four papers, on stage 04's machinery (repro.papers): arms are
`papers.common.Job`s run in parallel worker processes with one result file each, scored per row, judged by the
trained rule and by paired tests (repro.stats) into the same claim fields as 04.

    stage = generalization.stage_from(params)                  # seeds, workers, eval batch size (04's Stage)
    umed_cfg = generalization.UMedStudy.from_params(params)    # the study's knobs (ood_umed_*)
    ppo_cfg = papers.umed.UMedConfig.from_params(params)       # the PPO knobs of its arms (umed_*, as in 04)
    run = generalization.umed_study.run(umed_cfg, ppo_cfg, stage)

Params files are flat: stage keys unprefixed, 04's paper knobs with 04's names (umed_lr, zhu_generations, ...: the
trainers of the arms), the studies' own knobs prefixed ood_<paper>_. `declared()` lists them for repro.config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from repro import papers
from repro.papers import common


@dataclass
class UMedStudy:
    """UMed-LVLM's four studies (params keys: ood_umed_<name>). Each condition trains a short SFT from a
    held-out-free base (repro.generalization.bases: stage 02's vision + base recipe without the held-out rows) on
    its train rows (`sft_tasks`), then PPO with AAR from that SFT on the same rows, and tests both on the
    condition's test rows. Every data fraction, 100 % included, is trained here with the same recipe."""

    heldout: list = field(default_factory=list)   # "source:category" pairs; [] = stage 01's manifest split
    loso: list = field(default_factory=lambda: ["tbx11k", "deeplesion"])  # the paper's two held-out data sets
    modality: str = "CT"                           # train on this modality only ("" = skip the study)
    fractions: list = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8, 1.0])
    sft_tasks: list = field(default_factory=lambda: ["instruct"])  # the short SFT's mixture (filtered alike)
    sft_steps: int = 60
    sft_batch_size: int = 8
    sft_lr: float = 1e-3
    eval_limit: int = 40        # test rows of each condition (spread over sources and classes; 0 = all)

    @classmethod
    def from_params(cls, params) -> UMedStudy:
        return common.from_params(cls, params, "ood_umed_")


@dataclass
class ZhuStudy:
    """Zhu et al.: one longer GRPO run (from `init`) on MCQ rows without `heldout_kind`, evaluated at
    `checkpoints` evenly spaced steps on the trained kinds and on the held-out kind (params keys: ood_zhu_<name>).
    init "kindfree" (default): a base trained here by stage 02's base recipe on the rows without `heldout_kind`
    (repro.generalization.bases.kindfree_arm), the only start that never saw the held-out kind; "base" / "sft":
    stage 02's checkpoints, which trained on rows of every kind (their arms read base_saw_heldout True)."""

    heldout_kind: str = "modality"  # one of finding / region / modality
    init: str = "kindfree"          # kindfree / base / sft
    variant: str = "grpo"
    steps: int = 8
    checkpoints: int = 4
    eval_limit: int = 40        # MCQ test rows of each part (trained kinds, held-out kind; 0 = all)

    @classmethod
    def from_params(cls, params) -> ZhuStudy:
        return common.from_params(cls, params, "ood_zhu_")


@dataclass
class MMedPOStudy:
    """MMedPO's compatibility: DPO and MMedPO on a second architecture (a tiny Qwen2.5-VL, given a short SFT
    here) and from the stage-02 base instead of the SFT model (params keys: ood_mmedpo_<name>)."""

    qwen: bool = True           # the second architecture
    base_start: bool = True     # DPO / MMedPO from the stage-02 base
    qwen_sft_tasks: list = field(default_factory=lambda: ["vqa", "report"])
    qwen_sft_steps: int = 60
    qwen_sft_batch_size: int = 8
    qwen_sft_lr: float = 1e-3

    @classmethod
    def from_params(cls, params) -> MMedPOStudy:
        return common.from_params(cls, params, "ood_mmedpo_")


STUDIES = {"umed": UMedStudy, "zhu": ZhuStudy, "mmedpo": MMedPOStudy}


def declared() -> dict[str, tuple[str, object]]:
    """Every 06 params key -> (type name, default): 04's keys (stage + paper knobs) and the studies' own."""
    out = papers.declared()
    for paper, cls in STUDIES.items():
        out.update(common.declared(cls, f"ood_{paper}_"))
    return out


def stage_from(params) -> common.Stage:
    return papers.stage_from(params)

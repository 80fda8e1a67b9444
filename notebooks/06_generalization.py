# %% [markdown]
# # 06 · Generalization: do the papers' gains survive data the models never trained on?
#
# Stage 04 judged each paper's method on test images drawn like its training images. Readers then ask what the
# papers themselves ask next: does the gain hold on **abnormalities, sources and modalities left out of training**,
# with **less data**, under **reordered or misleading questions**, on **another architecture**, and on a
# **question type the RL data never contained**? One section per paper:
#
# | paper | study | new training here | reused |
# |---|---|---|---|
# | UMed-LVLM | unseen categories, leave-one-source-out, CT → X-ray/endoscopy, data scale | two held-out-free bases (02's recipe without the held-out rows); one short SFT + SFT+AAR per condition | none (02's models saw the held-out images) |
# | Dr-LLaVA | question order and hints | none | 04's SFT and rule-reward PPO |
# | MMedPO | tiny Qwen2.5-VL, base start | Qwen SFT; DPO and MMedPO on Qwen and on the base | 04's SFT-start arms |
# | Zhu et al. | accuracy and length over steps; held-out question kind | a kind-free base (02's base recipe without the held-out kind); one longer GRPO run with checkpoints | 02's vision tower |
#
# The arms are stage 04's: the same trainers and knobs (`umed_*`, `zhu_*`, `mmedpo_*` keys, as in
# `params/<profile>/04_rl.yaml`), parallel worker processes with one result file per arm, per-row test scores,
# the "trained" rule (a policy that did not move is *not trained*, never a result) and **paired tests** on items
# (`repro.stats`: clustered bootstrap by image, McNemar for one binary metric, Holm across a paper's claims).
# The studies' own knobs are config dataclasses (`repro.generalization`, params keys `ood_<paper>_*`).
# Headless: `python -m repro run --profile smoke --only 06` (needs 01–04).

# %% tags=["parameters"]
profile = "smoke"          # smoke | cpu | gpu; every other knob is a config dataclass field (see below)
# The knobs the exercises name. None keeps the value of params/PROFILE/06_generalization.yaml (else the default)
ood_umed_loso = None               # list, sources left out one at a time
ood_umed_sft_tasks = None          # list, the short SFT's task mixture
ood_mmedpo_qwen_sft_steps = None   # int, SFT steps of the tiny Qwen2.5-VL start
mmedpo_equal_text_exposure = None  # bool, MMedPO sees as many text pairs as DPO
ood_zhu_heldout_kind = None        # str, finding / region / modality
ood_zhu_variant = None             # str, grpo / dr_grpo / ...
ood_zhu_init = None                # str, kindfree / base / sft (GRPO's start)

# %%
import pandas as pd

import repro.config
import repro.plots
import repro.report
import repro.results
import repro.stats
from repro import generalization as gen
from repro import papers
from repro.generalization import report as gr
from repro.generalization import studies
from repro.papers import plan as papers_plan  # 04's planned MDEs (the robustness claims were 04's design)

cfg, started = repro.config.start(globals(), "06_generalization")
stage = gen.stage_from(cfg)  # seeds, workers, eval batch size: stage 04's Stage
stage

# %% [markdown]
# ## Every study's arms at once
#
# The sections below read one study each, but the arms are independent except for one dependency: an RL arm
# starts from its condition's short SFT. So all the studies' jobs run first, in two pools of `workers` processes
# (one thread each, longest first): the short SFTs together with every arm that needs none of them, then the arms
# that start from those SFTs. Each section then reads its arms back from disk; a section run on its own after a
# knob change trains just what changed.

# %%
n_jobs = studies.run_all((gen.UMedStudy.from_params(cfg), papers.umed.UMedConfig.from_params(cfg)),
                         (gen.MMedPOStudy.from_params(cfg), papers.mmedpo.MMedPOConfig.from_params(cfg)),
                         (gen.ZhuStudy.from_params(cfg), papers.zhu.ZhuConfig.from_params(cfg)), stage)
print(f"{n_jobs} jobs on disk (trained now or read back)")

# %% [markdown]
# ## 1 · UMed-LVLM: unseen categories, unseen sources, another modality, less data
#
# **Idea.** UMed-LVLM claims that abnormal-aware rewards make the model *understand* abnormalities rather than
# memorise them, so the gain of AAR over SFT should persist when the test abnormalities were never trained on.
# Each **condition** is a pair of row filters (stage 01's `repro.data.splits`, applied to every task row):
#
# | condition | train rows (SFT and PPO) | test rows |
# |---|---|---|
# | unseen categories | all but the held `source:category` pairs (stage 01's manifest) | only those pairs |
# | without *s* | every source but *s* | *s* only |
# | CT only | CT sources | X-ray and endoscopy sources |
# | *f*% data | a nested random share *f* of the train rows | all test rows |
#
# **No start has seen what a condition holds out.** Stage 02's base and SFT were trained on every train image, the
# held-out sources and categories included (a "without TBX11K" model built on them named tuberculosis on most
# abnormal TBX11K images). So this stage reruns stage 02's recipe — vision pretraining and base training, with
# 02's knobs (`vision_steps`, `base_tasks`, `base_steps`, `lr`, `batch_size`, read from
# `params/<profile>/02_sft.yaml`) — from 02's untrained `init` on the train rows **without the held-out parts**
# (`repro.generalization.bases`). Two bases, shared by every seed: **held-out-free** (no held category, no
# left-out source) for the unseen categories, each left-out source and every data fraction, and **CT only** for the
# cross-modal condition (removing X-ray and endoscopy from the shared base would leave it one source to learn from).
#
# For each condition we then train **one short SFT** from its base on its train rows (shorter than stage 02,
# instruction rows only: `ood_umed_sft_steps`, `ood_umed_sft_tasks`), then PPO with the abnormal-aware reward from
# that SFT on the same rows (04's UMed arm and knobs), and test both on the condition's test rows. The column
# `start saw held-out` (`base_saw_heldout` in the results) is **measured**: the image ids the base and the SFT
# recorded training on, intersected with the condition's held-out images (its test images and, for a condition
# that holds out labels, every image of any split carrying them); it must read False. The reward is
# 04's: $r = r^{LLM} + r^{loc}/\max_k r^{loc} + r^{att}/\max_k r^{att}$. Accuracy is MAU accuracy (correct class
# and IoU ≥ 0.5) on the five MAU sources. The claim per condition: SFT+AAR − SFT > 0 on the same test items.

# %%
umed_study = gen.UMedStudy.from_params(cfg)          # the study's knobs (ood_umed_*)
umed_ppo = papers.umed.UMedConfig.from_params(cfg)   # the PPO knobs of its arms (umed_*), as in stage 04
umed_study

# %%
umed_run = studies.umed_run(umed_study, umed_ppo, stage)
umed_table = gr.umed_table(umed_run, umed_run["sft"])
repro.results.save_table(umed_table, cfg, "umed_conditions")
umed_table

# %% [markdown]
# **Data scale.** The same recipe at every share of the training rows, 100 % included (nested: each share
# contains the smaller ones), all from the held-out-free base: the shares vary the fine-tuning data of one start,
# as the paper varies its instruction data on one pretrained model. (Stage 04's SFT is no longer the 100 % point:
# it saw every held-out image, and a longer recipe.) The paper: accuracy "rises steadily with data from 20% to
# 100%" (no numbers retrieved).

# %%
run04 = {"mmedpo": studies.run04("mmedpo", cfg.profile)}  # 04's arms, read back
scale = gr.scale_frame(umed_run)
repro.results.save_table(scale, cfg, "umed_scale")
repro.plots.save_figure(gr.scale_figure(scale), cfg, "umed_scale")
scale

# %% [markdown]
# **What it means.** Read the SFT+AAR and SFT columns together: a gain that appears in stage 04 but vanishes
# here means the reward taught the training distribution, not abnormalities. The paper's numbers are UMed-LVLM
# against its start MedVInt on the real MAU data (0.35 vs 0.05 on unseen categories; 0.57 on TBX11K and 0.42 on
# DeepLesion left out); ours are on SynthMed with a tiny model, so only the direction of SFT+AAR − SFT compares.
# The verdicts are in the claims ledger at the end.
#
# **How we differ from the paper**
# 1. The SFT of each condition is a short run on instruction rows only from a held-out-free base (the paper
#    starts from a general pretrained model that never saw its held-out data). Runs are shared where the rows
#    allow: one base serves several conditions, one SFT per condition serves its SFT row and every SFT+AAR seed.
#    The bases are weaker than stage 02's (fewer images; the CT-only base never saw an X-ray), so compare SFT+AAR
#    with SFT within a condition, not with stage 04. The tokenizer is stage 02's, fitted on every text (it learns
#    how to split words, not answers: `repro.train.sft.corpus`).
# 2. Held-out categories are `source:category` pairs of SynthMed (stage 01's `heldout_categories`), not the
#    paper's Abdomen/Lung/Pelvis groups.
# 3. "Cross-modal" tests X-ray and endoscopy sources; the paper tests X-ray and gross pathology.
# 4. PPO prompts are capped at `umed_train_rows` after filtering, so at small profiles the PPO part of the data
#    scale does not shrink until a share is smaller than the cap.
# 5. All of 04's differences (rule judge for relevance, VRR as a mean over anchor tokens, our MAU accuracy).
#
# **Exercises** (knobs in the parameters cell at the top; then run the notebook from the top)
# 1. Set `ood_umed_loso = ["tbx11k"]` (the cpu profile leaves these studies out: ~9 min each), then `["kvasir"]`:
#    with the only endoscopy source left out, what can the model know about polyps?
# 2. Read `start saw held-out` in the table: what would it say for a start from stage 02's base
#    (`repro.generalization.bases.heldout_ids` against every train image id)?
# 3. Set `ood_umed_sft_tasks = ["instruct", "vqa"]`: does the extra data help the unseen categories?

# %% [markdown]
# ## 2 · Dr-LLaVA: robustness to question order and misleading hints
#
# **Idea.** Dr-LLaVA's rule reward pays for answers consistent with a valid diagnostic path, so the RL model
# should keep its diagnosis when the clinician asks in another order or suggests a wrong label. Stage 04 trained
# SFT and rule-reward PPO on standard and shuffled conversations and scored the standard order; here its models
# (no training) answer the test images' other variants (`studies.drllava_jobs`), and we ask two questions per
# variant $v$: does PPO **raise** accuracy under $v$ ($\mathrm{acc}^{PPO}_v - \mathrm{acc}^{SFT}_v > 0$, as 04
# asks of the standard order), and does it **lose less** than SFT,
#
# $$\Delta_v = \big(\mathrm{acc}^{PPO}_v - \mathrm{acc}^{PPO}_{std}\big) - \big(\mathrm{acc}^{SFT}_v - \mathrm{acc}^{SFT}_{std}\big) > 0,$$
#
# paired by image (both conversations are of the same slide)?

# %%
dr_run, dr_new = studies.drllava_run(stage)  # 04's records and standard rows + this stage's variant rows
dr_frame = gr.drllava_frame(dr_run) if dr_run else pd.DataFrame()
repro.results.save_table(dr_frame, cfg, "drllava_robustness")
if len(dr_frame):
    repro.plots.save_figure(gr.drllava_figure(dr_frame), cfg, "drllava_robustness")
dr_frame

# %% [markdown]
# **What it means.** Bars that shrink from `standard` to `hint_wrong` or `confirm_wrong` show the model being
# talked out of its answer; a smaller shrink for PPO is the paper's robustness claim. The paper's robustness tables
# were not retrieved, so there is no paper column.
#
# **How we differ from the paper**
# 1. Conversations longer or shorter than in training are not studied: our decision tree has exactly five
#    question categories and every conversation asks each once, so a longer conversation would repeat a question
#    and a shorter one would skip a level of the tree the rule reward scores.
# 2. Hints are templated sentences at one turn; the paper's hint wording was not retrieved.
# 3. All of 04's differences (synthetic slides, exact label parsers, small rollouts).
#
# **Exercises**
# 1. Which variant has the largest SFT drop, and is PPO's Δ there larger than its `mde`?
# 2. Which variants did the PPO arm train on (stage 01's parameter `conv_train_variants`), and does PPO help
#    more on those than on the variants it never saw?

# %% [markdown]
# ## 3 · MMedPO: another architecture, another start
#
# **Idea.** MMedPO's loss (notebook 04, docs/methods.md §3) does not depend on the model: the clinically weighted DPO objective
#
# $$\mathcal L = -\,\mathbb E\Big[s' \log\sigma\Big(\beta \log\tfrac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)}
#   - \beta \log\tfrac{\pi_\theta(y_l|x^*)}{\pi_{ref}(y_l|x^*)}\Big)\Big]$$
#
# should help whatever the policy. We run 04's DPO and MMedPO arms (same knobs, same preference set) on a
# **tiny Qwen2.5-VL** (M-RoPE, windowed vision attention; `repro.models.build_tiny_qwen25vl`) after a short SFT
# on VQA and reports, and on the LLaVA-style model from its **stage-02 base** instead of its SFT.

# %%
mmedpo_study = gen.MMedPOStudy.from_params(cfg)
mmedpo_dpo = papers.mmedpo.MMedPOConfig.from_params(cfg)  # 04's DPO knobs (mmedpo_*)
mmedpo_study

# %%
mmedpo_new = studies.mmedpo_run(mmedpo_study, mmedpo_dpo, stage)
mmedpo_run = studies.merge(mmedpo_new, run04["mmedpo"]) if run04["mmedpo"] else mmedpo_new
mmedpo_table = gr.mmedpo_table(mmedpo_run)
repro.results.save_table(mmedpo_table, cfg, "mmedpo_compat")
mmedpo_table

# %% [markdown]
# **What it means.** The paper reports that MMedPO also improves an SFT'd LLaVA-Med and LLaVA-Med++ (its
# compatibility section; numbers not retrieved). If MMedPO beats DPO on both architectures, the gain is a property
# of the objective; if only on one, of the model it was tuned on. From the base, the policy has never answered the
# preference set's questions in the SFT format: DPO there sharpens preferences the model hardly expresses.
#
# **How we differ from the paper**
# 1. The second architecture is a randomly initialised tiny Qwen2.5-VL with a short SFT (no vision pretraining),
#    not LLaVA-Med++; its tokenizer is trained on the same corpus.
# 2. The "SFT start" comparison reuses stage 04's MMedPO arms: same knobs, same test rows.
# 3. All of 04's differences (dispreferred answers sampled from the SFT model or templated, rule clinical scores,
#    full fine-tuning).
#
# **Exercises**
# 1. Raise `ood_mmedpo_qwen_sft_steps` (e.g. to twice the profile's value): does the Qwen start's closed VQA
#    accuracy change the DPO − SFT gap?
# 2. Set `mmedpo_equal_text_exposure = False`: does the base-start comparison change?

# %% [markdown]
# ## 4 · Zhu et al.: over training steps, and on a question kind never trained
#
# **Idea.** GRPO's gains may come from learning the task or from memorising the question templates. One longer
# GRPO run (04's Zhu knobs, variant `ood_zhu_variant`) trains on MCQ rows of two of the three question kinds
# (finding / region / modality); snapshots along the run are evaluated on test rows of the **trained kinds** and
# of the **held-out kind**. Accuracy and response length (words) per checkpoint:
#
# $$\mathrm{acc}(t) = \tfrac{1}{N}\sum_i \mathbf 1\big[\hat a_i(\pi_t) = a_i\big],\qquad
#   \mathrm{len}(t) = \tfrac{1}{N}\sum_i |\hat o_i(\pi_t)|_{words}.$$

# %%
zhu_study = gen.ZhuStudy.from_params(cfg)
zhu_grpo = papers.zhu.ZhuConfig.from_params(cfg)  # 04's GRPO knobs (zhu_*)
zhu_study

# %%
zhu_run = studies.zhu_run(zhu_study, zhu_grpo, stage)
zhu_frame = gr.zhu_frame(zhu_run)
repro.results.save_table(zhu_frame, cfg, "zhu_steps")
if len(zhu_frame):
    repro.plots.save_figure(gr.zhu_figure(zhu_frame), cfg, "zhu_steps")
zhu_frame

# %% [markdown]
# **What it means.** If the held-out kind rises with the trained kinds, GRPO improved something shared by all
# questions (reading the image, the answer format); if only the trained kinds rise, it learned their templates.
# The length panel shows whether longer training lengthens answers (the paper discusses length bias as the
# motivation for Dr.GRPO and the length rewards; it gives no curve over steps).
#
# **How we differ from the paper**
# 1. Checkpoints are snapshots of one run of `ood_zhu_steps` steps, not the paper's separate training budgets.
# 2. The held-out "type" is a question kind of our templates; the paper has no held-out-type experiment (its
#    PMC-VQA test is in-distribution), so this study is ours.
# 3. A step-0 point is the start's greedy accuracy, the same rows as every checkpoint.
# 4. The start (`ood_zhu_init = "kindfree"`) is a **kind-free base** trained here: stage 02's base recipe
#    (`base_tasks`, `base_steps`, `lr`, `batch_size`) from 02's vision-pretrained tower on the train rows whose
#    `question_kind` is not the held-out one. The tower's pretraining fits heads on images and their class, region
#    and lesion labels, never on a question, so the held-out kind is new to the whole chain: `base_saw_heldout` in
#    `metrics.arms` is read from the kinds the base job recorded (false). Reports and instructions ask no question
#    kind and stay in, so the facts a modality question asks about (e.g. "CT image of the pelvis") still appear
#    as text. Stage 02's base and SFT (`"base"`, `"sft"`) trained on rows of every kind: their arms read true.
#
# **Exercises**
# 1. Set `ood_zhu_heldout_kind = "finding"`: is the finding question harder to transfer to than the modality one?
# 2. Set `ood_zhu_variant = "dr_grpo"`: does the length curve change?
# 3. Set `ood_zhu_init = "sft"` (02's SFT, which trained MCQ of every kind): how much of the held-out accuracy was
#    the start having seen the kind?

# %% [markdown]
# ## Claims ledger
#
# Same fields and verdicts as stage 04: `difference` is treatment − baseline on the same test items (paired by
# seed and item, clustered by image), `p_holm` Holm-corrected within each paper's claims of this stage, `mde` the
# smallest detectable difference. **reproduced** / **opposite**: significant in / against the paper's direction;
# **below_paper**: not significant and the CI rules out the paper's effect; **inconclusive**: not significant;
# **not_trained**: an arm did not learn (`why` says which); `kind: check` rows are shown, not counted. A claim
# whose two arms both score 0 (or both 1) on at least 95 % of the items is turned into a check by
# `repro.stats.claims_frame` (its `pinned` says which side): at a floor or a ceiling a difference is no evidence
# either way (e.g. held-out abnormal images that neither arm names).

# %%
items = gr.umed_claims(umed_run)
items += gr.drllava_claims(dr_run, plan=papers_plan.load(cfg.profile)) if dr_run else []
items += gr.mmedpo_claims(mmedpo_run, [lab for lab, on in ((studies.QWEN, mmedpo_study.qwen),
                                                          ("base start", mmedpo_study.base_start)) if on])
items += gr.zhu_claims(zhu_run, *studies.zhu_labels(zhu_study))
ledger = gr.ledger(items)
repro.results.save_table(ledger, cfg, "claims")
with pd.option_context("display.max_colwidth", 120):
    display(ledger)

# %%
CLAIM_FIELDS = repro.stats.CLAIM_COLUMNS + ["why"]  # the fields every stage's claims carry (07 reads them)
runs = {"umed": umed_run, "drllava": dr_new, "mmedpo": mmedpo_new, "zhu": zhu_run}  # this stage's own arms
metrics = {
    "claims": ledger[[c for c in CLAIM_FIELDS + ["pinned"] if c in ledger.columns]].to_dict(orient="records"),
    # every arm of this stage; base_saw_heldout: did its start train on its condition's held-out images or labels
    "arms": studies.arms_summary({p: runs[p] for p in ("umed", "mmedpo", "zhu")}, studies.zhu_heldout(zhu_study, stage)),
    "tables": {"umed_conditions": umed_table.to_dict(orient="records"), "umed_scale": scale.to_dict(orient="records"),
               "drllava_robustness": dr_frame.to_dict(orient="records"),
               "mmedpo_compat": mmedpo_table.to_dict(orient="records"), "zhu_steps": zhu_frame.to_dict(orient="records")},
    "runs": {p: [{k: v for k, v in r.items() if k != "curve"} for r in run["records"]]
             for p, run in runs.items() if run},
    "reused_from_04": {"drllava": bool(dr_run), **{p: bool(r) for p, r in run04.items()}},
    # this stage's own per-row scores (04's reused arms are in 04's file), so anyone can rerun the paired tests
    "scores_file": repro.report.save_rows(repro.report.rows_frame({p: r for p, r in runs.items() if r}), cfg),
}
print(repro.results.save(cfg, metrics, started=started))

# %% [markdown]
# # 04 · RL alignment: each paper's method on one SFT model, judged by paired tests
#
# The four papers align a supervised model in four different ways. Here they all start from **the same SFT model
# of stage 02**, on the same SynthMed data, and are judged by the same harness:
#
# | paper | method(s) | trainer | reward / data |
# |---|---|---|---|
# | UMed-LVLM | SFT+PPO, SFT+AAR | our PPO (`repro.train.ppo`) | relevance; + ALR (IoU) + VRR (attention), max-normalised per query |
# | Zhu et al. | GRPO, +semantic, Dr.GRPO, ECR, CWR, from base and SFT | TRL `GRPOTrainer` | format + accuracy (+ semantic / length) |
# | MMedPO | DPO, MMedPO | TRL `DPOTrainer` (+ weighted subclass) | stage-03 preference set (text + visual pairs, clinical weights) |
# | Dr-LLaVA | SFT + multi-turn PPO | our PPO, 5-turn rollouts | rule reward of the whole conversation |
#
# Each paper has its own section below, runnable on its own after the setup cell. Each section shows the idea,
# the formula, the **configuration** (a dataclass: every knob the run reads, with its one default; the params file
# `params/<profile>/04_rl.yaml` overrides it with flat keys such as `umed_lr`), the call, our table beside the
# paper's, and a numbered list of how we differ from the paper. Every trained arm is repeated over `seeds`; arms run
# in parallel processes (`workers`, one thread each) and each writes its own result file, so a failure loses
# nothing and a rerun reuses finished arms.
#
# Claims are judged by **paired tests on test items**: the per-row scores of two arms, paired by seed and item,
# bootstrapped over items clustered by image (McNemar for one binary metric with one item per image),
# Holm-corrected across a paper's claims. Knobs (lr, prompts per step, steps) are chosen by a validation sweep,
# `python -m repro.papers.sweep` (every cell a run judged on the fixed validation probe of section "Arms", never on
# test; its table and figure are `figures/<profile>/04_rl_sweep.*` and `metrics.sweep`), and written in the params
# file before the test run, so nothing is tuned toward a paper's direction on test.
# Headless: `python -m repro run --profile smoke --only 04` (needs 01–03).

# %% tags=["parameters"]
profile = "smoke"          # smoke | cpu | gpu; every other knob is a config dataclass field (see below)

# %%
import pandas as pd

import repro.config
import repro.plots
import repro.results
import repro.stats
from repro import papers, report
from repro.papers import claims as claims_lib
from repro.papers import plan as papers_plan  # planned MDEs from the sweep (python -m repro.papers.plan)
from repro.papers import sweep as papers_sweep  # the validation sweep (python -m repro.papers.sweep)

cfg, started = repro.config.start(globals(), "04_rl")
stage = papers.stage_from(cfg)  # seeds, workers, eval batch size: the knobs every paper reads
stage

# %% [markdown]
# ## Every arm at once
#
# The sections below run one paper each, but their arms are independent: a model trained from the SFT start and
# evaluated on the test split (or a start measured on validation). So we first hand **all of them** to one pool
# of `workers` processes (one thread each), longest first; each section then reads its arms back from disk
# (`runs/<profile>/models/rl/<paper>/<arm>/arm.json` + `rows.csv`). Run paper by paper instead, one core would
# sit idle at the end of every paper while the other finishes its last long arm. A section run on its own — after
# you change its config — trains just what changed.

# %%
n_jobs = papers.run_all(papers.configs_from(cfg), stage)
print(f"{n_jobs} jobs on disk (trained now or read back)")

# %% [markdown]
# ## Starting points: is there anything for RL to learn?
#
# RL sharpens what a policy can already *sometimes* do. For each paper we measure the SFT start on the
# **validation** split, on the metric its reward targets: greedy accuracy, the sampled pass@1 (temperature 1) and
# pass@k with $k$ = the group size (the $k$ samples a PPO/GRPO step compares). With $c$ of $k$ samples correct,
#
# $$\text{pass@1} = \mathbb{E}\left[\tfrac{c}{k}\right], \qquad \text{pass@}k = \mathbb{E}\left[\mathbf 1[c > 0]\right].$$
#
# **What it means.** pass@k − pass@1 is the headroom a group-relative method can exploit: items the policy gets
# right in some samples but not all. Near 0 (the start is always right or never right) RL has nothing to sharpen;
# a greedy accuracy near 1 leaves nowhere to go; pass@1 at chance (0.25 for four options) means any success is
# luck, not a reason the policy could reinforce.

# %%
starts = papers.start_points(papers.configs_from(cfg), stage)
start_table = report.starts_table(starts)
repro.results.save_table(start_table, cfg, "starts")
start_table

# %% [markdown]
# ## 1 · UMed-LVLM: abnormal-aware rewards (PPO)
#
# **Idea.** After instruction tuning on detection → localisation → recognition answers, UMed-LVLM runs PPO with a
# reward that checks *where* the model looks and *where* it says the lesion is: a relevance reward (an LLM judge;
# here a rule judge), the **abnormal localisation reward** ALR (IoU of the predicted box with the true one) and the
# **vision relevance reward** VRR (attention mass from the abnormality's tokens onto the lesion's image patches).
# ALR and VRR are divided by their maximum over the $k$ candidates of the same query, so they are on one scale:
#
# $$r^{loc} = \mathrm{IoU}(\hat b, b), \qquad
#   r^{att} = \sum_{i \in N} \sum_{j \in \bar N} \operatorname{softmax}_j\!\Big(\tfrac{Q_i K_j^\top}{\sqrt{d_k}}\Big),
#   \qquad r = r^{LLM} + \frac{r^{loc}}{\max_{k} r^{loc}} + \frac{r^{att}}{\max_{k} r^{att}} .$$
#
# PPO maximises the clipped objective with the per-token advantage $\hat A_t$ from GAE over the shaped reward
# (sequence reward at the last token, minus $\beta\,\mathrm{KL}$ to the SFT model at every token):
#
# $$L^{CLIP} = \mathbb{E}_t\big[\min(\rho_t \hat A_t,\ \mathrm{clip}(\rho_t, 1\pm\epsilon)\hat A_t)\big],\quad
#   \rho_t = \frac{\pi_\theta(a_t|s_t)}{\pi_{old}(a_t|s_t)},\quad
#   \hat A_t = \sum_{l \ge 0} (\gamma\lambda)^l \delta_{t+l},\quad \delta_t = r_t + \gamma V(s_{t+1}) - V(s_t).$$
#
# With $\gamma = \lambda = 1$ and a per-prompt leave-one-out baseline $b_i = \frac{1}{k-1}\sum_{j \ne i} r_j$, every
# token of sample $i$ gets the same advantage $r_i - b_i$: samples of one prompt that earn the same reward get 0.

# %%
umed_cfg = papers.umed.UMedConfig.from_params(cfg)  # the dataclass defaults, overridden by the params file
umed_cfg

# %%
umed_run = papers.umed.run(umed_cfg, stage)
umed_table = report.umed_table(umed_run)
repro.results.save_table(umed_table, cfg, "umed_table2")
repro.plots.save_figure(report.curves_figure(umed_run, "UMed-LVLM (PPO)"), cfg, "umed_curves")
umed_table

# %% [markdown]
# **What it means.** Compare the rows "SFT+AAR" and "SFT+PPO" with "SFT": the paper reports +0.08 (AAR) and
# +0.02 (plain PPO) in average MAU accuracy (Table 2). Our numbers are on SynthMed with a tiny model, so only
# the *direction* is comparable; whether it reproduced is decided in the claims ledger at the end, by a paired
# test on the same test images. A method labelled "(not trained)" did not learn: its probe reward did not rise
# (section "Arms").
#
# **How we differ from the paper**
# 1. The relevance reward is a rule judge of the answer's structure and facts, not an LLM.
# 2. VRR reads the attention of a frozen eager copy of the SFT model, not the policy's own attention.
# 3. MAU-style accuracy is our definition (correct class and IoU ≥ 0.5): the paper's formula was not retrieved.
# 4. The start is our stage-02 SFT model on synthetic images, not MedVInt on the MAU data set; the five MAU
#    sources are synthetic look-alikes.
# 5. PPO uses $\gamma = \lambda = 1$ with a leave-one-out baseline; the paper's c1/c2/c3 and epochs are unknown.
#
# **Exercises**
# 1. Set `umed_vrr_fallback: "all"`: which answers now earn VRR although they name no abnormality?
# 2. Set `umed_k: 2`: what does max-normalisation over two candidates do to ALR (hint: one of them is always 1)?
# 3. Raise `umed_kl_beta` to 0.5: how do the end KL and the reward's rise change in the curves?

# %% [markdown]
# ## 2 · Zhu et al.: GRPO for medical VQA, and what matters in it
#
# **Idea.** GRPO drops the value model: for each prompt it samples a group of $G$ answers and uses the group's
# own statistics as the baseline. The paper studies four choices: the start (base vs instruct), a semantic
# reward (does the reasoning name the right finding?), length rewards (ECR: longer reasoning always; CWR: only when
# correct) and Dr.GRPO's removal of two biases.
#
# $$A_i = \frac{r_i - \operatorname{mean}_j r_j}{\operatorname{std}_j r_j}, \qquad
#   J = \mathbb{E}\Big[\frac{1}{G}\sum_i \frac{1}{|o_i|}\sum_t \min\big(\rho_{i,t}A_i,\
#   \mathrm{clip}(\rho_{i,t}, 1\pm\epsilon)A_i\big) - \beta\,\mathrm{KL}_{k3}\Big].$$
#
# **Dr.GRPO** uses $A_i = r_i - \operatorname{mean}_j r_j$ (no std division) and replaces $\frac{1}{|o_i|}$ by a
# constant (no length normalisation). Length rewards on the words $w$ of the reasoning, with cap $C$:
# $r^{ECR} = \min(w, C)/C$ and $r^{CWR} = \mathbf 1[\text{correct}]\cdot\min(w, C)/C$.
#
# If every answer of a group earns the same reward (a base model that never writes the `<think>/<answer>`
# format earns 0 everywhere), then $A_i = 0$ and nothing is learned: such arms are reported "not trained".

# %%
zhu_cfg = papers.zhu.ZhuConfig.from_params(cfg)
zhu_cfg

# %%
zhu_run = papers.zhu.run(zhu_cfg, stage)
zhu_table = report.zhu_table(zhu_run)
repro.results.save_table(zhu_table, cfg, "zhu_main")
repro.plots.save_figure(report.curves_figure(zhu_run, "Zhu et al. (GRPO)"), cfg, "zhu_curves")
zhu_table

# %% [markdown]
# **What it means.** The paper's headline: GRPO beats SFT, the semantic reward and Dr.GRPO add a little more,
# ECR hurts and CWR helps. Compare our "SFT+…" rows with "SFT"; the "base+…" rows are meaningful only when the base
# start writes the format at a measurable rate — otherwise they are labelled "(not trained)". Every row of the
# table is scored on all multiple-choice questions of the test images: the test split's one per image plus the
# other question kinds of the same images (stage 01's `mcq_test_questions`, `papers.zhu.evaluate`), because two GRPO
# arms disagree on a quarter to a half of the items and a 5-point MDE needs ~1,000-1,500 of them; the paired tests
# resample whole images. "ECR lengthens responses" is judged on $\ln(1 + w)$ per item (`log_length`), so its
# difference is a relative change (0.05 ≈ 5 % longer) and its MDE reads on the same bar as the rates. Length can
# only be learned if the start sometimes writes longer reasoning: half of the SFT targets end their option walk with
# "So the answer is B: …" (`data.tasks.conclusion`), so sampled groups differ in length.
#
# **How we differ from the paper**
# 1. A tiny model and synthetic four-option questions instead of Qwen2-VL-2B on PMC-VQA.
# 2. The semantic reward is a rule judge (does the reasoning name the true finding, region and modality), not
#    BioGPT/BioMistral; *similarity* in the table compares the reasoning with the reference reasoning
#    (`rewards.vqa.similarity_scores`), so the semantic arm is not graded by its own reward.
# 3. ECR/CWR's functional forms and caps are our choices (the paper defines them only in words).
# 4. Dr.GRPO is compared with GRPO at matched update size (`zhu_match_update_size`), because without the std
#    division its updates are larger at the same learning rate.
# 5. Far fewer steps and prompts than the paper; group size `zhu_generations`.
#
# **Exercises**
# 1. Set `zhu_beta: 0.0`: what happens to the KL column and to the probe reward (the "learned" rule)?
# 2. Set `zhu_generations: 2`: how often does a group have zero reward variance (see `frac_reward_zero_std`)?
# 3. Compare the length column of `SFT+ecr` and `SFT+cwr`: which one lengthens wrong answers too?

# %% [markdown]
# ## 3 · MMedPO: clinically weighted multimodal preference optimisation
#
# **Idea.** DPO learns from pairs (preferred $y_w$, dispreferred $y_l$) without a reward model. MMedPO adds
# *visual* dispreference pairs — the same correct answer with the lesion region noised, $x^*$ — and weights each
# pair by its clinical relevance $s'$ (judged by medical LLMs for text pairs, by a lesion detector for visual ones):
#
# $$\mathcal L = -\,\mathbb E\Big[s' \cdot \log\sigma\Big(\beta \log\frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)}
#   - \beta \log\frac{\pi_\theta(y_l|x^*)}{\pi_{ref}(y_l|x^*)}\Big)\Big],$$
#
# with $x^* = x$ for text pairs and $y_l = y_w$ for visual pairs. Plain DPO is $s' = 1$ on text pairs only.

# %%
mmedpo_cfg = papers.mmedpo.MMedPOConfig.from_params(cfg)
mmedpo_cfg

# %%
mmedpo_run = papers.mmedpo.run(mmedpo_cfg, stage)
mmedpo_table = report.mmedpo_table(mmedpo_run)
repro.results.save_table(mmedpo_table, cfg, "mmedpo_main")
repro.plots.save_figure(report.curves_figure(mmedpo_run, "MMedPO (DPO: reward margin)"), cfg, "mmedpo_curves")
mmedpo_table

# %% [markdown]
# **What it means.** The paper's order is SFT < DPO < MMedPO on every column, with the largest gain on report
# generation. Our "reward" curve is DPO's implicit reward margin and "kl" the mean |log-ratio| to the reference.
#
# **How we differ from the paper**
# 1. Dispreferred texts are templated contradictions, not GPT-4o hallucinations; clinical scores come from noisy
#    rule scorers with a consensus loop, not Med-LLMs.
# 2. The lesion map for visual pairs is the known synthetic mask (or a tiny detector), not MedKLIP.
# 3. Full fine-tuning of a tiny model instead of LoRA on LLaVA-Med 1.5; far fewer steps.
# 4. With `mmedpo_equal_text_exposure` both arms see the same number of text pairs, so MMedPO differs from DPO
#    by its visual pairs and weights only.
# 5. BLEU and ROUGE-L are computed on the same normalised text; the report claim is judged per row on ROUGE-L
#    (corpus BLEU has no per-row score).
#
# **Exercises**
# 1. Set `mmedpo_beta: 0.5`: does the reward margin grow faster or slower, and why?
# 2. In stage 03 set `pref_weight_mode: raw`: which pairs drop out of the loss (weight 0)?
# 3. Set `mmedpo_equal_text_exposure: false`: how many text pairs does each arm see now?

# %% [markdown]
# ## 4 · Dr-LLaVA: rule-based rewards for multi-turn clinical conversations
#
# **Idea.** A clinician's questions follow a decision tree (image quality → region → pathology → abnormality →
# diagnosis). Dr-LLaVA rolls out whole 5-turn conversations with the policy's *own* earlier answers in the context
# and rewards each answer against the reference *and* each adjacent pair for being consistent with some valid path:
#
# $$R = \sum_{t=1}^{5} c_t + \sum_{t=2}^{5} a_t,\qquad
#   c_t = \begin{cases} 1 & \hat y_t = y_t \\ -0.5 & \hat y_t \text{ unparseable} \\ 0 & \text{otherwise}\end{cases},\qquad
#   a_t = \mathbf 1\big[(\hat y_{t-1}, \hat y_t) \text{ lies on a valid diagnostic path}\big],$$
#
# so $R \le 9$. PPO as in section 1, with the paper's $\gamma = \lambda = 1$.
#
# **Credit by turn.** $R$ is a sum over turns, so we give turn $t$ its own part $r_t = c_t + a_t$ at its last
# token instead of all of $R$ at the conversation's end (the release), and centre each turn's part over the image's
# $k$ conversations. With $\gamma = 1$ a token of turn $t$ then sees $\sum_{u \ge t} r'_u$: everything its answer can
# still change, and none of the earlier turns' rewards, which it cannot change and which only added noise. On the
# tiny model, at our batch sizes, this and sampling at temperature 0.5 are what make the policy gradient carry any
# signal at all (docs/methods.md §6(a) 5: the gradient noise scale, `tools/ppo_noise_scale.py`). On a hand batch
# of two conversations of one image, sample 0 right on turn 1 only and sample 1 on turn 2 only:

# %%
import torch  # noqa: E402

from repro.train import ppo_math  # noqa: E402

mask = torch.tensor([[1, 1, 0, 1, 1, 0]] * 2, dtype=torch.float32)  # turn 1 = tokens 0-1, turn 2 = tokens 3-4
zeros = torch.zeros(2, 6)
turns = ppo_math.advantages(zeros, zeros, zeros, mask, torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]),
                            kl_beta=0.1, gamma=1.0, lam=1.0, positions=torch.tensor([[1, 4], [1, 4]]))
end = ppo_math.advantages(zeros, zeros, zeros, mask, torch.tensor([1.0, 2.0]), torch.tensor([0, 0]), kl_beta=0.1,
                          gamma=1.0, lam=1.0)
print("advantages, turn credit:\n", turns["advantages"], "\nadvantages, reward at the end:\n", end["advantages"])

# %% [markdown]
# Read the second turn (tokens 3-4): with turn credit sample 0's answer gets −2 and sample 1's +2, the centred
# reward of *that* turn; with the reward at the end both turns get ∓1, the centred total, in which turn 1's
# outcome (which turn 2 cannot change) cancels half of turn 2's. The first turn sees both turns either way.

# %%
drllava_cfg = papers.drllava.DrLLaVAConfig.from_params(cfg)  # its own lr / kl_beta, not UMed's
drllava_cfg

# %%
drllava_run = papers.drllava.run(drllava_cfg, stage)
drllava_table = report.drllava_rl_table(drllava_run)
repro.results.save_table(drllava_table, cfg, "drllava_main")
repro.plots.save_figure(report.curves_figure(drllava_run, "Dr-LLaVA (multi-turn PPO)"), cfg, "drllava_curves")
drllava_table

# %% [markdown]
# **What it means.** The first four columns are on the standard question order (the headline); the `conv.`
# columns are the robustness variants (shuffled or reversed order, correct or wrong hints and confirmations). The
# paper reports that RL improves conversation-level accuracy and robustness; its tables were not retrieved, so
# there is no paper block.
#
# **How we differ from the paper**
# 1. Synthetic "slides" and a tiny model instead of UCSF bone-marrow images and LLaVA-RLHF-7B.
# 2. Exact label parsers consistent with our templates replace the released keyword rules (which disagree with
#    the released templates).
# 3. A per-prompt leave-one-out baseline and a freshly initialised value head instead of a value model
#    initialised from a 13B reward model.
# 4. Far smaller rollout batches (32 conversations a step, the release 512) and fewer steps.
# 5. Each turn's reward at its own last token and rollouts at temperature 0.5 (the release: the whole reward at
#    the end, temperature 1): at our batch sizes the released scheme's gradient had no detectable signal.
#
# **Exercises**
# 1. Set `drllava_turn_credit: false` (the released scheme): does the probe reward in the "Arms" section still rise?
# 2. Set `drllava_missing_eos_penalty: 0.0`: do answers get longer?
# 3. Which robustness variant gains most from RL, and is that difference larger than its `mde` in the ledger?

# %% [markdown]
# ## Arms: did each policy learn?
#
# A training reward logged on each step's fresh batch of a few prompts is mostly batch noise, and "the parameters
# moved" (end KL above `min_kl`) says nothing about direction. So every arm is scored on a **fixed validation
# probe** (`repro.papers.probe`): the same validation items and the same sampling seed at step 0 and at points
# along training, where it scores the arm's *own training reward* on `probe_k` samples at the training temperature,
# and the paper's target metric both sampled (pass@1) and greedy. An arm **learned** when its probe reward at the
# end beats step 0 by a paired test over items, clustered by image:
#
# $$\text{learned} \iff \text{CI}_{95}\Big[\tfrac1n\textstyle\sum_i \big(\bar r_i^{\,\text{end}} - \bar r_i^{\,0}\big)\Big] > 0 .$$
#
# An arm that did not learn is "not trained": it is not evaluated on test, and every claim that uses it says so.

# %%
runs = papers.load_runs(papers.configs_from(cfg), stage)  # every paper's arms, read back from their result files
arms = report.arms_table(runs)
repro.results.save_table(arms, cfg, "arms")
probe_points = report.probe_long(runs)
repro.results.save_table(probe_points, cfg, "probe")  # the curves' data: one row per arm and probe point
repro.results.save_csv(report.train_log(runs), cfg, "train_log")  # every arm's per-step log, one row per step
fig = report.probe_figure(runs, {"umed": "UMed-LVLM", "zhu": "Zhu et al.", "mmedpo": "MMedPO", "drllava": "Dr-LLaVA"})
if fig is not None:
    repro.plots.save_figure(fig, cfg, "probe_curves")
arms

# %% [markdown]
# ## Claims ledger
#
# One row per independent observation. `difference` is treatment − baseline on the test items (paired by seed and
# item), `ci_low`/`ci_high` its 95% interval from the clustered bootstrap, `p_holm` the Holm-corrected p-value
# within the paper, `mde` the smallest difference this evaluation could detect (80% power, α = 0.05).
# **reproduced**: significant in the paper's direction; **opposite**: significant the other way;
# **below_paper**: not significant, and the CI's end on the paper's side lies below the paper's own effect (a
# paper-sized effect is ruled out); **inconclusive**: the CI holds both 0 and the paper's effect (read `mde`);
# **not_trained**: an arm did not learn (its probe reward did not rise above step 0's, or its policy did not
# move). The `why` column says which. Rows of `kind` **check** only confirm that a reward did what it pays for
# (ECR lengthens answers) or that a start which saw the task beats one that did not: shown, never counted.

# %%
# The planned MDE (`repro.papers.plan`): from the validation sweep's spread over items and seeds at the chosen knobs,
# for this test's size and seeds — fixed before any test item is read; `mde` beside it is what the test had.
plan = papers_plan.load(cfg.profile)
plan_table = papers_plan.table(plan, papers_plan.test_images(vars(cfg)), len(cfg.seeds))
repro.results.save_table(plan_table, cfg, "plan")
ledger = claims_lib.ledger(runs, plan=plan)
repro.results.save_table(ledger, cfg, "claims")
with pd.option_context("display.max_colwidth", 120):
    display(ledger)

# %%
CLAIM_FIELDS = repro.stats.CLAIM_COLUMNS + ["why"]  # the fields every stage's claims carry (07 reads them)
claims_out = ledger.reset_index() if "paper" not in ledger.columns else ledger
metrics = {
    "start": papers.start_points(papers.configs_from(cfg), stage),  # read back from the start arms' files
    "arms": arms.to_dict(orient="records"),
    "sweep": papers_sweep.load(cfg.profile),  # the validation sweep that chose the knobs
    "plan": plan_table.to_dict(orient="records"),  # the planned MDE per paper (validation only)
    "claims": claims_out[[c for c in CLAIM_FIELDS if c in claims_out.columns]].to_dict(orient="records"),
    "runs": {p: [{k: v for k, v in r.items() if k not in ("curve", "log")} for r in run["records"]]
             for p, run in runs.items()},
    "scores_file": report.save_rows(report.rows_frame(runs), cfg),
}
print(repro.results.save(cfg, metrics, started=started))

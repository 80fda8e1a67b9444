# %% [markdown]
# # 03 · Rewards of the four papers, hacking probes and the MMedPO preference set
#
# Every reward the later RL stages optimise, on completions sampled from the stage-02 SFT model:
#
# * **Dr-LLaVA** — rule reward of a 5-turn conversation (per-turn correctness + diagnostic-path consistency), the older
#   gated variant, and the released keyword rules with their bugs;
# * **Zhu et al.** — format, accuracy, semantic alignment (rule judge), Extended-Chain and correctness-weighted length;
# * **UMed-LVLM** — ALR (IoU of the box), the relevance judge, **VRR** (attention of the class-name tokens on the lesion
#   patches, read from the model with eager attention) and their per-query max-normalised total AAR;
# * **MMedPO** — the clinical-relevance judge panel (consensus loop) that weights dispreferred answers.
#
# Then the probes that try to game each reward, the localized lesion noising of MMedPO, and the curated preference set
# (text + visual dispreference pairs with clinical weights) that stage 04 trains on.
#
# **How to use this notebook.** Run 01 and 02 first (this one reads their data and SFT model); then top to bottom,
# under a minute at the default, smoke-sized parameters. The first section writes every reward as a formula, paper
# by paper, each with a numbered "how we differ from the paper" list and exercises; the following sections compute
# the rewards on the SFT model's own samples and say how to read each table and figure. The formulas are those of
# `docs/methods.md §1(b)` (Dr-LLaVA), `§2(b)` (Zhu et al.), `§3(a)–(b)` (MMedPO) and `§4(a)` (UMed-LVLM); every
# reward is a plain function `f(prompts, completions, **columns) -> list[float | None]` (TRL's signature; None = does
# not apply) with an `explain` that says why a completion scored what it did (`docs/design.md §7`).
#
# Headless: `python -m repro run --profile smoke --only 03` (needs stages 01 and 02).

# %% tags=["parameters"]
profile = "smoke"
seed = 0
model_dir = ""             # empty means runs/<profile>/models/sft/final (the stage-02 SFT model)
sample_limit = 12          # test rows per task for the reward tables, spread over sources and classes
samples_per_row = 2        # sampled completions per row
temperature = 0.7          # sampling temperature of those completions (0 means greedy)
batch_size = 32
vrr_layers = "all"         # decoder layers averaged for VRR, all or last
probe_limit = 12           # test rows per task for the hacking probes
pref_tasks = ["vqa", "report"]
pref_max_rows = 40         # train rows per task for the preference set, 0 means all
pref_samples = 4           # SFT samples per prompt for the text dispreference
pref_temperature = 1.0
pref_heatmap = "attention" # visual tool, attention (the SFT model) or oracle (the true lesion mask)
pref_noise = "released"    # released (replace by noise) or blend (the paper's formula)
pref_threshold = "mean"    # released-rule threshold, mean or released (mean - std, often global)
pref_noise_step = 500      # diffusion step k of the blend (xi is xi_bar_k)
pref_weight_mode = "raw"         # text pairs, raw (released; MMedPO trains on it), normalize, literal (0.75) or minmax
pref_visual_weight_mode = "minmax" # visual pairs (tool probability), minmax or raw (released)
pref_out = ""              # empty means runs/<profile>/data/preference
mmedpo_data = "synthmed"   # preference set from synthmed, or real (VQA-RAD, SLAKE and IU-Xray train; gpu profile)
semantic_judge_paths = []  # local instruct LMs judging the reasoning (Zhu et al.), empty keeps the rule judge
clinical_judge_paths = []  # local instruct LMs of the clinical-relevance panel (MMedPO), empty keeps the rule panel
n_figure_examples = 4
interactive = True         # params files set False, so papermill never builds the widget
num_threads = 0            # torch CPU threads, 0 keeps the default

# %%
import time

import repro.config
import repro.paths
import repro.plots
import repro.results
from repro import evaluation as ev
from repro import models
from repro.data import preference, protocols
from repro.rewards import attention, figures, llm_judge, probes, suite

cfg, started = repro.config.start(globals(), "03_rewards")
data_dir = repro.paths.data_dir(cfg.profile)
# a relative model_dir is read from the repository root, as the params check reads it
model_path = (repro.paths.model_ref(cfg.model_dir) if cfg.model_dir
              else repro.paths.models_dir(cfg.profile) / "sft" / "final")
# eager attention: VRR and the attention heatmaps read the attention weights (sdpa returns none)
model, processor = models.load_vlm(model_path, attn_implementation="eager")
vrr = attention.make_vrr_reward(model, processor, layers=cfg.vrr_layers, batch_size=cfg.batch_size)
rewards = suite.task_rewards(vrr_fn=vrr, semantic_judge=llm_judge.make_semantic_judge(cfg.semantic_judge_paths),
                             clinical_panel=llm_judge.make_clinical_panel(cfg.clinical_judge_paths))
print(f"profile {cfg.profile}: model {model_path}, data {data_dir}")

# %% [markdown]
# The validated configuration (`cfg`) and which reward functions apply to which task (`suite.task_rewards`): the
# conversation rewards are Dr-LLaVA's, the MCQ ones Zhu et al.'s, the instruction ones UMed-LVLM's, and MMedPO's
# clinical-relevance panel scores the free-text tasks.

# %%
vars(cfg)

# %%
{task: [f.__name__ for f in fns] for task, fns in rewards.items()}

# %% [markdown]
# ## The rewards, paper by paper
#
# ### Dr-LLaVA: rule reward of a 5-turn conversation (`docs/methods.md §1(b)`)
#
# **Idea.** No learned reward model: the decision tree of notebook 01 *is* the reward. Each answer is parsed into a
# label of its turn's category; it earns a point when right, loses half a point when it cannot be parsed, and each
# pair of consecutive answers earns a point when some valid diagnostic path holds both. With $k_i$ the category of
# turn $i$ (in the order asked), $\hat\ell_i$ its parsed label (or *none*) and $\ell_i$ the reference:
#
# $$c_i=\begin{cases}+1 & \hat\ell_i=\ell_i\\-0.5&\hat\ell_i=\text{none}\\0&\text{otherwise}\end{cases}\qquad
# a_i=\mathbb{1}\big[\exists\,P:\ P_{k_{i-1}}=\hat\ell_{i-1}\wedge P_{k_i}=\hat\ell_i\big]\qquad
# R=\sum_{i=1}^{n}c_i+\sum_{i=2}^{n}a_i\in[-2.5,\ 9].$$
#
# A coherent but wrong path still earns the consistency points. Two more variants are scored for comparison: the
# older **gated** one, $R=c_1$ if the quality turn is wrong ($c_1\le0$) else $1+\sum_i c_i$ (`drllava_gated_reward`),
# and the **released** HEAD code's semantics (`drllava_released_reward`: keyword rules applied to both the answer and the
# reference text, bugs kept).
#
# **How we differ from Dr-LLaVA** (`docs/methods.md §6(a)`):
# 1. Exact label parsers matched to our paraphrases (`decision_tree.classify_answer`) instead of the released keyword
#    rules, which do not match the released templates (docs/methods.md §1(b) caveat 2).
# 2. No per-turn length term: in the release it is computed on the label strings and never fires.
# 3. Turn-1 labels are "suitable"/"unsuitable" strings, not booleans; the released HEAD's `math.abs` crash is removed
#    from our re-implementation of it.
#
# **Exercises.**
# 1. Take one conversation and break its quality answer: `row = rows_rep["conv"][0]; c = list(suite.truth(row));
#    c[row["turn_categories"].index(1)] = "blah"`, then `suite.explain_all("conv", row, c, rewards)`. Why does the
#    gated variant give −0.5 while ours still pays most of the reward?
# 2. In the summary table below, compare the mean of `drllava_released_reward` with `drllava_reward` on the same samples,
#    then find a sample where they disagree (`wide[["drllava_reward", "drllava_released_reward"]]`). Which bug of
#    `docs/methods.md §1(b)` caveat 2 explains it?
# 3. Set `temperature = 0` (greedy): every sample of a row is then the same. What happens to the reward spread
#    (`std` in the summary) that PPO and GRPO learn from?

# %% [markdown]
# ### Zhu et al.: format, accuracy, semantic and length rewards for GRPO (`docs/methods.md §2(b)`)
#
# **Idea.** GRPO ranks a group of sampled answers by rule rewards, so the rewards must be cheap and hard to game.
# The answer is `<think>reasoning</think><answer>X</answer>`:
#
# $$r_{\text{fmt}}=\mathbb 1[\text{one think block, then one answer block, nothing else}],\qquad
# r_{\text{acc}}=\mathbb 1[\text{the answer block names the right option}],$$
#
# $$r_{\text{sem}}=\mathbb 1\Big[\tfrac13\textstyle\sum_{f\in\{\text{finding, region, modality}\}}\mathbb 1[f\ \text{named right and alone}]\ \ge\ 1\Big]
# \quad\text{(the fraction itself is scored too, for analysis)},$$
#
# and the two length rewards, with $L$ the words inside `<think>` and $L_{\text{cap}}=32$:
#
# $$r_{\text{ECR}}=\min(L/L_{\text{cap}},1)\ \text{(Extended Chain: unconditional)},\qquad
# r_{\text{CWR}}=r_{\text{acc}}\cdot\min(L/L_{\text{cap}},1)\ \text{(Correctness-Weighted)}.$$
#
# A GRPO variant's total is the unweighted sum of its rewards; stage 04 trains on them.
#
# **How we differ from Zhu et al.** (`docs/methods.md §6(b)`):
# 1. The semantic judge is a rule (finding, region, modality named correctly and alone), not BioGPT/BioMistral.
# 2. The capped linear ECR/CWR forms and $L_{\text{cap}}=32$ are ours; the paper defines them in words.
# 3. All reward weights are 1 (not given in the paper).
#
# **Exercises.**
# 1. In the hacking-probe matrix below, find the `length farming` column: which of the six MCQ rewards pays it?
#    What would a GRPO run with ECR learn to do?
# 2. Write an answer that names every finding in its `<think>` block and score it with
#    `suite.explain_all("mcq", rows_rep["mcq"][0], "<think>nodule cyst mass effusion</think><answer>A</answer>", rewards)`:
#    which facets of the semantic judge fail (its `explain` says), and why must listing every finding not pass?

# %% [markdown]
# ### UMed-LVLM: ALR, VRR and per-query max-normalisation (`docs/methods.md §4(a)`)
#
# **Idea.** Reward the model for *finding* the lesion, not only for naming it. The **abnormal localisation reward**
# is the overlap of the answer's box with the true one (None for normal images, where it does not apply):
#
# $$r^{\text{loc}}=\max_k\operatorname{IoU}(\hat b,b_k),\qquad \operatorname{IoU}(\hat b,b)=\frac{|\hat b\cap b|}{|\hat b\cup b|}.$$
#
# The **vision relevance reward** asks whether the tokens that name the abnormality *look at* the lesion. One
# teacher-forced pass with eager attention; $A$ = attention averaged over the layers `vrr_layers` and all heads;
# anchor rows $N$ = the answer's tokens that spell the true category; image columns $I$; box patches $B\subseteq I$:
#
# $$p_{ij}=\frac{A_{ij}}{\sum_{k\in I}A_{ik}},\qquad r^{\text{att}}=\mathrm{VRR}=\frac1{|N|}\sum_{i\in N}\sum_{j\in B}p_{ij}\in[0,1],
# \qquad\text{chance}=|B|/|I|.$$
#
# A rule **relevance** judge $r^{\text{LLM}}\in[0,1]$ (structure, detection, category, no contradiction) stands in for
# the paper's LLM. ALR and VRR are then **max-normalised over the $K$ candidates of the same query** and added
# (AAR); the paper stops at the sum, we divide it by the number of terms that apply to the query, $n_{\text{terms}}$
# (3 on an abnormal image, 1 on a normal one, where ALR and VRR do not exist), so every reward lies in $[0,1]$
# (`docs/methods.md §4(a)`):
#
# $$r_t=\frac{1}{n_{\text{terms}}}\Big(r^{\text{LLM}}_t+\frac{r^{\text{loc}}_t}{\max_{k\le K} r^{\text{loc}}_k}+\frac{r^{\text{att}}_t}{\max_{k\le K} r^{\text{att}}_k}\Big)\qquad(\text{a quotient is 0 when its maximum is}\le 0).$$
#
# Here the candidates are the `samples_per_row` samples of one test row (column `id`). The list of how we differ
# and the exercises follow the VRR figure below.

# %% [markdown]
# ### MMedPO: clinical relevance of a dispreferred answer (`docs/methods.md §3(a)`)
#
# **Idea.** Not every wrong answer teaches the same: a plausible hallucination about the right organ is worth more
# than nonsense. A panel of judges scores the dispreferred answer $y_l$ against the truth on $\{0,0.2,\dots,1\}$: the
# first gives $s_1$, each next one sees the previous score and agrees or re-scores, until consensus or 5 rounds;
# the pair's score is $\hat s=\frac1{|S|}\sum_i s_i$. Scores become DPO weights (next formula in the preference
# section). Our judges are rules with different biases, on the Jaccard overlap $o$ of content words:
# lenient $0.4+0.6\,o$, strict $o$ (halved without a clinical term), keyword (share of the truth's clinical terms
# named). The `clinical_relevance` column of the tables below is $\hat s$ of each *sample* against the truth.

# %% [markdown]
# ## Every reward on SFT-model samples (test rows of the MCQ, instruction, conversation and VQA tasks)

# %%
test_rows = {t: ev.load_rows(data_dir, t, "test", cfg.sample_limit) for t in ("mcq", "instruct", "conv", "vqa")}
t0 = time.time()
rows_rep, samples = suite.sample_completions(model, processor, test_rows, cfg.samples_per_row, cfg.temperature,
                                             cfg.seed, cfg.batch_size)
long = suite.score(rows_rep, samples, rewards)
wide = suite.wide(long)
print(f"{len(wide)} samples scored with {long['reward'].nunique()} rewards in {time.time() - t0:.1f} s")
examples = suite.breakdown_examples(long, per_task=2)
repro.results.save_table(examples, cfg, "reward_examples")
examples.round(3)

# %% [markdown]
# **Reading the table.** Two samples per task, each with every reward that applies to its task (empty = not
# applicable: ALR on a normal image, MCQ rewards on a conversation). `samples_per_row` completions per test row
# are drawn at `temperature` under a fixed seed, so a rerun gives the same samples. Any sample can be taken apart
# with `explain`; here the first conversation:

# %%
suite.explain_all("conv", rows_rep["conv"][0], samples["conv"][0], rewards)

# %%
reward_summary = suite.summary(long)
repro.results.save_table(reward_summary, cfg, "reward_summary")
reward_summary.round(3)

# %% [markdown]
# **Reading the table.** Per (task, reward): the mean and spread over the SFT model's samples, the share of
# samples the reward applies to, and $n$. A reward whose mean is near its maximum and whose `std` is near 0 gives RL
# nothing to learn from; GRPO's group advantage $A_i=(r_i-\bar r)/\operatorname{std}(r)$ is exactly 0 then.

# %% [markdown]
# ## Reward distributions per source, and how the rewards correlate

# %%
fig = figures.distributions(long)
repro.plots.save_figure(fig, cfg, "reward_distributions")

# %%
fig, corr = figures.correlations(wide, list(long["reward"].unique()))
repro.plots.save_figure(fig, cfg, "reward_correlations")
repro.results.save_table(corr, cfg, "reward_correlations")

# %% [markdown]
# **Reading the figures.** Distributions: one panel per reward, per source — a reward stuck at one value on a
# source cannot rank samples there. Correlations: Pearson's $r$ between rewards over the samples they share; two
# rewards near $r=1$ carry the same signal (e.g. AAR and its ALR term), near 0 they measure different things.

# %% [markdown]
# ## Hacking probes: which degenerate completions does each reward pay for?
#
# **Idea.** RL optimises whatever the reward pays for. Each probe is a degenerate completion built from the true
# answer of a test row (tag spam, length farming, always "yes", a whole-image box, the question copied, every
# finding listed; see `repro/rewards/probes.py`). With $\bar r$ a reward's mean over the probe, the truth and the
# empty answer,
#
# $$\text{gain}=\frac{\bar r_{\text{probe}}-\bar r_{\text{empty}}}{\bar r_{\text{truth}}-\bar r_{\text{empty}}},$$
#
# the share of the truth's margin over doing nothing the probe keeps. Verdicts: **pays more** (probe above truth:
# the policy gains by hacking), **fooled** (gain ≥ 0.9), **partly** (0.5–0.9), **resists** (< 0.5).

# %%
probe_rows = {t: ev.load_rows(data_dir, t, "test", cfg.probe_limit) for t in ("mcq", "instruct", "conv", "vqa")}
probe_long = probes.run(probe_rows, rewards)
reactions = probes.reactions(probe_long, rewards)
repro.results.save_table(reactions.set_index(["reward", "probe"]), cfg, "hacking_probes")
fig = figures.probe_heatmap(reactions)
repro.plots.save_figure(fig, cfg, "hacking_probes")
hacking_statement = probes.statement(reactions)
print(hacking_statement)
probes.verdict_matrix(reactions)

# %% [markdown]
# **Reading it.** Rows are rewards, columns probes. "pays more" cells are the hacks an RL run with that reward
# will find; "fooled" cells are blind spots (junk added to a right answer goes unpunished, so RL will not remove it
# once it appears). The printed statement lists them per probe.

# %% [markdown]
# ## MMedPO localized noising: the heatmap of the visual tool, the released rule and the paper's blend
#
# **Idea.** A *visual* dispreferred sample keeps the right answer but destroys the lesion in the image, so that
# DPO teaches the model to ground its answer in the lesion. A heatmap $h$ says where the lesion is (`pref_heatmap`:
# the SFT model's own attention, or the true mask with `oracle`). The **released rule** (`pref_noise: released`)
# blurs the resized map, $\tilde h=G_{15\times15}*h$, thresholds it at $t$ (`pref_threshold`: `mean` or `released`)
# and replaces the pixels above it:
#
# $$x^*_p=\begin{cases}\epsilon_p\sim\mathcal N(0,10)\ \text{(normalised units)}&\tilde h_p>t\\ x_p&\text{otherwise}\end{cases},\qquad
# t=\begin{cases}\operatorname{mean}(\tilde h)&\text{threshold mean (default)}\\ \operatorname{mean}(\tilde h)-\operatorname{std}(\tilde h)&\text{threshold released}\end{cases}$$
#
# The **paper's blend** (`pref_noise: blend`) mixes noise in inside the map, with $\bar\xi_k=\prod_{i\le k}(1-\beta_i)$ of a
# DDPM schedule at step $k$ = `pref_noise_step`:
#
# $$x^*=\sqrt{\bar\xi_k}\,(x\odot h)+\sqrt{1-\bar\xi_k}\,(\epsilon\odot h)+x\odot(1-h),\qquad\epsilon\sim\mathcal N(0,I).$$

# %%
train_report = preference.load_rows(data_dir, "report")
shown = list({r["source"]: r for r in train_report if r["abnormal"] and r["bboxes"]}.values())[:cfg.n_figure_examples]
fig = figures.noising(preference.noising_examples(model, processor, data_dir, shown, cfg.seed, cfg.pref_noise_step))
repro.plots.save_figure(fig, cfg, "lesion_noising")

# %% [markdown]
# **Reading the figure.** Two rows per image, one per tool (the SFT model's attention, the true lesion mask);
# columns: the image with its true box, the tool's heatmap, then the released rule with $t$ = mean − std, with
# $t$ = mean, and the blend; each title gives the share of pixels changed. With mean − std a peaked map puts every
# pixel above $t$ and the "local" noise becomes global; $t$ = mean keeps it on the lesion. The figure always shows
# all three; the preference set below uses the ones `pref_noise` and `pref_threshold` choose.

# %% [markdown]
# ## VRR: where do the class-name tokens of the SFT model's answers look?

# %%
inst_rows, inst_samples = rows_rep["instruct"], samples["instruct"]
vrr_all = attention.vrr_details(model, processor, inst_rows, inst_samples, layers=cfg.vrr_layers)
scored = [(k, d) for k, d in enumerate(vrr_all) if d["reward"] is not None]  # abnormal images only
vrr_mean = sum(d["reward"] for _, d in scored) / max(len(scored), 1)
vrr_chance = sum(d["chance"] for _, d in scored) / max(len(scored), 1)
picked = list({inst_rows[k]["source"]: (k, d) for k, d in reversed(scored)}.values())[:cfg.n_figure_examples]
captions = [f"VRR {d['reward']:.3f} (chance {d['chance']:.3f})\nanchor: {d['anchor']}" for _, d in picked]
fig = figures.vrr_maps([inst_rows[k] for k, _ in picked], [d["map"] for _, d in picked], captions)
repro.plots.save_figure(fig, cfg, "vrr_attention")
print(f"VRR of the SFT model's own answers on {len(scored)} abnormal samples: mean {vrr_mean:.3f}, "
      f"chance (uniform attention over the image) {vrr_chance:.3f}")

# %% [markdown]
# **Reading it.** Each map is $\frac1{|N|}\sum_{i\in N}p_{i\cdot}$, the anchor tokens' attention over the 8×8 image
# patches, with the true box; the caption gives VRR and its chance level $|B|/|I|$ and which rule found the anchor
# tokens (`category`: the true class name; `named`: another class the answer names; `all`: every answer token).
# VRR above chance means the class-name tokens look at the lesion more than at a random patch.
#
# **How we differ from UMed-LVLM** (`docs/methods.md §6(d)`):
# 1. VRR is the *mean* over anchor tokens (the paper sums), averaged over all layers and heads (the paper names no
#    layer), and read from a frozen eager copy of the SFT model in stage 04, not from the policy itself.
# 2. The relevance reward is a rule judge, not an LLM.
# 3. $K$ = `samples_per_row` candidates per query here (stage 04: its own $K$); the paper does not say how many.
# 4. Boxes are in integer percent; ALR is None (not 0) on normal images.
#
# **Exercises.**
# 1. Set `vrr_layers = "last"`: does the mean VRR move away from chance? Which layers carry the grounding?
# 2. In the probe matrix, what does the `whole-image box` probe get from ALR and from AAR? Explain with the IoU
#    formula (a box of the whole image against a lesion box of area $a$ has IoU $= a$).
# 3. With `temperature = 0` all $K$ candidates of a query are identical: what does max-normalisation turn every
#    nonzero ALR into, and what is left of the signal?

# %% [markdown]
# ## The MMedPO preference set (text + visual dispreference pairs, clinical weights)
#
# **Idea.** Stage 04's weighted DPO trains on pairs $(x,q,y_w,y_l)$ built here from the *train* split of
# `pref_tasks`: a **text** pair takes the most clinically relevant of `pref_samples` SFT samples that contradicts the
# truth (else a templated hallucination), a **visual** pair keeps $y_l=y_w$ and puts the noised image $x^*$ on the
# rejected side. Each pair gets a weight $s'_i$ that multiplies its DPO loss,
#
# $$\mathcal L_{\text{MMedPO}}=\frac1B\sum_{i=1}^{B}s'_i\cdot\big(-\log\sigma(\beta\,\Delta_i)\big),\qquad
# \Delta_i=\log\frac{\pi_\theta(y_w\mid x)}{\pi_{\text{ref}}(y_w\mid x)}-\log\frac{\pi_\theta(y_l\mid x^*)}{\pi_{\text{ref}}(y_l\mid x^*)}.$$
#
# The paper prints $s'=\operatorname{clip}((s-\mu)/\sigma,s_{\min},s_{\max})$ with $s_{\min}=0.75,s_{\max}=1.25,\mu=1,\sigma^2=0.1$ (it
# names the bounds $\alpha,\beta$; $\beta$ here is DPO's temperature only). For a score $s\in[0,1]$,
# $(s-1)/\sqrt{0.1}\le 0<0.75$, so the clip returns its lower bound: the printed rule is the **constant 0.75**.
# The package function on a hand batch of the release's scores, every mode side by side:

# %%
from repro.rewards import clinical  # noqa: E402

clinical.derivation([0.0, 0.2, 0.5, 0.8, 1.0]).round(3)

# %% [markdown]
# **Which weights MMedPO trains on.** A constant weight makes MMedPO's text pairs plain DPO with the loss scaled by
# 0.75, so it cannot test "clinical weights help"; the release's training code passes the raw score $s$, which is
# what the authors trained with. So stage 04's MMedPO arm uses `raw` (knob `mmedpo_weight_mode`, recomputed from
# each pair's stored `score`; a pair with $s=0$ is switched off), and our set normalisation `normalize` is a
# sensitivity row of stage 05 (docs/decisions.md, 2026-12-06). `pref_weight_mode` chooses the weights stored here:
#
# $$\mathtt{normalize}:\ s'_i=\operatorname{clip}\Big(\mu+\sigma\,\frac{s_i-\operatorname{mean}(s)}{\operatorname{std}(s)},\ s_{\min},\ s_{\max}\Big),\qquad
# \mathtt{minmax}:\ s'_i=s_{\min}+(s_{\max}-s_{\min})\,s_i,\qquad \mathtt{raw}:\ s'_i=s_i,\qquad \mathtt{literal}:\ 0.75 .$$
#
# A visual pair's score is the SFT model's $P(\text{yes})/(P(\text{yes})+P(\text{no}))$ for "Is there an abnormality?" on
# the original image, mapped by `pref_visual_weight_mode` (default `minmax`). The call, with every knob by name:

# %%
t0 = time.time()
pref_data_dir = protocols.data_dir_for(data_dir, "mmedpo_data", cfg.mmedpo_data)
pref = preference.build_preference(
    model, processor, pref_data_dir, cfg.pref_out or data_dir / "preference", seed=cfg.seed, task_names=tuple(cfg.pref_tasks),
    max_rows_per_task=cfg.pref_max_rows, n_samples=cfg.pref_samples, temperature=cfg.pref_temperature,
    heatmap=cfg.pref_heatmap, noise_method=cfg.pref_noise, noise_threshold=cfg.pref_threshold,
    noise_step=cfg.pref_noise_step, weight_mode=cfg.pref_weight_mode,
    visual_weight_mode=cfg.pref_visual_weight_mode, batch_size=cfg.batch_size)
pref_seconds = time.time() - t0
pairs = pref["dataset"]["train"].remove_columns(["images", "rejected_images"]).to_pandas()
pref_table = pairs.groupby(["kind", "source"]).agg(pairs=("weight", "size"), score=("score", "mean"),
                                                   weight=("weight", "mean"), weight_min=("weight", "min"),
                                                   weight_max=("weight", "max"))
repro.results.save_table(pref_table, cfg, "preference_set")
print(f"{pref['summary']['pairs']} pairs in {pref_seconds:.1f} s -> {pref['path']}; text pairs from samples vs templates: {pref['summary']['text_origin']}")
pref_table.round(3)

# %%
pairs[["kind", "source", "prompt", "chosen", "rejected", "score", "weight"]].groupby("kind").head(3)

# %% [markdown]
# **Reading it.** The first table has one row per (kind, source): how many pairs, their mean raw score $s$ and
# weight $s'$ with its range. The printed origin counts say how many text pairs came from the SFT model's own
# samples and how many from templates (a model that is rarely wrong yields few sampled hallucinations). The second
# shows three pairs of each kind: in visual pairs `chosen` and `rejected` are the same text — only the image differs.
#
# **How we differ from MMedPO** (`docs/methods.md §6(c)`):
# 1. The dispreferred text is the most relevant *conflicting* SFT sample as judged by our rule panel, or a templated
#    hallucination, instead of GPT-4o's pick.
# 2. The panel is three rule judges with the consensus loop, not Med42 / BioMistral.
# 3. Weights: the default `raw` is the release's (the printed formula is a constant, `literal`); `normalize` reads
#    $\mu,\sigma^2$ as the target mean and variance of the weights (stage 05's sensitivity row).
# 4. The visual tool is the SFT model's attention (or the true mask), not MedKLIP; the noising threshold defaults to
#    the mean of the blurred map, not the released mean − std.
#
# **Exercises.**
# 1. Which text pairs have weight 0 and drop out of the loss (`pairs[pairs.weight == 0]`), and what do their
#    `rejected` answers look like? Set `pref_weight_mode = "normalize"`: what weight do they get now?
# 2. In the noising figure, read the share of pixels changed under `t=mean-std` and `t=mean`. Then set
#    `pref_threshold = "released"`: the visual pairs now use the first. Which MMedPO ablation (local lesion noise
#    vs global noise, `docs/methods.md §3(f)`) does this quietly turn into?
# 3. Set `pref_heatmap = "oracle"`: what are the visual pairs' `score` and `weight` now, and why? (The oracle tool
#    is certain that the lesion is there.)

# %% [markdown]
# ## Reward playground (JupyterLab only; papermill runs skip this)

# %%
if interactive:
    from repro import widgets
    display(widgets.reward_playground(probe_rows, rewards))

# %% [markdown]
# ## Save the stage's results
#
# `results/<profile>/03_rewards.json` gets the reward means, the VRR summary, every probe verdict and the
# preference-set summary; the preference set itself is on disk for stage 04 (`runs/<profile>/data/preference`).

# %%
metrics = {
    "samples": int(len(wide)), "reward_means": {f"{t}/{r}": float(v) for (t, r), v in reward_summary["mean"].items()},
    "vrr": {"mean": vrr_mean, "chance": vrr_chance, "n": len(scored)},
    "probes": {f"{r.reward}/{r.probe}": r.verdict for r in reactions.itertuples()},
    "hacking_statement": hacking_statement,
    "preference": {**pref["summary"], "seconds": round(pref_seconds, 1),
                   "weight_mean": float(pairs["weight"].mean()), "weight_min": float(pairs["weight"].min()),
                   "weight_max": float(pairs["weight"].max())},
}
print(repro.results.save(cfg, metrics, started=started))

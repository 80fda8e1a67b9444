# %% [markdown]
# # 05 · Ablations: which part of each method carries its effect
#
# An ablation removes **one** component of a method and keeps everything else: the same SFT start of stage 02,
# the same knobs (read from `params/<profile>/04_rl.yaml`), the same seeds and the same test items. The difference
# *full method − ablation* is then the component's contribution, judged by the same paired test as stage 04
# (per-row scores paired by seed and item, bootstrapped over images, McNemar for one seed of a binary metric,
# Holm within a paper).
#
# | paper | full method (stage 04) | ablations here |
# |---|---|---|
# | UMed-LVLM | SFT+AAR | w/o VRR, w/o ALR, w/o AAR (= SFT+PPO), w/o per-query max-normalisation; accuracy vs IoU threshold |
# | MMedPO | MMedPO (DPO) | text pairs with weights, visual pairs without weights, one judge, global noise (also at matched KL), weight modes |
# | Zhu et al. | SFT+grpo | base vs SFT start, KL coefficient 0, a smaller group $G$ |
# | Dr-LLaVA | SFT+PPO (rule reward) | gated reward, the released code's reward, no path-consistency term |
#
# **Caching.** The full methods are stage 04's own arms: 05 builds their jobs from 04's params, so their keys
# (`papers.common.Job.key`) and folders are 04's and their results are read back, not retrained. Only the ablation
# arms train here. Each paper's rows reported by the paper are **claims** (verdict on the paper's direction); our
# extra ablations are **exploratory** comparisons with the same test, Holm-corrected as a family of their own.
# Headless: `python -m repro run --profile smoke --only 05` (needs 01–04).

# %% tags=["parameters"]
profile = "smoke"          # smoke | cpu | gpu; every other knob is a field of papers.ablations.AblationConfig
# The knobs the exercises name. None keeps the value of params/PROFILE/05_ablations.yaml (else the default)
iou_thresholds = None          # list, IoU thresholds of the accuracy curve (no training: recomputed from the rows)
umed = None                    # list, UMed ablations to train, a subset of papers.ablations.UMED
mmedpo = None                  # list, MMedPO ablations to train, a subset of papers.ablations.MMEDPO
zhu_small_generations = None   # int, G of Zhu's small-group arm

# %%
import pandas as pd

import repro.config
import repro.plots
import repro.results
from repro.papers import ablation_report as rep
from repro.papers import ablations as ab
from repro.papers import plan as papers_plan

cfg, started = repro.config.start(globals(), "05_ablations")
acfg = ab.AblationConfig.from_params(cfg)          # which ablations, which seeds, bootstrap size
configs, stage = ab.base_configs(cfg.profile, acfg)  # stage 04's paper configs and stage knobs, seeds narrowed
acfg

# %% [markdown]
# **Run every arm once.** The ablation arms of all four papers train side by side in one pool of `workers`
# processes (one thread each); the full methods' arms are read back from stage 04's result files. Each section
# below reads its paper's arms from `runs` (`ab.run_paper(paper, ...)` runs one paper alone).

# %%
runs = ab.run_all(configs, stage, acfg)  # {paper: {"records", "rows"}}; only the ablation arms train here
{p: sorted({r["method"] for r in run["records"]}) for p, run in runs.items()}

# %% [markdown]
# ## 1 · UMed-LVLM (Table 6 analog): which term of AAR matters?
#
# **Idea.** AAR adds two terms to the relevance reward, each divided by its maximum over the $k$ candidates of the
# same query (docs/methods.md §4):
#
# $$r = \frac{1}{n_{terms}}\Big(r^{LLM} + \frac{r^{loc}}{\max_k r^{loc}} + \frac{r^{att}}{\max_k r^{att}}\Big),\qquad
#   r^{loc} = \mathrm{IoU}(\hat b, b)\ \text{(ALR)},\qquad r^{att} = \text{attention share on the lesion (VRR)},$$
#
# with $n_{terms} = 1$ under `umed_aar_scale = "sum"` (the paper's) and the number of terms that apply to the
# query under `"mean"` (stage 04, section 1 works the reward through on a hand batch). The ablations drop one term
# (w/o VRR: $r^{LLM} + r^{loc}/\max$; w/o ALR: $r^{LLM} + r^{att}/\max$), both (w/o AAR = stage 04's SFT+PPO,
# relevance only) or the normalisation (w/o max-norm: $r^{LLM} + r^{loc} + r^{att}$ raw, so VRR's scale, not its
# rank among the candidates, decides its weight); every variant keeps the full method's $n_{terms}$. Everything
# else — PPO knobs, the attention model that reads VRR (`umed_vrr_source`), the data — is the full method's
# (`papers.umed.arm` with a reward hook).

# %%
umed_cfg = configs["umed"]  # stage 04's UMedConfig: the ablations change only the reward
{a: ab.UMED[a] for a in acfg.umed}

# %%
umed_run = runs["umed"]  # = ab.run_paper("umed", umed_cfg, stage, acfg)
umed_table = rep.umed_table(umed_run)
repro.results.save_table(umed_table, cfg, "umed_table6")
umed_table

# %% [markdown]
# **Accuracy as a function of the IoU threshold.** MAU-style accuracy counts an abnormal image right when detection
# and category are right and the box has IoU ≥ 0.5. Recomputed from the per-row IoUs at other thresholds $t$: the
# paper reports that diagnosis saturates at IoU ≈ 0.6 (above it, accuracy falls fast because few boxes are that
# tight). A method whose curve lies above another's only at high $t$ draws *tighter* boxes, not more right ones.

# %%
iou = rep.iou_curve(umed_run["rows"], acfg.iou_thresholds)
repro.results.save_table(iou.groupby(["method", "threshold"], sort=False)["accuracy"].mean().unstack(), cfg,
                         "umed_iou_curve")
repro.plots.save_figure(rep.iou_figure(iou), cfg, "iou_curve")
iou.groupby(["method", "threshold"], sort=False)["accuracy"].mean().unstack().round(3)

# %% [markdown]
# **What it means.** The paper's Table 6 reads: full 0.75 > w/o ALR 0.72 > w/o VRR 0.71 > w/o AAR 0.67 (average
# MAU accuracy): both terms help, and each alone recovers most of the gain. Compare our rows in the same order;
# the claims at the end say whether each difference is larger than this evaluation can detect (`mde`).
#
# **How we differ from the paper**
# 1. The paper's "w/o AAR" row equals its SFT row (0.67); ours is SFT+PPO with the relevance reward, as the
#    issue defines it (a PPO run with the same steps, so the comparison isolates the reward).
# 2. VRR is read from a frozen eager copy of the SFT model, not the policy's own attention.
# 3. "w/o max-normalisation" is our ablation (not in the paper): it shows what the normalisation does.
# 4. Synthetic MAU look-alike sources, a tiny model, far fewer PPO steps.
#
# **Exercises** (knobs in the parameters cell at the top; then run the notebook from the top)
# 1. Set `iou_thresholds = [0.3, 0.6]` (nothing retrains: the curve is recomputed from the saved per-row IoUs):
#    between the two thresholds, how much accuracy does each method lose, and is the fall near the paper's 0.6?
# 2. Without max-normalisation VRR enters on its raw scale: look up its range in stage 03 and say which term
#    dominates the reward then.
# 3. Set `umed = ["w/o VRR"]`: which claims remain, and how does Holm change with fewer claims in the family?

# %% [markdown]
# ## 2 · MMedPO: which component of the preference set matters?
#
# **Idea.** MMedPO's loss weights each pair by its clinical relevance $s'$ and adds visual pairs whose rejected
# side is the lesion-noised image $x^*$ (docs/methods.md §3):
#
# $$\mathcal L = -\,\mathbb E\Big[s' \log\sigma\Big(\beta \log\tfrac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)}
#   - \beta \log\tfrac{\pi_\theta(y_l|x^*)}{\pi_{ref}(y_l|x^*)}\Big)\Big].$$
#
# Each ablation changes the preference set stage 03 built, nothing else (`papers.mmedpo.arm` with a data hook):
# text pairs with weights (vs DPO's $s' = 1$), all pairs with $s' = 1$, text weights from one judge instead of
# the panel's consensus, visual pairs noised over the **whole** image instead of the lesion. The full method's
# text weights are the raw clinical scores $s$ (the release); two **sensitivity rows** set that one knob
# (`mmedpo_weight_mode`) the other way, judged as exploratory: `weights normalize` (our set normalisation, mean 1
# in $[0.75, 1.25]$) and `weights literal` (the printed clip rule, the constant 0.75).
#
# **Local vs global noise at matched update size.** Global noise makes a visual pair easy to win, so at the same
# lr and steps that arm moves much further from its start (cpu: KL 3.06 vs 0.53 nats), and "local beats global"
# would be confounded with how far each moved. `global noise (matched KL)` trains the same global-noise arm but
# stops at the first logged step where its KL (the `kl_end` its record reports: the mean of the last few logged
# steps) reaches the full MMedPO arm's final KL (`papers.mmedpo.matched_step`), and is evaluated there. The
# claim rows carry both KLs (`kl_treated`, `kl_control`) and the table a KL column.

# %%
mmedpo_cfg = configs["mmedpo"]
{a: ab.MMEDPO[a] for a in acfg.mmedpo}

# %%
mmedpo_run = runs["mmedpo"]  # = ab.run_paper("mmedpo", mmedpo_cfg, stage, acfg)
mmedpo_table = rep.mmedpo_table(mmedpo_run)
repro.results.save_table(mmedpo_table, cfg, "mmedpo_ablation")
mmedpo_table

# %%
# where the matched-KL arm stopped: the full arm's KL (target), its own, and the step of its planned steps
pd.DataFrame([{"seed": r["seed"], **r["matched_kl"]} for r in mmedpo_run["records"] if r.get("matched_kl")])

# %% [markdown]
# **What it means.** The paper's table gives averages per data set (SLAKE and VQA-RAD: open and closed together;
# IU-Xray: report metrics). Its largest component effects are on reports (weights on text pairs +4.7, on visual
# pairs +5.7 points); judge panel and local noise move VQA by about one point. Our columns are separate closed
# accuracy, open recall, BLEU and ROUGE-L; the claims use closed accuracy (VQA) and ROUGE-L (reports).
#
# **How we differ from the paper**
# 1. Judges are noisy rule scorers (a panel of three with a consensus loop), not Med-LLMs; "single judge" is the
#    panel's first (lenient) judge without consensus rounds, normalised like the full set.
# 2. Global noise uses the same noise rule as the lesion noise (`pref_noise` of stage 03) over the whole image.
# 3. Both arms of every comparison see the same number of text pairs (`mmedpo_equal_text_exposure`), so MMedPO's
#    visual pairs come on top rather than in place of text pairs.
# 4. The matched-KL arm stops part-way through its cosine schedule (a snapshot, not a shorter schedule), and its KL
#    is DPO's training-batch |log-ratio|, which for visual pairs includes the noised image's side.
# 5. A tiny model, a small preference set and far fewer steps; the paper uses LoRA on LLaVA-Med 1.5.
#
# **Exercises**
# 1. With `weights literal` every text pair gets the same weight: which other arm is it then equivalent to, up to
#    the loss scale?
# 2. Why can global noise make a visual pair *easier* than lesion noise, and what would that do to its margin?
# 3. Compare the `kl` of `MMedPO (visual without weights)` and `MMedPO` in stage 04's curves: which moves more?
# 4. Add `"global noise (matched KL)"` to `mmedpo` (the cpu profile leaves it out). At which step did
#    `MMedPO (global noise, matched KL)` stop (`matched_kl` in its record, below), and does the
#    local-vs-global difference keep its sign once the two KLs match?

# %% [markdown]
# ## 3 · Zhu et al.: start, KL penalty and group size in GRPO
#
# **Idea.** GRPO's advantage is the group-normalised reward, and its objective has a KL penalty $\beta$ to the
# start (docs/methods.md §2):
#
# $$A_i = \frac{r_i - \operatorname{mean}_{j \le G} r_j}{\operatorname{std}_{j \le G} r_j},\qquad
#   J = \mathbb{E}\big[\tfrac{1}{G}\textstyle\sum_i \tfrac{1}{|o_i|}\sum_t \min(\rho_{i,t}A_i,\
#   \mathrm{clip}(\rho_{i,t})A_i) - \beta\,\mathrm{KL}_{k3}\big].$$
#
# The init study compares GRPO from the base model (trained here; `zhu_init_study`, off in the cpu profile: ~9 min
# per seed) with GRPO from SFT (stage 04's arm, read back). $\beta = 0$
# removes the pull back to the start; a smaller $G$ gives noisier baselines and more groups with zero variance
# (no signal). Columns: accuracy, response length (words), similarity of the reasoning to the reference (ROUGE-L)
# and the format rate.

# %%
zhu_cfg = configs["zhu"]
{a: ab.ZHU[a] for a in acfg.zhu}, {"G (full)": zhu_cfg.generations, "G (small)": acfg.zhu_small_generations}

# %%
zhu_run = runs["zhu"]  # = ab.run_paper("zhu", zhu_cfg, stage, acfg)
zhu_table = rep.zhu_table(zhu_run)
repro.results.save_table(zhu_table, cfg, "zhu_ablation")
zhu_table

# %% [markdown]
# **What it means.** The paper reports the init study only as perplexity (14.16 from base → 13.28 from instruct)
# and the headline accuracies; it does not report $\beta = 0$ or group sizes, so those are exploratory here. A
# base arm labelled "(not trained)" never wrote the rewarded format: every group had zero reward variance.
#
# **How we differ from the paper**
# 1. "β = 0" trains with β = 1e-9: TRL drops the reference model (and logs no KL) at exactly 0, and the trained
#    rule needs the KL; a penalty of 1e-9 per token is numerically nil.
# 2. The smaller group keeps the prompts per step, so it also sees fewer completions per step.
# 3. Synthetic four-option questions and a tiny model instead of PMC-VQA and Qwen2-VL-2B.
#
# **Exercises**
# 1. Without the KL penalty, does the format rate or the length drift further from the SFT start?
# 2. Set `zhu_small_generations = 2`: what share of groups has zero reward variance when the start's pass@1 is
#    $p$ ($p^2 + (1-p)^2$)? Compare with the `frac_reward_zero_std` the arm logged.
# 3. Is the init-study difference larger than its `mde`? What evaluation size would detect half of it?

# %% [markdown]
# ## 4 · Dr-LLaVA: which reward design?
#
# **Idea.** Our rule reward credits each turn and each adjacent pair of turns on a valid diagnostic path
# (docs/methods.md §1(b)):
#
# $$R = \sum_{t=1}^{5} c_t + \sum_{t=2}^{5} a_t,\qquad
#   R^{gated} = \begin{cases} c_q & c_q \le 0 \\ 1 + \sum_t c_t & \text{otherwise}\end{cases},\qquad
#   R^{no\ path} = \sum_t c_t .$$
#
# The released code's reward has the same shape but labels both the prediction and the reference *text* with
# keyword rules (so "no match" = "no match" earns +1). Every arm is the same multi-turn PPO (`papers.drllava.arm`
# with a reward hook), judged on the standard question order (as 04; the robustness variants are 06's questions).

# %%
drllava_cfg = configs["drllava"]
{a: ab.DRLLAVA[a] for a in acfg.drllava}

# %%
drllava_run = runs["drllava"]  # = ab.run_paper("drllava", drllava_cfg, stage, acfg)
drllava_table = rep.drllava_table(drllava_run)
repro.results.save_table(drllava_table, cfg, "drllava_ablation")
drllava_table

# %% [markdown]
# **What it means.** The paper motivates the consistency term by diagnostic coherence: without it, the policy is
# not paid for answers that fit together, so path consistency (and with it conversation accuracy) should fall.
# Both are read off the same 200 standard conversations — one observation — so the claims ledger tests only path
# consistency, the quantity the term pays for; the table shows every level.
# The paper's tables were not retrieved, so there is no paper block; the gated and released variants are ours.
#
# **How we differ from the paper**
# 1. Exact label parsers consistent with our templates, not the released keyword rules (except in "released").
# 2. A leave-one-out baseline and a fresh value head, not a value model initialised from a 13B reward model.
# 3. Synthetic slides, a tiny model, far fewer rollouts.
#
# **Exercises**
# 1. Under the gated reward, what does a conversation earn whose quality answer is wrong, whatever follows?
# 2. Which level (question, conversation, diagnosis, path) separates the reward designs most?
# 3. Why can the released reward pay a policy that answers nothing parseable?

# %% [markdown]
# ## Claims and exploratory comparisons
#
# `difference` is treatment − baseline (the full method minus the ablation, or "with" minus "without") on the test
# items, `ci_low`/`ci_high` its 95% bootstrap interval, `p_holm` Holm within the paper (claims and exploratory rows
# are separate families), `paper_value` the paper's own difference in our units. **reproduced** / **opposite**:
# significant in / against the paper's direction (for exploratory rows: the full method significantly higher /
# lower); **below_paper**: not significant and the CI rules out the paper's difference; **inconclusive**: not
# significant — read `mde`; **not_trained**: an arm did not learn. `kind: check` rows are not counted as claims.

# %%
plan = papers_plan.load(cfg.profile)  # planned MDEs from stage 04's validation sweep (repro.papers.plan)
claims = rep.judge(runs, rep.paper_claims(), acfg.n_boot, plan=plan)
exploratory = rep.judge(runs, rep.exploratory_claims(acfg), acfg.n_boot, exploratory=True, plan=plan)
repro.results.save_table(claims, cfg, "claims")
repro.results.save_table(exploratory, cfg, "exploratory")
with pd.option_context("display.max_colwidth", 100):
    display(claims[[c for c in rep.CLAIM_FIELDS + ["paper_value"] if c in claims.columns]])
    display(exploratory[[c for c in rep.CLAIM_FIELDS if c in exploratory.columns]])

# %% [markdown]
# ## Forest plots: each ablation's difference with its interval
#
# One figure per paper: the dot is our difference, the bar its 95% CI, the colour the verdict; a black × is the
# paper's own difference where it reports one; "[ours]" marks exploratory rows.

# %%
claim_recs, explo_recs = rep.records(claims), rep.records(exploratory)
for paper in runs:
    fig = rep.forest(claim_recs, explo_recs, paper)
    repro.plots.save_figure(fig, cfg, f"forest_{paper}")

# %%
metrics = {
    "claims": claim_recs,
    "exploratory": explo_recs,
    "tables": {"umed": umed_table.reset_index().astype(str).to_dict(orient="records"),
               "mmedpo": mmedpo_table.reset_index().astype(str).to_dict(orient="records"),
               "zhu": zhu_table.reset_index().astype(str).to_dict(orient="records"),
               "drllava": drllava_table.reset_index().astype(str).to_dict(orient="records")},
    "iou_curve": iou.to_dict(orient="records"),
    "runs": {p: [{k: v for k, v in r.items() if k != "curve"} for r in run["records"]] for p, run in runs.items()},
    "ablations": {"umed": acfg.umed, "mmedpo": acfg.mmedpo, "zhu": acfg.zhu, "drllava": acfg.drllava},
}
print(repro.results.save(cfg, metrics, started=started))

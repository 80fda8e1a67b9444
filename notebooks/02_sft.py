# %% [markdown]
# # 02 · Tiny VLM, SFT and the evaluation harness
#
# Builds the model (a tiny LLaVA trained from scratch here; a real checkpoint in the gpu profile — one code path
# through `AutoModelForImageTextToText.from_pretrained`), trains the two starting points every later stage uses,
# and evaluates them with the harness every later table uses. The tiny model's CLIP tower is first pretrained with
# supervised heads on the train images (class, region, lesion patches, lesion box and its digits): the analog of a
# real VLM's pretrained CLIP, without which the tiny model answers from text priors only
# (`src/repro/train/vision.py` says why).
#
# * **base** — the fresh model trained only on `base_tasks`: generalist skills, the analog of a pretrained VLM (cpu: VQA
#   and the detect → localize → recognize instructions, as real base VLMs such as Qwen-VL are pretrained on grounding;
#   smoke: VQA and findings reports). It never sees the MCQ `<think>/<answer>` format (Zhu et al.'s task, so the
#   base-vs-SFT start of their init study stays clean) or the clinician conversations (Dr-LLaVA's);
# * **SFT** — base trained further on the whole task mixture (Zhu et al.'s "instruct" starting point; UMed-LVLM's
#   "MedVInt (SFT)" row; the SFT model Dr-LLaVA and MMedPO align).
#
# **How to use this notebook.** Run 01 first (it writes the data), then this one top to bottom: about a minute
# and a half at the default, smoke-sized parameters (cpu profile: about 9 minutes). Each section gives the idea,
# the formula, the configuration in view, the call and how to read the result; the evaluation tables end with a
# numbered "how we differ from the paper" list per paper and exercises. Formulas and the papers' numbers:
# `docs/methods.md`; the tiny VLM and the TRL facts behind the training code: `docs/design.md §5–§6`.
#
# Headless: `python -m repro run --profile smoke --only 02`.

# %% tags=["parameters"]
profile = "smoke"
seed = 0
model_name_or_path = ""    # empty builds the tiny LLaVA, else a local path or hub id (gpu profile)
model_size = "smoke"       # tiny model size, smoke (0.5M params) or cpu (3M)
vocab_size = 512           # BPE vocabulary of the tiny model's tokenizer
base_tasks = ["report", "vqa"]
sft_tasks = ["vqa", "mcq", "instruct", "conv", "report"]
vision_steps = 60          # vision-encoder pretraining (tiny model only; 0 skips it)
base_steps = 30
sft_steps = 150
batch_size = 8
lr = 0.001
sft_lr = 0.0               # learning rate of the SFT stage, 0 means lr
freeze_vision = False      # keep the pretrained vision tower fixed during base and SFT training (faster steps)
sft_max_rows_per_task = 0  # SFT draws at most this many rows per task (balances the mixture), 0 means all
sft_capped_tasks = []      # tasks whose SFT part draws only sft_capped_rows rows (an RL-headroom experiment)
sft_capped_rows = 0        # rows each part of a capped task draws (in place of sft_max_rows_per_task)
lora_r = 0                 # 0 means full fine-tuning (tiny model); LoRA rank for real models
eval_limit = 40            # test rows per task, spread over sources and classes; 0 means all
eval_batch_size = 32
num_threads = 0            # torch CPU threads, 0 keeps the default
start_seeds = []           # more SFT starts, one per seed listed (models/sft-s<seed>): stage 04's Stage.start_seeds

# %%
import time

import torch

import repro.config
import repro.paths
import repro.plots
import repro.report
import repro.results
from repro import evaluation as ev
from repro import models
from repro.train import sft

cfg, started = repro.config.start(globals(), "02_sft")
data_dir = repro.paths.data_dir(cfg.profile)
model_dir = repro.paths.models_dir(cfg.profile)
lora = {"r": cfg.lora_r, "lora_alpha": 2 * cfg.lora_r} if cfg.lora_r else None
run_key = {k: v for k, v in vars(cfg).items() if k not in ("eval_limit", "eval_batch_size", "num_threads",
                                                           "start_seeds")}  # start_seeds adds runs, changes none
print(f"profile {cfg.profile}: data {data_dir}, models -> {model_dir}")

# %% [markdown]
# The validated configuration of this stage (`cfg`), and the two values derived from it: `lora` (None = full
# fine-tuning) and `run_key`, the dictionary that, with a fingerprint of the starting weights and of the data,
# decides whether a finished training run can be reused (`docs/design.md §2`; evaluation knobs are left out of it,
# so changing `eval_limit` re-evaluates without retraining, and `start_seeds` only adds runs).

# %%
print("lora:", lora)
vars(cfg)

# %% [markdown]
# ## Build (or locate) the model
#
# **Idea.** A LLaVA-architecture VLM small enough to train on a CPU: a CLIP vision tower cuts the 64×64 image into
# 8×8-pixel patches, a 2-layer MLP projects the $8\cdot 8=64$ patch features into the word-embedding space, and a
# Llama decoder reads them as 64 image tokens followed by the text. Its byte-level BPE tokenizer is fitted on the
# task corpus (`vocab_size`), digits split one by one so that box coordinates are spelled digit by digit. With
# `model_name_or_path` set (gpu profile) the same code loads a real checkpoint instead
# (`docs/design.md §5`).

# %%
if cfg.model_name_or_path:
    init_dir = repro.paths.model_ref(cfg.model_name_or_path)  # a relative path is read from the repository root
else:
    texts = sft.corpus(data_dir)
    init_dir = models.build_tiny_vlm(model_dir / "init", texts, size=cfg.model_size, seed=cfg.seed,
                                      vocab_size=cfg.vocab_size)

# %% [markdown]
# ### Vision-tower pretraining (tiny model only)
#
# **Idea.** A real VLM starts from a pretrained CLIP; a tiny tower trained only through the language loss barely
# learns to see (the model then answers from text priors). So the tower is first trained with supervised heads on
# the *train* images, reading the 64 patch features $f_{1..64}$ the LLM will read; the heads are then thrown away.
# With $\bar f=[\operatorname{mean}_j f_j,\ \max_j f_j]$ the pooled features, $m_j$ the fraction of patch $j$ covered by
# the lesion and $\mathcal T=\{j: m_j>0\}$ the patches the lesion touches:
#
# $$\mathcal L_{\text{vision}}=\underbrace{\mathrm{CE}(h_{\text{cls}}(\bar f),c)}_{\text{source + category}}
# +0.5\,\underbrace{\mathrm{CE}(h_{\text{reg}}(\bar f),\rho)}_{\text{body region}}
# +2\,\underbrace{\tfrac1{64}\textstyle\sum_j \mathrm{BCE}(h_{\text{les}}(f_j),m_j)}_{\text{where is the lesion}}
# +\underbrace{\tfrac1{|\mathcal T|}\textstyle\sum_{j\in\mathcal T}\lVert\sigma(h_{\text{box}}(f_j))-b\rVert_1}_{\text{its box}}
# +\underbrace{\tfrac1{|\mathcal T|}\textstyle\sum_{j\in\mathcal T}\tfrac18\sum_{d=1}^{8}\mathrm{CE}(h_{\text{dig}}(f_j)_d,\ \text{digit}_d)}_{\text{the box's 8 digits in percent}}$$
#
# with $b$ the box as fractions of the image. The call's own defaults (batch size, learning rate) are in its
# signature, shown first so that nothing is hidden:

# %%
import inspect

from repro.train import vision

print("vision.pretrain", inspect.signature(vision.pretrain))

# %%
vis = None
if cfg.vision_steps and not cfg.model_name_or_path:
    vis = vision.pretrain(init_dir, model_dir / "vision", data_dir, steps=cfg.vision_steps, seed=cfg.seed)
    init_dir = vis["final_dir"]
    print(f"vision encoder: {vis['seconds']} s, held-out class accuracy {vis['val_class_acc']:.3f} "
          f"({vis['classes']} classes), lesion-patch recall {vis['val_lesion_patch_recall']:.3f}")

# %% [markdown]
# **Reading it.** Held-out class accuracy is the class head on *val* images (chance is about 1/19); lesion-patch
# recall is the share of lesion patches the lesion head finds. At smoke size (60 steps) the class head is above
# chance but the lesion head finds almost no lesion patch, so boxes will be guesses; the cpu profile trains many
# more steps (`vision_steps` in `params/cpu/02_sft.yaml`, whose header says what they bought).

# %%
m, _ = models.load_vlm(init_dir, device="cpu" if not torch.cuda.is_available() else None)
n_params = models.count_params(m)
print(f"model: {init_dir}  ({n_params / 1e6:.2f}M parameters)")
del m


# %% [markdown]
# ## Train base, then SFT (resumes from the last checkpoint if interrupted)
#
# **Idea.** Supervised fine-tuning is next-token prediction on the reference answers. The prompt (image tokens and
# the user's question) is context only: a mask $m_t$ is 1 on the tokens of the assistant's turns and 0 elsewhere
# (TRL's `assistant_only_loss`, enabled by the `{% generation %}` markers of the chat template). For a batch of
# sequences $y$ with images $x$,
#
# $$\mathcal L_{\text{SFT}}(\theta)=-\frac{1}{\sum_{t} m_t}\sum_{t} m_t\,\log\pi_\theta\big(y_t\mid y_{<t},x\big),$$
#
# the same loss as UMed-LVLM's instruction tuning $\mathcal L_{\text{it}}$ (`docs/methods.md §4(a)`). Two runs:
# **base** on `base_tasks` only (the analog of a pretrained, non-instruct VLM; it never sees the MCQ or conversation
# formats), then **SFT** from base on the whole `sft_tasks` mixture. Batches are task-homogeneous (less padding)
# and read in order. The configuration of both runs, then the trainer's own defaults:

# %%
if cfg.sft_capped_tasks and cfg.sft_capped_rows < 1:
    raise ValueError(f"params 02_sft: sft_capped_tasks {cfg.sft_capped_tasks} needs sft_capped_rows >= 1, got "
                     f"{cfg.sft_capped_rows}")
task_rows = {t: cfg.sft_capped_rows for t in cfg.sft_capped_tasks} or None


def mixture(tasks, steps, max_rows=None, task_rows=None, seed=None):  # task-homogeneous batches, read in order
    return sft.sft_dataset(data_dir, tasks, seed=cfg.seed if seed is None else seed, max_rows_per_task=max_rows,
                           batch_size=cfg.batch_size, steps=steps, task_rows=task_rows)


train_kw = dict(batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, lora=lora, run_key=run_key, sequential=True,
                freeze_vision=cfg.freeze_vision)
print("sft.train", inspect.signature(sft.train))
{k: v for k, v in train_kw.items() if k != "run_key"}

# %%
base = sft.train(init_dir, model_dir / "base", mixture(cfg.base_tasks, cfg.base_steps), max_steps=cfg.base_steps,
                 **train_kw)
mix = mixture(cfg.sft_tasks, cfg.sft_steps, cfg.sft_max_rows_per_task or None, task_rows)
n_rows = sft.mixture_rows(data_dir, cfg.sft_tasks, max_rows_per_task=cfg.sft_max_rows_per_task or None,
                          task_rows=task_rows)
print(f"SFT: {cfg.sft_steps} steps x {cfg.batch_size} = {len(mix)} rows = {len(mix) / n_rows:.2f} epochs of {n_rows}")
tuned = sft.train(base["final_dir"], model_dir / "sft", mix, max_steps=cfg.sft_steps, **{**train_kw, "lr": cfg.sft_lr or cfg.lr})
print(f"base: {base['seconds']} s, SFT: {tuned['seconds']} s")

# %% [markdown]
# **Reading it.** "epochs" is how many times SFT sees each row of the mixture; below 1, some rows are never seen.
# A rerun with the same parameters returns the saved runs in a second (the run key matched).

# %%
import pandas as pd

base_label = f"base ({' + '.join(cfg.base_tasks)})"
curves = {base_label: sft.loss_curve(base["log_history"]),
          "SFT (task mixture, from base)": sft.loss_curve(tuned["log_history"])}
curves["SFT (task mixture, from base)"]["step"] += cfg.base_steps
panels = {"language training (assistant tokens)": curves}
if vis:
    panels = {"vision encoder pretraining (class + region + lesion heads)": {"vision": pd.DataFrame(vis["history"])},
              **panels}
fig = repro.plots.loss_curves(panels, "Loss curves of stage 02")
repro.plots.save_figure(fig, cfg, "loss_curves")

# %% [markdown]
# **Reading the figure.** The language panel is $\mathcal L_{\text{SFT}}$ (nats per assistant token) against the step;
# the SFT curve continues where base stopped. A jump at the switch is expected (new formats: MCQ tags,
# conversations); a curve still falling at its end means more steps would help. The vision panel is
# $\mathcal L_{\text{vision}}$ of the heads.
#
# ### Exercises (training)
# 1. Set `freeze_vision = True`: how much faster is an SFT step, and what happens to the MAU-style accuracy below?
# 2. Set `vision_steps = 0` (no pretraining of the tower): compare the closed VQA accuracy of SFT with the majority
#    baseline. Does the model still look at the image?
# 3. Set `sft_max_rows_per_task = 20`: how many epochs does SFT now make over its mixture, and does the final loss
#    go up or down?

# %% [markdown]
# ## Evaluate base and SFT on the test split (greedy decoding, KV cache)
#
# **Idea.** One harness scores every model of every later stage: greedy generation on the test rows of each task
# (`eval_limit` rows per task, spread over sources and classes), then pure metric functions (`repro.metrics`). The
# metrics, each on $[0,1]$:
#
# * **closed VQA accuracy** $=\frac1n\sum_i\mathbb 1[\operatorname{yesno}(\hat y_i)=\operatorname{yesno}(y_i)]$, the first
#   "yes"/"no" word of the answer (none = wrong);
# * **open VQA recall** $=\frac1n\sum_i|T(y_i)\cap T(\hat y_i)|\,/\,|T(y_i)|$ with $T$ the set of lower-cased word
#   tokens (the LLaVA-Med convention);
# * **MCQ accuracy**: the letter read from the first `<answer>` block, or the one option it names (the synthetic
#   targets answer with the option's text), else a leading letter, equals the key;
# * **MAU-style accuracy** (UMed-LVLM Table 2 layout): an abnormal image counts when detection says abnormal, the
#   category is right *and* $\max_k\operatorname{IoU}(\hat b,b_k)\ge 0.5$; a normal image when the answer says no
#   abnormality;
# * **Dr-LLaVA levels**: question-level (share of turns right), conversation-level (all five right), diagnosis
#   (the category-5 turn right) and path consistency (all adjacent predicted labels on a valid path);
# * **reports**: corpus BLEU $=\mathrm{BP}\cdot\exp\big(\frac14\sum_{n=1}^{4}\log p_n\big)$ with $p_n$ the clipped $n$-gram
#   precision and $\mathrm{BP}=\min(1,e^{1-r/c})$ the brevity penalty, and ROUGE-L F1
#   $=\frac{2PR}{P+R}$ with $P=\frac{\mathrm{LCS}}{|\hat y|}$, $R=\frac{\mathrm{LCS}}{|y|}$.
#
# The majority baseline answers every question with the most frequent train answer, scored by the same code: a
# model has learned from the image only where it beats it.

# %%
limit = cfg.eval_limit or None
evals, outputs = {}, {}
for name, path in [("base", base["final_dir"]), ("SFT", tuned["final_dir"])]:
    model, processor = models.load_vlm(path)
    t0 = time.time()
    outputs[name] = ev.evaluate(model, processor, data_dir, limit=limit, batch_size=cfg.eval_batch_size)
    evals[name] = outputs[name]["metrics"]
    print(f"{name}: evaluated in {time.time() - t0:.0f} s")
majority = ev.majority_baseline(data_dir)

# %% [markdown]
# **Why the models are loaded by name in every cell that uses them.** The loop above leaves `model` behind; later
# cells load what they need explicitly, so each cell can be rerun on its own.

# %% [markdown]
# ### UMed-LVLM Table 2 layout: MAU-style accuracy per source (correct class and IoU ≥ 0.5)

# %%
mau = repro.report.mau_with_paper(evals)
repro.results.save_table(mau, cfg, "mau_table2")
mau.round(3)

# %% [markdown]
# **Reading the table.** Rows "ours" are this run's base and SFT models, per SynthMed source imitating a MAU data
# set; the rows labelled "paper UMed-LVLM (…)" are the paper's MedVInt before and after SFT, shown for the *layout*
# and the size of the SFT gain, not as a target: different images, a 7B model, a metric formula the paper does not
# give. With the default `base_tasks` (reports and VQA) base never saw the instruction format, so its MAU-style
# accuracy is near 0 (the cpu profile's base is trained on instructions too, as real base VLMs are pretrained on
# grounding); SFT's row is the starting point of UMed-LVLM's PPO in stage 04.
#
# ### How we differ from UMed-LVLM (evaluation and start; `docs/methods.md §6(d)`)
# 1. The SFT model is our tiny VLM trained here, not MedVInt.
# 2. MAU-style accuracy (category right and IoU ≥ 0.5) is our definition; the paper's formula was not available.
# 3. SynthMed test images, `eval_limit` rows per task, one seed; the paper's test set is real.
#
# ### Exercises (UMed-LVLM)
# 1. Compare `evals["SFT"]["instruct"]["category_acc"]` with `["mean_iou"]`: is SFT losing MAU-style points on the
#    name or on the box?
# 2. The MAU-style threshold is IoU ≥ 0.5. How many abnormal SFT answers would count at IoU ≥ 0.3 instead?
#    `r = outputs["SFT"]["tables"]["instruct_rows"]; r = r[r.abnormal]`, then compare
#    `((r.iou >= 0.3) & (r.category_correct == 1)).mean()` with `r.mau_correct.mean()`.

# %% [markdown]
# ### Dr-LLaVA: question-, conversation- and diagnosis-level accuracy, path consistency, robustness variants

# %%
dr = repro.report.drllava_table(evals)
repro.results.save_table(dr, cfg, "drllava")
dr.round(3)

# %% [markdown]
# **Reading the table.** One row per model and evaluation variant. `standard` is the tree's order; `shuffled` and
# `reversed` test whether the model answers the question asked rather than the turn number; `hint_wrong` /
# `confirm_wrong` whether a clinician's wrong claim flips the diagnosis (the reference stays truthful, so accuracy
# there is resistance). Conversation-level accuracy is the strictest (all five turns right). Base never saw a
# conversation, so its rows show what a model without this format does. There is no paper column: the paper's
# tables were not available (`docs/methods.md §1(f)`).
#
# ### How we differ from Dr-LLaVA (evaluation; `docs/methods.md §6(a)`)
# 1. The four metrics are our definitions (the paper releases no metric code); labels come from exact parsers
#    matched to our paraphrases, not the released keyword rules.
# 2. The SFT model is a tiny VLM with full fine-tuning, not LoRA on LLaVA-RLHF-7B; 5 turns capped at 64 new tokens.
# 3. No paper numbers to compare with (docs/methods.md §1(f)).
#
# ### Exercises (Dr-LLaVA)
# 1. Which variant costs SFT the most diagnosis accuracy? Rerun 01 with `conv_train_variants = ["standard"]`, then
#    this notebook: does that variant get worse?
# 2. Path consistency can be high while conversation accuracy is low. Construct such a conversation on paper with
#    `PATHS` (notebook 01): what does the model have to do?

# %% [markdown]
# ### VQA, multiple choice and reports (percent), with the papers' SFT-level rows beside ours

# %%
vqa = repro.report.vqa_with_paper(evals)
repro.results.save_table(vqa, cfg, "vqa")
vqa.round(1)

# %% [markdown]
# **Reading the table.** Percent, like the papers. Our rows are closed accuracy, open recall, MCQ accuracy and
# report BLEU / ROUGE-L of base and SFT; the paper blocks are MMedPO's LLaVA-Med v1.5 row (SLAKE, VQA-RAD, IU-Xray)
# and Zhu et al.'s best SFT on PMC-VQA, the starting points of those papers. Compare closed accuracy with the
# majority baseline (printed at the end), not with the paper.
#
# ### How we differ from MMedPO (evaluation; `docs/methods.md §6(c)`)
# 1. No METEOR; BLEU and ROUGE-L are computed on a 0–1 scale and shown ×100.
# 2. SynthMed VQA and templated reports instead of SLAKE / VQA-RAD / IU-Xray / MIMIC-CXR; the starting model is our
#    SFT model, not LLaVA-Med v1.5.
#
# ### How we differ from Zhu et al. (evaluation; `docs/methods.md §6(b)`)
# 1. MCQ accuracy on SynthMed questions instead of PMC-VQA; no perplexity.
# 2. The "base" start is our model trained on `base_tasks`, not Qwen2-VL-2B's base checkpoint; "instruct" is our
#    SFT model.
#
# ### Exercises (MMedPO and Zhu et al.)
# 1. Set `base_tasks = ["vqa"]` (no reports in base): what happens to base's BLEU, and to SFT's?
# 2. Zhu et al.'s initialisation study needs base to have *never* seen `<think>/<answer>`: find base's MCQ accuracy
#    and format in `outputs["base"]["samples"]["mcq"][:3]`. What does GRPO from base have to learn first?

# %%
per_source = repro.report.per_source_table(evals["SFT"])
repro.results.save_table(per_source, cfg, "sft_per_source")
per_source.round(3)

# %% [markdown]
# **Reading the table.** The SFT model's main metric of each task per source: where it is weak (small lesions,
# faint CT masses) is where the RL stages have the most room.

# %% [markdown]
# ## Sample generations of the SFT model (abnormal-aware instructions)

# %%
test_rows = ev.load_rows(data_dir, "instruct", "test", limit)
rows = list({r["source"]: r for r in reversed(test_rows) if r["abnormal"]}.values())  # one abnormal per source
rows += [r for r in test_rows if not r["abnormal"]][:1]
model, processor = models.load_vlm(tuned["final_dir"])  # the SFT model, loaded by name
preds = ev.generate(model, processor, rows, ev.MAX_NEW_TOKENS["instruct"], progress=False)
fig = repro.plots.sample_generations(rows, preds, n=len(rows), title="SFT model on test images")
repro.plots.save_figure(fig, cfg, "samples")

# %% [markdown]
# **Reading the figure.** One abnormal test image per source and one normal image, with the true box (green) and
# the SFT model's answer and box. An answer with the right category but a box off the lesion is a MAU-style miss:
# that is what UMed-LVLM's IoU reward (ALR, notebook 03) targets.

# %% [markdown]
# ## Did SFT learn from the image? (acceptance bands of this stage)

# %%
s = evals["SFT"]
CHECKS = {"closed_acc": ("vqa", "closed_acc"), "mau_acc": ("instruct", "mau_acc"),  # check: (task, metric)
          "diagnosis_acc": ("conv", "diagnosis_acc"), "mcq_acc": ("mcq", "acc")}
checks = {}
for k, (t, m) in CHECKS.items():  # each check beside the majority baseline's score on it
    checks[k], checks[k.replace("_acc", "_majority")] = s[t][m], majority[t][m]
checks["closed_margin"] = checks["closed_acc"] - checks["closed_majority"]
checks["mau_margin"] = checks["mau_acc"] - checks["mau_majority"]
for k, v in checks.items():
    print(f"{k:>20}: {v:.3f}")

# %% [markdown]
# **Reading it.** A positive `*_margin` means SFT beats the constant answer: it learned something from the image.
# At smoke size the margins can be near 0 (the smoke profile checks the pipeline, not the science); the cpu
# profile's are in the README's status table (`results/cpu/02_sft.json`).

# %% [markdown]
# ## A start per training seed (`start_seeds`)
#
# The SFT above is one draw of its own noise: another seed (the mixture's order, the trainer's randomness) or another
# CPU's float kernels give another start, and at the cpu profile's size stage 02 at seeds 1 and 2 moved stage 04's
# starts as much as another CPU did (docs/results.md: the SFT's seed alone moves Dr-LLaVA's start most, the vision
# tower's and base's the other three papers'). When every training seed of a stage-04 claim starts from
# the same SFT, the claim is about that start. With `start_seeds`, the same recipe runs again from the same base
# once per listed seed, into `models/sft-s<seed>/`; stage 04-06 with the same `start_seeds` (their `Stage`) start
# each of those training seeds from its own SFT (`repro.papers.common.model_dir`), so the start's spread is inside
# every claim's seed spread. Each start gets the checks above; the table's first row is `models/sft`.

# %%
bad = [x for x in cfg.start_seeds if not isinstance(x, int) or isinstance(x, bool) or x == cfg.seed]
if bad:
    raise ValueError(f"params 02_sft: key 'start_seeds' has value {cfg.start_seeds!r}: seeds must be integers other "
                     f"than `seed` ({cfg.seed}, whose start is models/sft); bad: {bad}")
starts = {cfg.seed: {k: evals["SFT"][t][m] for k, (t, m) in CHECKS.items()} | {"folder": "sft",
                                                                               "sft_seconds": tuned["seconds"]}}
for s_ in cfg.start_seeds:
    run_s = sft.train(base["final_dir"], model_dir / f"sft-s{s_}",
                      mixture(cfg.sft_tasks, cfg.sft_steps, cfg.sft_max_rows_per_task or None, task_rows, seed=s_),
                      max_steps=cfg.sft_steps, **{**train_kw, "lr": cfg.sft_lr or cfg.lr, "seed": s_})
    model, processor = models.load_vlm(run_s["final_dir"])
    m_ = ev.evaluate(model, processor, data_dir, limit=limit, batch_size=cfg.eval_batch_size)["metrics"]
    starts[s_] = {k: m_[t][m] for k, (t, m) in CHECKS.items()} | {"folder": f"sft-s{s_}",
                                                                   "sft_seconds": run_s["seconds"]}
starts_table = pd.DataFrame.from_dict(starts, orient="index").rename_axis("seed")
if len(starts) > 1:
    repro.results.save_table(starts_table, cfg, "starts")
starts_table

# %% [markdown]
# **Reading it.** One row per start: how far apart the checks of one recipe lie is the start's own noise, the part
# a claim about a method must carry. With `start_seeds = []` (the default) only `models/sft` is listed.
#
# **Exercise.** Set `start_seeds = [1, 2]` and rerun this section: is the spread of `closed_acc` over the three
# starts larger than the margin a stage-04 claim asks of a method (its planned MDE, `figures/<profile>/04_rl_plan.md`)?

# %% [markdown]
# ## Save the stage's results
#
# `results/<profile>/02_sft.json` gets the metrics of both models, the baseline, the checks and the checkpoint
# paths stage 03 and 04 start from; figures and tables move to `figures/<profile>/`.

# %%
metrics = {"n_params": n_params, "vision": {k: v for k, v in (vis or {}).items() if k != "history"}, "base": evals["base"], "sft": evals["SFT"], "majority": majority, "checks": checks,
           "train": {"base_seconds": base["seconds"], "sft_seconds": tuned["seconds"], "sft_rows": n_rows, "sft_epochs": len(mix) / n_rows,
                     "base_final_loss": sft.loss_at(curves[base_label], -1),
                     "sft_first_loss": sft.loss_at(curves["SFT (task mixture, from base)"], 0),
                     "sft_final_loss": sft.loss_at(curves["SFT (task mixture, from base)"], -1)},
           "models": {"base": base["final_dir"], "sft": tuned["final_dir"]},
           "starts": {str(k): v for k, v in starts.items()}}
print(repro.results.save(cfg, metrics, started=started))

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
lora_r = 0                 # 0 means full fine-tuning (tiny model); LoRA rank for real models
eval_limit = 40            # test rows per task, spread over sources and classes; 0 means all
eval_batch_size = 32
num_threads = 0            # torch CPU threads, 0 keeps the default

# %%
import time

import torch

import repro.config
import repro.paths
import repro.plots
import repro.results
import repro.tables
from repro import evaluation as ev
from repro import models
from repro.train import sft

cfg, started = repro.config.start(globals(), "02_sft")
data_dir = repro.paths.data_dir(cfg.profile)
model_dir = repro.paths.models_dir(cfg.profile)
lora = {"r": cfg.lora_r, "lora_alpha": 2 * cfg.lora_r} if cfg.lora_r else None
run_key = {k: v for k, v in vars(cfg).items() if k not in ("eval_limit", "eval_batch_size", "num_threads")}
print(f"profile {cfg.profile}: data {data_dir}, models -> {model_dir}")

# %% [markdown]
# ## Build (or locate) the model

# %%
if cfg.model_name_or_path:
    init_dir = cfg.model_name_or_path
else:
    texts = sft.corpus(data_dir)
    init_dir = models.build_tiny_vlm(model_dir / "init", texts, size=cfg.model_size, seed=cfg.seed,
                                      vocab_size=cfg.vocab_size)
vis = None
if cfg.vision_steps and not cfg.model_name_or_path:
    from repro.train import vision
    vis = vision.pretrain(init_dir, model_dir / "vision", data_dir, steps=cfg.vision_steps, seed=cfg.seed)
    init_dir = vis["final_dir"]
    print(f"vision encoder: {vis['seconds']} s, held-out class accuracy {vis['val_class_acc']:.3f} "
          f"({vis['classes']} classes), lesion-patch recall {vis['val_lesion_patch_recall']:.3f}")
m, _ = models.load_vlm(init_dir, device="cpu" if not torch.cuda.is_available() else None)
n_params = models.count_params(m)
print(f"model: {init_dir}  ({n_params / 1e6:.2f}M parameters)")
del m


# %% [markdown]
# ## Train base, then SFT (resumes from the last checkpoint if interrupted)

# %%
def mixture(tasks, steps, max_rows=None):  # task-homogeneous batches (less padding), read in order
    return sft.sft_dataset(data_dir, tasks, seed=cfg.seed, max_rows_per_task=max_rows, batch_size=cfg.batch_size,
                           steps=steps)


train_kw = dict(batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, lora=lora, run_key=run_key, sequential=True,
                freeze_vision=cfg.freeze_vision)
base = sft.train(init_dir, model_dir / "base", mixture(cfg.base_tasks, cfg.base_steps), max_steps=cfg.base_steps,
                 **train_kw)
mix = mixture(cfg.sft_tasks, cfg.sft_steps, cfg.sft_max_rows_per_task or None)
n_rows = sft.mixture_rows(data_dir, cfg.sft_tasks, max_rows_per_task=cfg.sft_max_rows_per_task or None)
print(f"SFT: {cfg.sft_steps} steps x {cfg.batch_size} = {len(mix)} rows = {len(mix) / n_rows:.2f} epochs of {n_rows}")
tuned = sft.train(base["final_dir"], model_dir / "sft", mix, max_steps=cfg.sft_steps, **{**train_kw, "lr": cfg.sft_lr or cfg.lr})
print(f"base: {base['seconds']} s, SFT: {tuned['seconds']} s")

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
# ## Evaluate base and SFT on the test split (greedy decoding, KV cache)

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
# ### UMed-LVLM Table 2 layout: MAU-style accuracy per source (correct class and IoU ≥ 0.5)

# %%
mau = repro.tables.mau_with_paper(evals)
repro.results.save_table(mau, cfg, "mau_table2")
mau.round(3)

# %% [markdown]
# ### Dr-LLaVA: question-, conversation- and diagnosis-level accuracy, path consistency, robustness variants

# %%
dr = repro.tables.drllava_table(evals)
repro.results.save_table(dr, cfg, "drllava")
dr.round(3)

# %% [markdown]
# ### VQA, multiple choice and reports (percent), with the papers' SFT-level rows beside ours

# %%
vqa = repro.tables.vqa_with_paper(evals)
repro.results.save_table(vqa, cfg, "vqa")
vqa.round(1)

# %%
per_source = repro.tables.per_source_table(evals["SFT"])
repro.results.save_table(per_source, cfg, "sft_per_source")
per_source.round(3)

# %% [markdown]
# ## Sample generations of the SFT model (abnormal-aware instructions)

# %%
test_rows = ev.load_rows(data_dir, "instruct", "test", limit)
rows = list({r["source"]: r for r in reversed(test_rows) if r["abnormal"]}.values())  # one abnormal per source
rows += [r for r in test_rows if not r["abnormal"]][:1]
# `model` is still the SFT model from the evaluation loop above: no second load
preds = ev.generate(model, processor, rows, ev.MAX_NEW_TOKENS["instruct"], progress=False)
fig = repro.plots.sample_generations(rows, preds, n=len(rows), title="SFT model on test images")
repro.plots.save_figure(fig, cfg, "samples")

# %% [markdown]
# ## Did SFT learn from the image? (acceptance bands of this stage)

# %%
s = evals["SFT"]
checks = {
    "closed_acc": s["vqa"]["closed_acc"], "closed_majority": majority["vqa"]["closed_acc"],
    "mau_acc": s["instruct"]["mau_acc"], "mau_majority": majority["instruct"]["mau_acc"],
    "diagnosis_acc": s["conv"]["diagnosis_acc"], "diagnosis_majority": majority["conv"]["diagnosis_acc"],
    "mcq_acc": s["mcq"]["acc"], "mcq_majority": majority["mcq"]["acc"],
}
checks["closed_margin"] = checks["closed_acc"] - checks["closed_majority"]
checks["mau_margin"] = checks["mau_acc"] - checks["mau_majority"]
for k, v in checks.items():
    print(f"{k:>20}: {v:.3f}")

# %%
metrics = {"n_params": n_params, "vision": {k: v for k, v in (vis or {}).items() if k != "history"}, "base": evals["base"], "sft": evals["SFT"], "majority": majority, "checks": checks,
           "train": {"base_seconds": base["seconds"], "sft_seconds": tuned["seconds"], "sft_rows": n_rows, "sft_epochs": len(mix) / n_rows,
                     "base_final_loss": sft.loss_at(curves[base_label], -1),
                     "sft_first_loss": sft.loss_at(curves["SFT (task mixture, from base)"], 0),
                     "sft_final_loss": sft.loss_at(curves["SFT (task mixture, from base)"], -1)},
           "models": {"base": base["final_dir"], "sft": tuned["final_dir"]}}
print(repro.results.save(cfg, metrics, started=started))

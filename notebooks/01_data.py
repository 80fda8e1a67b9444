# %% [markdown]
# # 01 · SynthMed data
#
# Generates the profile's data for every later stage: procedurally drawn medical-like images (**SynthMed**) from
# the five MAU-like sources of UMed-LVLM (CT lesions, kidney-stone CT, chest X-ray findings, TB chest X-ray,
# endoscopy polyps) and Dr-LLaVA's bone-marrow patches, split into train/val/test, and turned into the tasks of
# the four papers: closed/open VQA, multiple choice with `<think>/<answer>`, abnormal-aware instructions
# (detect → localize → recognize), 5-turn clinician conversations and findings reports.
#
# Headless: `python -m repro run --profile smoke --only 01` (or `papermill notebooks/01_data.ipynb out.ipynb -f params/smoke/01_data.yaml -k python3`).

# %% tags=["parameters"]
profile = "smoke"          # smoke | cpu | gpu: where results and figures go
seed = 0
image_size = 64            # pixels; the tiny VLM uses 8x8 patches of 8 px
n_per_class = 12           # images per abnormal class and source
n_normal = 12              # normal images per source
difficulty = 0.5           # 0 easy .. 1 hard: lesion contrast, size, noise
min_lesion_px = 1.2        # smallest lesion, in pixels across (8 is one ViT patch at 64 px)
yes_share = 0.5            # share of "yes" answers in closed VQA (the bias-study knob)
split_fractions = [0.7, 0.15, 0.15]
conv_train_variants = ["standard", "shuffled"]
conv_eval_variants = ["standard", "shuffled", "reversed", "hint_correct", "hint_wrong", "confirm_correct", "confirm_wrong"]
heldout_categories = ["deeplesion:mass", "nih_cxr:effusion"]   # unseen-category study (stage 06)
heldout_wording_tasks = ["conv"]   # tasks whose val/test questions use wordings never seen in training
conv_answer_paraphrases = 0        # conversation answers use the first n paraphrases of each label, 0 means all
vqa_rad_dir = ""           # real data folders (gpu profile), empty means not used
slake_dir = ""
pmc_vqa_dir = ""
iu_xray_dir = ""
medmnist_path = ""
real_max_rows = 0          # rows kept per real data set and split, 0 means all
interactive = True         # params files set False: papermill never builds the widgets

# %%
import time

import datasets

import repro.config
import repro.paths
import repro.plots
import repro.results
from repro.data import build, cards, conversations, synthmed, viz

datasets.disable_progress_bars()  # keep headless logs readable

cfg = repro.config.from_namespace(globals(), "01_data")
repro.plots.setup_style()
started = time.time()
data_dir = repro.paths.data_dir(cfg.profile)
print(f"profile {cfg.profile}: data -> {data_dir}")

# %% [markdown]
# ## Generate images, splits and task datasets

# %%
manifest = build.build(
    data_dir, seed=cfg.seed, n_per_class=cfg.n_per_class, n_normal=cfg.n_normal, image_size=cfg.image_size,
    difficulty=cfg.difficulty, min_lesion_px=cfg.min_lesion_px, yes_share=cfg.yes_share,
    split_fractions=cfg.split_fractions,
    conv_train_variants=cfg.conv_train_variants, conv_eval_variants=cfg.conv_eval_variants,
    heldout_categories=cfg.heldout_categories, heldout_wording_tasks=cfg.heldout_wording_tasks,
    conv_answer_paraphrases=cfg.conv_answer_paraphrases, progress=print,
    real_sources={"vqa_rad_dir": cfg.vqa_rad_dir, "slake_dir": cfg.slake_dir, "pmc_vqa_dir": cfg.pmc_vqa_dir,
                  "iu_xray_dir": cfg.iu_xray_dir, "medmnist_path": cfg.medmnist_path},
    real_max_rows=cfg.real_max_rows,
)
print(f"{manifest['n_images']} images, fingerprint {manifest['fingerprint'][:16]}, {manifest['seconds']} s")

# %% [markdown]
# ## Gallery: one image per source and class (ground-truth boxes in green)

# %%
# The first image of every class: generated again from the same per-image seeds, so identical to the data set's.
first = synthmed.generate(cfg.seed, synthmed.default_counts(2, 2), cfg.image_size, cfg.difficulty, cfg.min_lesion_px)
fig = viz.gallery(first, per_cell=2)
fig.suptitle("SynthMed gallery: rows = sources, columns = normal + abnormality categories", y=1.01)
repro.plots.save_figure(fig, cfg, "gallery")

# %% [markdown]
# ## Class and answer distributions

# %%
vqa, mcq, instruct, conv = (build.load_task(data_dir, t) for t in ("vqa", "mcq", "instruct", "conv"))
counts = cards.class_counts(vqa)  # every image of every split appears in VQA
fig = cards.plot_distributions(vqa["train"], mcq["train"], counts)
repro.plots.save_figure(fig, cfg, "distributions")
cards.open_answer_counts(vqa["train"])

# %% [markdown]
# ## One conversation (Dr-LLaVA) and one abnormal-aware instruction (UMed-LVLM)

# %%
row = conv["test"].filter(lambda r: r["variant"] == "shuffled").select(range(1))[0]
print(conversations.conversation_text(row))

# %%
ab = instruct["train"].filter(lambda r: r["abnormal"]).select(range(1))[0]
print("USER:     ", ab["messages"][0]["content"])
print("ASSISTANT:", ab["messages"][1]["content"])
print("truth:", ab["source"], ab["category"], "box (px)", ab["bboxes"], "box text", ab["bbox_text"])
ex = mcq["train"][0]
print("\nMCQ:", ex["messages"][0]["content"], "\n ->", ex["messages"][1]["content"])

# %% [markdown]
# ## Dataset card

# %%
card = cards.dataset_card(manifest)
repro.results.save_table(card, cfg, "dataset_card")
card

# %% [markdown]
# ## Browse the data (JupyterLab only; papermill runs skip this)

# %%
if interactive:
    from repro import widgets
    display(widgets.data_browser(data_dir))

# %%
metrics = {"n_images": manifest["n_images"], "images_per_split": manifest["images_per_split"],
           "rows": {t: v["rows"] for t, v in manifest["tasks"].items()}, "fingerprint": manifest["fingerprint"],
           "records_fingerprint": manifest["records_fingerprint"],
           "generation_images_per_s": round(manifest["n_images"] / max(manifest["generation_seconds"], 1e-9), 1)}
print(repro.results.save(cfg, metrics, started=started))

# %% [markdown]
# # 01 · SynthMed data
#
# Generates the profile's data for every later stage: procedurally drawn medical-like images (**SynthMed**) from
# the five MAU-like sources of UMed-LVLM (CT lesions, kidney-stone CT, chest X-ray findings, TB chest X-ray,
# endoscopy polyps) and Dr-LLaVA's bone-marrow patches, split into train/val/test, and turned into the tasks of
# the four papers: closed/open VQA, multiple choice with `<think>/<answer>`, abnormal-aware instructions
# (detect → localize → recognize), 5-turn clinician conversations and findings reports.
#
# **How to use this notebook.** Run it top to bottom (about half a minute at the default, smoke-sized parameters).
# Each section says the idea, shows the formula where there is one, builds the configuration in view, calls the
# package, and then says how to read the result. Every paper section ends with a numbered list of how this suite
# differs from the paper and two or three exercises: change one parameter in the cell below (or in
# `params/<profile>/01_data.yaml` for a headless run) and rerun. The methods, with their formulas and the papers'
# numbers, are written out in `docs/methods.md`; the layout of the package in `docs/design.md §10`.
#
# | section | paper | what it builds |
# |---|---|---|
# | images, splits | all | SynthMed images with boxes and masks, stratified train/val/test |
# | conversations | Dr-LLaVA (`docs/methods.md §1`) | 5-turn clinician conversations along a decision tree |
# | instructions | UMed-LVLM (docs/methods.md §4) | detection → localisation → recognition targets with a box |
# | multiple choice | Zhu et al. (docs/methods.md §2) | 4-option questions answered as `<think>…</think><answer>X</answer>` |
# | VQA and reports | MMedPO (docs/methods.md §3) | closed (yes/no) and open questions, findings reports |
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
mcq_test_questions = 1     # MCQ rows per test image (1-3: finding, region, modality), for the power of stage 04's tests
test_seed = -1             # 0 or more draws the test images from this seed (a sealed split no knob choice read), -1 the seed
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
# `repro.config` checked the parameters above (a params file with an unknown key or a wrong type stops here with a
# one-line error) and froze them into `cfg`. This is the whole configuration of the stage; nothing else is read:

# %%
vars(cfg)

# %% [markdown]
# ## Generate images, splits and task datasets
#
# **Idea.** No medical image can be downloaded here, so the data is drawn: **SynthMed** paints each image from its
# label (a CT slice with a lesion, a chest X-ray with an effusion, a colonoscopy frame with a polyp, a bone-marrow
# patch with its cells), so the label is visible in the pixels and every abnormal image comes with its lesion mask
# and box. Every image has its own seed, so the same `seed` gives the same bytes (the *fingerprint* below).
#
# **Difficulty.** One knob $d\in[0,1]$ sets three things (`repro.data.synthmed`):
#
# $$\text{contrast}=1-0.65\,d,\qquad \text{lesion scale}=1.2-0.45\,d,\qquad \sigma_{\text{noise}}=0.012+0.07\,d\ \text{(of full scale)},$$
#
# and no lesion is smaller than `min_lesion_px` pixels across (8 px is one patch of the tiny VLM's vision tower).
#
# **Splits.** Images (not rows) are split, stratified by (source, category): with fractions
# $(f_{\text{train}}, f_{\text{val}}, f_{\text{test}})$, a stratum of $n$ images is cut at
# $\operatorname{round}(n f_{\text{train}})$ and $\operatorname{round}(n (f_{\text{train}}+f_{\text{val}}))$, so every
# row of one image lands in the same split. For the tasks in `heldout_wording_tasks` (default: the conversations)
# val and test questions come from a paraphrase bank disjoint from the train one, so accuracy there measures the
# image, not memorised wording; the other tasks use fixed templates, as their papers do.
#
# **Closed-question bias.** Exactly $\operatorname{round}(\mathtt{yes\_share}\cdot n_{\text{closed}})$ closed VQA
# questions have the answer "yes"; a model that always says "yes" scores `yes_share`.
#
# **Test items for power.** Every split asks one multiple-choice question per image; with `mcq_test_questions` > 1
# the test images are also asked their other kinds (finding, region, modality), in a split of their own
# (`test_extra`) that stage 04 scores Zhu et al.'s models on beside the test split. A paired test needs about
# $2.8^2\,d/\text{MDE}^2$ items when two policies disagree on a share $d$ of them (1,440 for $d=0.46$ at a 5-point
# MDE), more than the test split has images; the tests treat an image's rows as one cluster.
#
# The call below passes every knob by name; `progress=print` reports each step.

# %%
manifest = build.build(
    data_dir, seed=cfg.seed, n_per_class=cfg.n_per_class, n_normal=cfg.n_normal, image_size=cfg.image_size,
    difficulty=cfg.difficulty, min_lesion_px=cfg.min_lesion_px, yes_share=cfg.yes_share,
    split_fractions=cfg.split_fractions,
    conv_train_variants=cfg.conv_train_variants, conv_eval_variants=cfg.conv_eval_variants,
    heldout_categories=cfg.heldout_categories, heldout_wording_tasks=cfg.heldout_wording_tasks,
    conv_answer_paraphrases=cfg.conv_answer_paraphrases, mcq_test_questions=cfg.mcq_test_questions,
    test_seed=cfg.test_seed, progress=print,
    real_sources={"vqa_rad_dir": cfg.vqa_rad_dir, "slake_dir": cfg.slake_dir, "pmc_vqa_dir": cfg.pmc_vqa_dir,
                  "iu_xray_dir": cfg.iu_xray_dir, "medmnist_path": cfg.medmnist_path},
    real_max_rows=cfg.real_max_rows,
)
print(f"{manifest['n_images']} images, fingerprint {manifest['fingerprint'][:16]}, {manifest['seconds']} s")

# %% [markdown]
# **Reading the result.** The number of images is $\sum_s(\mathtt{n\_normal}+C_s\cdot\mathtt{n\_per\_class})$ over the six
# sources, with $C_s$ the abnormal categories of source $s$ (13 in all; smoke: $6\cdot 12+13\cdot 12=228$). The
# fingerprint is a sha256 over every column of every task row, images included: rerun with the same parameters and
# it does not change, on this machine or any other (the drawing takes exp, sin, cos and powers from `repro.libm`,
# the C library's scalar functions, because numpy's own kernels differ in the last bit between AVX2 and AVX512 CPUs
# and a last bit can move a pixel); change a knob that shapes the rows (`difficulty`, `yes_share`, ...) and it does
# (`records_fingerprint` in the results does the same for the images alone). The manifest records the rows of each
# task and split:

# %%
{t: v["rows"] for t, v in manifest["tasks"].items()}

# %% [markdown]
# ## Gallery: one image per source and class (ground-truth boxes in green)

# %%
# The first image of every class: generated again from the same per-image seeds, so identical to the data set's.
first = synthmed.generate(cfg.seed, synthmed.default_counts(2, 2), cfg.image_size, cfg.difficulty, cfg.min_lesion_px)
fig = viz.gallery(first, per_cell=2)
fig.suptitle("SynthMed gallery: rows = sources, columns = normal + abnormality categories", y=1.01)
repro.plots.save_figure(fig, cfg, "gallery")

# %% [markdown]
# **Reading the figure.** One row per source, one column per class (normal first). Green boxes are the true boxes
# that UMed-LVLM's localisation reward and the MAU-style metric compare against; bone marrow has no box (its
# labels are cell proportions and sample quality). Small, faint lesions (kidney stones, nodules) are the hard ones.

# %% [markdown]
# ## Class and answer distributions

# %%
vqa, mcq, instruct, conv = (build.load_task(data_dir, t) for t in ("vqa", "mcq", "instruct", "conv"))
counts = cards.class_counts(vqa)  # every image of every split appears in VQA
fig = cards.plot_distributions(vqa["train"], mcq["train"], counts)
repro.plots.save_figure(fig, cfg, "distributions")
cards.open_answer_counts(vqa["train"])

# %% [markdown]
# **Reading the figure and table.** The class counts are balanced by construction (`n_normal`, `n_per_class`);
# the closed-answer panel shows the share of "yes" (`yes_share`), the MCQ panel the position of the right letter
# (it should be flat, or a model could learn "always B"). The table counts open answers: the most frequent one is
# what a text-only model would guess. Stage 02 prints these majority baselines next to the trained model.
#
# ### Exercises (images and splits)
# 1. Set `difficulty = 0.9` in the parameters cell and rerun this section: which sources lose their lesions to the
#    eye in the gallery first? Does the fingerprint change when only `difficulty` changes?
# 2. Set `yes_share = 0.8`: what does the closed-answer panel show, and what closed accuracy will an "always yes"
#    model get in stage 02 (`majority` there)?
# 3. Set `min_lesion_px = 8` (the cpu profile's value): compare the kidney-stone column of the gallery before and after.

# %% [markdown]
# ## Dr-LLaVA: conversations generated from a clinical decision tree (`docs/methods.md §1(a)`)
#
# **Idea.** A pathologist reads a bone-marrow patch in a fixed order: is the sample usable, what is its quality, is
# there pathology, which cells, which disease. Dr-LLaVA writes this order as a symbolic decision tree and generates,
# per image, one 5-turn conversation that walks it. Every answer maps to one *label* of its turn category
# $k\in\{1..5\}$, and the labels of a whole conversation must lie on one of five valid diagnostic paths.
#
# **Labels from the image.** With $f_{\text{blast}}$ and $f_{\text{plasma}}$ the fractions of myeloblasts and plasma
# cells among the nucleated cells (SynthMed draws them with a margin of at least 0.05 from the thresholds),
#
# $$\ell_3=\begin{cases}\text{inadequate} & \text{quality}\neq\text{adequate}\\ \text{abnormal} & f_{\text{blast}}>0.2\ \vee\ f_{\text{plasma}}>0.1\\ \text{normal} & \text{otherwise}\end{cases}$$
#
# and the diagnosis is AML when $f_{\text{blast}}>0.2$, MM when $f_{\text{plasma}}>0.1$. The valid paths (one column
# each) are the table below. A pair of answers is *consistent* when some valid path $P$ holds both:
# $\exists P:\ P_{k_{i-1}}=\hat\ell_{i-1}\wedge P_{k_i}=\hat\ell_i$ (the consistency term of the reward, notebook 03).
#
# **Generator.** For each bone-marrow image and each *variant*: take the path of its diagnosis, order the five
# turns (`standard` 1..5, `shuffled` a random permutation, `reversed` 5..1), and draw each question and answer from a
# paraphrase bank (15 train / 5 test wordings per key); the `hint_*` / `confirm_*` variants prefix the diagnosis
# question with a clinician's true or wrong claim. The reference answer is always the truthful one. The train split
# gets `conv_train_variants`, val and test get `conv_eval_variants`.

# %%
import pandas as pd

from repro.data import decision_tree

pd.DataFrame(decision_tree.PATHS, index=[f"{k} {n}" for k, n in decision_tree.CATEGORY_NAMES.items()])

# %%
# consistency of two answers: (category, label) pairs; a wrong but coherent pair is still consistent
{"pathology abnormal -> cells myeloblasts": decision_tree.is_consistent_pair(3, "abnormal", 4, "myeloblasts"),
 "pathology normal -> diagnosis AML": decision_tree.is_consistent_pair(3, "normal", 5, "AML")}

# %%
row = conv["test"].filter(lambda r: r["variant"] == "shuffled").select(range(1))[0]
print(conversations.conversation_text(row))

# %% [markdown]
# **Reading the conversation.** Each question carries its category (the turn of the tree it asks about), each
# answer its reference label in brackets; in the `shuffled` variant the categories come in a random order, which is
# why consistency is checked between turns in the order they were *asked*. The row itself (the data format every
# later stage reads; the image column left out):

# %%
{k: v for k, v in row.items() if k not in ("image", "messages")}

# %% [markdown]
# ### How we differ from Dr-LLaVA (data; the full list is `docs/methods.md §6(a)`)
# 1. SynthMed bone-marrow patches drawn from cells whose proportions make the tree's labels visible, not the UCSF
#    images; no upsampling to 2,808 images per class.
# 2. Our own paraphrase banks (15 train / 5 test per key); `conv_answer_paraphrases` can restrict the answers to the
#    first few wordings (the cpu profile uses 1: with all of them the tiny model mixed wordings into unparseable
#    answers).
# 3. Turn-1 labels are the strings "suitable"/"unsuitable", not the release's booleans; AML_Mono does not exist
#    (the release folds it into AML too).
# 4. Rows are in a chat `messages` format with `turn_categories` / `turn_labels` columns instead of LLaVA's
#    `conversations` list of `from`/`value` pairs.
#
# ### Exercises (Dr-LLaVA data)
# 1. Set `conv_train_variants = ["standard"]`: how many train conversations are there now (`manifest` above), and
#    what do you expect of the model's accuracy on the `shuffled` and `reversed` test variants in stage 02?
# 2. Call `decision_tree.is_consistent_pair(1, "unsuitable", 5, "MM")`. Which reward term of notebook 03 does this
#    decide, and would a wrong but consistent conversation earn it?
# 3. Print `conversations.conversation_text(...)` for a `hint_wrong` row of `conv["test"]`: which turn carries the
#    hint, and what is the reference answer of that turn?

# %% [markdown]
# ## UMed-LVLM: abnormal-aware instructions (`docs/methods.md §4(a), §4(c)`)
#
# **Idea.** A model should *find* an abnormality before it names it. Each answer is written in three steps,
# detection → localisation → recognition, with the lesion's box spelled in the text:
# `Detection: abnormal. Localization: [x1, y1, x2, y2]. Recognition: <category> in the <region>, <modality>.`
# The box is in integer percent of the image, so the text does not depend on the image size: a pixel box
# $(x_1,y_1,x_2,y_2)$ of a $W\times H$ image is written
#
# $$p=\Big(\operatorname{round}\tfrac{100\,x_1}{W},\ \operatorname{round}\tfrac{100\,y_1}{H},\ \operatorname{round}\tfrac{100\,x_2}{W},\ \operatorname{round}\tfrac{100\,y_2}{H}\Big),$$
#
# and a predicted box is later scored by $\operatorname{IoU}(\hat b,b)=|\hat b\cap b|\,/\,|\hat b\cup b|$ (ALR in notebook
# 03, the MAU-style accuracy in 02). One abnormal training row:

# %%
ab = instruct["train"].filter(lambda r: r["abnormal"]).select(range(1))[0]
print("USER:     ", ab["messages"][0]["content"])
print("ASSISTANT:", ab["messages"][1]["content"])
print("truth:", ab["source"], ab["category"], "box (px)", ab["bboxes"], "box text", ab["bbox_text"])

# %% [markdown]
# **Reading it.** The pixel box (x2, y2 exclusive) and its percent text describe the same rectangle; a normal image
# gets `Detection: no abnormality. Localization: none.` and no box.
#
# ### How we differ from UMed-LVLM (data; `docs/methods.md §6(d)`)
# 1. Five SynthMed sources imitate the MAU sets (DeepLesion, KidneyStone, NIH ChestX-ray, TBX11K, KVASIR) instead of
#    the 5,817 real images.
# 2. The detection → localisation → recognition text is generated from the labels by a template, not written by
#    GPT-4V and reviewed by clinicians; the box format (integer percent) is ours, the paper does not give one.
# 3. One lesion per image at most, 64×64 pixels.
#
# ### Exercises (UMed-LVLM data)
# 1. Set `image_size = 128` and rerun: do the box texts of the same images change? (They should not, up to rounding.)
# 2. `heldout_categories` does not remove anything here: `manifest["splits"]` records the generalisation splits that
#    stage 06 cuts as filters. How many rows of `instruct["train"]` would the unseen-category study drop?
#    (`from repro.data import splits; len(splits.heldout_categories(list(instruct["train"]), cfg.heldout_categories, "test"))`)

# %% [markdown]
# ## Zhu et al.: multiple-choice questions with reasoning (`docs/methods.md §2(c)`)
#
# **Idea.** GRPO is trained on questions whose answers a rule can check. Each PMC-VQA-like question has four
# options, and the target is a short reasoning in `<think>` tags followed by the answer in `<answer>` tags, so that
# notebook 03's format reward $r_{\text{fmt}}=\mathbb 1[\text{one think block, then one answer block}]$ and accuracy
# reward $r_{\text{acc}}=\mathbb 1[\text{the answer names the right option}]$ can score a sample. The reasoning walks
# the options, each with its verdict (`A. mass: no. B. nodule: yes. ...`): a tiny model taught a free-text reasoning
# ("It shows nodule.") learned to name the finding but not which letter carries it, and stayed at chance
# (`params/cpu/02_sft.yaml` has the numbers). For the same reason the answer is the option's text, not its letter
# (`<answer>nodule</answer>`; both score alike, `docs/methods.md §6(b)8`). The image's modality, region and finding stay in `reason_facts`, which
# the semantic reward checks.

# %%
ex = mcq["train"][0]
print("\nMCQ:", ex["messages"][0]["content"], "\n ->", ex["messages"][1]["content"])

# %% [markdown]
# **Reading it.** The right letter is spread evenly over A–D (distribution figure above); the reasoning is
# templated and about 15 words long, which sets the scale of the length rewards ($L_{\text{cap}}=32$ words).
#
# ### How we differ from Zhu et al. (data; `docs/methods.md §6(b)`)
# 1. SynthMed multiple choice (finding, region or modality questions) instead of a 10k/7k subset of PMC-VQA.
# 2. The `<think>` reasoning in the SFT targets is a template that walks the options; the paper's model reasons in
#    free text.
#
# ### Exercises (Zhu et al. data)
# 1. Count the `question_kind` values of `mcq["train"]` (`mcq["train"].to_pandas()["question_kind"].value_counts()`):
#    which kind will a text-only model find easiest?
# 2. Which columns of an MCQ row would a reward need to check the reasoning, not only the letter?

# %% [markdown]
# ## MMedPO: VQA and findings reports (`docs/methods.md §3(c), §3(e)`)
#
# **Idea.** MMedPO is evaluated on Med-VQA (closed yes/no questions scored by accuracy, open questions by recall of
# the reference's tokens) and on report generation (BLEU, ROUGE-L); its preference pairs (notebook 03) are built
# from the same two tasks. A closed target names what the image shows before its yes/no ("It shows the chest, so
# no."): with a bare yes/no the tiny model answered from the question's wording alone (`docs/methods.md §6(c)8`). Open recall, for reference tokens $T_{\text{ref}}$ and predicted tokens $T_{\text{pred}}$,
# is $|\{t\in T_{\text{ref}}: t\in T_{\text{pred}}\}|\,/\,|T_{\text{ref}}|$ (stage 02). One closed, one open question and one
# report (display only: the rows already built above):

# %%
report = build.load_task(data_dir, "report")
closed_row = next(r for r in vqa["train"].select(range(20)) if r["answer_type"] == "closed")
open_row = next(r for r in vqa["train"].select(range(20)) if r["answer_type"] == "open")
for r in (closed_row, open_row, report["train"][0]):
    print(f"[{r['task']}/{r.get('answer_type', 'report')}] {r['messages'][0]['content']}\n  -> {r['answer']}")

# %% [markdown]
# ### How we differ from MMedPO (data; `docs/methods.md §6(c)`)
# 1. SynthMed VQA and templated 2–4 sentence findings reports instead of VQA-RAD, SLAKE, IU-Xray and MIMIC-CXR
#    (real VQA-RAD / SLAKE / PMC-VQA / MedMNIST folders load into the same schema with the `*_dir` parameters, gpu
#    profile).
# 2. Closed questions are balanced by construction (`yes_share`), unlike the real sets.
#
# ### Exercises (MMedPO data)
# 1. Set `heldout_wording_tasks = ["conv", "vqa"]`: compare the questions of `vqa["train"]` and `vqa["test"]` before
#    and after (`set(vqa["test"]["question"]) - set(vqa["train"]["question"])`). Which stage-02 metric do you
#    expect to drop?
# 2. Why does a templated report make BLEU easier to raise than a free-text one?

# %% [markdown]
# ## Dataset card
#
# One table that says what was built: sources, modalities, classes, images per split and rows per task. It is
# saved next to the figures (`figures/<profile>/01_data_dataset_card.*`).

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

# %% [markdown]
# ## Save the stage's results
#
# `repro.results.save` writes `results/<profile>/01_data.json` (these metrics plus provenance: git sha, versions,
# params, wall time) and moves the staged figures into `figures/<profile>/`. Stage 02 reads the data from
# `runs/<profile>/data/`.

# %%
metrics = {"n_images": manifest["n_images"], "images_per_split": manifest["images_per_split"],
           "rows": {t: v["rows"] for t, v in manifest["tasks"].items()}, "fingerprint": manifest["fingerprint"],
           "records_fingerprint": manifest["records_fingerprint"],
           "generation_images_per_s": round(manifest["n_images"] / max(manifest["generation_seconds"], 1e-9), 1)}
print(repro.results.save(cfg, metrics, started=started))

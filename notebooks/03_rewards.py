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
pref_weight_mode = "normalize"   # text pairs, normalize, literal (constant 0.75), raw (released) or minmax
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
model_path = cfg.model_dir or repro.paths.models_dir(cfg.profile) / "sft" / "final"
# eager attention: VRR and the attention heatmaps read the attention weights (sdpa returns none)
model, processor = models.load_vlm(model_path, attn_implementation="eager")
vrr = attention.make_vrr_reward(model, processor, layers=cfg.vrr_layers, batch_size=cfg.batch_size)
rewards = suite.task_rewards(vrr_fn=vrr, semantic_judge=llm_judge.make_semantic_judge(cfg.semantic_judge_paths),
                             clinical_panel=llm_judge.make_clinical_panel(cfg.clinical_judge_paths))
print(f"profile {cfg.profile}: model {model_path}, data {data_dir}")

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

# %%
reward_summary = suite.summary(long)
repro.results.save_table(reward_summary, cfg, "reward_summary")
reward_summary.round(3)

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
# ## Hacking probes: which degenerate completions does each reward pay for?
#
# Each probe is built from the true answer of a test row (see `repro/rewards/probes.py`); *gain* is the share of the
# true answer's margin over an empty answer that the probe keeps (1 = as good as the truth).

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
# ## MMedPO localized noising: the heatmap of the visual tool, the released rule and the paper's blend

# %%
train_report = preference.load_rows(data_dir, "report")
shown = list({r["source"]: r for r in train_report if r["abnormal"] and r["bboxes"]}.values())[:cfg.n_figure_examples]
fig = figures.noising(preference.noising_examples(model, processor, data_dir, shown, cfg.seed, cfg.pref_noise_step))
repro.plots.save_figure(fig, cfg, "lesion_noising")

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
# ## The MMedPO preference set (text + visual dispreference pairs, clinical weights)

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
# ## Reward playground (JupyterLab only; papermill runs skip this)

# %%
if interactive:
    from repro import widgets
    display(widgets.reward_playground(probe_rows, rewards))

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

# %% [markdown]
# # 04 · RL alignment: each paper's main table on one SFT model
#
# The four papers align a supervised model in four different ways. Here they start from **the same SFT model of stage
# 02**, on the same SynthMed data, and are judged by the same harness:
#
# | paper | method(s) | trainer | reward / data |
# |---|---|---|---|
# | UMed-LVLM | SFT+PPO, SFT+AAR | our PPO (`repro.train.ppo`) | relevance; + ALR (IoU) + VRR (attention), max-normalised per query |
# | Zhu et al. | GRPO, +semantic, Dr.GRPO, ECR, CWR, from base and SFT | TRL `GRPOTrainer` | format + accuracy (+ semantic / length) |
# | MMedPO | DPO, MMedPO | TRL `DPOTrainer` (+ weighted subclass) | stage-03 preference set (text + visual pairs, clinical weights) |
# | Dr-LLaVA | SFT + multi-turn PPO | our PPO, 5-turn rollouts | rule reward of the whole conversation |
#
# Every trained row is repeated over `seeds` and reported as mean ± 95% CI (t-interval over seeds); the starting
# points are greedy, deterministic evaluations and have no interval. The papers' numbers stand beside ours, labelled.
#
# Headless: `python -m repro run --profile smoke --only 04` (needs 01–03).

# %% tags=["parameters"]
profile = "smoke"
seed = 0                   # data subsampling (which train rows RL draws from); training repeats over `seeds`
seeds = [0]
papers = ["umed", "zhu", "mmedpo", "drllava"]
rl_train_rows = 64         # train rows each RL method draws prompts from (0 means all)
eval_limit = 40            # test rows per task, spread over sources and classes; 0 means all
conv_eval_limit = 35       # Dr-LLaVA test conversations (all variants of each image); 0 means all
eval_batch_size = 32
ppo_steps = 2              # UMed-LVLM single-turn PPO
ppo_batch_size = 4         # prompts per PPO step
ppo_k = 4                  # candidates per prompt (AAR max-normalises over them)
ppo_lr = 1e-05
ppo_kl_beta = 0.05
mt_steps = 2               # Dr-LLaVA multi-turn PPO
mt_batch_size = 2
mt_k = 2
grpo_variants = ["grpo", "grpo_semantic", "dr_grpo", "ecr", "cwr"]
grpo_inits = ["base", "sft"]
grpo_steps = 2
grpo_batch_size = 2        # prompts per step
grpo_generations = 4       # completions per prompt (the paper: 8)
grpo_lr = 1e-05
grpo_beta = 0.04
grpo_max_completion_length = 64
dpo_steps = 2
dpo_batch_size = 4
dpo_lr = 5e-05
dpo_beta = 0.1
num_threads = 0            # torch CPU threads, 0 keeps the default

# %%
import datasets
import pandas as pd

import repro.config
import repro.paths
import repro.plots
import repro.results
import repro.tables
from repro import experiments as X
from repro import rl_report

cfg, started = repro.config.start(globals(), "04_rl")
data_dir = repro.paths.data_dir(cfg.profile)
models_dir = repro.paths.models_dir(cfg.profile)
inits = {"base": models_dir / "base" / "final", "sft": models_dir / "sft" / "final"}
for name, path in inits.items():
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{name} model {path} not found: run stage 02 first (python -m repro run --profile {cfg.profile} --only 02)")
preference_dir = data_dir / "preference"
out_root = models_dir / "rl"
print(f"profile {cfg.profile}: seeds {cfg.seeds}, papers {cfg.papers}; checkpoints -> {out_root}")

# %% [markdown]
# ## Train and evaluate (each run resumes from its checkpoints; a rerun with the same params is cached)

# %%
runs, seconds = {}, {}
if "umed" in cfg.papers:
    runs["umed"], seconds["umed"] = X.timed(X.run_umed, cfg, data_dir, inits["sft"], out_root, cfg.seeds)
if "zhu" in cfg.papers:
    zhu_inits = {("SFT" if k == "sft" else "base"): inits[k] for k in cfg.grpo_inits}
    runs["zhu"], seconds["zhu"] = X.timed(X.run_zhu, cfg, data_dir, zhu_inits, out_root, cfg.seeds)
if "mmedpo" in cfg.papers:
    if not (preference_dir / "dataset_dict.json").exists():
        raise FileNotFoundError(f"preference set {preference_dir} not found: run stage 03 first")
    pref = datasets.load_from_disk(str(preference_dir))["train"]
    runs["mmedpo"], seconds["mmedpo"] = X.timed(X.run_mmedpo, cfg, data_dir, inits["sft"], pref, out_root, cfg.seeds)
if "drllava" in cfg.papers:
    runs["drllava"], seconds["drllava"] = X.timed(X.run_drllava, cfg, data_dir, inits["sft"], out_root, cfg.seeds)
for paper, s in seconds.items():
    print(f"{paper:>8}: {s:6.0f} s")

# %% [markdown]
# ### UMed-LVLM Table 2 analog: MAU-style accuracy per source (correct class and IoU ≥ 0.5)

# %%
if "umed" in runs:
    umed = rl_report.umed_table(runs["umed"])
    repro.results.save_table(umed, cfg, "umed_table2")
    display(umed)

# %% [markdown]
# ### Zhu et al.: accuracy, response length and similarity on multiple choice, from both starting points

# %%
if "zhu" in runs:
    zhu = rl_report.zhu_table(runs["zhu"])
    repro.results.save_table(zhu, cfg, "zhu_main")
    display(zhu)

# %% [markdown]
# ### MMedPO: closed/open VQA and report metrics

# %%
if "mmedpo" in runs:
    mmedpo = rl_report.mmedpo_table(runs["mmedpo"])
    repro.results.save_table(mmedpo, cfg, "mmedpo_main")
    display(mmedpo)

# %% [markdown]
# ### Dr-LLaVA: question-, conversation- and diagnosis-level accuracy, consistency, robustness variants

# %%
if "drllava" in runs:
    dr = rl_report.drllava_table(runs["drllava"])
    repro.results.save_table(dr, cfg, "drllava_main")
    display(dr)

# %% [markdown]
# ## Training curves: reward, KL to the reference, response length (mean over seeds, band = min..max)

# %%
fig = rl_report.curves_figure(runs)
repro.plots.save_figure(fig, cfg, "curves")

# %% [markdown]
# ## Claims: did each paper's headline direction reproduce? (judged from the 95% CIs over seeds)

# %%
claims = rl_report.claims(runs)
repro.results.save_table(claims, cfg, "claims")
with pd.option_context("display.max_colwidth", 200):
    display(claims)

# %%
metrics = {"runs": {p: X.to_json(r) for p, r in runs.items()}, "seconds": seconds,
           "claims": claims.reset_index().to_dict(orient="records")}
print(repro.results.save(cfg, metrics, started=started))

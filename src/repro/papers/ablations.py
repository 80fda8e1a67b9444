"""Stage 05: the papers' ablations, each an arm that differs from a stage-04 method in ONE component, on the same
start, seeds, knobs and test items (docs/methods.md §1-§4).

The full methods are stage 04's own jobs (same paper config, same Stage knobs, so the same `Job.key()` and the same
arm folder under runs/<profile>/models/rl/<paper>/): 05 reads their result files instead of retraining. An ablation
arm is a new method name of the same paper with a hook in `Job.extra` that the paper's `arm` calls (umed: "rewards",
mmedpo: "pref", drllava: "reward"), or a changed config field (zhu: beta, generations), so everything else the
trainer does is exactly the full method's.

    acfg = AblationConfig.from_params(params05)            # which ablations, seeds, bootstrap size
    configs, stage = base_configs(profile, acfg)           # stage-04 configs from params/<profile>/04_rl.yaml
    run = run_paper("umed", configs["umed"], stage, acfg)  # {"paper", "records", "rows"}: full + ablation arms
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from repro.papers import common, drllava, mmedpo, umed, zhu

HERE = "repro.papers.ablations"
UMED_FULL, UMED_PPO = "SFT+AAR", "SFT+PPO"
UMED = {"w/o VRR": "relevance + ALR/max", "w/o ALR": "relevance + VRR/max",
        "w/o max-norm": "relevance + ALR + VRR (raw, no per-query max)",
        "VRR frozen copy": "the full AAR with VRR read from a frozen SFT copy's attention, not the policy's",
        "AAR mean": "the full AAR divided by the terms that apply, not the paper's sum"}
# UMed's sensitivity rows (issue 27): the full reward with one knob of umed.UMedConfig set the other way
UMED_KNOBS = {"VRR frozen copy": {"vrr_source": "frozen"}, "AAR mean": {"aar_scale": "mean"}}
MMEDPO = {"text w/ weights": "DPO on text pairs, weighted by clinical relevance",
          "visual w/o weights": "MMedPO's pairs, every weight 1",
          "single judge": "text weights from one judge instead of the panel's consensus",
          "global noise": "visual pairs noised over the whole image instead of the lesion",
          "global noise (matched KL)": "global noise, stopped where its KL first reaches the full MMedPO arm's "
                                       "final KL (local vs global at matched update size)",
          "weights literal": "text weights by the paper's formula as printed (clip((s - mu)/sigma): constant)",
          "weights normalize": "the full method with text weights normalised over the set (mean 1, in [0.75, "
                               "1.25]) instead of the raw score s"}
# MMedPO's sensitivity rows: the full method with one knob of mmedpo.MMedPOConfig the other way (as UMED_KNOBS)
MMEDPO_KNOBS = {"weights literal": {"weight_mode": "literal"}, "weights normalize": {"weight_mode": "normalize"}}
MATCHED = "global noise (matched KL)"
ZHU = {"beta 0": "GRPO without the KL penalty", "small G": "GRPO with a smaller group"}
DRLLAVA = {"gated": "the older gated reward (quality turn gates the sum; no consistency)",
           "released": "the released code's semantics (keyword labels, 'no match' == 'no match' earns +1)",
           "w/o path term": "per-turn correctness only (no consistency of adjacent turns)"}
VARIANTS = {"umed": UMED, "mmedpo": MMEDPO, "zhu": ZHU, "drllava": DRLLAVA}
# TRL drops the reference model and logs no KL at beta = 0, and the trained rule needs the KL; a penalty of 1e-9
# per token is numerically nil (KL of a few nats moves the reward by 1e-9) but keeps the KL measured.
ZERO_BETA = 1e-9


@dataclass
class AblationConfig:
    """Every knob stage 05 reads (params keys without prefix). Paper knobs are stage 04's (params/<p>/04_rl.yaml)."""

    profile: str = "smoke"
    seed: int = 0                 # unused by the arms (04's seeds train); kept like every stage
    seeds: list = field(default_factory=list)  # subset of 04's seeds to run the ablations on ([] = all of 04's)
    umed: list = field(default_factory=lambda: list(UMED))
    mmedpo: list = field(default_factory=lambda: list(MMEDPO))
    zhu: list = field(default_factory=lambda: list(ZHU))
    drllava: list = field(default_factory=lambda: list(DRLLAVA))
    zhu_small_generations: int = 4  # G of the "small G" arm (04's zhu_generations is the full method's G)
    zhu_init_study: bool = True   # Zhu's init study: GRPO from the base beside 04's GRPO from SFT (a check row)
    iou_thresholds: list = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    n_boot: int = 2000

    def __post_init__(self):
        from repro.config import ConfigError

        for paper, known in VARIANTS.items():
            bad = [v for v in getattr(self, paper) if v not in known]
            if bad:
                raise ConfigError(f"05_ablations: key '{paper}' has unknown ablation(s) {bad}; expected a subset of "
                                  f"{list(known)}")
        if self.zhu_small_generations < 2:
            raise ConfigError(f"05_ablations: key 'zhu_small_generations' has value {self.zhu_small_generations}, "
                              "expected >= 2 (a group of one has no variance)")

    @classmethod
    def from_params(cls, params) -> AblationConfig:
        return common.from_params(cls, params, "", "05_ablations")


def declared() -> dict[str, tuple[str, object]]:
    return common.declared(AblationConfig)


def base_configs(profile: str, acfg: AblationConfig):
    """({paper: stage-04 config}, Stage) from params/<profile>/04_rl.yaml: the full methods' exact knobs, so their
    job keys equal stage 04's; seeds narrowed to acfg.seeds (each must be one of 04's, or its arm is not cached)."""
    from repro import config, papers

    p04 = config.load_params(profile, "04_rl", check_paths=False)
    stage = papers.stage_from(p04)
    if acfg.seeds:
        extra = [s for s in acfg.seeds if s not in stage.seeds]
        if extra:
            raise config.ConfigError(f"05_ablations: key 'seeds' has {extra}, not among 04's seeds {stage.seeds} "
                                     "(their full-method arms would be retrained)")
        stage = dataclasses.replace(stage, seeds=list(acfg.seeds))
    return papers.configs_from(p04), stage


# ----------------------------------------------------------------------------------------------- UMed rewards
def aar_variant(variant: str, vrr_fn=None, group_key: str = "query_id", scale: str = "mean"):
    """The AAR reward without one component (TRL signature; groups = equal `group_key` values, i.e. the k
    candidates of one query). "w/o VRR": localization.make_aar_reward itself without vrr_fn; "w/o ALR":
    relevance + VRR/max; "w/o max-norm": relevance + raw ALR + raw VRR (None terms add 0, as in aar_total). Every
    variant is on the full method's scale (`scale`: "sum" as the paper, or "mean", divided by the number of terms
    that apply to the query)."""
    from repro.rewards import localization as loc

    if variant == "w/o VRR":
        return loc.make_aar_reward(group_key=group_key, vrr_fn=None, name="aar_wo_vrr", scale=scale)
    if variant not in UMED or variant in UMED_KNOBS:  # a knob row is the full reward: umed_rewards builds it
        raise ValueError(f"unknown UMed ablation {variant!r} for aar_variant; expected one of "
                         f"{[v for v in UMED if v not in UMED_KNOBS]}")
    relevance = loc.make_relevance_reward()

    def reward(prompts=None, completions=None, **kw):
        comps = list(completions or [])
        rel = relevance(prompts, comps, **kw)
        vrr = vrr_fn(prompts, comps, **kw) if vrr_fn is not None else None
        ids = kw.get(group_key)
        ids = ids if isinstance(ids, list | tuple) else None
        if variant == "w/o ALR":
            return loc.aar_total(rel, None, vrr, ids, scale=scale)
        alr = loc.alr_reward(prompts, comps, **kw)
        return loc.aar_total(rel, alr, vrr, ids, scale=scale, normalize=False)

    reward.__name__ = reward.__qualname__ = "aar_" + variant.replace("/", "").replace(" ", "_").replace("-", "_")
    if hasattr(vrr_fn, "bind_policy"):  # VRR from the policy's attention: the trainer binds it through here
        reward.bind_policy = vrr_fn.bind_policy
    return reward


def umed_rewards(job: common.Job, sft) -> list:
    """Hook of umed.arm: the ablation's reward, with VRR read and AAR combined exactly as the full method does
    (umed.vrr_reward, cfg.aar_scale)."""
    from repro.papers import umed

    if job.extra["ablation"] in UMED_KNOBS:  # the full AAR with one knob the other way (a sensitivity row)
        return [umed.aar_reward(dataclasses.replace(job.cfg, **UMED_KNOBS[job.extra["ablation"]]), sft)]
    vrr = None if job.extra["ablation"] == "w/o VRR" else umed.vrr_reward(job.cfg, sft)
    return [aar_variant(job.extra["ablation"], vrr, scale=job.cfg.aar_scale)]


# ----------------------------------------------------------------------------------------------- MMedPO data
def stage03_knob(profile: str, key: str, default):
    """A knob of the preference set as stage 03 built it (params/<profile>/03_rewards.yaml), else its default."""
    import yaml

    from repro import paths

    f = paths.params_file(profile, "03_rewards")
    return (yaml.safe_load(f.read_text()) or {}).get(key, default) if f.exists() else default


set_weights, reweight_text = mmedpo.set_weights, mmedpo.reweight_text  # (moved to mmedpo: the arm reweights too)


def mmedpo_pref(pref, job: common.Job):
    """Hook of mmedpo.arm: (the ablation's preference set, weighted). `pref`'s text weights are already the full
    method's (mmedpo.arm applies Job.extra["weights"] first); an ablation that rescores uses that same mode."""
    from repro.rewards import clinical

    ab, profile = job.extra["ablation"], job.stage.profile
    mode = job.extra.get("weights", clinical.MMEDPO_MODE)
    if ab == "text w/ weights":
        return pref.filter(lambda k: k == "text", input_columns="kind"), True
    if ab == "visual w/o weights":
        return set_weights(pref, [1.0] * len(pref)), True
    if ab == "single judge":  # the panel's first judge alone, no consensus rounds
        text = [r for r in pref.select_columns(["kind", "chosen", "rejected"]) if r["kind"] == "text"]
        judge = clinical.DEFAULT_PANEL[0]
        return reweight_text(pref, [judge(r["rejected"], r["chosen"]) for r in text], mode), True
    if ab in ("global noise", MATCHED):  # MATCHED: the same pairs; mmedpo.arm stops it at the matched KL
        return global_noise_pairs(pref, stage03_knob(profile, "pref_noise", "released"), job.seed or 0), True
    raise ValueError(f"unknown MMedPO ablation {ab!r}; expected one of {[a for a in MMEDPO if a not in MMEDPO_KNOBS]}")


def global_noise_pairs(pref, method: str, seed: int):
    """Visual pairs whose rejected image is noised over the whole image (rewards.noise.global_noise), one noised
    image per image id (shared by its questions, as the lesion-noised ones are)."""
    from PIL import Image

    from repro.data.preference import _rng
    from repro.rewards import noise

    cache = {}

    def one(r):
        if r["kind"] != "visual":
            return {}
        if r["id"] not in cache:
            cache[r["id"]] = Image.fromarray(noise.global_noise(r["images"][0], _rng(seed, "global", r["id"]),
                                                                method))
        return {"rejected_images": [cache[r["id"]]]}

    return pref.map(one)


# ----------------------------------------------------------------------------------------------- Dr-LLaVA rewards
def _explain_no_path(completion, turn_categories=None, turn_labels=None) -> dict:
    from repro.rewards import rules

    d = rules.explain_drllava(completion, turn_categories, turn_labels)
    if d["reward"] is not None:
        d["reward"] = sum(d["correctness"])
    return d


def drllava_variant(variant: str):
    """The Dr-LLaVA reward of an ablation: gated, released, or our rule reward without the consistency term
    (R = sum of per-turn correctness, range [-2.5, 5] for five turns)."""
    from repro.rewards import make_reward, rules

    if variant == "w/o path term":
        fn = make_reward("drllava_no_path_reward", _explain_no_path, ("turn_categories", "turn_labels"), -2.5, 5.0,
                         raw=True)
        fn.per_turn = lambda completion, **row: list(_explain_no_path(completion, **row).get("correctness") or [])
        return fn
    if variant not in DRLLAVA:
        raise ValueError(f"unknown Dr-LLaVA ablation {variant!r}; expected one of {list(DRLLAVA)}")
    return rules.make_drllava_reward(variant)


def drllava_reward(job: common.Job):
    """Hook of drllava.arm."""
    return drllava_variant(job.extra["ablation"])


# ----------------------------------------------------------------------------------------------- jobs
def label(paper: str, ablation: str) -> str:
    """The method name of an ablation arm (its folder name derives from it)."""
    full = {"umed": UMED_FULL, "mmedpo": "MMedPO", "zhu": "SFT+grpo", "drllava": drllava.METHOD}[paper]
    if paper == "mmedpo" and ablation == "text w/ weights":
        return "DPO (with weights)"
    if paper == "mmedpo" and ablation == MATCHED:
        return "MMedPO (global noise, matched KL)"
    if paper == "drllava":
        if ablation == "w/o path term":
            return "SFT+PPO (rule reward without path term)"
        return f"SFT+PPO ({ablation} reward)"
    return f"{full} ({ablation.replace('w/o', 'without')})"  # no "/": the arm's folder is named after it


def protocol(paper: str, cfg) -> dict:
    """The Job.extra of 04's real-protocol knob for this paper (empty at the default), so ablation arms read the
    same data as 04's full-method arms (repro.papers.common.protocol_extra)."""
    if paper in ("umed", "drllava"):
        return common.protocol_extra("external_test", cfg.external_test, f"{paper}_external_test")
    return common.protocol_extra(f"{paper}_data", cfg.data)


def jobs(paper: str, cfg, stage: common.Stage, acfg: AblationConfig) -> list[common.Job]:
    """Stage 04's jobs of the full method(s) this paper's ablations compare with (cached from 04: same config,
    same keys), then one job per (ablation, seed)."""
    chosen = getattr(acfg, paper)
    d = protocol(paper, cfg)
    if paper == "umed":
        full = [j for j in umed.jobs(cfg, stage)]
        return full + [common.Job("umed", label("umed", a), s, "repro.papers.umed:arm", cfg, stage,
                                  {"rewards": f"{HERE}:umed_rewards", "ablation": a, **d})
                       for s in stage.seeds for a in chosen]
    if paper == "mmedpo":
        full = [j for j in mmedpo.jobs(cfg, stage)]
        return full + [mmedpo_job(cfg, stage, a, s, d, full) for s in stage.seeds for a in chosen]
    if paper == "drllava":
        full = [j for j in drllava.jobs(cfg, stage)]
        return full + [common.Job("drllava", label("drllava", a), s, "repro.papers.drllava:arm", cfg, stage,
                                  {"reward": f"{HERE}:drllava_reward", "ablation": a,
                                   "variants": drllava.TEST_VARIANTS, **d})
                       for s in stage.seeds for a in chosen]
    if paper == "zhu":  # the init study: base+grpo beside 04's SFT+grpo, and both starts (built as zhu.jobs does)
        inits = ("base", "sft") if acfg.zhu_init_study else ("sft",)
        out = zhu.start_jobs(cfg, stage, inits)
        out += [common.Job("zhu", zhu.method(i, "grpo"), s, "repro.papers.zhu:arm", cfg, stage,
                           {"init": i, "variant": "grpo", **d}) for s in stage.seeds for i in inits]
        change = {"beta 0": {"beta": ZERO_BETA}, "small G": {"generations": acfg.zhu_small_generations}}
        return out + [common.Job("zhu", label("zhu", a), s, "repro.papers.zhu:arm",
                                 dataclasses.replace(cfg, **change[a]), stage, {"init": "sft", "variant": "grpo", **d})
                      for s in stage.seeds for a in chosen]
    raise ValueError(f"unknown paper {paper!r}")


def mmedpo_job(cfg, stage: common.Stage, ablation: str, seed: int, d: dict, full: list) -> common.Job:
    """One MMedPO ablation arm: a knob row (MMEDPO_KNOBS) is mmedpo.arm on the changed config with no hook; the
    others rewrite the preference set (mmedpo_pref); the matched-KL arm also names the full MMedPO arm of its seed
    (folder and key), whose final KL it stops at."""
    if ablation in MMEDPO_KNOBS:
        c = dataclasses.replace(cfg, **MMEDPO_KNOBS[ablation])
        return common.Job("mmedpo", label("mmedpo", ablation), seed, "repro.papers.mmedpo:arm", c, stage,
                          {"ablation": ablation, **mmedpo.weights(c), **d})
    extra = {"pref": f"{HERE}:mmedpo_pref", "ablation": ablation, **mmedpo.weights(cfg), **d}
    if ablation == MATCHED:
        target = next(j for j in full if j.method == "MMedPO" and j.seed == seed)
        extra["match_kl"] = {"arm": target.folder.name, "key": target.key()}
    return common.Job("mmedpo", label("mmedpo", ablation), seed, "repro.papers.mmedpo:arm", cfg, stage, extra)


def run_waves(jobs_: list[common.Job], workers: int, only_cached: bool = False):
    """common.run_jobs, with the arms that read another arm's result (the matched-KL arm reads the full MMedPO
    arm's KL) in a second wave when that arm is not on disk yet -> (records in job order, rows)."""
    import pandas as pd

    done = {j.key() for j in jobs_ if common._load_cached(j) is not None}
    later = [i for i, j in enumerate(jobs_) if "match_kl" in j.extra and j.extra["match_kl"]["key"] not in done]
    if only_cached or not later:
        return common.run_jobs(jobs_, workers, only_cached)
    first = [i for i in range(len(jobs_)) if i not in later]
    r1, rows1 = common.run_jobs([jobs_[i] for i in first], workers)
    r2, rows2 = common.run_jobs([jobs_[i] for i in later], workers)
    by_index = dict(zip(first + later, r1 + r2))
    return [by_index[i] for i in range(len(jobs_))], pd.concat([rows1, rows2], ignore_index=True)


def run_paper(paper: str, cfg, stage: common.Stage, acfg: AblationConfig, only_cached: bool = False) -> dict:
    """Run (or read back) the full method's arms and this paper's ablation arms -> {"paper", "records", "rows"}."""
    recs, rows = run_waves(jobs(paper, cfg, stage, acfg), stage.n_workers(), only_cached)
    return {"paper": paper, "records": recs, "rows": rows}


def run_all(configs: dict, stage: common.Stage, acfg: AblationConfig, only_cached: bool = False) -> dict:
    """Every paper's full-method and ablation arms in ONE pool of workers (one process start-up for all, and the
    arms of different papers run side by side) -> {paper: {"paper", "records", "rows"}}."""
    import pandas as pd

    per = {p: jobs(p, configs[p], stage, acfg) for p in common.PAPERS}
    recs, rows = run_waves([j for p in common.PAPERS for j in per[p]], stage.n_workers(), only_cached)
    out, i = {}, 0
    for p in common.PAPERS:
        mine = recs[i:i + len(per[p])] if not only_cached else [r for r in recs if r["paper"] == p]
        i += len(per[p])
        part = rows[rows["paper"] == p].reset_index(drop=True) if len(rows) else pd.DataFrame(columns=rows.columns)
        out[p] = {"paper": p, "records": mine, "rows": part}
    return out


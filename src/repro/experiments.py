"""The main-table experiments of stage 04: each paper's RL/preference method on the same SFT model and data.

    runs = experiments.run_all(cfg, data_dir, base_dir, sft_dir, out_root)      # {paper: {method: [per-seed]}}
    experiments.table(runs["umed"], ["mau_avg", ...])                           # mean ± 95% CI over seeds

Each `run_<paper>` trains its methods once per seed and evaluates every trained model on the test split with the
stage-02 harness (repro.evaluation, greedy decoding), returning one record per (method, seed):
    {"method", "seed", "metrics": {flat name: float}, "curve": DataFrame(step, reward, kl, length), "seconds"}
The starting points (base, SFT) are deterministic greedy evaluations: evaluated once, listed with seed None.

Papers and what is compared (docs/methods.md):
    umed     SFT, SFT+PPO (relevance reward only), SFT+AAR (relevance + max-normalised ALR + VRR), PPO on the
             abnormal-aware instructions. VRR reads the attention of a frozen eager copy of the SFT model over the
             policy's completion (a fixed attention "reward model"): the policy's own attention would need a second
             forward pass per sample inside PPO, which we leave to the gpu profile.
    zhu      GRPO, GRPO+semantic, Dr.GRPO, ECR, CWR from the base and from the SFT model, on multiple choice.
             Metrics: accuracy, response length (words), similarity (share of answers whose reasoning names the true
             finding, region and modality: the rule judge of rewards.vqa), format rate.
    mmedpo   DPO (text pairs, unweighted) and MMedPO (text + visual pairs, clinical weights) on the stage-03
             preference set; closed/open VQA and report BLEU / ROUGE-L.
    drllava  SFT + multi-turn PPO with the rule reward of the whole conversation; every robustness variant.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from repro import evaluation as ev
from repro.rewards import vqa as vqa_rewards
from repro.stats import ci95  # moved to repro.stats; kept importable here for now

PAPERS = ("umed", "zhu", "mmedpo", "drllava")
ZHU_VARIANTS = ("grpo", "grpo_semantic", "dr_grpo", "ecr", "cwr")


# ----------------------------------------------------------------------------------------------- statistics
def summarize(records: list[dict], columns: list[str] | None = None) -> pd.DataFrame:
    """Per method: mean, 95% CI half-width and n of every metric -> long DataFrame (method, metric, mean, ci, n)."""
    by: dict = {}
    for r in records:
        for k, v in r["metrics"].items():
            if columns is None or k in columns:
                by.setdefault((r["method"], k), []).append(v)
    rows = [{"method": m, "metric": k, "mean": ci95(v)[0], "ci": ci95(v)[1], "n": len(v)} for (m, k), v in by.items()]
    return pd.DataFrame(rows)


def table(records: list[dict], columns: list[str], digits: int = 3, percent: tuple[str, ...] = ()) -> pd.DataFrame:
    """Display table: one row per method (in first-seen order), 'mean ± ci' per metric ('mean' alone for n=1).
    Metrics named in `percent` are shown x100 (the papers report percentages)."""
    s = summarize(records, columns)
    pct = s["metric"].isin(percent)
    s.loc[pct, ["mean", "ci"]] *= 100
    order = list(dict.fromkeys(r["method"] for r in records))

    def fmt(row):
        if not math.isfinite(row["ci"]):
            return f"{row['mean']:.{digits}f}"
        return f"{row['mean']:.{digits}f} ± {row['ci']:.{digits}f}"

    s["cell"] = s.apply(fmt, axis=1)
    out = s.pivot(index="method", columns="metric", values="cell").reindex(index=order, columns=columns)
    out.index.name = "method"
    return out


def difference(records: list[dict], method: str, baseline: str, metric: str) -> dict:
    """Mean and 95% CI of (method - baseline) over seeds; a baseline with one (deterministic) value is a constant."""
    a = [r["metrics"][metric] for r in records if r["method"] == method]
    b = [r["metrics"][metric] for r in records if r["method"] == baseline]
    if len(b) == len(a):
        d = [x - y for x, y in zip(a, b)]
    else:
        d = [x - float(np.mean(b)) for x in a]
    m, h = ci95(d)
    return {"method": method, "baseline": baseline, "metric": metric, "diff": m, "ci": h, "n": len(d)}


def verdict(d: dict, expect: str = "higher") -> str:
    """'reproduced' when the 95% CI of the difference lies on the expected side of 0, 'opposite' when it lies on
    the other side, 'inconclusive' when it contains 0 (or there is a single seed)."""
    m, h = d["diff"], d["ci"]
    if not (math.isfinite(m) and math.isfinite(h)):
        return "inconclusive (one seed)"
    sign = 1 if expect == "higher" else -1
    if sign * (m - h) > 0:
        return "reproduced"
    if sign * (m + h) < 0:
        return "opposite"
    return "inconclusive (CI contains 0)"


# ----------------------------------------------------------------------------------------------- evaluation
def _flat(task: str, m: dict) -> dict:
    if task == "instruct":
        out = {f"mau_{s}": m["by_source"].get(s, {}).get("mau_acc", float("nan")) for s in m.get("by_source", {})
               if s != "all"}
        vals = [v for k, v in out.items() if k != "mau_bone_marrow"]
        out.update(mau_avg=float(np.nanmean(vals)) if vals else float("nan"), mean_iou=m["mean_iou"],
                   detection_acc=m["detection_acc"], category_acc=m["category_acc"])
        return out
    if task == "vqa":
        return {"closed_acc": m["closed_acc"], "open_recall": m["open_recall"]}
    if task == "report":
        return {"bleu": m["bleu"], "rouge_l": m["rouge_l"]}
    if task == "conv":
        out = {k: m[k] for k in ("question_acc", "conversation_acc", "diagnosis_acc", "path_consistency")}
        for var, vm in (m.get("by_variant") or {}).items():
            if var not in ("all", "standard"):
                out[f"{var}_diagnosis_acc"] = vm["diagnosis_acc"]
                out[f"{var}_conversation_acc"] = vm["conversation_acc"]
        return out
    raise ValueError(f"no flat metrics for task {task!r}")


def evaluate_tasks(model, processor, data_dir, tasks, limit, batch_size) -> dict:
    """ev.evaluate on `tasks` -> one flat {metric: float} dict (the table columns)."""
    out = ev.evaluate(model, processor, data_dir, tasks=tasks, limit=limit, batch_size=batch_size, progress=False)
    flat = {}
    for task in tasks:
        flat.update(_flat(task, out["metrics"][task]))
    return flat


def evaluate_mcq(model, processor, data_dir, limit, batch_size) -> dict:
    """Zhu et al.'s columns: accuracy, response length (words), similarity (semantic judge), format rate."""
    rows = ev.load_rows(data_dir, "mcq", "test", limit)
    preds = ev.generate(model, processor, rows, ev.MAX_NEW_TOKENS["mcq"], batch_size, progress=False, desc="mcq")
    acc = ev.score("mcq", preds, rows)[0]["acc"]
    cols = {k: [r.get(k) for r in rows] for k in ("reason_facts", "category", "region", "modality")}
    sim = vqa_rewards.semantic_reward(None, preds, **cols)
    return {"accuracy": acc, "length": float(np.mean([len(p.split()) for p in preds])),
            "similarity": float(np.mean([s or 0.0 for s in sim])),
            "format": float(np.mean([vqa_rewards.format_ok(p) for p in preds]))}


def _evaluate_dir(path, fn: Callable, *args) -> dict:
    from repro.models import load_vlm

    model, processor = load_vlm(path)
    return fn(model, processor, *args)


def _record(method, seed, metrics, curve=None, seconds=0.0) -> dict:
    return {"method": method, "seed": seed, "metrics": metrics, "curve": curve, "seconds": round(seconds, 1)}


def _ppo_curve(history) -> pd.DataFrame:
    return pd.DataFrame([{"step": i + 1, "reward": h.get("reward"), "kl": h.get("kl"),
                          "length": h.get("response_length")} for i, h in enumerate(history)])


# ----------------------------------------------------------------------------------------------- the papers
def run_umed(cfg, data_dir, sft_dir, out_root: Path, seeds) -> list[dict]:
    from repro.models import load_vlm
    from repro.rewards import attention, localization
    from repro.train import ppo

    rows = ev.load_rows(data_dir, "instruct", "train", cfg.rl_train_rows or None)
    ev_args = (data_dir, ["instruct"], cfg.eval_limit or None, cfg.eval_batch_size)
    recs = [_record("SFT", None, _evaluate_dir(sft_dir, evaluate_tasks, *ev_args))]
    vrr_model, vrr_proc = load_vlm(sft_dir, attn_implementation="eager")
    vrr = attention.make_vrr_reward(vrr_model, vrr_proc)
    methods = {"SFT+PPO": [localization.make_relevance_reward()],
               "SFT+AAR": [localization.make_aar_reward(group_key="query_id", vrr_fn=vrr)]}
    for seed in seeds:
        for name, fns in methods.items():
            pc = ppo.PPOConfig(steps=cfg.ppo_steps, batch_size=cfg.ppo_batch_size, k=cfg.ppo_k, lr=cfg.ppo_lr,
                               max_new_tokens=ev.MAX_NEW_TOKENS["instruct"], kl_beta=cfg.ppo_kl_beta, seed=seed)
            info = ppo.train(sft_dir, out_root / "umed" / f"{name}-s{seed}", rows, fns, pc, progress=False)
            m = _evaluate_dir(info["final_dir"], evaluate_tasks, *ev_args)
            recs.append(_record(name, seed, m, _ppo_curve(info["log_history"]), info["seconds"]))
    return recs


def run_zhu(cfg, data_dir, inits: dict, out_root: Path, seeds) -> list[dict]:
    from repro.train import grpo

    ds = grpo.grpo_dataset(data_dir, "train", limit=cfg.rl_train_rows or None, seed=cfg.seed)
    ev_args = (data_dir, cfg.eval_limit or None, cfg.eval_batch_size)
    recs = [_record(name, None, _evaluate_dir(path, evaluate_mcq, *ev_args)) for name, path in inits.items()]
    for seed in seeds:
        for init, path in inits.items():
            for variant in cfg.grpo_variants:
                info = grpo.train(path, out_root / "zhu" / f"{init}-{variant}-s{seed}", ds, variant,
                                  max_steps=cfg.grpo_steps, num_generations=cfg.grpo_generations,
                                  batch_size=cfg.grpo_batch_size, lr=cfg.grpo_lr, beta=cfg.grpo_beta,
                                  max_completion_length=cfg.grpo_max_completion_length, seed=seed,
                                  save_steps=max(cfg.grpo_steps, 1))
                c = grpo.curves(info["log_history"])
                curve = pd.DataFrame({"step": c["step"], "reward": c.get("reward"), "kl": c.get("kl"),
                                      "length": c.get("completion_length")})
                m = _evaluate_dir(info["final_dir"], evaluate_mcq, *ev_args)
                recs.append(_record(f"{init}+{variant}", seed, m, curve, info["seconds"]))
    return recs


def run_mmedpo(cfg, data_dir, sft_dir, preference, out_root: Path, seeds) -> list[dict]:
    from repro.train import dpo

    ev_args = (data_dir, ["vqa", "report"], cfg.eval_limit or None, cfg.eval_batch_size)
    recs = [_record("SFT", None, _evaluate_dir(sft_dir, evaluate_tasks, *ev_args))]
    for seed in seeds:
        for name, weighted in (("DPO", False), ("MMedPO", True)):
            info = dpo.train(sft_dir, out_root / "mmedpo" / f"{name}-s{seed}", preference, weighted=weighted,
                             max_steps=cfg.dpo_steps, batch_size=cfg.dpo_batch_size, lr=cfg.dpo_lr,
                             beta=cfg.dpo_beta, seed=seed, save_steps=max(cfg.dpo_steps, 1))
            c = dpo.curves(info["log_history"])
            curve = pd.DataFrame({"step": c["step"], "reward": c.get("rewards/margins"), "kl": None,
                                  "length": None})
            m = _evaluate_dir(info["final_dir"], evaluate_tasks, *ev_args)
            recs.append(_record(name, seed, m, curve, info["seconds"]))
    return recs


def run_drllava(cfg, data_dir, sft_dir, out_root: Path, seeds) -> list[dict]:
    from repro.rewards import rules
    from repro.train import ppo

    rows = ev.load_rows(data_dir, "conv", "train", cfg.rl_train_rows or None)
    ev_args = (data_dir, ["conv"], cfg.conv_eval_limit or None, cfg.eval_batch_size)
    recs = [_record("SFT", None, _evaluate_dir(sft_dir, evaluate_tasks, *ev_args))]
    for seed in seeds:
        pc = ppo.PPOConfig(steps=cfg.mt_steps, batch_size=cfg.mt_batch_size, k=cfg.mt_k, lr=cfg.ppo_lr,
                           max_new_tokens=ev.MAX_NEW_TOKENS["conv"], kl_beta=cfg.ppo_kl_beta, seed=seed)
        info = ppo.train(sft_dir, out_root / "drllava" / f"PPO-s{seed}", rows, [rules.drllava_reward], pc,
                         multi_turn=True, progress=False)
        m = _evaluate_dir(info["final_dir"], evaluate_tasks, *ev_args)
        recs.append(_record("SFT+PPO (rule reward)", seed, m, _ppo_curve(info["log_history"]), info["seconds"]))
    return recs


def timed(fn, *args, **kw):
    t0 = time.time()
    out = fn(*args, **kw)
    return out, time.time() - t0


def to_json(records: list[dict]) -> list[dict]:
    """Records without their curve DataFrames (curves go to figures), for results JSON."""
    return [{k: v for k, v in r.items() if k != "curve"} for r in records]


def curves_long(records: list[dict]) -> pd.DataFrame:
    """All training curves in one long frame: method, seed, step, quantity, value (for the curve figure)."""
    parts = []
    for r in records:
        c = r.get("curve")
        if c is None or len(c) == 0:
            continue
        long = c.melt(id_vars="step", var_name="quantity", value_name="value").dropna()
        long["method"], long["seed"] = r["method"], r["seed"]
        parts.append(long)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["step", "quantity", "value", "method", "seed"])


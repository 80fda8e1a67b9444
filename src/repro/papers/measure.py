"""Measuring models for stage 04: greedy test evaluation with per-row scores (the unit of the paired tests), the
record of a trained arm (`finish_arm`: an untrained arm is not evaluated), and the starting points on the
validation split (greedy, sampled pass@1 and pass@k at temperature 1)."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd

from repro import evaluation as ev
from repro.papers.common import ROW_COLUMNS, Job, Stage, data_dir, model_dir, summarize_curve


# ----------------------------------------------------------------------------------------------- evaluation
def flat_metrics(task: str, m: dict) -> dict:
    """The table columns of one task's summary metrics."""
    if task == "instruct":
        out = {f"mau_{s}": v.get("mau_acc", float("nan")) for s, v in m.get("by_source", {}).items() if s != "all"}
        vals = [v for k, v in out.items() if k != "mau_bone_marrow"]
        # normal and abnormal images apart: a normal/abnormal threshold flip shows as one rising and one falling
        out.update(mau_avg=float(np.nanmean(vals)) if vals else float("nan"), mean_iou=m["mean_iou"],
                   detection_acc=m["detection_acc"], category_acc=m["category_acc"],
                   normal_acc=m.get("normal_acc", float("nan")), abnormal_acc=m.get("abnormal_acc", float("nan")))
        return out
    if task == "vqa":
        return {"closed_acc": m["closed_acc"], "open_recall": m["open_recall"]}
    if task == "report":
        return {"bleu": m["bleu"], "rouge_l": m["rouge_l"]}
    if task == "mcq":
        return {"accuracy": m["acc"]}
    if task == "conv":
        std = (m.get("by_variant") or {}).get("standard", m)
        out = {k: std[k] for k in ("question_acc", "conversation_acc", "diagnosis_acc", "path_consistency")}
        for var, vm in (m.get("by_variant") or {}).items():
            if var not in ("all", "standard"):
                out[f"{var}_diagnosis_acc"] = vm["diagnosis_acc"]
                out[f"{var}_conversation_acc"] = vm["conversation_acc"]
        return out
    raise ValueError(f"no flat metrics for task {task!r}")


def job_data_dir(job: Job):
    """The data dir an arm reads: the stage's SynthMed dir, or the real-protocol folder named by job.extra["data"]
    = [knob, value] (repro.data.protocols; only set when the paper's data knob is not its default)."""
    from repro.data import protocols

    spec = job.extra.get("data")
    return protocols.data_dir_for(data_dir(job.stage), *spec) if spec else data_dir(job.stage)


def add_metrics(flat: dict, long: pd.DataFrame, more: dict) -> pd.DataFrame:
    """Per-row metrics computed beside a task's own ({metric: one value per item, in row order}, e.g. Zhu's
    length / similarity / format): each one's mean goes into `flat` (in place), its rows are appended to `long`."""
    for metric, vals in more.items():
        flat[metric] = float(np.nanmean(vals)) if len(vals) else float("nan")
        add = long.drop_duplicates("item")[["task", "source", "variant", "item", "cluster"]].copy()
        add["metric"], add["score"] = metric, list(vals)
        long = pd.concat([long, add], ignore_index=True)
    return long


def evaluate(model_dir, stage: Stage, tasks, limit: int, split: str | None = None, extra=None, data=None,
             loaded=None, samples: dict | None = None, variants=None):
    """Greedy evaluation of the model at `model_dir` -> (flat metrics, per-row scores in long form).
    extra(task, rows_df, rows) -> {metric: per-row list} adds metrics computed from the predictions and the data
    rows (Zhu's columns). data: the data dir to read (default: the stage's SynthMed dir). loaded: (model,
    processor) already loaded from model_dir, when one model is evaluated on several splits. samples: a dict that
    receives {task: the first test rows' prompt, truth and prediction} (the same rows for every model: the
    before / after RL examples of stage 04). variants: the conversation variants to score (None = all; `extra`
    reads every row, so not both)."""
    from repro.models import load_vlm

    if variants is not None and extra is not None:
        raise ValueError("measure.evaluate: `variants` and `extra` together (extra reads every row of the task)")
    split = split or stage.eval_split
    data = data or data_dir(stage)
    model, processor = loaded or load_vlm(model_dir)
    out = ev.evaluate(model, processor, data, split=split, tasks=list(tasks), limit=limit or None,
                      batch_size=stage.eval_batch_size, progress=False, variants=variants)
    flat, parts = {}, []
    for task in tasks:
        flat.update(flat_metrics(task, out["metrics"][task]))
        df = out["tables"][f"{task}_rows"]
        long = ev.row_scores(task, df)
        if extra is not None:
            long = add_metrics(flat, long, extra(task, df, ev.load_rows(data, task, split, limit or None)))
        parts.append(long)
    if samples is not None:
        samples.update(out.get("samples", {}))
    return flat, pd.concat(parts, ignore_index=True)


def external(model_dir, job: Job, limit: int):
    """The extra external test of job.extra["external_test"] (UMed-LVLM / Dr-LLaVA: MedMNIST as closed VQA on its
    test split) -> ({"<name>_closed_acc": x}, rows with metrics prefixed "<name>_"), or ({}, no rows) when none.
    An extra column beside the paper's table, never a claim (the claims read unprefixed metrics only)."""
    from repro.data import protocols

    name = job.extra.get("external_test")
    if not name:
        return {}, pd.DataFrame(columns=ROW_COLUMNS[3:])
    folder = protocols.data_dir_for(data_dir(job.stage), "external_test", name)
    flat, rows = evaluate(model_dir, job.stage, ["vqa"], limit, split="test", data=folder)
    rows = rows.assign(metric=f"{name}_" + rows["metric"].astype(str))
    return {f"{name}_closed_acc": flat["closed_acc"]}, rows


def eval_arm(job: Job):
    """A start (no training): the greedy evaluation of job.extra["model"] ("base" / "sft") on job.extra tasks
    (job.extra "variants": the conversation variants to score, default all)."""
    e = job.extra
    extra = None
    if e.get("extra_fn"):
        module, fn = e["extra_fn"].split(":")
        extra = getattr(importlib.import_module(module), fn)
    start = model_dir(job.stage, e["model"], job.seed)
    samples: dict = {}
    flat, rows = evaluate(start, job.stage, e["tasks"], e["limit"], extra=extra, data=job_data_dir(job),
                          samples=samples, variants=e.get("variants"))
    ext_flat, ext_rows = external(start, job, e["limit"])
    flat.update(ext_flat)
    rows = pd.concat([rows, ext_rows], ignore_index=True) if len(ext_rows) else rows
    return start_record(flat, samples), rows


def start_record(flat: dict, samples: dict | None = None) -> dict:
    """The record of a start's evaluation (no training, so no curve; `start` marks it); samples: its first test
    answers."""
    return {"metrics": flat, "curve": [], "kl_end": None, "reward_first": None, "reward_last": None,
            "trained": True, "why": "starting point (not trained here)", "samples": samples or {}, "start": True}


def is_start(rec: dict) -> bool:
    """A start's evaluation, not a trained arm: seed None, or (a start per seed, Stage.start_seeds) marked `start`."""
    return rec.get("seed") is None or bool(rec.get("start"))


# ----------------------------------------------------------------------------------------------- starting points
def pass_at(scores: np.ndarray) -> tuple[float, float]:
    """scores [n_items, k] of 0/1 samples -> (pass@1 = mean, pass@k = share of items with any success)."""
    s = np.asarray(scores, dtype=float)
    return float(s.mean()), float((s.max(axis=1) > 0).mean())


def start_arm(job: Job):
    """Starting point of one paper on the VALIDATION split (job.extra "split"; a real-protocol folder without one
    names "train"): greedy accuracy of its rewarded metric, and sampled pass@1 / pass@k with k = the group size
    (k samples per item) at the paper's rollout temperature (job.extra "temperature", default 1)."""
    import torch

    from repro.models import load_vlm
    from repro.papers import probe

    e, stage = job.extra, job.stage
    task, metric, k, limit = e["task"], e["metric"], int(e["k"]), e["limit"]
    folder, split = job_data_dir(job), e.get("split", "val")
    rows = probe.val_rows(folder, task, limit, e.get("variant"), split)  # the variant's rows, then `limit` of them
    model, processor = load_vlm(model_dir(stage, e["model"], job.seed))
    bs, budget = stage.eval_batch_size, ev.MAX_NEW_TOKENS[task]

    def scores(temperature: float, reps: int) -> np.ndarray:
        many = [r for r in rows for _ in range(reps)]
        if task == "conv":
            preds = ev.generate_conversation(model, processor, many, budget, bs, temperature, progress=False)
        else:
            preds = ev.generate(model, processor, many, budget, bs, temperature, progress=False)
        long = ev.row_scores(task, ev.score(task, preds, many)[1][f"{task}_rows"])
        v = long[long["metric"] == metric]["score"].to_numpy(dtype=float)
        return v.reshape(-1, reps)

    greedy = scores(0.0, 1)
    torch.manual_seed(job.seed or 0)
    temperature = float(e.get("temperature", 1.0))
    p1, pk = pass_at(scores(temperature, k))
    rec = {"metrics": {"metric": metric, "greedy": float(greedy.mean()), "pass1": p1, "passk": pk, "k": k,
                       "temperature": temperature,
                       "n_items": int(len(greedy)), "model": e["model"]},
           "curve": [], "kl_end": None, "reward_first": None, "reward_last": None, "trained": True, "why": ""}
    return rec, pd.DataFrame(columns=ROW_COLUMNS)


# ----------------------------------------------------------------------------------------------- trained arms
def training_record(job: Job, curve: pd.DataFrame, min_kl: float, probe_table: pd.DataFrame | None = None,
                    log: list[dict] | None = None) -> dict:
    """An arm's record of its training (no test numbers): the curve summary, "moved" (end KL above min_kl) and, with
    a probe table (repro.papers.probe), "learned" with the probe's numbers; trained = moved and learned. Writes the
    per-step log and the probe table beside the arm (log.csv, probe.csv)."""
    from repro.papers import probe

    status = summarize_curve(curve, min_kl)
    rec = {"curve": curve.to_dict(orient="records"), **status, "moved": status["trained"]}
    job.folder.mkdir(parents=True, exist_ok=True)
    if log is not None:
        pd.DataFrame(log).to_csv(job.folder / "log.csv", index=False)
        rec["log"] = log
    if probe_table is not None:
        probe_table.to_csv(job.folder / "probe.csv", index=False)
        rule = probe.learned({job.seed: probe_table})
        points = probe.summary(probe_table)
        first, last = points.iloc[0], points.iloc[-1]
        rec["probe"] = {k: rule[k] for k in ("reward_start", "reward_end", "ci_low", "ci_high", "difference",
                                             "n_items", "step_end")}
        rec["probe_points"] = points.to_dict(orient="records")
        rec["pass1"] = {"start": float(first["target_pass1"]), "end": float(last["target_pass1"])}
        rec["greedy_val"] = {"start": float(first["target_greedy"]), "end": float(last["target_greedy"])}
        if "preference_accuracy" in points:  # DPO / MMedPO: held-out pairs won (margin > 0)
            rec["probe"]["preference_accuracy_end"] = float(last["preference_accuracy"])
        rec["learned"] = rule["learned"]
        rec["trained"] = bool(status["trained"] and rule["learned"])
        if status["trained"] and not rule["learned"]:
            rec["why"] = f"did not learn: {rule['why']}"
    return rec


def finish_arm(job: Job, final_dir, curve: pd.DataFrame, min_kl: float, tasks=(), limit: int = 0,
               evaluate_fn=None, probe_table: pd.DataFrame | None = None, log: list[dict] | None = None):
    """An arm's record after training: curve summary, the "moved" rule (end KL above min_kl) and, with a probe
    table (repro.papers.probe), the "learned" rule of this seed; `trained` = moved and learned. An arm that moved
    is evaluated on the test split (whether its method learned is decided over its seeds, claims.method_learned);
    one that did not move is not (its numbers would describe its start).
    evaluate_fn(final_dir, samples) -> (flat, rows) replaces the evaluation of `tasks` (Zhu's, over every MCQ row of
    the test images; `samples` as in `evaluate`); job.extra "variants" picks the conversation variants scored
    (Dr-LLaVA's standard order). The per-step training log (`log`, every logged field) and the
    probe table are written beside the arm as log.csv and probe.csv."""
    rec = training_record(job, curve, min_kl, probe_table, log)
    if job.extra.get("control"):
        rec["control"] = job.extra["control"]
    null = job.extra.get("control") == "null"  # evaluated although it did not learn (repro.papers.controls)
    # Every arm that moved is evaluated, also a seed whose own probe did not rise: whether the METHOD learned is
    # decided over all its seeds (claims.method_learned pools their probes), so each seed's test rows must exist.
    # An arm that did not move is its start again: nothing to evaluate.
    if (not rec.get("moved", rec["trained"]) and not null) or job.extra.get("probe_only"):  # a sweep cell: no test
        return {"metrics": {}, **rec}, pd.DataFrame(columns=ROW_COLUMNS[3:])
    samples: dict = {}
    if evaluate_fn is not None:
        flat, rows = evaluate_fn(final_dir, samples)
    else:
        flat, rows = evaluate(final_dir, job.stage, tasks, limit, data=job_data_dir(job), samples=samples,
                              variants=job.extra.get("variants"))
    rec["samples"] = samples  # the first test rows' answers, beside the start's (report.before_after)
    ext_flat, ext_rows = external(final_dir, job, limit)
    flat.update(ext_flat)
    rows = pd.concat([rows, ext_rows], ignore_index=True) if len(ext_rows) else rows
    return {"metrics": flat, **rec}, rows

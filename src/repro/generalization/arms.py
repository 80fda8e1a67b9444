"""Stage 06's arm functions, each called in a worker with a `papers.common.Job` (see papers.common.run_job: one
thread, result cached in the arm's folder by its key) and returning (record, per-row scores).

job.extra carries what decides the arm: the start ("base" / "sft" = stage 02's checkpoints, else a folder: a
short SFT, one of repro.generalization.bases' held-out-free bases or Zhu's kind-free base), the
train and test row specs (repro.generalization.subsets) and the evaluation size. The trainers and their knobs are
stage 04's (job.cfg is the paper's 04 config); only the rows and the start differ.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from repro import evaluation as ev
from repro.generalization import bases, subsets
from repro.papers import common, measure, probe

EMPTY = pd.DataFrame(columns=common.ROW_COLUMNS)


# ----------------------------------------------------------------------------------------------- rows
def start_dir(job: common.Job, name: str) -> Path:
    return common.model_dir(job.stage, name, job.seed) if name in ("base", "sft") else Path(name)


def limit_rows(rows: list[dict], limit: int) -> list[dict]:
    """At most `limit` rows spread over sources and classes (evaluation's stratified_indices); 0 = all."""
    if not limit or limit >= len(rows):
        return list(rows)
    keep = ev.stratified_indices([r["id"] for r in rows], [f"{r['source']}/{r['category']}" for r in rows], limit)
    return [rows[i] for i in keep]


def spec_indices(ds, spec: dict) -> list[int]:
    """Indices of a task split's rows that `spec` keeps, read from the metadata columns only (no image decoding)."""
    cols = [c for c in ("source", "category", "modality", "question_kind") if c in ds.column_names]
    meta = ds.select_columns(cols).to_list()
    for i, m in enumerate(meta):
        m["_i"] = i
    return [m["_i"] for m in subsets.select(meta, spec)]


def test_rows(job: common.Job, task: str, spec: dict, limit: int) -> list[dict]:
    return limit_rows(subsets.select(ev.load_rows(common.data_dir(job.stage), task, job.stage.eval_split), spec),
                      limit)


def eval_rows(model_dir, job: common.Job, task: str, rows: list[dict], label: str = "", extra=None):
    """Greedy evaluation of one task on the given rows -> (flat metrics, long per-row scores). `label` goes into
    the rows' variant column (Zhu's "step:part"); `extra` as in papers.measure.evaluate."""
    from repro.models import load_vlm

    model, processor = load_vlm(model_dir)
    bs, budget = job.stage.eval_batch_size, ev.MAX_NEW_TOKENS[task]
    if task == "conv":
        preds = ev.generate_conversation(model, processor, rows, budget, bs, progress=False)
    else:
        preds = ev.generate(model, processor, rows, budget, bs, progress=False)
    m, tables = ev.score(task, preds, rows)
    df = tables[f"{task}_rows"]
    flat, long = measure.flat_metrics(task, m), ev.row_scores(task, df)
    long = measure.add_metrics(flat, long, extra(task, df, rows) if extra else {})
    if label:
        long["variant"] = label
        flat = {f"{label} {k}": v for k, v in flat.items()}
    return flat, long


# ----------------------------------------------------------------------------------------------- arms
def sft_arm(job: common.Job):
    """A short SFT on the train rows of extra["train"] from extra["init"] ("base", a folder such as a held-out-free
    base, or "qwen": a freshly built tiny Qwen2.5-VL with the suite's tokenizer corpus). Not evaluated here:
    eval_arm measures it on each test set. Writes the image ids it trained on (<folder>/train_ids.json)."""
    from datasets import concatenate_datasets

    from repro.data import build
    from repro.train import sft

    e, data = job.extra, common.data_dir(job.stage)
    if e["init"] == "qwen":
        from repro.models import build_tiny_qwen25vl

        init = job.folder / "init"
        if not (init / "config.json").exists():
            build_tiny_qwen25vl(init, sft.corpus(data), seed=job.seed or 0)
    else:
        init = start_dir(job, e["init"])
    parts, ids = [], set()
    for task in e["tasks"]:
        ds = build.load_task(data, task)["train"]
        ds = ds.select(spec_indices(ds, e["train"]))
        ids.update(ds["id"])  # bases.saw_heldout reads them: the start's chain never trained on a held-out image
        parts.append(ds.map(sft.to_sft_row, remove_columns=ds.column_names))
    mix = concatenate_datasets(parts).shuffle(seed=job.seed or 0)
    info = sft.train(init, job.folder / "train", mix, max_steps=e["steps"], batch_size=e["batch_size"], lr=e["lr"],
                     seed=job.seed or 0, save_steps=max(e["steps"], 1), run_key={"train": e["train"]})
    bases.write_ids(job.folder, ids)
    losses = [h["loss"] for h in info["log_history"] if "loss" in h]
    return {"metrics": {"train_rows": len(mix), "loss_last": losses[-1] if losses else None},
            "curve": [], "kl_end": None, "reward_first": None, "reward_last": None, "trained": True,
            "why": "supervised start (the trained rule is for RL arms)", "final_dir": str(info["final_dir"]),
            "folder": str(job.folder)}, EMPTY


def eval_arm(job: common.Job):
    """A start measured on test rows: extra {"model", "tasks", "test" (spec), "limit", "labels" (optional: one
    {label: spec} per evaluation, e.g. Zhu's trained / held-out kinds), "extra_fn"}."""
    e = job.extra
    extra = _extra_fn(e.get("extra_fn"))
    flat, parts = {}, []
    for task in e["tasks"]:
        for label, spec in (e.get("labels") or {"": e.get("test", {"kind": "all"})}).items():
            f, long = eval_rows(start_dir(job, e["model"]), job, task, test_rows(job, task, spec, e["limit"]),
                                label, extra)
            flat.update(f)
            parts.append(long)
    return measure.start_record(flat), pd.concat(parts, ignore_index=True)


def drllava_eval(job: common.Job):
    """A stage-04 Dr-LLaVA model (extra "model": its folder) scored on the robustness variants (extra "variants")
    of the test conversations 04 scores (extra "limit": the same images): 04's own greedy evaluation
    (measure.evaluate), so its rows pair with 04's standard-order rows of the same model and image."""
    e = job.extra
    flat, rows = measure.evaluate(Path(e["model"]), job.stage, ["conv"], e["limit"], variants=e["variants"])
    return {**measure.start_record(flat), "start": e["start"], "why": "a stage-04 model, scored here"}, rows


def _extra_fn(name):
    if not name:
        return None
    import importlib

    module, fn = name.split(":")
    return getattr(importlib.import_module(module), fn)


def umed_arm(job: common.Job):
    """PPO with AAR (stage 04's UMed arm) from extra["init"] on the rows of extra["train"], tested on extra["test"]."""
    from repro.papers import umed
    from repro.train import ppo

    cfg, e = job.cfg, job.extra
    init = start_dir(job, e["init"])
    rows = subsets.select(ev.load_rows(common.data_dir(job.stage), "instruct", "train"), e["train"])
    rows = limit_rows(rows, cfg.train_rows)
    fns = [umed.aar_reward(cfg, init)]
    recorder = probe.Recorder(umed.probe_spec(job, fns), probe.points(cfg.steps, cfg.probe_points),
                              job.folder / "probe.csv")
    info = ppo.train(init, job.folder / "train", rows, fns, umed.ppo_config(cfg, job.seed), progress=False,
                     callback=recorder)
    rec = measure.training_record(job, common.ppo_curve(info["log_history"]), cfg.min_kl, recorder.table(),
                                  info["log_history"])
    if not rec.get("moved", rec["trained"]):  # learned or not, a seed that moved is evaluated (claims.trained)
        return {"metrics": {}, **rec}, EMPTY
    flat, long = eval_rows(info["final_dir"], job, "instruct", test_rows(job, "instruct", e["test"], e["limit"]))
    return {"metrics": flat, **rec}, long


def _snapshot_callback(folder: Path, init: Path, steps: set[int]):
    """Saves the policy (weights + the start's processor files) at the given global steps: the checkpoints along
    one run that the accuracy-over-steps curve evaluates."""
    from transformers import TrainerCallback

    class Snapshots(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step in steps and model is not None:
                out = folder / f"step{state.global_step}"
                shutil.copytree(init, out, dirs_exist_ok=True)
                model.save_pretrained(out)

    return Snapshots()


def zhu_arm(job: common.Job):
    """One longer GRPO run (stage 04's Zhu knobs) on MCQ rows without extra["heldout_kind"], evaluated at evenly
    spaced steps on test rows of the trained kinds and of the held-out kind (variant "<step>:<part>")."""
    from repro.papers import zhu
    from repro.train import grpo

    cfg, e = job.cfg, job.extra
    init = start_dir(job, e["init"])
    ds = grpo.grpo_dataset(common.data_dir(job.stage), "train")
    ds = ds.select(spec_indices(ds, {"kind": "question_kind", "value": e["heldout_kind"], "part": "train"}))
    if cfg.train_rows and cfg.train_rows < len(ds):
        ds = ds.shuffle(seed=job.stage.seed).select(range(cfg.train_rows))
    from transformers import AutoProcessor

    steps = checkpoint_steps(e["steps"], e["checkpoints"])
    snaps = job.folder / "snapshots"
    recorder = probe.Recorder(zhu.probe_spec(job, e["variant"]), probe.points(e["steps"], cfg.probe_points),
                              job.folder / "probe.csv")
    callbacks = [_snapshot_callback(snaps, init, set(steps)), recorder.trl(AutoProcessor.from_pretrained(str(init)))]
    kw = zhu.grpo_kwargs(cfg, job.seed, e["steps"], callbacks=callbacks)
    info = grpo.train(init, job.folder / "train", ds, e["variant"], **kw)
    rec = measure.training_record(job, zhu.grpo_curve(info["log_history"]), cfg.min_kl, recorder.table(),
                                  info["log_history"])
    if not rec.get("moved", rec["trained"]):  # learned or not, a seed that moved is evaluated (claims.trained)
        return {"metrics": {}, **rec}, EMPTY
    flat, parts = {}, []
    for step in steps:
        model = info["final_dir"] if step == steps[-1] else snaps / f"step{step}"
        for part, spec in zhu_parts(e["heldout_kind"]).items():
            f, long = eval_rows(model, job, "mcq", test_rows(job, "mcq", spec, e["limit"]), f"{step}:{part}",
                                zhu.mcq_extra)
            flat.update(f)
            parts.append(long)
    return {"metrics": flat, **rec}, pd.concat(parts, ignore_index=True)


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """n evenly spaced steps ending at `steps` (unique, ascending): e.g. (8, 4) -> [2, 4, 6, 8]."""
    if steps < 1 or n < 1:
        raise ValueError(f"ood_zhu_steps and ood_zhu_checkpoints must be >= 1, got {steps} and {n}")
    k = min(n, steps)
    return sorted({max(1, round(steps * (i + 1) / k)) for i in range(k)})


def zhu_parts(heldout_kind: str) -> dict[str, dict]:
    """{part: test spec}: the question kinds GRPO trained on, and the one it never saw."""
    return {"trained kinds": {"kind": "question_kind", "value": heldout_kind, "part": "train"},
            "held-out kind": {"kind": "question_kind", "value": heldout_kind, "part": "test"}}


def dpo_arm(job: common.Job):
    """DPO or MMedPO (stage 04's MMedPO arm and knobs) from extra["init"], evaluated like 04 (VQA + report)."""
    import datasets

    from repro.papers import mmedpo
    from repro.train import dpo

    cfg = job.cfg
    pref = datasets.load_from_disk(str(common.data_dir(job.stage) / "preference"))["train"]
    weighted = job.method.startswith("MMedPO")
    kw = common.supported_kwargs(dpo.train, weighted=weighted, max_steps=cfg.steps, batch_size=cfg.batch_size,
                                 lr=cfg.lr, beta=cfg.beta, seed=job.seed, save_steps=max(cfg.steps, 1),
                                 equal_text_exposure=cfg.equal_text_exposure)
    info = dpo.train(start_dir(job, job.extra["init"]), job.folder / "train", pref, **kw)
    curve = mmedpo.dpo_curve(info["log_history"], cfg.beta)
    return measure.finish_arm(job, info["final_dir"], curve, cfg.min_kl, ["vqa", "report"], cfg.eval_limit)

"""Evaluation harness: batched generation (single turn and 5-turn Dr-LLaVA rollouts), then the metrics of
repro.metrics per task, overall and per source; plus the majority-class baselines the SFT acceptance tests use.

    preds = generate(model, processor, rows, max_new_tokens=16)          # one answer per row
    answers = generate_conversation(model, processor, conv_rows, 64)     # five answers per conversation
    out = evaluate(model, processor, paths.data_dir("smoke"), limit=20)  # {"metrics", "tables", "samples"}
    base = majority_baseline(paths.data_dir("smoke"))

Prompts: the row's first user message (a string in the data contract) becomes
[{"type": "image"}, {"type": "text", "text": ...}] and goes through processor.apply_chat_template(...,
add_generation_prompt=True), so the same code serves the tiny LLaVA and real LLaVA / Qwen2.5-VL checkpoints.
Generation is greedy by default (temperature 0.0 -> do_sample=False) with the KV cache and left padding, and only
the new tokens are decoded (special tokens skipped). Metric definitions: see the docstring of repro.metrics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from repro import metrics, turn_cache
from repro.chat import assistant_message, conversation_questions, encode, eval_mode, first_user_text, user_message
from repro.data import decision_tree as dt
from repro.train import shared_prefix

TASKS = ("vqa", "mcq", "instruct", "conv", "report")
# Upper bounds in new tokens, about twice the longest reference answer of each task with the tiny BPE tokenizer
# (cpu train split: vqa 3, mcq 37, instruct 33, conversation turn 16, report 34 tokens); MCQ keeps 96, the GRPO
# completion length ECR's cap needs (repro.train.grpo). A batch runs until its longest answer ends, so one answer
# that never ends costs the whole batch the budget: conv 64 -> 32 and report 128 -> 64 made those evaluations
# 18 % and 24 % faster with the same scores on 160-192 cpu test rows (benchmarks/bench_eval_batch.py --budgets).
MAX_NEW_TOKENS = {"vqa": 16, "mcq": 96, "instruct": 80, "conv": 32, "report": 64}
N_SAMPLES = 3


# ----------------------------------------------------------------------------------------------- generation
def _generate_batch(model, processor, conversations: list[list[dict]], images: list, max_new_tokens: int,
                    temperature: float, states: list[dict] | None = None, keep: bool = False
                    ) -> tuple[list[str], list[dict] | None]:
    """(answers of one batch, per-row cache states for the next turn or None). keep=True keeps the states where the
    model's inputs are LLaVA-style (repro.turn_cache), and `states` (the rows' previous turn) lets generate start
    after the part of the prompt they already hold."""
    prompts = [processor.apply_chat_template(c, add_generation_prompt=True) for c in conversations]
    tok = processor.tokenizer
    # left padding keeps every prompt's last token at the end, where generation starts
    enc = encode(model, processor, prompts, images, padding_side="left")
    sampling = temperature > 0
    kwargs = {"max_new_tokens": int(max_new_tokens), "do_sample": sampling, "use_cache": True,
              "pad_token_id": tok.pad_token_id}
    if sampling:
        # plain temperature sampling: the released Qwen2.5-VL generation_config carries top_k=1 / top_p=0.001,
        # which silently turned every "sample" into the greedy answer (found by the gpu dry run, repro.dryrun)
        kwargs.update(temperature=float(temperature), top_p=None, top_k=None)
    else:  # a checkpoint's generation_config may carry sampling defaults; neutralise them for greedy decoding
        kwargs.update(temperature=None, top_p=None, top_k=None)
    carry = keep and set(enc) <= {"input_ids", "attention_mask", "pixel_values"}  # LLaVA-style inputs only
    cache = None
    if carry:
        cache = turn_cache.reuse(states, enc["input_ids"], enc["attention_mask"],
                                 getattr(model.config, "image_token_id", None))
    with torch.inference_mode():
        if cache is not None:  # the image is in the cache: only the uncached text runs through the model
            out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                 past_key_values=cache, **kwargs, return_dict_in_generate=True)
        else:  # k samples of one item (pass@k) share one prompt pass (repro.train.shared_prefix)
            # each row leaves the batch when it ends (repro.train.decode), unless its cache is kept for the next turn
            out = shared_prefix.generate(model, model.generate, **enc, **kwargs, return_dict_in_generate=True,
                                         row_exit=not carry)
    new = out.sequences[:, enc["input_ids"].shape[1]:]
    answers = [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]
    return answers, (turn_cache.keep(out.past_key_values, out.sequences, enc["attention_mask"]) if carry else None)


def _batches(n: int, batch_size: int, desc: str, progress: bool):
    return tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False)


def generate(model, processor, rows: Sequence[dict], max_new_tokens: int, batch_size: int = 16,
             temperature: float = 0.0, progress: bool = True, desc: str = "generate") -> list[str]:
    """One answer per row to its first user message (with the row's image); greedy unless temperature > 0."""
    preds: list[str] = []
    with eval_mode(model):
        for i in _batches(len(rows), batch_size, desc, progress):
            chunk = [rows[j] for j in range(i, min(i + batch_size, len(rows)))]
            convs = [[user_message(first_user_text(r), with_image=True)] for r in chunk]
            preds += _generate_batch(model, processor, convs, [r["image"] for r in chunk], max_new_tokens,
                                     temperature)[0]
    return preds


def generate_conversation(model, processor, rows: Sequence[dict], max_new_tokens: int, batch_size: int = 16,
                          temperature: float = 0.0, progress: bool = True, reuse_cache: bool = True
                          ) -> list[list[str]]:
    """Multi-turn rollout (docs/methods.md §1(a) 6): turn t's prompt is the image, questions 1..t and the model's
    *own* answers 1..t-1. A batch of conversations runs through all its turns before the next batch starts, so
    with reuse_cache each turn continues from the previous turn's KV cache (repro.turn_cache) instead of re-reading
    the image and the history. Returns the answers per row."""
    questions = [conversation_questions(r) for r in rows]
    answers: list[list[str]] = [[] for _ in rows]
    with eval_mode(model):
        for i in _batches(len(rows), batch_size, "conversations", progress):
            idx = list(range(i, min(len(rows), i + batch_size)))
            states: dict[int, dict] = {}
            for t in range(max(len(questions[k]) for k in idx)):
                live = [k for k in idx if t < len(questions[k])]
                convs = []
                for k in live:
                    msgs = []
                    for s in range(t + 1):
                        msgs.append(user_message(questions[k][s], with_image=s == 0))
                        if s < t:
                            msgs.append(assistant_message(answers[k][s]))
                    convs.append(msgs)
                prev = [states[k] for k in live] if reuse_cache and states else None
                outs, kept = _generate_batch(model, processor, convs, [rows[k]["image"] for k in live],
                                             max_new_tokens, temperature, prev, keep=reuse_cache)
                states = dict(zip(live, kept, strict=True)) if kept else {}
                for k, a in zip(live, outs, strict=True):
                    answers[k].append(a)
    return answers


# ----------------------------------------------------------------------------------------------- evaluate
def load_rows(data_dir, task: str, split: str, limit: int | None = None) -> list[dict]:
    """Rows of a task split; with `limit`, a subset spread over sources and classes (stratified_indices)."""
    from repro.data.build import load_task

    ds = load_task(data_dir, task)[split]
    if limit is not None and limit < len(ds):
        strata = [f"{s}/{c}" for s, c in zip(ds["source"], ds["category"])]
        ds = ds.select(stratified_indices(ds["id"], strata, int(limit)))
    return list(ds)


def stratified_indices(ids: Sequence[str], strata: Sequence[str], limit: int) -> list[int]:
    """About `limit` row indices spread evenly over strata (source/category), image by image.

    Rows are grouped by image id (all conversation variants of one image stay together) and images are taken
    round-robin across strata in a fixed order, so a small eval budget still covers every source and class and
    the per-source tables stay meaningful. Deterministic; the result keeps the data set's order.
    """
    by_source: dict[str, list[str]] = {}
    rows_of: dict[str, list[int]] = {}
    for i, (rid, src) in enumerate(zip(ids, strata)):
        if rid not in rows_of:
            by_source.setdefault(src, []).append(rid)
            rows_of[rid] = []
        rows_of[rid].append(i)
    chosen: list[int] = []
    queues = [list(v) for _, v in sorted(by_source.items())]
    while len(chosen) < limit and any(queues):
        for q in queues:
            if q and len(chosen) < limit:
                chosen += rows_of[q.pop(0)]
    return sorted(chosen)


def _samples(task: str, rows: list[dict], preds: list, k: int = N_SAMPLES) -> list[dict]:
    out = []
    for r, p in list(zip(rows, preds))[:k]:
        if task == "conv":
            out.append({"prompt": conversation_questions(r), "prediction": list(p), "truth": list(r["answers"]),
                        "source": r.get("source"), "variant": r.get("variant")})
        else:
            out.append({"prompt": first_user_text(r), "prediction": p, "truth": r["messages"][-1]["content"],
                        "source": r.get("source")})
    return out


def score(task: str, preds: list, rows: list[dict]) -> tuple[dict, dict]:
    """(metrics, tables) of one task from its predictions; tables hold the per-row scores and the breakdowns."""
    rows_df = metrics.SCORERS[task](preds, rows)
    task_metrics, breakdown = metrics.SUMMARIZERS[task](rows_df)
    tables = {f"{task}_rows": rows_df}
    if isinstance(breakdown, dict):
        tables.update({f"{task}_{name}": t for name, t in breakdown.items()})
    else:
        tables[f"{task}_by_source"] = breakdown
    return task_metrics, tables


def evaluate(model, processor, data_dir, split: str = "test", tasks: Sequence[str] = TASKS, limit: int | None = None,
             max_new_tokens: int | dict | None = None, batch_size: int = 16, progress: bool = True,
             variants: Sequence[str] | None = None) -> dict:
    """Generate on `split` of every task and score it. Deterministic (greedy decoding).

    max_new_tokens: an int for every task or {task: int} overriding MAX_NEW_TOKENS. `limit` keeps the first rows of
    each task (conv rows come grouped by image, all variants of one image together). variants: keep only these
    conversation variants (question orders / hints) of the images `limit` chose; None = all.
    Returns {"metrics": {task: {...}}, "tables": {name: DataFrame}, "samples": {task: [{prompt, prediction,
    truth, source}]}}.
    """
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; expected a subset of {TASKS}")
    budget = dict(MAX_NEW_TOKENS)
    if isinstance(max_new_tokens, dict):
        budget.update(max_new_tokens)
    elif max_new_tokens is not None:
        budget = dict.fromkeys(TASKS, int(max_new_tokens))
    out: dict = {"metrics": {}, "tables": {}, "samples": {}}
    for task in tasks:
        rows = load_rows(data_dir, task, split, limit)
        if task == "conv" and variants is not None:
            rows = [r for r in rows if r.get("variant", "standard") in variants]
            if not rows:
                raise ValueError(f"evaluate: no {split} conversation of variant(s) {list(variants)} in {data_dir}")
        if task == "conv":
            preds = generate_conversation(model, processor, rows, budget[task], batch_size, progress=progress)
        else:
            preds = generate(model, processor, rows, budget[task], batch_size, progress=progress, desc=task)
        out["metrics"][task], tables = score(task, preds, rows)
        out["tables"].update(tables)
        out["samples"][task] = _samples(task, rows, preds)
    return out


# Per-row score columns of each task's scorer -> metric names of the long per-row frame (row_scores).
ROW_METRICS = {
    "vqa": {"closed": "closed_correct", "open": "open_recall"},
    "mcq": {"correct": "accuracy"},
    # iou / category_correct (NaN on normal images): stage 05 recomputes accuracy at other IoU thresholds per row
    "instruct": {"mau_correct": "mau_correct", "detection_correct": "detection_correct",
                 "category_correct": "category_correct", "iou": "iou",
                 "called_normal": "called_normal"},  # the answer says "no abnormality" (any image)
    "conv": {"conversation_correct": "conversation_correct", "diagnosis_correct": "diagnosis_correct",
             "consistent": "path_consistency", "question_acc": "question_acc"},
    "report": {"rouge_l": "rouge_l"},
}


def row_scores(task: str, rows_df: pd.DataFrame) -> pd.DataFrame:
    """One task's per-row table (score(...)[1][f"{task}_rows"]) in long form, the unit of paired tests:
    DataFrame[task, source, variant, item, cluster, metric, score] in row order.

    item: "<task>:<image id>:<n>" (n counts the rows of that image in order: VQA asks several questions per image,
    Dr-LLaVA one conversation per variant), identical across models evaluated on the same rows; cluster: the image
    id (rows of one image are not independent). VQA rows give closed_correct (closed questions) or open_recall
    (open ones)."""
    if task not in ROW_METRICS:
        raise ValueError(f"no per-row metrics for task {task!r}; expected one of {sorted(ROW_METRICS)}")
    df = rows_df.reset_index(drop=True)
    ids = df["id"].astype(str)
    base = pd.DataFrame({"task": task, "source": df["source"].astype(str),
                         "variant": df["variant"].astype(str) if "variant" in df else "",
                         "item": task + ":" + ids + ":" + df.groupby(ids).cumcount().astype(str), "cluster": ids})
    parts = []
    if task == "vqa":
        for kind, metric in ROW_METRICS["vqa"].items():
            keep = df["answer_type"] == kind
            parts.append(base[keep].assign(metric=metric, score=df.loc[keep, "score"].astype(float)))
    else:
        for col, metric in ROW_METRICS[task].items():
            parts.append(base.assign(metric=metric, score=pd.to_numeric(df[col], errors="coerce").astype(float)))
    out = pd.concat(parts).sort_index(kind="stable").reset_index(drop=True)
    return out[["task", "source", "variant", "item", "cluster", "metric", "score"]]


# ----------------------------------------------------------------------------------------------- baselines
def _train_test(data_dir, task: str) -> tuple[list[dict], list[dict]]:
    from repro.data.build import load_task

    dd = load_task(data_dir, task)
    # Baselines never look at pixels; dropping the image column keeps this fast.
    return [dd[s].remove_columns("image").to_list() for s in ("train", "test")]


def _most_common(values) -> str:
    counts = Counter(values)
    # Ties broken by the value itself so the baseline does not depend on row order.
    return min(counts, key=lambda v: (-counts[v], str(v)))


def majority_baseline(data_dir) -> dict:
    """Constant predictions chosen on the TRAIN split, scored on TEST with the same metric code as the models.

    vqa       closed: the most common train closed answer; open: the most common train open answer
    mcq       the most common train letter
    instruct  always "Detection: no abnormality." (MAU-style accuracy = share of normal test images)
    conv      the five labels of the most common train diagnosis path, for every conversation and variant
    """
    out = {}
    train, test = _train_test(data_dir, "vqa")
    closed = _most_common(r["answer"] for r in train if r["answer_type"] == "closed")
    open_ = _most_common(r["answer"] for r in train if r["answer_type"] == "open")
    preds = [closed if r["answer_type"] == "closed" else open_ for r in test]
    out["vqa"] = {**metrics.summarize_vqa(metrics.score_vqa(preds, test))[0], "closed_answer": closed,
                  "open_answer": open_}

    train, test = _train_test(data_dir, "mcq")
    letter = _most_common(r["answer"] for r in train)
    out["mcq"] = {**metrics.summarize_mcq(metrics.score_mcq([f"<answer>{letter}</answer>"] * len(test), test))[0],
                  "letter": letter}

    _, test = _train_test(data_dir, "instruct")
    normal = "Detection: no abnormality. Localization: none. Recognition: normal."
    # The images are dropped above, so give the scorer the size it needs for boxes (irrelevant for "normal").
    test = [{**r, "width": 100, "height": 100} for r in test]
    out["instruct"] = {**metrics.summarize_instruct(metrics.score_instruct([normal] * len(test), test))[0],
                       "prediction": normal}

    train, test = _train_test(data_dir, "conv")
    diagnosis = _most_common(r["diagnosis"] for r in train)
    path = dt.PATHS[diagnosis]
    rows = []
    for r in test:
        labels = [path[c - 1] for c in r["turn_categories"]]
        rows.append({"source": r.get("source"), "variant": r.get("variant"),
                     **metrics.conv_item(labels, r["turn_categories"], r["turn_labels"])})
    df = pd.DataFrame(rows, columns=["source", "variant", "question_acc", "conversation_correct", "diagnosis_correct",
                                     "consistent", "parse_rate"])
    out["conv"] = {**metrics.summarize_conv(df)[0], "diagnosis": diagnosis}
    return out

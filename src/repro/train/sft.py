"""Supervised fine-tuning of a VLM on the SynthMed task mixture with TRL's SFTTrainer.

Two starting points for the later RL stages (Zhu et al.'s initialization study):
    base  the freshly built VLM briefly trained on *captioning-like* tasks only (findings reports + VQA): it sees
          images and medical words but never the MCQ <think>/<answer> format, the detect->localize->recognize
          instructions or the clinician conversations, as a base (non-instruct) checkpoint would;
    sft   `base` trained further on the whole task mixture (vqa, mcq, instruct, conv, report).
Loss is on assistant tokens only (assistant_only_loss with the {% generation %} chat template). Checkpoints are
safetensors under <out_dir>/checkpoints and a rerun resumes from the last one; the final model (+ processor)
goes to <out_dir>/final, loadable with repro.models.load_vlm.
"""

from __future__ import annotations

from repro.data import build, decision_tree
from repro.train import runs

TASKS = build.TASKS  # every task: the tokenizer corpus and the default mixture
BASE_TASKS = ("report", "vqa")


def corpus(data_dir) -> list[str]:
    """Every text of every task and split, plus the decision-tree banks: the tokenizer's training corpus.

    Test wordings are included on purpose: the tokenizer only learns how to split words, not answers, and a
    word never seen by the BPE trainer would fall back to bytes and make test prompts artificially long.
    """
    texts = list(decision_tree.corpus_texts())
    for task in TASKS:
        for ds in build.load_task(data_dir, task).values():
            for msgs in ds["messages"]:
                texts += [m["content"] for m in msgs]
    return texts


def to_sft_row(row: dict) -> dict:
    """Task row -> TRL's vision SFT format: the image as a block of the first user message."""
    msgs, seen_user = [], False
    for m in row["messages"]:
        blocks = [{"type": "text", "text": m["content"]}]
        if m["role"] == "user" and not seen_user:
            blocks = [{"type": "image"}] + blocks
            seen_user = True
        msgs.append({"role": m["role"], "content": blocks})
    return {"images": [row["image"]], "messages": msgs}


def sft_dataset(data_dir, tasks=TASKS, split: str = "train", max_rows_per_task: int | None = None, seed: int = 0,
                batch_size: int | None = None, steps: int | None = None, row_filter=None,
                task_rows: dict | None = None):
    """The mixture of `tasks` (at most `max_rows_per_task` rows each) as a datasets.Dataset.

    A task listed k times gets k parts (k times its share of the batches); with max_rows_per_task each part draws its
    own rows (shuffle seeded by the occurrence), so the repeats are different rows while there are enough.
    Without batch_size: shuffled rows. With batch_size (and steps): rows arranged in *task-homogeneous* batches
    in random order, epoch after epoch (a new shuffle each epoch) until steps * batch_size rows; train() then
    reads them sequentially. Why: a conversation row is ~4x longer than a VQA row, and mixed batches pad every
    row to the longest, which made half of the compute padding on CPU.
    row_filter: (task, split dataset) -> the row indices to keep, applied before anything else (stage 06's
    held-out-free base drops the held-out images' rows); None keeps every row, as in stage 02.
    task_rows: {task: at most this many rows} for the tasks it names, in place of max_rows_per_task (stage 02's
    sft_capped_tasks / sft_capped_rows: SFT sees only part of an RL task's rows; tried for RL headroom and rejected,
    docs/decisions.md, so off in every profile). A smaller part also gets fewer batches per epoch.
    """
    import numpy as np
    from datasets import concatenate_datasets

    parts = []
    for i, (task, cap) in enumerate(zip(tasks, _caps(tasks, max_rows_per_task, task_rows))):
        ds = build.load_task(data_dir, task)[split]
        if row_filter is not None:
            ds = ds.select(row_filter(task, ds))
        if cap and len(ds) > cap:
            occurrence = list(tasks[:i]).count(task)
            ds = ds.shuffle(seed=seed + occurrence).select(range(cap))
        parts.append(ds.map(to_sft_row, remove_columns=ds.column_names))
    mix = concatenate_datasets(parts)
    if not batch_size:
        return mix.shuffle(seed=seed)
    offsets = np.cumsum([0] + [len(p) for p in parts])
    need = (steps or 1) * batch_size
    order: list[int] = []
    epoch = 0
    while len(order) < need:
        rng = np.random.default_rng([seed, epoch])
        chunks = []
        for t, p in enumerate(parts):
            idx = offsets[t] + rng.permutation(len(p))
            chunks += [idx[i:i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]
        for j in rng.permutation(len(chunks)):
            order += chunks[j].tolist()
        epoch += 1
    return mix.select(order[:need])


def _caps(tasks, max_rows_per_task: int | None, task_rows: dict | None) -> list[int | None]:
    """The most rows each part of the mixture draws: task_rows[task] where named there, else max_rows_per_task
    (None: all). task_rows is checked once here: every task it names is in the mixture, every value is >= 1."""
    task_rows = task_rows or {}
    unknown = sorted(set(task_rows) - set(tasks))
    if unknown:
        raise ValueError(f"task_rows names {unknown}, which are not in the mixture's tasks {sorted(set(tasks))}")
    for task, n in task_rows.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"task_rows[{task!r}] = {n!r}: expected a positive number of rows")
    return [task_rows.get(t, max_rows_per_task) for t in tasks]


def mixture_rows(data_dir, tasks=TASKS, split: str = "train", max_rows_per_task: int | None = None,
                 task_rows: dict | None = None) -> int:
    """Rows in one epoch of the mixture sft_dataset draws from (a task listed twice counts twice), without building
    it."""
    caps = _caps(tasks, max_rows_per_task, task_rows)
    sizes = [len(build.load_task(data_dir, t)[split]) for t in tasks]
    return sum(min(n, cap) if cap else n for n, cap in zip(sizes, caps))


def train(init_dir, out_dir, dataset, *, max_steps: int, batch_size: int = 8, lr: float = 1e-3, seed: int = 0,
          warmup_ratio: float = 0.05, weight_decay: float = 0.0, save_steps: int = 200, logging_steps: int = 10,
          lora: dict | None = None, use_cpu: bool | None = None, bf16: bool = False, run_key: dict | None = None,
          sequential: bool = False, freeze_vision: bool = False, callbacks: list | None = None,
          dtype: str = "fp32") -> dict:
    """Fine-tune the model at `init_dir` on `dataset`; returns {"final_dir", "log_history", "seconds", ...}.

    A finished run with the same key is returned as saved (runs.prepare). Otherwise resumes, from the checkpoint's
    weights (runs.restore_weights, the resume path of grpo and dpo too), the newest checkpoint under
    <out_dir>/checkpoints, but only when `run_key` (the params that
    define the run) equals the one recorded there: a checkpoint of other params is deleted, not resumed.
    On CPU: fp32, no activation checkpointing (TRL defaults to bf16 + checkpointing, both wrong for a tiny CPU
    model), max_length=None so image tokens are
    never cut.
    """
    if max_steps == 0:  # e.g. a real instruct checkpoint is its own "base": nothing to train
        return {"final_dir": _link_final(init_dir, out_dir), "log_history": [], "seconds": 0.0, "steps": 0,
                "resumed_from": None, "examples": 0}
    from trl import SFTConfig, SFTTrainer

    from repro.chat import train_stop_token
    from repro.models import load_vlm, vision_tower

    key = {"run_key": run_key, "init": str(init_dir), "max_steps": max_steps, "batch_size": batch_size,
           "lr": lr, "seed": seed, "n_rows": len(dataset),
           "freeze_vision": freeze_vision}
    done, ckpt_dir, resume, use_cpu = runs.start(out_dir, key, use_cpu, dataset=dataset)
    if done:
        return done
    # from init even when resuming: runs.train_and_save copies the checkpoint's weights in (runs.restore_weights)
    model, processor = load_vlm(init_dir, device="cpu" if use_cpu else None,
                                lora=lora, dtype="bf16" if bf16 else dtype)  # dtype "fp64": tools/sft_divergence.py
    train_stop_token(processor)  # LLaVA-1.5's released template leaves </s> out of the loss (repro.chat)
    if freeze_vision:  # a pretrained tower keeps its features, and the backward pass skips it (~1/4 of a step)
        for p in vision_tower(model).parameters():
            p.requires_grad_(False)
    args = SFTConfig(
        output_dir=str(ckpt_dir), max_steps=max_steps, per_device_train_batch_size=batch_size, learning_rate=lr,
        lr_scheduler_type="cosine", warmup_steps=max(1, int(warmup_ratio * max_steps)), weight_decay=weight_decay,
        # a run shorter than logging_steps would log no loss at all
        logging_steps=max(1, min(logging_steps, max_steps)), save_strategy="steps", save_steps=save_steps,
        save_total_limit=1,
        seed=seed, data_seed=seed, report_to=[], use_cpu=use_cpu, bf16=bf16, activation_checkpointing=False,
        max_length=None, assistant_only_loss=True, dataloader_num_workers=0, disable_tqdm=False,
        # sft_dataset(batch_size=...) already arranged the rows in task-homogeneous batches: keep that order.
        train_sampling_strategy="sequential" if sequential else "random",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                         callbacks=callbacks)
    return runs.train_and_save(trainer, processor, out_dir, resume=resume, lora=lora, max_steps=max_steps,
                               examples=max_steps * batch_size)


def _link_final(init_dir, out_dir) -> str:
    """<out_dir>/final as a symlink to a local `init_dir` (no copy of a multi-GB checkpoint), so later stages find
    every stage-02 model at models/<name>/final (found by the gpu dry run: with base_steps 0, stage 04 looked for
    models/base/final and stopped). A hub id has no folder to link: it is returned as given."""
    import shutil
    from pathlib import Path

    src = Path(init_dir)
    if not src.is_dir():
        return str(init_dir)
    final = Path(out_dir) / "final"
    if final.is_symlink():
        final.unlink()
    elif final.exists():
        shutil.rmtree(Path(out_dir))  # a trained run of other params: it is no longer this stage's output
    final.parent.mkdir(parents=True, exist_ok=True)
    final.symlink_to(src.resolve(), target_is_directory=True)
    return str(final)


def loss_curve(history: list[dict]):
    """(step, loss) DataFrame from a trainer log history."""
    import pandas as pd

    # the columns exist even for a run that logged nothing (base_steps 0 in the gpu profile: nothing trained)
    return pd.DataFrame([{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
                        columns=["step", "loss"])


def loss_at(curve, index: int) -> float | None:
    """curve["loss"] at position `index` (0 first, -1 last), None for a run without logged losses."""
    return float(curve["loss"].iloc[index]) if len(curve) else None

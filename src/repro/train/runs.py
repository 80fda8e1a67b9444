"""One run directory per training run, guarded by a run key (shared by sft, grpo, dpo and ppo).

    done = runs.prepare(out_dir, key)      # None: train (resuming from <out_dir>/checkpoints if any)
    if done: return done                   # the finished run with this key: its saved info, nothing retrained
    ...
    runs.finish(out_dir, info)             # after <out_dir>/final is written

A resumed run (an interrupted one: checkpoints but no train_info.json) continues from the checkpoint's weights,
copied into the trainer's policy by restore_weights (train_and_save calls it), with the optimizer, scheduler and RNG
state Trainer restores itself.

The key also holds `fingerprint(init)` and, for on-disk datasets, `fingerprint(dataset)`: the run's params alone
are not enough, because the starting model and the data are rewritten in place by earlier stages (found in stage
04: after 02 retrained the SFT model at the same path, the RL runs of the old SFT model were returned as finished).

Why a finished run is returned rather than resumed: resuming a trainer whose last checkpoint already reached
max_steps skips training *and* the reload of the checkpoint's weights, so the "final" model saved afterwards was the
initial one (found in stage 04: DPO/MMedPO rows identical to SFT on a rerun with unchanged params).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

KEY_FILE, INFO_FILE = "run_key.json", "train_info.json"
# the files whose content a run depends on (not the logs and timing JSON saved beside them)
_WEIGHTS_AND_DATA = {".safetensors", ".bin", ".pt", ".arrow", ".parquet"}


def fingerprint(source) -> list | str:
    """What identifies a model or data source: for a local file or directory, the (relative path, size, content hash
    or mtime) of its weight and data files; for a datasets.Dataset, the same for its on-disk arrow files; for
    anything else (a hub id, an in-memory dataset), its text / []."""
    files = []
    if hasattr(source, "cache_files"):
        files = [Path(f["filename"]) for f in source.cache_files]
        base = None
    elif isinstance(source, (str, Path)) and Path(source).exists():
        base = Path(source)
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.suffix in _WEIGHTS_AND_DATA)
    else:
        return [] if hasattr(source, "column_names") else str(source)
    out = []
    for f in files:
        st = f.stat()
        # content hash up to 256 MB (tiny models, data: a deterministic rewrite keeps the key, so an interrupted
        # stage still resumes); size + mtime above (real checkpoints: hashing GBs would cost more than it saves)
        ident = hashlib.sha256(f.read_bytes()).hexdigest()[:16] if st.st_size <= 256 << 20 else st.st_mtime_ns
        out.append([str(f.relative_to(base)) if base and base.is_dir() else str(f), st.st_size, ident])
    return out


def prepare(out_dir, key: str | dict, data=None) -> dict | None:
    """Delete `out_dir` if it holds a run of another key (never resume someone else's checkpoints); return the saved
    info of a finished run of this key, else None (after writing the key). A dict key is serialised canonically,
    with the fingerprints of its "init" model and of `data` (a dataset) added."""
    if isinstance(key, dict):
        if "init" in key:
            key = {**key, "init_files": fingerprint(key["init"])}
        if data is not None:
            key = {**key, "data_files": fingerprint(data)}
        key = json.dumps(key, sort_keys=True, default=str)
    out_dir = Path(out_dir)
    rank, world = rank_world()
    if world > 1:  # accelerate launch: only the main process touches the directory; the others read its verdict
        if rank == 0:
            _prepare_dir(out_dir, key)
        barrier()
        return _finished(out_dir)
    return _prepare_dir(out_dir, key)


def _finished(out_dir: Path) -> dict | None:
    """The saved info of a finished run in `out_dir` (marked cached), else None."""
    info_file = out_dir / INFO_FILE
    if info_file.exists() and (out_dir / "final").exists():
        info = json.loads(info_file.read_text())
        info["cached"] = True
        return info
    return None


def _prepare_dir(out_dir: Path, key: str) -> dict | None:
    key_file = out_dir / KEY_FILE
    if out_dir.exists() and (not key_file.exists() or key_file.read_text() != key):
        shutil.rmtree(out_dir)
    if (info := _finished(out_dir)) is not None:
        return info
    out_dir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key)
    return None


def start(out_dir, key: dict, use_cpu: bool | None, dataset=None):
    """The common opening of the TRL wrappers (sft, grpo, dpo): prepare the run directory under `key` and `dataset`.
    Returns (finished info or None, checkpoint dir, checkpoint to resume or None, use_cpu
    resolved: CPU when no GPU).
    """
    import torch

    done = prepare(out_dir, key, data=dataset)
    ckpt_dir = Path(out_dir) / "checkpoints"
    if use_cpu is None:
        use_cpu = not torch.cuda.is_available()
    return done, ckpt_dir, (None if done else last_checkpoint(ckpt_dir)), use_cpu


def finish(out_dir, info: dict) -> None:
    """Record a finished run (written last: an interrupted run has no info file and resumes instead)."""
    (Path(out_dir) / INFO_FILE).write_text(json.dumps(info, indent=1, default=str))


def last_checkpoint(ckpt_dir) -> str | None:
    """The newest <ckpt_dir>/checkpoint-<step>, or None."""
    cks = sorted(Path(ckpt_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(cks[-1]) if cks else None


def restore_weights(model, resume: str | None, lora) -> bool:
    """Copy the weights of the checkpoint being resumed into `model` (the trainer's policy, built from the init model);
    True when it did. The one resume path of sft, grpo and dpo (train_and_save calls it before trainer.train).

    Why: with transformers 5.23, Trainer's own resume (`_load_from_checkpoint`) loads *nothing* into a LLaVA model:
    save_pretrained writes the legacy key names ("language_model.model.layers...") and the raw state-dict load
    expects the new ones ("model.language_model.layers..."), so every key is "missing" and a resumed run silently
    restarted from the initial weights with the checkpoint's optimizer state (docs/design.md §0). from_pretrained
    converts the names, so the checkpoint is loaded that way and copied in with a strict load_state_dict.
    Why after the trainer is built and not by building it from the checkpoint: GRPOTrainer and DPOTrainer copy their
    frozen reference model (KL / DPO reference) from the model they are given, and the reference must stay the init
    model, as in an uninterrupted run. LoRA checkpoints hold adapters only; Trainer's PEFT resume path loads those.
    """
    if not resume or lora is not None or not (Path(resume) / "config.json").exists():
        return False
    import torch

    dtype = next(model.parameters()).dtype
    saved = type(model).from_pretrained(resume, dtype=dtype)
    with torch.no_grad():
        model.load_state_dict(saved.state_dict(), strict=True)
    return True


def train_and_save(trainer, processor, out_dir, *, resume: str | None, lora, max_steps: int, **extra) -> dict:
    """Run a HF/TRL trainer (resuming from `resume`), save <out_dir>/final (LoRA merged, so later stages load one
    plain checkpoint) with the processor, record the run; returns its info (+ `extra`)."""
    import time

    restored = restore_weights(trainer.model, resume, lora)
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume)  # optimizer, scheduler, RNG and step counter (not the weights)
    seconds = time.time() - t0
    final = Path(out_dir) / "final"
    rank, world = rank_world()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
    if lora is not None:
        trainer.model = trainer.model.merge_and_unload()
    info = {"final_dir": str(final), "log_history": trainer.state.log_history, "seconds": round(seconds, 1),
            "steps": max_steps, "resumed_from": resume, "weights_restored": restored, **extra}
    if world > 1:
        # every rank calls save_model (it gathers ZeRO-3 / FSDP shards); only the main process writes
        trainer.save_model(str(final))
        if rank == 0:
            (final / "training_args.bin").unlink(missing_ok=True)  # not a weight file of the model
            processor.save_pretrained(final)
            finish(out_dir, info)
        barrier()
        return info
    trainer.model.save_pretrained(final)
    processor.save_pretrained(final)
    finish(out_dir, info)
    return info


def rank_world() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group (under accelerate launch, once
    repro.train.launch has created accelerate's state), else (0, 1): the single-process path is unchanged."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()

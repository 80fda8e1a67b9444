"""SFT and eval-generation throughput of our code against bare PyTorch / bare `generate`, in one run.

Run as: .venv/bin/python benchmarks/bench_sft_eval.py [--size cpu] [--steps 30]

Same model, same batches, same machine, measured back to back, so the ratios are meaningful even on a noisy
machine (absolute numbers are not). Targets (issue #3): SFT >= 0.7x the bare loop, generation >= 0.8x bare
generate. Also prints the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="cpu", choices=["smoke", "cpu"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()

    from datasets import disable_progress_bars
    from trl import SFTConfig, SFTTrainer

    from repro import chat
    from repro import evaluation as ev
    from repro.data import build, conversations
    from repro.models import build_tiny_vlm, load_vlm
    from repro.train import sft

    disable_progress_bars()
    tmp = Path(tempfile.mkdtemp(prefix="bench_sft_"))
    data = tmp / "data"
    build.build(data, seed=0, n_per_class=10, n_normal=10, image_size=64, difficulty=0.5, yes_share=0.5,
                split_fractions=[0.7, 0.15, 0.15], conv_train_variants=["standard"],
                conv_eval_variants=list(conversations.VARIANTS), heldout_categories=[])
    init = build_tiny_vlm(tmp / "init", sft.corpus(data), size=args.size, vocab_size=2048)
    ds = sft.sft_dataset(data, ("instruct",), batch_size=args.batch, steps=args.steps + 2, seed=0)

    # --- ours: sft.train (TRL SFTTrainer, its collator, our config) ------------------------------------------
    info = sft.train(init, tmp / "ours", ds, max_steps=args.steps + 2, batch_size=args.batch, lr=1e-3,
                     save_steps=10_000, logging_steps=1000, sequential=True)
    ours_s = info["seconds"]

    # --- bare: the same rows collated by the same collator once, then a plain AdamW loop ---------------------
    model, processor = load_vlm(init, device="cpu")
    cfg = SFTConfig(output_dir=str(tmp / "bare_cfg"), use_cpu=True, bf16=False, activation_checkpointing=False,
                    max_length=None, assistant_only_loss=True, report_to=[], per_device_train_batch_size=args.batch)
    collate = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=processor).data_collator
    batches = [collate([ds[i] for i in range(s * args.batch, (s + 1) * args.batch)]) for s in range(args.steps + 2)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    t0 = time.time()
    for b in batches:
        loss = model(**{k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "pixel_values",
                                                              "labels")}).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    bare_s = time.time() - t0

    # --- generation: ev.generate vs bare model.generate on identical inputs -----------------------------------
    rows = ev.load_rows(data, "instruct", "test", 32)
    model.eval()
    t0 = time.time()
    preds = ev.generate(model, processor, rows, 40, batch_size=16, progress=False)
    ours_g = time.time() - t0
    texts = [processor.apply_chat_template([chat.user_message(chat.first_user_text(r), True)],
                                           add_generation_prompt=True, tokenize=False) for r in rows]
    processor.tokenizer.padding_side = "left"
    new_tokens, t0 = 0, time.time()
    with torch.no_grad():
        for i in range(0, len(rows), 16):
            enc = processor(images=[r["image"] for r in rows[i:i + 16]], text=texts[i:i + 16], return_tensors="pt",
                            padding=True)
            out = model.generate(**enc, max_new_tokens=40, do_sample=False)
            new_tokens += int((out[:, enc["input_ids"].shape[1]:] != processor.tokenizer.pad_token_id).sum())
    bare_g = time.time() - t0
    ours_tokens = sum(len(processor.tokenizer(p)["input_ids"]) for p in preds)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model: tiny LLaVA ({args.size}), batch {args.batch}, {args.steps + 2} steps, {tokens} training tokens")
    print(f"{'what':<34}{'ours':>12}{'bare':>12}{'ratio':>8}")
    print(f"{'SFT tokens/s (incl. collation)':<34}{tokens / ours_s:>12.0f}{tokens / bare_s:>12.0f}"
          f"{bare_s / ours_s:>8.2f}")
    print(f"{'generation tokens/s':<34}{ours_tokens / ours_g:>12.0f}{new_tokens / bare_g:>12.0f}"
          f"{(ours_tokens / ours_g) / (new_tokens / bare_g):>8.2f}")
    print(f"peak RSS: {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()

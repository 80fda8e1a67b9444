"""PPO rollout generation throughput against bare `model.generate`, in one run; plus a PPO step's time split.

Run as: .venv/bin/python benchmarks/bench_ppo.py [--size cpu] [--prompts 8] [--k 4] [--tokens 32]

Same model, same prompts, same sampling settings (temperature 1, full distribution), measured back to back, so the
ratios are meaningful on a noisy machine (absolute numbers are not). "ours" is repro.train.rollouts: per-row
prompt encoding, k copies, left-padded batched generate with the KV cache, EOS cutting and decoding. "bare" is one
processor call on the k-times repeated batch and one model.generate. The multi-turn row compares the PPO
conversation rollout (token ids carried between turns) with evaluation.generate_conversation (re-rendered text each
turn) at the same temperature, timed as seconds (ratio = eval / ours): eval keeps only decoded text, so its token
count is not comparable. Tokens = generated answer tokens up to and including EOS.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _answer_tokens(new: torch.Tensor, eos: int) -> int:
    n = 0
    for row in new.tolist():
        n += row.index(eos) + 1 if eos in row else len(row)
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="cpu", choices=["smoke", "cpu"])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()

    from datasets import disable_progress_bars

    from repro import evaluation as ev
    from repro.data import build, conversations
    from repro.models import build_tiny_vlm, load_vlm
    from repro.rewards import localization, rules
    from repro.train import ppo, rollouts, sft

    disable_progress_bars()
    tmp = Path(tempfile.mkdtemp(prefix="bench_ppo_"))
    data = tmp / "data"
    build.build(data, seed=0, n_per_class=5, n_normal=5, image_size=64, difficulty=0.5, yes_share=0.5,
                split_fractions=[0.6, 0.2, 0.2], conv_train_variants=["standard"],
                conv_eval_variants=list(conversations.VARIANTS), heldout_categories=[])
    init = build_tiny_vlm(tmp / "init", sft.corpus(data), size=args.size, vocab_size=2048)
    model, processor = load_vlm(init, device="cpu")
    model.eval()
    tok = processor.tokenizer
    rows = list(build.load_task(data, "instruct")["train"].select(range(args.prompts)))
    conv = list(build.load_task(data, "conv")["train"].select(range(max(1, args.prompts // 4))))
    cfg = ppo.PPOConfig(k=args.k, max_new_tokens=args.tokens, temperature=1.0, gen_batch_size=10_000)

    # --- single turn: rollouts.rollout_single vs one processor call + model.generate -------------------------------
    rollouts.rollout_single(model, processor, rows[:1], cfg)  # warm-up (first-call allocations)
    torch.manual_seed(0)
    t0 = time.time()
    samples = rollouts.rollout_single(model, processor, rows, cfg)
    ours_s = time.time() - t0
    ours_tok = sum(len(a) for s in samples for a in s.answer_ids)

    texts = [processor.apply_chat_template(rollouts.prompt_messages(r), add_generation_prompt=True) for r in rows]
    texts = [t for t in texts for _ in range(args.k)]
    images = [[r["image"].convert("RGB")] for r in rows for _ in range(args.k)]
    torch.manual_seed(0)
    t0 = time.time()
    tok.padding_side = "left"
    enc = processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=args.tokens, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             use_cache=True, pad_token_id=tok.pad_token_id)
    bare_s = time.time() - t0
    bare_tok = _answer_tokens(out[:, enc["input_ids"].shape[1]:], tok.eos_token_id)

    # --- multi turn: rollouts.rollout_conversation vs evaluation.generate_conversation -------------------------
    mcfg = ppo.PPOConfig(k=1, max_new_tokens=args.tokens, temperature=1.0, gen_batch_size=10_000)
    torch.manual_seed(0)
    t0 = time.time()
    csamples = rollouts.rollout_conversation(model, processor, conv, mcfg)
    ours_c = time.time() - t0
    ours_ctok = sum(len(a) for s in csamples for a in s.answer_ids)
    torch.manual_seed(0)
    t0 = time.time()
    answers = ev.generate_conversation(model, processor, conv, args.tokens, batch_size=10_000, temperature=1.0,
                                       progress=False)
    eval_c = time.time() - t0
    assert len(answers) == len(csamples)

    # --- whole PPO steps: where the time goes ----------------------------------------------------------------
    step_cfg = ppo.PPOConfig(steps=args.steps, batch_size=max(1, args.prompts // 2), k=args.k, ppo_epochs=2,
                             minibatch=8, max_new_tokens=args.tokens, save_steps=10_000)
    st = ppo.train(init, tmp / "st", rows, [localization.make_aar_reward(group_key="query_id")], step_cfg,
                   progress=False)
    mt_cfg = ppo.PPOConfig(steps=args.steps, batch_size=max(1, len(conv)), k=2, ppo_epochs=2, minibatch=8,
                           max_new_tokens=args.tokens, save_steps=10_000)
    mt = ppo.train(init, tmp / "mt", conv, [rules.make_drllava_reward()], mt_cfg, multi_turn=True, progress=False)

    print(f"model: tiny LLaVA ({args.size}), {args.prompts} prompts x k={args.k}, max {args.tokens} new tokens, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'generation tokens/s':<38}{'ours':>10}{'bare':>10}{'ratio':>8}")
    print(f"{'single turn (rollout_single)':<38}{ours_tok / ours_s:>10.0f}{bare_tok / bare_s:>10.0f}"
          f"{(ours_tok / ours_s) / (bare_tok / bare_s):>8.2f}")
    print(f"{'5-turn conv rollout, seconds':<38}{ours_c:>10.2f}{eval_c:>10.2f}{eval_c / ours_c:>8.2f}")
    print(f"  ({ours_ctok} answer tokens sampled by ours; eval decodes text, so its count is not comparable:"
          f" ratio = eval seconds / ours)")
    print(f"{'PPO step':<38}{'s/step':>10}{'rollout':>10}{'update':>8}")
    for name, info, c in [("single turn", st, step_cfg), ("multi turn", mt, mt_cfg)]:
        n = info["steps"]
        print(f"{name + f' ({c.batch_size}x{c.k} samples)':<38}{info['seconds_per_step']:>10.3f}"
              f"{info['rollout_seconds'] / n:>10.3f}{info['update_seconds'] / n:>8.3f}")


if __name__ == "__main__":
    main()

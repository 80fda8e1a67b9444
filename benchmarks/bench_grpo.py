"""Where a GRPO step spends its time: generation, rewards, other scoring forwards, loss forward, backward, optimizer.

Run as: .venv/bin/python benchmarks/bench_grpo.py [--size cpu] [--steps 10] [--generations 8] [--prompts 2]
        [--tokens 32]

One GRPOTrainer run (repro.train.grpo.make_config, the "grpo" variant: format + accuracy, beta 0.04 so the reference
forward is included) on the tiny VLM, with TRL's methods wrapped by timers on the trainer instance:
    generation   GRPOTrainer._generate_single_turn (model.generate with the KV cache, all completions of the step)
    rewards      GRPOTrainer._calculate_rewards (every reward function on every completion)
    scoring      the rest of GRPOTrainer._prepare_inputs: prompt tokenization + image processing, the reference
                 model's log-prob forward, advantages, logging
    loss fwd     GRPOTrainer.compute_loss (policy forward + the GRPO loss)
    backward     accelerator.backward
    optimizer    the rest of the optimizer step (clip, AdamW, scheduler, callbacks)
The first 2 steps are warm-up and not counted. A randomly initialised model never emits <|im_end|>, so every
completion runs to --tokens: the worst case for generation. Absolute times depend on the machine; the shares do not
much.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="cpu", choices=["smoke", "cpu"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=2, help="prompts per step (completions = prompts x generations)")
    ap.add_argument("--tokens", type=int, default=32, help="max_completion_length")
    args = ap.parse_args()

    import torch
    from datasets import disable_progress_bars
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import GRPOTrainer

    from repro.data import build, conversations
    from repro.models import build_tiny_vlm, load_vlm
    from repro.train import grpo, sft

    disable_progress_bars()
    warmup = 2
    tmp = Path(tempfile.mkdtemp(prefix="bench_grpo_"))
    data = tmp / "data"
    build.build(data, seed=0, n_per_class=10, n_normal=10, image_size=64, difficulty=0.5, yes_share=0.5,
                split_fractions=[0.7, 0.15, 0.15], conv_train_variants=["standard"],
                conv_eval_variants=list(conversations.VARIANTS), heldout_categories=[])
    init = build_tiny_vlm(tmp / "init", sft.corpus(data), size=args.size)
    ds = grpo.grpo_dataset(data, limit=64)
    v = grpo.get_variant("grpo")
    cfg = grpo.make_config(tmp / "run", v, max_steps=args.steps + warmup, num_generations=args.generations,
                           batch_size=args.prompts, lr=1e-4, beta=0.04, max_completion_length=args.tokens,
                           temperature=1.0, seed=0, use_cpu=True, save_steps=10_000, logging_steps=1)
    model, processor = load_vlm(init, device="cpu", dtype="fp32")

    spent: dict[str, float] = defaultdict(float)
    counting = {"on": False}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                if counting["on"]:
                    spent[name] += time.perf_counter() - t0
        return wrapper

    class StepClock(TrainerCallback):
        # The trainer's global step counter starts at 0; steps after `warmup` are counted.
        def on_step_begin(self, a, state, control, **kw):
            counting["on"] = state.global_step >= warmup
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if counting["on"]:
                spent["step"] += time.perf_counter() - self.t0

    trainer = GRPOTrainer(model=model, reward_funcs=list(v.rewards), args=cfg, train_dataset=ds,
                          processing_class=processor, callbacks=[StepClock()])
    for cb in (PrinterCallback, ProgressCallback):  # keep stdout for the table
        trainer.remove_callback(cb)
    # Instance attributes shadow the methods: TRL's own calls (self._generate_single_turn(...)) go through the timers.
    for name, attr in [("generation", "_generate_single_turn"), ("rewards", "_calculate_rewards"),
                       ("prepare", "_prepare_inputs"), ("loss fwd", "compute_loss"), ("train_step", "training_step")]:
        setattr(trainer, attr, timed(name, getattr(trainer, attr)))
    trainer.accelerator.backward = timed("backward", trainer.accelerator.backward)
    torch.manual_seed(0)
    t0 = time.time()
    trainer.train()
    wall = time.time() - t0

    n = args.steps
    rows = [("generation", spent["generation"]), ("rewards", spent["rewards"]),
            ("scoring (tokenize, ref fwd, ...)", spent["prepare"] - spent["generation"] - spent["rewards"]),
            ("loss fwd", spent["loss fwd"]), ("backward", spent["backward"]),
            ("optimizer + rest", spent["step"] - spent["train_step"])]
    hist = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    mean_len = sum(h["completions/mean_length"] for h in hist[warmup:]) / max(1, len(hist) - warmup)
    print(f"\nGRPO step breakdown, tiny VLM '{args.size}' ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
          f"params), {args.prompts} prompts x {args.generations} completions, max {args.tokens} new tokens "
          f"(mean {mean_len:.1f}), beta 0.04 (reference forward included), torch threads {torch.get_num_threads()}, "
          f"{n} timed steps after {warmup} warm-up")
    print(f"{'phase':<34}{'s/step':>9}{'share':>8}")
    step = spent["step"] / n
    for name, s in rows:
        print(f"{name:<34}{s / n:>9.3f}{s / spent['step']:>8.1%}")
    print(f"{'step total':<34}{step:>9.3f}{1:>8.1%}")
    print(f"completions/s: {args.prompts * args.generations / step:.1f}; generated tokens/s: "
          f"{args.prompts * args.generations * mean_len / (spent['generation'] / n):.0f}; whole run {wall:.1f}s")


if __name__ == "__main__":
    main()

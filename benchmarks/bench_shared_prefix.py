"""What sharing a prompt's pass buys: GRPO scoring and generation, PPO scoring, multi-turn evaluation (ratios).

Run as: .venv/bin/python benchmarks/bench_shared_prefix.py [--profile cpu] [--prompts 4] [--k 8] [--threads 1]

Each row times the same work both ways, back to back on the same model and inputs (so the ratio means something on
a noisy machine; the absolute seconds do not):
    grpo scoring      TRL-layout log-probs + backward: shared_prefix.completion_logps vs one full-sequence forward
    grpo generation   shared_prefix.generate vs model.generate on prompts x k repeated rows (sampling, seeded)
    ppo scoring       rollouts.forward + backward on a single-turn rollout, shared vs the left-padded full forward
    conversations     evaluation.generate_conversation with the turn cache (repro.turn_cache) vs re-encoding
The model is the profile's SFT model (runs/<profile>/models/sft/final) on its data when they exist (answers that
re-tokenize exactly, as in the real runs), else a random tiny VLM on a small SynthMed build (the reuse then ends
at the first odd answer, so the conversation ratio is a lower bound). One thread by default: the cpu profile's
arms run one thread each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _timed(fn, repeats: int = 2) -> float:
    """Best of `repeats` wall times (the first call also warms caches)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _model_and_data(profile: str):
    from repro import paths
    from repro.data import build
    from repro.models import build_tiny_vlm, load_vlm
    from repro.train import sft

    model_dir, data = paths.models_dir(profile) / "sft" / "final", paths.data_dir(profile)
    if (model_dir / "config.json").exists() and data.exists():
        return load_vlm(model_dir, device="cpu", dtype="fp32"), data, f"{profile} SFT model"
    tmp = Path(tempfile.mkdtemp(prefix="bench_shared_"))
    data = tmp / "data"
    build.build(data, seed=0, n_per_class=5, n_normal=5, image_size=64, difficulty=0.5, yes_share=0.5,
                split_fractions=[0.6, 0.2, 0.2], conv_train_variants=["standard"], conv_eval_variants=["standard"],
                heldout_categories=[])
    path = build_tiny_vlm(tmp / "tiny", sft.corpus(data), size="smoke", seed=0)
    return load_vlm(path, device="cpu", dtype="fp32"), data, "random tiny VLM"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=40, help="completion length (GRPO rows) / new tokens")
    ap.add_argument("--conversations", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from datasets import disable_progress_bars

    from repro import evaluation as ev
    from repro.chat import encode
    from repro.train import ppo, rollouts, shared_prefix

    disable_progress_bars()
    (model, processor), data, what = _model_and_data(a.profile)
    model.eval()
    mcq = ev.load_rows(data, "mcq", "train", a.prompts)
    prompts = [processor.apply_chat_template([{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": r["messages"][0]["content"]}]}], add_generation_prompt=True)
        for r in mcq]
    enc = encode(model, processor, [p for p in prompts for _ in range(a.k)], [r["image"] for r in mcq for _ in
                                                                             range(a.k)])
    ids, mask, pv = enc["input_ids"], enc["attention_mask"], enc["pixel_values"]
    B, L = ids.size(0), a.tokens
    comp = torch.randint(10, processor.tokenizer.vocab_size - 10, (B, L), generator=torch.Generator().manual_seed(0))
    full_ids, full_mask = torch.cat([ids, comp], 1), torch.cat([mask, torch.ones_like(comp)], 1)
    rows = []

    def shared_scoring():
        model.zero_grad()
        shared_prefix.completion_logps(model, full_ids, full_mask, L, pv)[0].sum().backward()

    def plain_scoring():
        model.zero_grad()
        logits = model(input_ids=full_ids, attention_mask=full_mask, pixel_values=pv).logits[:, -L - 1:-1]
        torch.log_softmax(logits.float(), -1).gather(-1, comp[..., None]).sum().backward()

    rows.append(("grpo scoring (fwd+bwd)", _timed(plain_scoring), _timed(shared_scoring)))

    kw = dict(max_new_tokens=L, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
              pad_token_id=processor.tokenizer.pad_token_id)

    def gen(shared: bool):
        torch.manual_seed(0)
        with torch.inference_mode():
            if shared:
                shared_prefix.generate(model, model.generate, ids, mask, pv, **kw)
            else:
                model.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, **kw)

    rows.append(("grpo generation", _timed(lambda: gen(False)), _timed(lambda: gen(True))))

    torch.manual_seed(0)
    inst = ev.load_rows(data, "instruct", "train", a.prompts)
    samples = rollouts.rollout_single(model, processor, inst, ppo.PPOConfig(k=a.k, max_new_tokens=L))
    pad = processor.tokenizer.pad_token_id

    def ppo_scoring(shared: bool):
        original = rollouts.shareable
        rollouts.shareable = (lambda m, s: original(m, s)) if shared else (lambda m, s: False)
        try:
            model.zero_grad()
            logits, _, targets, m = rollouts.forward(model, samples, pad, 1.0)
            (torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1) * m).sum().backward()
        finally:
            rollouts.shareable = original

    rows.append(("ppo scoring (fwd+bwd)", _timed(lambda: ppo_scoring(False)), _timed(lambda: ppo_scoring(True))))

    conv = ev.load_rows(data, "conv", "test")[:a.conversations]
    budget = ev.MAX_NEW_TOKENS["conv"]
    rows.append(("conversations (eval)",
                 _timed(lambda: ev.generate_conversation(model, processor, conv, budget, 32, progress=False,
                                                         reuse_cache=False), 1),
                 _timed(lambda: ev.generate_conversation(model, processor, conv, budget, 32, progress=False), 1)))

    print(f"model: {what}; {a.prompts} prompts x k={a.k}, {L} tokens; {len(conv)} conversations; "
          f"{a.threads} thread(s)")
    print(f"{'':26s} {'plain s':>9s} {'shared s':>9s} {'ratio':>7s}")
    for name, plain, shared in rows:
        print(f"{name:26s} {plain:9.2f} {shared:9.2f} {plain / shared:7.2f}")


if __name__ == "__main__":
    main()

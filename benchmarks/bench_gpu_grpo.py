"""GRPO step throughput of the Qwen2.5-VL-3B architecture with random weights, beside EasyR1's published baseline.

Run as: .venv/bin/python benchmarks/bench_gpu_grpo.py [--steps 3] [--prompts 4] [--generations 8] [--tokens 512]
        [--image-size 448] [--rollouts hf,vllm] [--peak-tflops 989]
        (several GPUs: accelerate launch --config_file configs/accelerate/ddp.yaml benchmarks/bench_gpu_grpo.py ...)
        .venv/bin/python benchmarks/bench_gpu_grpo.py --tiny     (the same code on a tiny config, on CPU: a test)

Why random weights: a step's cost depends on the architecture and the sequence lengths, not on trained values, so
no checkpoint download is needed. The model is Qwen2_5_VLForConditionalGeneration built from the public
Qwen2.5-VL-3B-Instruct config (values in QWEN25VL_3B below), saved with a synthetic word-level tokenizer at
Qwen's special-token ids (vLLM loads models from a directory), then trained by TRL's GRPOTrainer with the suite's
own GRPOConfig (repro.train.grpo.make_config): bf16, beta 0.04 (so the reference model's forward is included),
activation checkpointing on (off in the suite's CPU runs). Completions have a fixed length (min_new_tokens =
max_completion_length: a random model would otherwise stop at random), so every step has the same token count.
Rollouts: HF generate (TRL's default) and, when vllm is importable, vLLM colocated on the same GPU
(use_vllm=True, vllm_mode="colocate": the option repro.train.launch exposes).

Measured per rollout engine, after 1 warm-up step: step time (wall, synchronised), generated tokens/s per GPU
(completion tokens), total tokens/s per GPU (prompt incl. image tokens + completion: what verl/EasyR1's
perf/throughput counts), peak GPU memory (torch's max allocated, and device memory in use incl. vLLM's KV cache),
and MFU = model FLOPs of the step / (step time x peak bf16 FLOP/s). Model FLOPs, attention's quadratic term left
out: language model 2 N_lm per token for each forward (rollout prefill + decode, reference forward) and 6 N_lm per
token for the policy's forward + backward; vision tower likewise with N_vis per patch (rollout, reference, policy).
Peak FLOP/s: H100/H200 989e12, A100 312e12 (bf16 dense), else --peak-tflops; n/a on CPU.
Without a CUDA GPU (and without --tiny) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

# Qwen2.5-VL-3B-Instruct's public config.json (text model, vision tower, special-token ids).
QWEN25VL_3B = {
    "text": dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                 num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000, rms_norm_eps=1e-6,
                 hidden_act="silu", use_sliding_window=False, sliding_window=32768, max_window_layers=70,
                 rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}, rope_theta=1_000_000.0),
    "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_channels=3, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, window_size=112, out_hidden_size=2048,
                   fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu"),
    "special_base": 151643,  # <|endoftext|>; the other special tokens follow at Qwen's offsets (SPECIALS)
    "tie_word_embeddings": True,
}
# Same structure, a few thousand parameters per layer: runs the whole benchmark on CPU in seconds.
TINY = {
    "text": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6, hidden_act="silu",
                 rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, rope_theta=1_000_000.0),
    "vision": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, window_size=112, out_hidden_size=64,
                   fullatt_block_indexes=[1], tokens_per_second=2, hidden_act="silu"),
    "special_base": 1024 - 293,  # the 3B layout: 293 ids from <|endoftext|> to the end of the vocabulary
    "tie_word_embeddings": True,
}
# Offsets from <|endoftext|> in Qwen2.5's vocabulary.
SPECIALS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<|vision_start|>": 9, "<|vision_end|>": 10,
            "<|vision_pad|>": 11, "<|image_pad|>": 12, "<|video_pad|>": 13}
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for b in m['content'] %}"
    "{% if b['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif b['type'] == 'text' %}"
    "{{ b['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# EasyR1 v0.3.2, assets/baselines.md, "Performance Baselines" (THEIRS, not measured here): Qwen2.5-VL-3B GRPO on
# Geometry3k, 8 x H100 80GB, AMP, vLLM TP 2. Throughput = verl's perf/throughput (prompt + response tokens per GPU
# per second); "+600" is their noted range.
EASYR1 = {"engine": "EasyR1 (theirs, published)", "gpus": "8xH100", "tok_s_total": "1800 (+600)",
          "step_s": "120", "mfu": "8.1% (actor)", "peak_gb": "54 (VRAM)"}
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def build_model_dir(out: Path, spec: dict, device, dtype) -> Path:
    """Random-weight Qwen2.5-VL from `spec` + a synthetic tokenizer/processor, saved to `out` (loadable by
    from_pretrained and by vLLM)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    base, vocab_size = spec["special_base"], spec["text"]["vocab_size"]
    ids = {tok: base + off for tok, off in SPECIALS.items()}
    cfg = Qwen2_5_VLConfig(
        text_config={**spec["text"], "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]},
        vision_config=spec["vision"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec["tie_word_embeddings"])
    torch.manual_seed(0)
    with torch.device(device):  # random init directly on the GPU: a 3B init on CPU takes minutes
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype)
    model.save_pretrained(out)

    # Word-level tokenizer: "w<i>" is id i, the special tokens sit at Qwen's ids (texts decode as "w12 w7 ...").
    vocab = {f"w{i}": i for i in range(vocab_size)}
    for tok, i in ids.items():
        del vocab[f"w{i}"]
        vocab[tok] = i
    raw = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    others = [t for t in ids if t not in ("<|im_end|>", "<|endoftext|>")]
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=others)
    proc = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tok,
                               video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    proc.save_pretrained(out)
    return out


def dataset(n: int, image_size: int, words: int, vocab: int, seed: int = 0):
    """n GRPO rows (TRL vision format: a user turn with an image block + `words` random words, and the image)."""
    import numpy as np
    from datasets import Dataset
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        text = " ".join(f"w{i}" for i in rng.integers(20, min(vocab, 20_000), size=words))
        img = Image.fromarray(rng.integers(0, 256, size=(image_size, image_size, 3), dtype=np.uint8))
        rows.append({"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
                     "image": img})
    return Dataset.from_list(rows)


def spread_reward(completions, **kwargs):
    """A cheap reward with spread, so advantages (and the policy gradient) are not all zero."""
    return [float(len(c[0]["content"]) % 7) if isinstance(c, list) else float(len(c) % 7) for c in completions]


def flops_per_step(n_lm: int, n_vis: int, prompt_tok: float, gen_tok: float, patches: float, beta: float) -> float:
    """Model FLOPs of one GRPO step (module docstring): token counts are totals over the step's completions."""
    seq = prompt_tok + gen_tok
    fwd_passes = 1 + 3 + (1 if beta > 0 else 0)  # rollout (prefill + decode) + policy fwd/bwd + reference forward
    return 2 * n_lm * seq * fwd_passes + 2 * n_vis * patches * fwd_passes


def run_engine(engine: str, model_dir: Path, args, tiny: bool) -> dict:
    """Warm-up + args.steps GRPO steps with `engine` rollouts; returns the measured row."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration, TrainerCallback
    from transformers.trainer_utils import SaveStrategy
    from trl import GRPOTrainer

    from repro.train import grpo

    cuda = torch.cuda.is_available() and not tiny
    dtype = torch.bfloat16 if cuda else torch.float32
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=dtype)
    processor = AutoProcessor.from_pretrained(model_dir)
    spec = TINY if tiny else QWEN25VL_3B
    gen_key = "min_tokens" if engine == "vllm" else "min_new_tokens"
    extra = {"generation_kwargs": {gen_key: args.tokens}}
    if engine == "vllm":
        extra.update(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=args.vllm_memory,
                     vllm_max_model_length=args.max_model_length)
    v = grpo.Variant("bench", (spread_reward,), (1.0,))
    with tempfile.TemporaryDirectory() as out:
        cfg = grpo.make_config(out, v, max_steps=args.steps + 1, num_generations=args.generations,
                               batch_size=args.prompts, lr=1e-6, beta=args.beta, max_completion_length=args.tokens,
                               temperature=1.0, seed=0, use_cpu=not cuda, bf16=cuda, save_steps=10**9,
                               logging_steps=1, **extra)
        cfg.activation_checkpointing = cuda  # real sizes: activations of all completions would not fit otherwise
        cfg.disable_tqdm = True
        cfg.save_strategy = SaveStrategy.NO  # nothing to keep; saving a 3B checkpoint would land inside the timing
        ds = dataset(args.prompts * (args.steps + 1), args.image_size, args.words, spec["text"]["vocab_size"])

        class Clock(TrainerCallback):
            def __init__(self):
                self.times: list[float] = []

            def on_step_begin(self, a, state, control, **kw):
                if cuda:
                    torch.cuda.synchronize()
                    if state.global_step == 1:  # after the warm-up step
                        torch.cuda.reset_peak_memory_stats()
                self.t0 = time.perf_counter()

            def on_step_end(self, a, state, control, **kw):
                if cuda:
                    torch.cuda.synchronize()
                self.times.append(time.perf_counter() - self.t0)

        clock = Clock()
        trainer = GRPOTrainer(model=model, reward_funcs=[spread_reward], args=cfg, train_dataset=ds,
                              processing_class=processor, callbacks=[clock])
        trainer.train()
        world = trainer.accelerator.num_processes
        logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]

    steps = clock.times[1:]
    step_s = sum(steps) / len(steps)
    completions = args.prompts * args.generations  # per process and step
    gen_tok = sum(h["completions/mean_length"] for h in logs[1:]) / len(logs[1:]) * completions
    # num_tokens is cumulative over all processes (prompt + completion); per process and step:
    seen = [h["num_tokens"] for h in logs]
    total_tok = (seen[-1] - seen[0]) / len(steps) / world
    merge = spec["vision"]["spatial_merge_size"] ** 2
    grid = (args.image_size // spec["vision"]["patch_size"]) ** 2  # patches per image (Qwen resizes to x28)
    n_vis = sum(p.numel() for n, p in model.named_parameters() if "visual" in n)
    n_lm = sum(p.numel() for p in model.parameters()) - n_vis
    flops = flops_per_step(n_lm, n_vis, total_tok - gen_tok, gen_tok, completions * grid, args.beta)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((f for k, f in PEAK_FLOPS.items() if k in name), None)
    row = {"engine": f"ours, {'vLLM colocate' if engine == 'vllm' else 'HF generate'}", "gpus": f"{world}x{name}",
           "tok_s_gen": gen_tok / step_s, "tok_s_total": total_tok / step_s, "step_s": step_s,
           "mfu": (f"{100 * flops / (step_s * peak):.1f}%" if cuda and peak else "n/a"),
           "peak_gb": "n/a", "image_tokens": grid // merge}
    if cuda:
        free, total = torch.cuda.mem_get_info()
        row["peak_gb"] = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} ({(total - free) / 2**30:.1f} in use)"
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()
    return row


def table(rows: list[dict]) -> str:
    def f(v, fmt="{:.0f}"):
        return fmt.format(v) if isinstance(v, float) else str(v)

    head = ("rollouts", "GPUs", "gen tok/s/GPU", "total tok/s/GPU", "step s", "peak GB", "MFU")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["engine"], r["gpus"], f(r.get("tok_s_gen", "n/a")), f(r["tok_s_total"]),
                                        f(r["step_s"], "{:.2f}"), r["peak_gb"], r["mfu"]]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny config on CPU (a test of the code; numbers mean nothing)")
    ap.add_argument("--steps", type=int, default=3, help="measured steps (after 1 warm-up step)")
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step and GPU")
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=512, help="completion tokens (fixed length)")
    ap.add_argument("--words", type=int, default=64, help="text tokens of a prompt (besides the image tokens)")
    ap.add_argument("--image-size", type=int, default=448, help="448 px -> 32x32 patches -> 256 image tokens")
    ap.add_argument("--beta", type=float, default=0.04, help="KL coefficient (> 0: reference forward included)")
    ap.add_argument("--rollouts", default="hf,vllm", help="hf and/or vllm (vllm skipped when not importable)")
    ap.add_argument("--vllm-memory", type=float, default=0.3, help="vLLM colocate gpu_memory_utilization")
    ap.add_argument("--max-model-length", type=int, default=4096)
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s of the GPU (MFU)")
    args = ap.parse_args(argv)

    import torch

    if not args.tiny and not torch.cuda.is_available():
        print("bench_gpu_grpo: no CUDA GPU present - nothing measured (run with --tiny to test the code on CPU).")
        return 0
    if args.tiny:
        args.steps, args.prompts, args.generations, args.tokens = 2, 2, 4, 8
        args.words, args.image_size = 8, 56
    engines = [e.strip() for e in args.rollouts.split(",") if e.strip()]
    bad = [e for e in engines if e not in ("hf", "vllm")]
    if bad:
        raise SystemExit(f"bench_gpu_grpo: --rollouts: unknown engine {bad[0]!r} (hf, vllm)")
    notes = []
    if "vllm" in engines and (args.tiny or importlib.util.find_spec("vllm") is None):
        engines.remove("vllm")
        notes.append("vLLM rollouts: skipped (" + ("--tiny runs on CPU" if args.tiny else "vllm not installed") + ")")

    spec = TINY if args.tiny else QWEN25VL_3B
    device = "cpu" if args.tiny else "cuda"
    dtype = torch.float32 if args.tiny else torch.bfloat16
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model_dir(Path(tmp) / "qwen25vl", spec, device, dtype)
        for engine in engines:
            rows.append(run_engine(engine, model_dir, args, args.tiny))
    rows.append(EASYR1)
    from accelerate import PartialState

    if PartialState().is_main_process:
        size = "tiny config (CPU; numbers mean nothing)" if args.tiny else "Qwen2.5-VL-3B architecture, random weights"
        print(f"\nGRPO step, {size}: {args.prompts} prompts x {args.generations} completions per GPU, "
              f"{args.tokens} completion tokens, {rows[0].get('image_tokens', '?')} image tokens + {args.words} "
              f"words per prompt, beta {args.beta}")
        print(table(rows))
        for n in notes:
            print(n)
        print("EasyR1 row: their published numbers (EasyR1 v0.3.2 assets/baselines.md; Geometry3k, batch sizes and "
              "lengths differ from ours), not measured here.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

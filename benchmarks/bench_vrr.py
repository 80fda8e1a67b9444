"""Run as: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_vrr.py [--model runs/cpu/models/sft/final] [--n 64]

Cost of the VRR reward (UMed-LVLM attention reward, repro.rewards.attention) per sample on one core, at batch sizes
1 and 8: one teacher-forced forward pass with eager attention and output_attentions over prompt + completion (up to
the last class-name token). For scale, the same table gives the per-sample cost of *generating* those completions
greedily (what an RL step pays anyway), and the ratio VRR / generation.

Model: the cpu profile's SFT checkpoint when it exists, else a freshly built cpu-size tiny LLaVA (3M parameters;
random weights cost the same). Rows: abnormal instruction rows of runs/cpu/data when present, else SynthMed images
with templated answers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads

import torch  # noqa: E402

from repro import evaluation as ev  # noqa: E402
from repro import models, paths  # noqa: E402
from repro.rewards import attention  # noqa: E402


def rows_and_model(model_path: str | None):
    data = paths.data_dir("cpu")
    path = model_path or paths.models_dir("cpu") / "sft" / "final"
    if (data / "instruct").exists():
        rows = [r for r in ev.load_rows(data, "instruct", "test") if r["abnormal"]]
    else:
        from PIL import Image

        from repro.data import synthmed, tasks
        recs = [r for r in synthmed.generate(0, synthmed.default_counts(4, 0), 64, 0.5) if r["bboxes"]]
        rows = [{**r, "image": Image.fromarray(r["image"]),
                 "messages": [{"role": "user", "content": tasks.BANKS["instruct"][0][0]},
                              {"role": "assistant", "content": tasks.instruct_target(
                                  True, tasks.box_text(r["bboxes"][0], 64, 64), r["category"], r["region"],
                                  r["modality"])}]} for r in recs]
    if not os.path.exists(path):
        texts = [r["messages"][-1]["content"] for r in rows] + [r["messages"][0]["content"] for r in rows]
        path = models.build_tiny_vlm(tempfile.mkdtemp(), texts, size="cpu", vocab_size=1024)
    model, processor = models.load_vlm(path, attn_implementation="eager", device="cpu")
    return rows, model, processor, path


def per_sample_ms(fn, rows: list, comps: list) -> float:
    fn(rows[:8], comps[:8])  # warm-up (allocator, first-call overheads)
    t0 = time.perf_counter()
    fn(rows, comps)
    return (time.perf_counter() - t0) * 1000 / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model dir (default: runs/cpu/models/sft/final, else a fresh one)")
    ap.add_argument("--n", type=int, default=64, help="samples per measurement")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows, model, processor, path = rows_and_model(args.model)
    rows = (rows * (args.n // max(len(rows), 1) + 1))[: args.n]
    comps = [r["messages"][-1]["content"] for r in rows]
    n_params = models.count_params(model) / 1e6
    print(f"model {path} ({n_params:.1f}M parameters), {len(rows)} samples, {torch.get_num_threads()} thread(s)")
    print(f"{'batch':>5s} {'VRR ms/sample':>14s} {'generate ms/sample':>19s} {'VRR / generate':>15s}")
    for bs in (1, 8):
        vrr = per_sample_ms(lambda r, c, bs=bs: attention.vrr_scores(model, processor, r, c, batch_size=bs),
                            rows, comps)
        gen = per_sample_ms(lambda r, c, bs=bs: ev.generate(model, processor, r, ev.MAX_NEW_TOKENS["instruct"],
                                                            batch_size=bs, progress=False), rows, comps)
        print(f"{bs:5d} {vrr:14.1f} {gen:19.1f} {vrr / gen:15.2f}")


if __name__ == "__main__":
    main()

"""How fast do two runs of stage 02's SFT part when their arithmetic differs in the last bit? The SFT phase of the cpu
recipe from the committed base, with the trainable weights saved at fixed steps, then the distance between two runs.

Run as: ATEN_CPU_CAPABILITY=default python tools/sft_divergence.py run --tag fp64-default --dtype fp64 [--stop 400]
        python tools/sft_divergence.py run --tag fp64-native --dtype fp64 [--stop 400]
        python tools/sft_divergence.py compare fp64-native fp64-default

Reads params/<profile>/02_sft.yaml (mixture, steps, lr) and runs/<profile>/models/base/final; writes
runs/<profile>/divergence/<tag>/ (w<step>.npy: the trainable weights as float64, in parameter-name order). `--dtype
fp64` trains the model and AdamW in double. Results: docs/results.md, "Why a start does not hold across float paths".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from repro import config, paths

SNAPSHOTS = (1, 2, 5, 10, 20, 50, 100, 200, 400, 800, 1200, 1600)


def out_dir(profile: str, tag: str) -> Path:
    return paths.run_dir(profile) / "divergence" / tag


def run(profile: str, tag: str, dtype: str, stop: int, threads: int) -> None:
    from transformers import TrainerCallback

    from repro.train import sft

    torch.set_num_threads(threads)
    p = config.load_params(profile, "02_sft", check_paths=False)
    out = out_dir(profile, tag)
    out.mkdir(parents=True, exist_ok=True)
    mix = sft.sft_dataset(paths.data_dir(profile), p["sft_tasks"], seed=p["seed"],
                          max_rows_per_task=p["sft_max_rows_per_task"] or None, batch_size=p["batch_size"],
                          steps=p["sft_steps"])

    class Snapshots(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step in SNAPSHOTS:
                w = [q.detach().reshape(-1).double() for _, q in sorted(model.named_parameters()) if q.requires_grad]
                np.save(out / f"w{state.global_step:05d}.npy", torch.cat(w).numpy())
            control.should_training_stop = bool(stop and state.global_step >= stop)
            return control

    info = sft.train(paths.models_dir(profile) / "base" / "final", out / "sft", mix, max_steps=p["sft_steps"],
                     batch_size=p["batch_size"], lr=p["sft_lr"] or p["lr"], seed=p["seed"], sequential=True,
                     freeze_vision=p["freeze_vision"], run_key={"divergence": tag, "dtype": dtype},
                     callbacks=[Snapshots()], dtype=dtype)
    print(f"{tag}: {info['seconds']} s, {dtype}, kernels {torch.backends.cpu.get_cpu_capability()}")


def compare(profile: str, a: str, b: str) -> None:
    print("step  relative distance  largest difference")
    for f in sorted(out_dir(profile, a).glob("w*.npy")):
        g = out_dir(profile, b) / f.name
        if g.exists():
            x, y = np.load(f), np.load(g)
            rel = np.linalg.norm(x - y) / np.linalg.norm(x)
            print(f"{int(f.stem[1:]):5d}  {rel:17.1e}  {np.abs(x - y).max():18.1e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tag", required=True)
    r.add_argument("--dtype", choices=("fp32", "fp64"), default="fp32")
    r.add_argument("--stop", type=int, default=0, help="stop after this step (0: the recipe's last)")
    r.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args.profile, args.tag, args.dtype, args.stop, args.threads)
    else:
        compare(args.profile, args.a, args.b)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SFT, GRPO, DPO and our PPO in one or several processes (GPUs) through accelerate: one entry point for the
command line, notebook cells and tests.

Run as: accelerate launch --config_file configs/accelerate/<ddp|zero2|zero3|fsdp|cpu_2proc>.yaml \\
            -m repro.train.launch <sft|grpo|dpo|ppo> [<more trainers>] --config run.yaml
        python -m repro.train.launch sft --config run.yaml          (one process, no accelerate: the same code)
From a notebook cell: `!accelerate launch --config_file ../configs/accelerate/ddp.yaml -m repro.train.launch sft
--config run.yaml`, or `infos = launch.spawn(["sft"], cfg, "configs/accelerate/ddp.yaml", workdir)` (writes the config,
runs the same command as a subprocess, returns each run's info). See docs/multi_gpu.md.

The config (YAML or JSON) is either flat (the keys of one trainer) or has one section per trainer ({"sft": {...},
"grpo": {...}}); several trainers in one launch run one after another in the same process group (one start-up).
Keys: KEYS below; the ones marked REQUIRED must be given, an unknown key is an error naming the file and key.

`batch_size` is the GLOBAL batch (rows for SFT, prompts for GRPO and PPO, pairs for DPO) per optimizer step,
whatever the number of processes: each process gets batch_size / world_size of it (an error when it does not
divide). So the same config gives the same number of optimizer steps and the same examples per step on 1 or N
processes. SFT with `sequential: true` arranges the rows in global batches (sft.sft_dataset) that accelerate splits
in order between the processes: step k sees the same rows on 1 or N processes. PPO splits each step's prompts itself
(ppo.train, repro.train.ppo_dist).

Each trainer runs through its module's own train() (sft.train, grpo.train, dpo.train, ppo.train), so the run
directory, run key, resume and <out_dir>/final are those of the single-process path; repro.train.runs does the
directory work on the main process only and saves through Trainer.save_model (gathers ZeRO-3 / FSDP shards). The run
key adds world_size and the global batch: a run is never resumed under another process count.
GRPO's vLLM rollouts (`use_vllm: true`, `vllm_mode: colocate|server`) are passed to GRPOConfig; GPU only (vLLM
needs CUDA and the vllm package; an error says so on CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from repro.train import runs

TRAINERS = ("sft", "grpo", "dpo", "ppo")
REQUIRED = "<required>"
_COMMON = {"init_dir": REQUIRED, "out_dir": REQUIRED, "max_steps": REQUIRED, "batch_size": REQUIRED, "seed": 0,
           "lora": None, "bf16": False, "use_cpu": None, "save_steps": 100, "logging_steps": 1, "run_key": None}
KEYS: dict[str, dict] = {
    # defaults are those of sft.train / grpo.train / dpo.train
    "sft": {**_COMMON, "data_dir": REQUIRED, "tasks": None, "max_rows_per_task": None, "sequential": False,
            "lr": 1e-3, "warmup_ratio": 0.05, "weight_decay": 0.0, "freeze_vision": False, "logging_steps": 10,
            "save_steps": 200},
    "grpo": {**_COMMON, "data_dir": REQUIRED, "split": "train", "limit": None, "variant": "grpo",
             "num_generations": 8, "lr": 1e-4, "beta": 0.04, "max_completion_length": None, "temperature": 1.0,
             "use_vllm": False, "vllm_mode": "colocate", "grpo_config": None, "mask_truncated": True},
    "dpo": {**_COMMON, "preference": REQUIRED, "split": "train", "weighted": REQUIRED, "lr": 5e-5, "beta": 0.1,
            "equal_text_exposure": True},
    # ppo.train: rows = evaluation.load_rows(data_dir, task, split, limit); rewards: "module:function" or
    # {"factory": "module:function", "kwargs": {...}} (called once, returns the reward); ppo_config: any further
    # PPOConfig field (k, minibatch, kl_beta, ...). Full fine-tuning only; bf16 and logging_steps do not apply (the
    # dtype is load_vlm's, every step is logged).
    "ppo": {**_COMMON, "data_dir": REQUIRED, "task": "instruct", "split": "train", "limit": None,
            "rewards": REQUIRED, "reward_weights": None, "multi_turn": False, "lr": 1e-5, "ppo_config": None},
}


# ----------------------------------------------------------------------------------------------- config
def load_config(path) -> dict:
    """A YAML or JSON file as a dict (one-line error naming the file otherwise)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"launch config {p}: no such file")
    cfg = json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())
    if not isinstance(cfg, dict):
        raise ValueError(f"launch config {p}: expected a mapping, got {type(cfg).__name__}")
    return cfg


def section(cfg: dict, kind: str, where: str) -> dict:
    """The keys of trainer `kind`: cfg[kind] for a sectioned config, else the flat config itself."""
    if set(cfg) & set(TRAINERS):
        if kind not in cfg:
            raise ValueError(f"launch config {where}: no section {kind!r} (has {sorted(cfg)})")
        return cfg[kind]
    return cfg


def resolve(kind: str, cfg: dict, where: str = "<config>") -> dict:
    """cfg with the defaults of `kind` filled in; unknown or missing keys are one-line errors."""
    if kind not in KEYS:
        raise ValueError(f"launch: unknown trainer {kind!r}; known: {list(TRAINERS)}")
    allowed = KEYS[kind]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(f"launch config {where} [{kind}]: unknown key {unknown[0]!r}; known: {sorted(allowed)}")
    out = {**allowed, **cfg}
    missing = [k for k, v in out.items() if v == REQUIRED]
    if missing:
        raise ValueError(f"launch config {where} [{kind}]: missing key {missing[0]!r}")
    if not isinstance(out["batch_size"], int) or out["batch_size"] < 1:
        raise ValueError(f"launch config {where} [{kind}]: batch_size must be a positive int, "
                         f"got {out['batch_size']!r}")
    return out


def _import(dotted: str, where: str):
    """'package.module:function' -> the function (custom GRPO rewards in a config)."""
    mod, _, name = dotted.partition(":")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"launch config {where}: cannot import reward {dotted!r} ({e})") from None


def variant(spec, where: str = "<config>"):
    """A GRPO variant: a name of grpo.VARIANTS, or {"name", "rewards": ["module:function", ...], "weights",
    "loss_type", "scale_rewards"} (a custom reward set; weights default to 1)."""
    from repro.train import grpo

    if isinstance(spec, str):
        return grpo.get_variant(spec)
    rewards = tuple(_import(r, where) for r in spec["rewards"])
    return grpo.Variant(spec.get("name", "custom"), rewards, tuple(spec.get("weights", [1.0] * len(rewards))),
                        loss_type=spec.get("loss_type", "grpo"), scale_rewards=spec.get("scale_rewards", "group"))


def reward_fn(spec, where: str = "<config>"):
    """A PPO reward: "module:function", or {"factory": "module:function", "kwargs": {...}} -> factory(**kwargs)
    (e.g. repro.rewards.localization:make_aar_reward with group_key query_id)."""
    if isinstance(spec, str):
        return _import(spec, where)
    if not isinstance(spec, dict) or "factory" not in spec:
        raise ValueError(f"launch config {where} [ppo]: a reward is 'module:function' or {{factory, kwargs}}, "
                         f"got {spec!r}")
    return _import(spec["factory"], where)(**(spec.get("kwargs") or {}))


def ppo_config(c: dict, glob: int, where: str = "<config>"):
    """The PPOConfig of a resolved ppo section: ppo_config's fields plus steps, batch_size (global), lr, seed and
    save_steps from the section's own keys (giving those inside ppo_config is an error)."""
    import dataclasses

    from repro.train import ppo

    extra = dict(c["ppo_config"] or {})
    own = {"steps": c["max_steps"], "batch_size": glob, "lr": c["lr"], "seed": c["seed"], "save_steps": c["save_steps"]}
    names = {f.name for f in dataclasses.fields(ppo.PPOConfig)}
    for k in extra:
        if k not in names or k in own:
            why = "set it as a top-level key (max_steps, batch_size, ...)" if k in own else "not a PPOConfig field"
            raise ValueError(f"launch config {where} [ppo]: ppo_config key {k!r}: {why}")
    if c["lora"] is not None:
        raise ValueError(f"launch config {where} [ppo]: lora must be null (ppo.train is full fine-tuning only)")
    return ppo.PPOConfig(**extra, **own)


def _vllm_extra(c: dict, use_cpu: bool, where: str) -> dict:
    """GRPOConfig fields of the vLLM option (plus grpo_config passthrough)."""
    extra = dict(c["grpo_config"] or {})
    if c["use_vllm"]:
        import torch

        if use_cpu or not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None:
            raise ValueError(f"launch config {where} [grpo]: use_vllm needs a CUDA GPU and the vllm package "
                             "(GPU-only option; set use_vllm: false on CPU)")
        if c["vllm_mode"] not in ("colocate", "server"):
            raise ValueError(f"launch config {where} [grpo]: vllm_mode must be colocate or server, "
                             f"got {c['vllm_mode']!r}")
        extra.update(use_vllm=True, vllm_mode=c["vllm_mode"])
    return extra


# ----------------------------------------------------------------------------------------------- running
def _state(use_cpu: bool):
    """accelerate's process state when launched with more than one process, else None (plain single process).

    Created before anything else so torch.distributed is up when repro.train.runs asks for the rank; `cpu` must be
    given explicitly: on a machine without CUDA, accelerate's launcher does not say "CPU" to its workers.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=use_cpu)


def run(kind: str, cfg: dict, where: str = "<config>") -> dict:
    """Train one `kind` (sft|grpo|dpo|ppo) run from its config keys; returns the train() info plus world_size,
    global_batch_size and per_device_batch_size. In every process of a launch (all return the same info)."""
    import torch

    c = resolve(kind, cfg, where)
    use_cpu = c["use_cpu"] if c["use_cpu"] is not None else not torch.cuda.is_available()
    state = _state(use_cpu)
    world = state.num_processes if state else 1
    glob = c["batch_size"]
    if glob % world:
        raise ValueError(f"launch config {where} [{kind}]: batch_size {glob} (global) is not divisible by the "
                         f"{world} processes")
    per_device = glob // world
    common = dict(max_steps=c["max_steps"], batch_size=per_device, lr=c["lr"], seed=c["seed"], use_cpu=use_cpu,
                  save_steps=c["save_steps"], logging_steps=c["logging_steps"], lora=c["lora"], bf16=c["bf16"],
                  run_key={**(c["run_key"] or {}), "world_size": world, "global_batch_size": glob})
    # Datasets are mapped (and cached on disk) by the main process first, then read from its cache by the others.
    first = state.main_process_first() if state else contextlib.nullcontext()
    if kind == "sft":
        from repro.train import sft

        tasks = tuple(c["tasks"] or sft.TASKS)
        with first:
            ds = sft.sft_dataset(c["data_dir"], tasks, max_rows_per_task=c["max_rows_per_task"], seed=c["seed"],
                                 **({"batch_size": glob, "steps": c["max_steps"]} if c["sequential"] else {}))
        info = sft.train(c["init_dir"], c["out_dir"], ds, warmup_ratio=c["warmup_ratio"],
                         weight_decay=c["weight_decay"], sequential=c["sequential"],
                         freeze_vision=c["freeze_vision"], **common)
        counts = {"examples": c["max_steps"] * glob}
    elif kind == "ppo":
        from repro import evaluation as ev
        from repro.train import ppo

        cfg_ppo = ppo_config(c, glob, where)  # batch_size global: ppo.train splits each step's rows itself
        with first:
            rows = ev.load_rows(c["data_dir"], c["task"], c["split"], c["limit"])
        info = ppo.train(c["init_dir"], c["out_dir"], rows, [reward_fn(r, where) for r in c["rewards"]], cfg_ppo,
                         multi_turn=c["multi_turn"], reward_weights=c["reward_weights"], run_key=common["run_key"],
                         progress=False, use_cpu=use_cpu)
        counts = {"samples": c["max_steps"] * glob * cfg_ppo.k}
    elif kind == "grpo":
        from repro.train import grpo

        extra = _vllm_extra(c, use_cpu, where)
        with first:
            ds = grpo.grpo_dataset(c["data_dir"], c["split"], limit=c["limit"], seed=c["seed"])
        info = grpo.train(c["init_dir"], c["out_dir"], ds, variant(c["variant"], where),
                          num_generations=c["num_generations"], beta=c["beta"],
                          max_completion_length=c["max_completion_length"], temperature=c["temperature"],
                          mask_truncated=c["mask_truncated"], config_extra=extra or None, **common)
        counts = {"completions": c["max_steps"] * glob * c["num_generations"]}
    else:
        from datasets import load_from_disk

        from repro.train import dpo

        with first:
            ds = load_from_disk(str(c["preference"]))
            if hasattr(ds, "keys"):  # a DatasetDict (repro.data.preference saves {"train": ...})
                ds = ds[c["split"]]
            ds = dpo.to_dpo_rows(ds, c["weighted"])
        info = dpo.train(c["init_dir"], c["out_dir"], ds, weighted=c["weighted"], beta=c["beta"],
                         equal_text_exposure=c["equal_text_exposure"], **common)
        counts = {}
    if not info.get("cached"):
        # train() counted per-device batches; record the global ones (on the main process, once)
        info = {**info, **counts, "world_size": world, "global_batch_size": glob, "per_device_batch_size": per_device}
        if not state or state.is_main_process:
            runs.finish(c["out_dir"], info)
        runs.barrier()
    return info


# ----------------------------------------------------------------------------------------------- launching
def command(kinds: list[str], config_path, accelerate_config=None, port: int | None = None) -> list[str]:
    """argv of `accelerate launch [--config_file X] [--main_process_port P] -m repro.train.launch <kinds> --config
    <config_path>` with this interpreter (no reliance on PATH); without accelerate_config, a plain python run."""
    tail = ["-m", "repro.train.launch", *kinds, "--config", str(config_path)]
    if accelerate_config is None:
        return [sys.executable, *tail]
    opts = ["--config_file", str(accelerate_config)] + (["--main_process_port", str(port)] if port else [])
    return [sys.executable, "-m", "accelerate.commands.launch", *opts, *tail]


def spawn(kinds: list[str], cfg: dict, accelerate_config, workdir, port: int | None = None,
          timeout: float | None = None) -> dict[str, dict]:
    """Write `cfg` to <workdir>/launch_config.json, run `command(...)` as a subprocess (a notebook cell or a test)
    and return {kind: the run's train_info.json}. A failed launch raises with the tail of its output."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "launch_config.json"
    path.write_text(json.dumps(cfg, indent=1, default=str))
    r = subprocess.run(command(kinds, path, accelerate_config, port), capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"launch of {kinds} failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    out = {}
    for kind in kinds:
        out_dir = Path(section(cfg, kind, str(path))["out_dir"])
        out[kind] = json.loads((out_dir / runs.INFO_FILE).read_text())
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m repro.train.launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("trainers", nargs="+", choices=TRAINERS, help="run one after another, in this order")
    ap.add_argument("--config", required=True, help="YAML/JSON: one trainer's keys, or a section per trainer")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if not set(cfg) & set(TRAINERS) and len(args.trainers) > 1:
        raise SystemExit(f"launch config {args.config}: several trainers need one section each ({args.trainers})")
    for kind in args.trainers:
        info = run(kind, section(cfg, kind, args.config), args.config)
        if int(os.environ.get("RANK", "0")) == 0:
            losses = [h.get("loss", h.get("policy_loss")) for h in info["log_history"]
                      if "loss" in h or "policy_loss" in h]
            print(f"[launch] {kind}: {info['final_dir']} steps={info['steps']} world={info.get('world_size', 1)} "
                  f"last loss={losses[-1] if losses else None}{' (cached)' if info.get('cached') else ''}",
                  flush=True)


if __name__ == "__main__":
    main()

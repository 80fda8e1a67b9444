"""Multi-process training through accelerate (repro.train.launch): SFT, GRPO, DPO and PPO run in 2 CPU processes (gloo,
configs/accelerate/cpu_2proc.yaml) for a few steps and are compared with the single-process code path on the same
config (same global batch):
    SFT (rows in sequential global batches) and DPO: the same loss and gradient norm at every step, and the same
    final weights up to float noise (each step's global batch is the same rows; DDP averages the two halves);
    GRPO: the same steps, prompts (token counts) and completions per step; sampling differs per process, so only
    finiteness and that the policy moved are checked;
    PPO (our trainer, accelerate's primitives): greedy rollouts, so both runs draw the same samples for the same
    prompts, and step 1's rewards, value loss, (globally whitened) advantages and policy loss agree; the same steps
    and samples per step, finite losses, a loadable model and value head that moved.
Every final model is loadable. The config checks (unknown key, vLLM on CPU, ...) need no launch.
"""

from __future__ import annotations

import math
import os
import socket
import zlib
from pathlib import Path

import pytest
import torch
from datasets import DatasetDict

from repro.data import build
from repro.models import build_tiny_vlm, load_vlm
from repro.train import launch, ppo, runs, sft
from tests.unit.test_dpo import KW, preference_set

ROOT = Path(__file__).resolve().parents[2]
CPU_2PROC = ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"
DISTINCT = "tests.unit.test_grpo:distinct_chars_reward"  # a reward with spread on a random policy
TRL = ("sft", "grpo", "dpo")  # the TRL trainers, launched together; PPO has its own launch below
ROW = "tests.unit.test_multiprocess:row_reward"


def row_reward(completions, id=None, **kwargs):  # noqa: A002 - the rows' column is called "id"
    """Test-only reward that differs between prompts whatever the policy writes (a fixed value per row id). Why:
    a random policy's greedy answers can be the same text for every prompt (it happened after a tokenizer change),
    and then every reward ties and the whitened advantages the PPO test compares are all 0."""
    return [zlib.crc32(str(i).encode()) % 97 / 97 for i in (id or [None] * len(completions))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _configs(root, data, init, pref, tag: str) -> dict:
    return {
        "sft": {"init_dir": str(init), "out_dir": str(root / f"sft_{tag}"), "data_dir": str(data),
                "tasks": ["instruct"], "sequential": True, "max_steps": 3, "batch_size": 4, "lr": 2e-3,
                "logging_steps": 1, "save_steps": 100},
        "grpo": {"init_dir": str(init), "out_dir": str(root / f"grpo_{tag}"), "data_dir": str(data), "limit": 8,
                 "variant": {"name": "mp", "rewards": ["repro.rewards.vqa:format_reward", DISTINCT]},
                 "max_steps": 2, "batch_size": 2, "num_generations": 4, "max_completion_length": 8, "lr": 1e-2,
                 "beta": 0.04, "mask_truncated": False},  # a random policy's completions are all cut at 8 tokens
        "dpo": {"init_dir": str(init), "out_dir": str(root / f"dpo_{tag}"), "preference": str(pref),
                "weighted": True, "max_steps": 2, "batch_size": 4, "lr": 1e-3,
                "equal_text_exposure": False},  # exact max_steps in both runs (the exposure rule: test_dpo.py)
    }


@pytest.fixture(scope="module")
def runs_1_and_2(tmp_path_factory):
    """{kind: (single-process info, 2-process info)} and the init dir."""
    root = tmp_path_factory.mktemp("mp")
    data = root / "data"
    build.build(data, seed=0, **KW)
    init = build_tiny_vlm(root / "init", sft.corpus(data), size="smoke", seed=0)
    pref = root / "pref"
    DatasetDict({"train": preference_set(data)}).save_to_disk(str(pref))
    with pytest.MonkeyPatch.context() as mp:  # the launched processes import the test reward from tests/
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        two = launch.spawn(list(TRL), _configs(root, data, init, pref, "2proc"), CPU_2PROC,
                           root / "launch", port=_free_port(), timeout=600)
    one_cfg = _configs(root, data, init, pref, "1proc")
    one = {k: launch.run(k, one_cfg[k]) for k in TRL}
    return {k: (one[k], two[k]) for k in TRL}, init


def _ppo_config(root, data, init, tag: str) -> dict:
    # Greedy rollouts (temperature 0): the 1- and 2-process runs sample the same answers to the same prompts, so
    # step 1 can be compared number by number. baseline "none" (a prompt's greedy samples tie, LOO would zero them),
    # whitening on (its mean / std must be the whole step's), one minibatch of the step's 4 samples (2 per process).
    return {"init_dir": str(init), "out_dir": str(root / f"ppo_{tag}"), "data_dir": str(data), "task": "instruct",
            "limit": 8, "rewards": [DISTINCT, ROW, {"factory": "repro.rewards.localization:make_aar_reward",
                                                "kwargs": {"group_key": "query_id"}}],
            "max_steps": 2, "batch_size": 2, "lr": 1e-3,
            "ppo_config": {"k": 2, "minibatch": 4, "ppo_epochs": 1, "max_new_tokens": 6, "temperature": 0.0,
                           "baseline": "none", "whiten_advantages": True, "value_warmup_steps": 0}}


@pytest.fixture(scope="module")
def ppo_1_and_2(tmp_path_factory):
    """(single-process info, 2-process info, init dir) of the same PPO config."""
    root = tmp_path_factory.mktemp("mp_ppo")
    data = root / "data"
    build.build(data, seed=0, **KW)
    init = build_tiny_vlm(root / "init", sft.corpus(data), size="smoke", seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        two = launch.spawn(["ppo"], {"ppo": _ppo_config(root, data, init, "2proc")}, CPU_2PROC, root / "launch",
                           port=_free_port(), timeout=600)["ppo"]
    one = launch.run("ppo", _ppo_config(root, data, init, "1proc"))
    return one, two, init


def _steps(info) -> list[dict]:
    return [h for h in info["log_history"] if "loss" in h and "train_runtime" not in h]


def _weights(final_dir) -> dict:
    model, _ = load_vlm(final_dir, device="cpu", dtype="fp32")  # also: the saved model loads
    return {k: v.detach() for k, v in model.named_parameters()}


def _common_checks(one, two, max_steps):
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["global_batch_size"] == one["global_batch_size"] == 2 * two["per_device_batch_size"]
    s1, s2 = _steps(one), _steps(two)
    assert [h["step"] for h in s1] == [h["step"] for h in s2] == list(range(1, max_steps + 1))
    assert all(math.isfinite(h["loss"]) for h in s2)
    return s1, s2


@pytest.mark.slow
@pytest.mark.parametrize("kind,max_steps", [("sft", 3), ("dpo", 2)])
def test_two_processes_match_one_step_by_step(runs_1_and_2, kind, max_steps):
    pair, init = runs_1_and_2
    one, two = pair[kind]
    s1, s2 = _common_checks(one, two, max_steps)
    for a, b in zip(s1, s2):  # step 1 included: same rows, so the same loss before any update
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6), (kind, a["step"])
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), (kind, a["step"])
    w0, w1, w2 = _weights(init), _weights(one["final_dir"]), _weights(two["final_dir"])
    moved = max((w1[k] - w0[k]).abs().max().item() for k in w0)
    apart = max((w1[k] - w2[k]).abs().max().item() for k in w0)
    assert moved > 1e-4 and apart < 0.05 * moved, (kind, moved, apart)
    if kind == "sft":
        assert two["examples"] == one["examples"] == 3 * 4


@pytest.mark.slow
def test_grpo_two_processes_same_steps_prompts_and_completions(runs_1_and_2):
    pair, init = runs_1_and_2
    one, two = pair["grpo"]
    s1, s2 = _common_checks(one, two, 2)
    # the same prompts each step (completions are all cut at max_completion_length by a random policy)
    assert [h["num_tokens"] for h in s1] == [h["num_tokens"] for h in s2]
    assert two["completions"] == one["completions"] == 2 * 2 * 4
    assert all(math.isfinite(h["reward"]) and "rewards/distinct_chars_reward/mean" in h for h in s2)
    w0, w2 = _weights(init), _weights(two["final_dir"])
    assert any(not torch.equal(w0[k], w2[k]) for k in w0 if "language_model" in k)


@pytest.mark.slow
def test_ppo_two_processes_match_one_on_the_same_samples(ppo_1_and_2):
    one, two, init = ppo_1_and_2
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["global_batch_size"] == one["global_batch_size"] == 2 * two["per_device_batch_size"]
    assert two["samples"] == one["samples"] == 2 * 2 * 2
    h1, h2 = one["log_history"], two["log_history"]
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == [1, 2]
    assert all(math.isfinite(h[k]) for h in h2 for k in ("policy_loss", "value_loss", "reward", "kl"))
    a, b = h1[0], h2[0]  # step 1: same prompts, same greedy samples, policy == reference
    for k in ("reward", "reward/distinct_chars_reward", "response_length", "value_loss", "advantage_abs", "entropy"):
        assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-5), (k, a[k], b[k])
    assert a["advantage_abs"] > 0.1  # whitened: |A| ~ 1 (a per-process whitening would not match one process)
    assert b["policy_loss"] == pytest.approx(a["policy_loss"], abs=1e-4)
    w0, w2 = _weights(init), _weights(two["final_dir"])
    assert any(not torch.equal(w0[k], w2[k]) for k in w0 if "language_model" in k)
    head = ppo.load_value_head(two["final_dir"], ppo.hidden_size(load_vlm(two["final_dir"], device="cpu")[0]))
    assert head.linear.weight.abs().sum() > 0  # zero-initialised; the value loss moved it


# ----------------------------------------------------------------------------------------------- no launch
def test_config_errors_name_the_file_and_key(tmp_path):
    base = {"init_dir": "i", "out_dir": "o", "data_dir": "d", "max_steps": 1, "batch_size": 2}
    with pytest.raises(ValueError, match=r"run.yaml \[sft\]: unknown key 'max_step'"):
        launch.resolve("sft", {**base, "max_step": 3}, "run.yaml")
    with pytest.raises(ValueError, match=r"\[dpo\]: missing key 'preference'"):
        launch.resolve("dpo", {k: v for k, v in base.items() if k != "data_dir"} | {"weighted": True}, "run.yaml")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        launch.resolve("grpo", {**base, "batch_size": 0}, "run.yaml")
    with pytest.raises(ValueError, match="unknown trainer 'rlhf'"):
        launch.resolve("rlhf", base)
    c = launch.resolve("ppo", {**base, "rewards": [DISTINCT], "ppo_config": {"k": 2}}, "run.yaml")
    assert launch.ppo_config(c, 4).batch_size == 4 and launch.ppo_config(c, 4).k == 2
    with pytest.raises(ValueError, match=r"\[ppo\]: ppo_config key 'steps': set it as a top-level key"):
        launch.ppo_config({**c, "ppo_config": {"steps": 3}}, 4, "run.yaml")
    with pytest.raises(ValueError, match="ppo_config key 'kk': not a PPOConfig field"):
        launch.ppo_config({**c, "ppo_config": {"kk": 3}}, 4)
    with pytest.raises(ValueError, match="lora must be null"):
        launch.ppo_config({**c, "lora": {"r": 4}}, 4)
    assert launch.reward_fn({"factory": "repro.rewards.localization:make_aar_reward"}).__name__ == "aar_reward"
    c = launch.resolve("grpo", {**base, "use_vllm": True}, "run.yaml")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="use_vllm needs a CUDA GPU"):
            launch._vllm_extra(c, use_cpu=True, where="run.yaml")
    assert launch._vllm_extra({**c, "use_vllm": False, "grpo_config": {"top_p": 0.9}}, True, "x") == {"top_p": 0.9}
    p = tmp_path / "run.yaml"
    p.write_text("sft:\n  max_steps: 1\n")
    cfg = launch.load_config(p)
    assert launch.section(cfg, "sft", str(p)) == {"max_steps": 1}
    with pytest.raises(ValueError, match="no section 'dpo'"):
        launch.section(cfg, "dpo", str(p))


def test_custom_variant_and_command_line():
    v = launch.variant({"name": "c", "rewards": ["repro.rewards.vqa:format_reward", DISTINCT], "weights": [1, 2]})
    assert v.reward_names == ["format_reward", "distinct_chars_reward"] and v.weights == (1, 2)
    assert launch.variant("dr_grpo").loss_type == "dr_grpo"
    with pytest.raises(ValueError, match="cannot import reward 'nope:f'"):
        launch.variant({"rewards": ["nope:f"]})
    argv = launch.command(["sft", "dpo"], "run.yaml", CPU_2PROC, port=1234)
    assert argv[1:3] == ["-m", "accelerate.commands.launch"] and argv[argv.index("--main_process_port") + 1] == "1234"
    assert argv[-5:] == ["repro.train.launch", "sft", "dpo", "--config", "run.yaml"]
    assert launch.command(["grpo"], "r.json")[1:] == ["-m", "repro.train.launch", "grpo", "--config", "r.json"]


def test_single_process_sees_no_distributed_group():
    assert runs.rank_world() == (0, 1)  # so runs.prepare / train_and_save keep their single-process path

"""Kill-and-resume of the three TRL trainers (sft, grpo, dpo): a run interrupted right after its mid-run checkpoint
and rerun under the same key resumes from the checkpoint's WEIGHTS (not the initial ones: Trainer's own resume loads
none into LLaVA, docs/design.md §0) with its optimizer and RNG state, and ends where an uninterrupted run ends.

Tolerance: none. One process, one thread, the same seed, and the checkpoint carries the weights, optimizer, scheduler
and RNG states, so the resumed run is bit-identical to the uninterrupted one (measured: max |weight difference| 0.0
and equal logged losses for all three trainers); the weights and losses are compared exactly. A restart from the
initial weights, a lost optimizer state or a replayed data order each changes them."""

from __future__ import annotations

import pytest
import torch

from repro.models import load_vlm
from repro.train import dpo, grpo, sft
from tests.unit import tiny_rl

STEPS, MID = 4, 2


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    return tiny_rl.build_init(tmp_path_factory.mktemp("resume") / "init")


def alternating_reward(completions, **kwargs):
    """Rewards 0, 1, 0, 1, ... : every group has spread, so every GRPO step moves the policy."""
    return [float(i % 2) for i in range(len(completions))]


def _run(kind, init, out, callbacks):
    common = dict(max_steps=STEPS, save_steps=MID, use_cpu=True, run_key={"resume": kind}, callbacks=callbacks)
    if kind == "grpo":
        v = grpo.Variant("alternating", (alternating_reward,), (1.0,))
        return grpo.train(init, out, tiny_rl.grpo_rows(4), v, num_generations=4, batch_size=2, lr=1e-2, beta=0.04,
                          max_completion_length=3, mask_truncated=False, seed=0, **common)
    if kind == "dpo":
        return dpo.train(init, out, tiny_rl.preference_rows(8, visual=True), weighted=True, batch_size=2, lr=1e-3,
                         equal_text_exposure=False, seed=0, **common)
    return sft.train(init, out, tiny_rl.sft_rows(8), batch_size=2, lr=1e-3, logging_steps=1, seed=0, **common)


def _params(path) -> dict:
    model, _ = load_vlm(path, device="cpu", dtype="fp32")
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _losses(history) -> dict:
    return {h["step"]: h["loss"] for h in history if "loss" in h and "train_runtime" not in h}


@pytest.mark.parametrize("kind", ["grpo", "dpo", "sft"])
def test_kill_at_a_mid_checkpoint_then_resume_from_its_weights(tmp_path, init, kind):
    whole = _run(kind, init, tmp_path / "whole", None)
    out = tmp_path / "killed"
    with pytest.raises(tiny_rl.Interrupted):
        _run(kind, init, out, [tiny_rl.StopAfterSave(MID)])
    ckpt = out / "checkpoints" / f"checkpoint-{MID}"
    at_ckpt, at_init = _params(ckpt), _params(init)
    assert not _same(at_ckpt, at_init)  # the first steps moved the policy, so the check below can fail

    start = tiny_rl.StartWeights()
    resumed = _run(kind, init, out, [start])
    assert resumed["resumed_from"] == str(ckpt) and resumed["weights_restored"] is True
    assert start.step == MID and _same(start.params, at_ckpt)  # it starts from the checkpoint, not from init
    assert _same(_params(resumed["final_dir"]), _params(whole["final_dir"]))
    want, got = _losses(whole["log_history"]), _losses(resumed["log_history"])
    assert set(got) >= set(range(MID + 1, STEPS + 1))
    for step in range(MID + 1, STEPS + 1):
        assert got[step] == want[step], step

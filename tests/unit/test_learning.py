"""Learning tests (slow): each TRL trainer, on a small task whose optimum is known and reachable from its start,
raises its objective to near that optimum within a fixed CPU budget (well under a minute each on one thread).
They catch what tests of the pieces miss: a flipped advantage or margin sign, a loss mask on the wrong tokens, rewards
or weights misaligned with their completions or pairs: any of these leaves the objective flat or drives it down.

    GRPO     the reward is 1 when the first completion token lies in a fixed random quarter S of the vocabulary. The
             random start draws from S about 1/4 of the time (so every group has spread to learn from); the optimum,
             1.0, is reachable by moving probability mass onto S. Checked for both loss types (grpo, and dr_grpo at
             matched_lr: the same lr under AdamW).
    DPO      text pairs (answer a preferred to answer b on the same image); plain DPO and MMedPO's weighted loss with
             visual pairs (same answer, rejected on another image). Measured afterwards on every training pair
             against the initial model (the reference): preference accuracy 1.0 (the optimum), the implicit reward
             margin, and the chosen answer's log-likelihood, which must rise.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from repro.models import load_vlm
from repro.train import dpo, grpo
from tests.unit import tiny_rl

pytestmark = pytest.mark.slow
BUDGET_S = 120  # CPU seconds of training per run, one thread (measured ~10-25 s); CPU time, so load does not count


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_rl.build_init(tmp_path_factory.mktemp("learning") / "init")


@pytest.mark.parametrize("variant", ["grpo", "dr_grpo"])
def test_grpo_raises_the_mean_reward_to_the_optimum(tmp_path, init, variant):
    _, processor = load_vlm(init, device="cpu")
    vocab = len(processor.tokenizer)
    rewarded = set(np.random.default_rng(0).permutation(vocab)[: vocab // 4].tolist())

    def first_token_in_set_reward(completions, completion_ids, **kwargs):
        return [float(len(ids) > 0 and ids[0] in rewarded) for ids in completion_ids]

    base = grpo.VARIANTS[variant]
    v = grpo.Variant(f"learn_{variant}", (first_token_in_set_reward,), (1.0,), loss_type=base.loss_type,
                     scale_rewards=base.scale_rewards)
    t0 = time.process_time()
    # 2-token completions never end, so truncation masking is off here (it would mask every completion).
    info = grpo.train(init, tmp_path / "run", tiny_rl.grpo_rows(8), v, max_steps=20, num_generations=8, batch_size=2,
                      lr=1e-2, beta=0.0, max_completion_length=2, mask_truncated=False, use_cpu=True, seed=0,
                      save_steps=1000)
    seconds = time.process_time() - t0
    reward = grpo.curves(info["log_history"])["reward"].to_numpy()
    print(f"{variant}: reward by step {np.round(reward, 2).tolist()} in {seconds:.0f} s")
    assert reward[:3].mean() < 0.5  # the start: ~1/4 of the samples are rewarded
    assert reward[-4:].mean() >= 0.9  # near the optimum 1.0
    assert seconds < BUDGET_S


def _pair_stats(model, ref, processor, pref) -> dict:
    """Per training pair: policy and reference log-likelihoods of chosen (on its image) and rejected (on its rejected
    image), the implicit reward margin beta * [(pi_c - ref_c) - (pi_r - ref_r)], beta 0.1."""
    out = {"margin": [], "chosen_gain": []}
    for r in pref:
        img, rej_img = r["images"][0], r["rejected_images"][0]
        pc, rc = (tiny_rl.answer_logp(m, processor, r["prompt"], img, r["chosen"]) for m in (model, ref))
        pr, rr = (tiny_rl.answer_logp(m, processor, r["prompt"], rej_img, r["rejected"]) for m in (model, ref))
        out["margin"].append(0.1 * ((pc - rc) - (pr - rr)))
        out["chosen_gain"].append(pc - rc)
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("weighted", [False, True], ids=["dpo", "mmedpo"])
def test_dpo_and_mmedpo_learn_the_training_preferences(tmp_path, init, weighted):
    pref = tiny_rl.preference_rows(8, visual=weighted)
    t0 = time.process_time()
    info = dpo.train(init, tmp_path / "run", pref, weighted=weighted, max_steps=12, batch_size=4, lr=2e-3, beta=0.1,
                     use_cpu=True, seed=0, save_steps=1000)
    seconds = time.process_time() - t0
    ref, processor = load_vlm(init, device="cpu")
    model, _ = load_vlm(info["final_dir"], device="cpu")
    used = pref if weighted else pref.filter(lambda k: k == "text", input_columns="kind")
    stats = _pair_stats(model.eval(), ref.eval(), processor, used)
    print(f"weighted={weighted}: {info['steps']} steps in {seconds:.0f} s; margins {np.round(stats['margin'], 2)}; "
          f"chosen log-lik gain {np.round(stats['chosen_gain'], 1)}")
    assert info["steps"] == (24 if weighted else 12)  # MMedPO: equal text exposure (4 of its 8 pairs are text)
    assert (stats["margin"] > 0).all()  # preference accuracy 1.0 on the training pairs, the optimum
    assert stats["margin"].mean() > 1.0  # -log sigmoid(margin) < 0.32: well past the start's log 2
    assert stats["chosen_gain"].mean() > 0  # the chosen answers became more likely, not only the rejected less
    assert seconds < BUDGET_S

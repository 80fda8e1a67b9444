"""repro.train.ppo_math by hand: GAE, the leave-one-out baseline, KL shaping, whitening, the loss's masking and
explained variance. Every expected number below is worked out in the comment above it."""

from __future__ import annotations

import pytest
import torch

from repro.train import ppo_math as pm

# ----------------------------------------------------------------------------------------------- GAE
# Worked by hand, gamma 0.9, lam 0.8 (gamma * lam = 0.72), r = [0, 0, 1], V = [0.5, 0.2, 0.4]:
#   delta_2 = 1 + 0 - 0.4 = 0.6                 A_2 = 0.6
#   delta_1 = 0 + 0.9 * 0.4 - 0.2 = 0.16        A_1 = 0.16 + 0.72 * 0.6 = 0.592
#   delta_0 = 0 + 0.9 * 0.2 - 0.5 = -0.32       A_0 = -0.32 + 0.72 * 0.592 = 0.10624
#   returns = A + V = [0.60624, 0.792, 1.0]
HAND_ADV = [0.10624, 0.592, 0.6]
HAND_RET = [0.60624, 0.792, 1.0]


def test_gae_matches_the_hand_computation():
    adv, ret = pm.gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.2, 0.4]]), torch.ones(1, 3), 0.9, 0.8)
    assert torch.allclose(adv, torch.tensor([HAND_ADV]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([HAND_RET]), atol=1e-6)


def test_gae_skips_masked_positions_and_padding():
    # Row 0: the same 3 actions at positions 0, 1, 3; position 2 (a question) and 4-5 (padding) carry junk rewards
    # and values that must not leak in. Row 1: left-padded copy, actions at 3, 4, 5.
    junk = 7.0
    rewards = torch.tensor([[0.0, 0.0, junk, 1.0, junk, junk], [junk, junk, junk, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, -3.0, 0.4, 9.0, 9.0], [9.0, 9.0, 9.0, 0.5, 0.2, 0.4]])
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.float32)
    adv, ret = pm.gae(rewards, values, mask, 0.9, 0.8)
    assert torch.allclose(adv[0, [0, 1, 3]], torch.tensor(HAND_ADV), atol=1e-6)
    assert torch.allclose(adv[1, [3, 4, 5]], torch.tensor(HAND_ADV), atol=1e-6)
    assert torch.allclose(ret[0, [0, 1, 3]], torch.tensor(HAND_RET), atol=1e-6)
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()
    white, _ = pm.gae(rewards, values, mask, 0.9, 0.8, whiten=True)
    on = white[mask == 1]
    assert abs(on.mean().item()) < 1e-5 and abs(on.std(unbiased=False).item() - 1) < 1e-3
    assert (white[mask == 0] == 0).all()
    # gamma = lam = 1: A_t = (sum of future rewards) - V_t = 1 - V_t
    adv1, _ = pm.gae(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(adv1[0, [0, 1, 3]], torch.tensor([0.5, 0.8, 0.6]), atol=1e-6)


# ----------------------------------------------------------------------------------------------- baseline
def test_loo_baseline_by_hand():
    # prompt 0: scores 9, 9, 9 -> every other-mean is 9 -> 0, 0, 0
    # prompt 1: scores 3, 0, 0 -> 3 - (0+0)/2 = 3; 0 - (3+0)/2 = -1.5 (twice)
    # prompt 2: one sample (no other to compare with) -> its score, 5
    # interleaved order on purpose: groups are matched by value, not position
    scores = torch.tensor([9.0, 3.0, 9.0, 0.0, 5.0, 9.0, 0.0])
    groups = torch.tensor([0, 1, 0, 1, 2, 0, 1])
    got = pm.loo_baseline(scores, groups)
    assert got.tolist() == pytest.approx([0.0, 3.0, 0.0, -1.5, 5.0, 0.0, -1.5])
    with pytest.raises(ValueError, match="loo_baseline"):
        pm.loo_baseline(scores, groups[:3])


def _batch(k: int, length: int, score: list[float]):
    """k samples of one prompt, answers of `length` action tokens after 2 prompt positions; policy == reference."""
    mask = torch.zeros(k, length + 2)
    mask[:, 2:] = 1
    logp = torch.full(mask.shape, -1.0) * mask
    return logp, logp.clone(), mask, torch.tensor(score), torch.zeros(k, dtype=torch.long)


def test_identical_rewards_give_zero_advantage_at_every_token():
    logp, ref, mask, scores, groups = _batch(4, 5, [9.0, 9.0, 9.0, 9.0])
    for values in (torch.zeros(mask.shape), torch.full(mask.shape, 0.0)):
        out = pm.advantages(logp, ref, values, mask, scores, groups, kl_beta=0.1, gamma=1.0, lam=1.0)
        assert (out["advantages"] == 0).all() and (out["centred"] == 0).all()
    # The old behaviour (no baseline) gives every token of these tied samples +9: the test can fail.
    old = pm.advantages(logp, ref, torch.zeros(mask.shape), mask, scores, groups, kl_beta=0.1, gamma=1.0, lam=1.0,
                        baseline="none")
    assert torch.allclose(old["advantages"][mask == 1], torch.tensor(9.0))


def test_the_old_settings_turn_tied_rewards_into_a_position_signal():
    # Issue 11's diagnosis, reproduced: 4 conversations that all earn 9, lam 0.95, V = 0, no baseline, whitened.
    # A_t = 9 * 0.95^(T-1-t) before whitening; whitening makes the first tokens negative and the last positive, so
    # the update pushes down the start of answers that were all right. The new defaults give 0 everywhere.
    logp, ref, mask, scores, groups = _batch(4, 20, [9.0] * 4)
    zero_v = torch.zeros(mask.shape)
    old = pm.advantages(logp, ref, zero_v, mask, scores, groups, kl_beta=0.1, gamma=1.0, lam=0.95, baseline="none",
                        whiten=True)["advantages"]
    assert (old[:, 2] < -1).all() and (old[:, -1] > 1).all()
    new = pm.advantages(logp, ref, zero_v, mask, scores, groups, kl_beta=0.1, gamma=1.0, lam=1.0)["advantages"]
    assert (new == 0).all()


def test_advantages_do_not_depend_on_position_when_the_value_head_is_exact():
    # Scores 1, 0, 0, 0 -> centred 1 - 0 = 1 and 0 - 1/3 = -1/3 (x3). Policy == reference, so r_t = centred score
    # at the last token and 0 elsewhere. The exact value of every state before the end is the expected centred
    # score of the prompt's samples, (1 - 3 * 1/3) / 4 = 0; with gamma = lam = 1, A_t = G_t - V_t = centred score
    # at every one of the 6 tokens.
    logp, ref, mask, scores, groups = _batch(4, 6, [1.0, 0.0, 0.0, 0.0])
    v_exact = torch.zeros(mask.shape)
    out = pm.advantages(logp, ref, v_exact, mask, scores, groups, kl_beta=0.1, gamma=1.0, lam=1.0)
    adv = out["advantages"]
    assert torch.allclose(adv[0, 2:], torch.tensor(1.0)) and torch.allclose(adv[1:, 2:], torch.tensor(-1 / 3))
    # Any value that is constant over a sample's tokens (say 0.25) shifts A but keeps it flat over positions.
    flat = pm.advantages(logp, ref, torch.full(mask.shape, 0.25), mask, scores, groups, kl_beta=0.1, gamma=1.0,
                         lam=1.0)["advantages"]
    assert torch.allclose(flat[0, 2:], torch.tensor(0.75))
    # lam = 0.95 with the same values: the credit decays towards the start (issue 11's position effect).
    decayed = pm.advantages(logp, ref, torch.full(mask.shape, 0.25), mask, scores, groups, kl_beta=0.1, gamma=1.0,
                            lam=0.95)["advantages"]
    assert decayed[0, 2].item() == pytest.approx(0.75 * 0.95 ** 5) and decayed[0, -1].item() == pytest.approx(0.75)


def test_whitening_a_batch_of_ties_turns_kl_noise_into_unit_advantages():
    # Why whiten_advantages is off by default: 3 tied samples whose only signal is a tiny KL (policy a hair off the
    # reference) get |A| ~ 1e-3 unwhitened and ~1 whitened.
    logp, ref, mask, scores, groups = _batch(3, 4, [1.0, 1.0, 1.0])
    logp = logp + 0.01 * torch.tensor([[1.0], [-1.0], [0.5]]) * mask
    kw = dict(kl_beta=0.1, gamma=1.0, lam=1.0)
    raw = pm.advantages(logp, ref, torch.zeros(mask.shape), mask, scores, groups, **kw)["advantages"]
    white = pm.advantages(logp, ref, torch.zeros(mask.shape), mask, scores, groups, whiten=True, **kw)["advantages"]
    assert raw[mask == 1].abs().max() < 5e-3 and white[mask == 1].abs().max() > 0.9
    with pytest.raises(ValueError, match="baseline"):
        pm.advantages(logp, ref, torch.zeros(mask.shape), mask, scores, groups, baseline="mean", **kw)


# ----------------------------------------------------------------------------------------------- rewards, loss
def test_shaped_rewards_put_the_score_on_the_last_action_and_kl_is_zero_at_the_reference():
    logp = torch.tensor([[-1.0, -2.0, -0.5, -1.5, -0.1]])
    mask = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0]])
    rewards, kl = pm.shaped_rewards(logp, logp.clone(), mask, torch.tensor([2.0]), kl_beta=0.1)
    assert (kl == 0).all()
    assert rewards.tolist() == [[0.0, 0.0, 0.0, 2.0, 0.0]]
    rewards, kl = pm.shaped_rewards(logp, logp - 1.0, mask, torch.tensor([2.0]), kl_beta=0.1)
    assert torch.allclose(rewards, torch.tensor([[0.0, -0.1, 0.0, 1.9, 0.0]]))
    assert kl.tolist() == [[0.0, 1.0, 0.0, 1.0, 0.0]]


def test_policy_loss_sign_and_clip_by_hand():
    # One token, vocabulary of 2, logits (0, 0): p(target 0) = 0.5. old_logp = log 0.5 -> ratio 1.
    logits = torch.zeros(1, 1, 2, requires_grad=True)
    targets = torch.zeros(1, 1, dtype=torch.long)
    mask = torch.ones(1, 1)
    old = torch.log(torch.tensor([[0.5]]))
    loss, entropy, st = pm.policy_loss(logits, targets, mask, old, torch.tensor([[2.0]]), clip=0.2)
    assert loss.item() == pytest.approx(-2.0) and entropy.item() == pytest.approx(0.6931, abs=1e-4)
    loss.backward()
    # d(-A * p/p_old)/d logit_0 = -A/p_old * p(1-p) = -2 / 0.5 * 0.25 = -1: gradient descent raises logit_0.
    assert logits.grad[0, 0].tolist() == pytest.approx([-1.0, 1.0])
    # ratio 0.5 / 0.25 = 2 > 1.2 with a positive advantage: clipped, loss = -A * 1.2 and no gradient
    logits.grad = None
    loss, _, st = pm.policy_loss(logits, targets, mask, torch.log(torch.tensor([[0.25]])), torch.tensor([[2.0]]), 0.2)
    assert loss.item() == pytest.approx(-2.4) and st["clip_frac"] == 1.0
    loss.backward()
    assert (logits.grad == 0).all()


def test_value_loss_clips_around_the_old_value():
    # V_old = 0, V = 1, return = 1, clip 0.2: unclipped error 0, clipped value 0.2 -> error 0.64; max -> 0.32
    v = torch.tensor([[1.0]])
    assert pm.value_loss(v, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.2).item() == pytest.approx(0.32)
    assert pm.value_loss(v, torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(1, 1), 0.2).item() == 0.0


def test_explained_variance_by_hand():
    ret = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    m = torch.ones(1, 4)
    assert pm.explained_variance(ret, ret, m) == pytest.approx(1.0)
    assert pm.explained_variance(torch.zeros(1, 4), ret, m) == pytest.approx(0.0)   # a constant predicts nothing
    # V = returns - (1, -1, 1, -1): Var(residual) = 1, Var(returns) = 1.25 -> 1 - 1 / 1.25 = 0.2
    assert pm.explained_variance(ret - torch.tensor([[1.0, -1.0, 1.0, -1.0]]), ret, m) == pytest.approx(0.2)
    assert pm.explained_variance(torch.zeros(1, 4), torch.ones(1, 4), m) is None


def test_masked_whiten_and_mean():
    x = torch.tensor([[1.0, 100.0, 3.0]])
    m = torch.tensor([[1.0, 0.0, 1.0]])
    assert pm.masked_mean(x, m).item() == 2.0
    assert pm.masked_whiten(x, m)[0].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-4)


# ----------------------------------------------------------------------------------------------- turn credit
def test_per_turn_scores_land_on_each_turns_last_token_and_are_centred_per_turn():
    # two samples of one prompt, T = 6; turn 1 = columns 0-1, turn 2 = columns 3-4 (column 2: a clinician question)
    mask = torch.tensor([[1, 1, 0, 1, 1, 0], [1, 1, 0, 1, 1, 0]], dtype=torch.float32)
    zeros = torch.zeros(2, 6)
    scores = torch.tensor([[1.0, 0.0], [0.0, 2.0]])   # per turn: sample 0 right on turn 1, sample 1 on turn 2
    positions = torch.tensor([[1, 4], [1, 4]])
    out = pm.advantages(zeros, zeros, zeros, mask, scores, torch.tensor([0, 0]), kl_beta=0.1, gamma=1.0,
                              lam=1.0, positions=positions)
    # leave-one-out per turn column: turn 1 [+1, -1], turn 2 [-2, +2]
    assert torch.equal(out["centred"], torch.tensor([[1.0, -2.0], [-1.0, 2.0]]))
    assert out["rewards"][0, 1] == 1.0 and out["rewards"][0, 4] == -2.0 and out["rewards"][1, 4] == 2.0
    # gamma = 1: a turn-2 token sees only turn 2's reward; a turn-1 token sees both (its answer shapes turn 2)
    assert torch.allclose(out["advantages"][0], torch.tensor([-1.0, -1.0, 0.0, -2.0, -2.0, 0.0]))
    assert torch.allclose(out["advantages"][1], torch.tensor([1.0, 1.0, 0.0, 2.0, 2.0, 0.0]))
    # the same totals at the end give every token the whole conversation's centred score
    end = pm.advantages(zeros, zeros, zeros, mask, scores.sum(1), torch.tensor([0, 0]), kl_beta=0.1,
                              gamma=1.0, lam=1.0)
    assert torch.allclose(end["advantages"][0], torch.tensor([-1.0, -1.0, 0.0, -1.0, -1.0, 0.0]))


def test_per_turn_scores_need_their_positions():
    zeros = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="positions"):
        pm.shaped_rewards(zeros, zeros, torch.ones(1, 3), torch.zeros(1, 2), 0.1)


def test_turn_positions_are_each_turns_last_sampled_token_in_action_space():
    from repro.train.rollouts import Sample, turn_positions

    # sample a: prompt 3, answer 2, question 2, answer 1 (8 tokens); sample b: prompt 2, answer 1 (3 tokens)
    a = Sample(query=0, ids=list(range(8)), action=[0, 0, 0, 1, 1, 0, 0, 1], token_extra={}, image={})
    b = Sample(query=1, ids=list(range(3)), action=[0, 0, 1], token_extra={}, image={})
    pos = turn_positions([a, b], 2)
    # L = 8: a is not padded, its turns end at ids 4 and 7 -> columns 3 and 6; b is padded by 5, its answer (id 2)
    # sits at padded index 7 -> column 6, and it has no second turn
    assert pos.tolist() == [[3, 6], [6, -1]]


def test_noise_scale_known_answers():
    # every sample's gradient equal: all signal, no noise, halves identical
    same = torch.tensor([[1.0, 2.0]] * 6)
    r = pm.noise_scale(same)
    assert r["signal"] == pytest.approx(5.0) and r["noise"] == pytest.approx(0.0, abs=1e-12)
    assert r["cosine_halves"] == pytest.approx(1.0)
    # +-e1 in equal numbers: mean 0, so no detectable signal and an infinite noise scale
    pm_ = torch.tensor([[1.0, 0.0], [-1.0, 0.0]] * 4)
    r = pm.noise_scale(pm_)
    assert r["signal"] < 0 and r["b_noise"] == float("inf")
    # mean (1, 0) plus noise of variance 4 per coordinate: tr(Sigma) ~ 8, |Eg|^2 ~ 1, B_noise ~ 8
    g = torch.tensor([1.0, 0.0]) + 2 * torch.randn(20000, 2, generator=torch.Generator().manual_seed(0))
    r = pm.noise_scale(g)
    assert r["signal"] == pytest.approx(1.0, abs=0.1) and r["b_noise"] == pytest.approx(8.0, rel=0.15)
    with pytest.raises(ValueError):
        pm.noise_scale(torch.zeros(3, 2))

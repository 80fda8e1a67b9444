"""repro.teach: the notebooks' hand-batch maths, pinned to values computed by hand (and, where the library has the
expression, to the library)."""

from __future__ import annotations

import math

import pytest
import torch

from repro import teach


def test_grpo_advantages_with_and_without_std():
    # one group of 4: mean 0.5, Bessel std sqrt(4 * 0.25 / 3) = sqrt(1/3)
    a = teach.grpo_advantages([1.0, 0.0, 0.0, 1.0], 4, "group")
    s = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert a.tolist() == pytest.approx([s, -s, -s, s])
    assert teach.grpo_advantages([1.0, 0.0, 0.0, 1.0], 4, "none").tolist() == [0.5, -0.5, -0.5, 0.5]
    # a tied group carries no signal either way; two groups are centred separately
    both = teach.grpo_advantages([1, 1, 1, 1, 3, 1, 1, 1], 4, "none").tolist()
    assert both == [0, 0, 0, 0, 1.5, -0.5, -0.5, -0.5]
    with pytest.raises(ValueError):
        teach.grpo_advantages([1.0, 0.0, 1.0], 2)


def test_k3_kl_by_hand():
    assert float(teach.k3_kl(torch.tensor(-1.0), torch.tensor(-1.0))) == 0.0
    # pi = 0.5, ref = 0.25: d = log 0.5, exp(d) - d - 1 = 0.5 + log 2 - 1
    got = float(teach.k3_kl(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))))
    assert got == pytest.approx(0.5 + math.log(2) - 1)


def test_grpo_loss_normalisation_by_hand():
    # completion 0: A = +1, 2 tokens; completion 1: A = -1, 4 tokens. At ratio 1 d loss / d logp_it is the token's
    # weight: -A_i / (B |o_i|) under "grpo", -A_i / (B L_max) under "dr_grpo".
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0])
    grads = {}
    for lt in ("grpo", "dr_grpo"):
        logp = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
        loss = teach.grpo_loss(logp, logp.detach(), adv, mask, loss_type=lt, max_completion_length=4)
        loss.backward()
        grads[lt] = (logp.grad * mask).tolist()
    assert grads["grpo"] == [[-0.25, -0.25, 0, 0], [0.125, 0.125, 0.125, 0.125]]
    assert grads["dr_grpo"] == [[-0.125, -0.125, 0, 0], [0.125, 0.125, 0.125, 0.125]]
    # clipping: ratio e^0.5 > 1.2 with A = 1 -> the token's loss is -1.2
    one = torch.ones(1, 1, dtype=torch.float64)
    clipped = teach.grpo_loss(0.5 * one, 0 * one, torch.tensor([1.0]), one)
    assert float(clipped) == pytest.approx(-1.2)


def test_dpo_loss_by_hand():
    loss, per_pair = teach.dpo_loss([0.0, 10.0], [0.0, 0.0], beta=0.1)
    assert per_pair.tolist() == pytest.approx([math.log(2), math.log(1 + math.exp(-1))])
    # weight 0 removes a pair from the sum but not from B (the release divides by B, not by sum w)
    w_loss, _ = teach.dpo_loss([0.0, 0.0], [0.0, 0.0], weight=[1.0, 0.0])
    assert float(w_loss) == pytest.approx(math.log(2) / 2)


def test_vrr_from_attention_by_hand():
    att = [[1.0, 1.0, 2.0], [0.0, 1.0, 1.0]]  # two anchor tokens, three image patches (unnormalised mass)
    assert teach.vrr_from_attention(att, [False, False, True]) == pytest.approx(0.5)     # (0.5 + 0.5) / 2
    assert teach.vrr_from_attention(att, [True, False, True]) == pytest.approx(0.625)    # (0.75 + 0.5) / 2
    assert teach.vrr_from_attention([[0.0, 0.0, 0.0]], [True, True, True]) == 0.0        # no mass on the image
    with pytest.raises(ValueError):
        teach.vrr_from_attention(att, [True, False])

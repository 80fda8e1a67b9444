"""The methods' core maths on hand-made batches, for the notebooks' "method in steps" cells (issue 28).

Each function here is the *same expression* the training code runs, lifted out so that a reader can call it on a
few numbers; where the training code has a pure function already (repro.train.ppo_math, repro.rewards.*), the
notebooks call that instead and nothing is repeated here. Training never imports this module: a test
(tests/unit/test_teach.py) pins each function to hand-computed values and, where one exists, to the library
expression it mirrors.

    grpo_advantages  TRL GRPOTrainer's group advantages (trl/trainer/grpo_trainer.py, "sum_then_normalize"):
                     A_i = r_i - mean_G r, divided by (std_G r + 1e-4) when scale_rewards="group" (GRPO), not when
                     "none" (Dr.GRPO). std is TRL's nanstd, with Bessel's correction (divides by G - 1).
    k3_kl            TRL's per-token KL estimate: exp(ref - logp) - (ref - logp) - 1 (>= 0, 0 when equal).
    grpo_loss        TRL's clipped per-token loss -min(rho A, clip(rho, 1 +- eps) A) (+ beta * k3), aggregated as
                     loss_type "grpo" (token mean per completion, then mean over completions) or "dr_grpo" (token
                     sum / (B * max_completion_length)).
    dpo_loss         MMedPO's weighted sigmoid DPO loss as repro.train.dpo.WeightedDPOTrainer computes it:
                     (1/B) sum_i w_i * -log sigmoid(beta * (chosen log-ratio_i - rejected log-ratio_i)).
    vrr_from_attention  steps 4-6 of repro.rewards.attention on a given |N| x |I| attention block: renormalise each
                     anchor row over the image patches, sum it over the box patches, mean over the anchor rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TRL_STD_EPS = 1e-4  # TRL adds this to the group std before dividing (grpo_trainer.py)


def grpo_advantages(rewards, group_size: int, scale_rewards: str = "group") -> torch.Tensor:
    """rewards: [B] (B = prompts x group_size, each prompt's G completions adjacent, as TRL samples them) -> [B].

    scale_rewards="group": (r - mean_G) / (std_G + 1e-4), GRPO; "none": r - mean_G, Dr.GRPO."""
    from trl.trainer.utils import nanstd

    r = torch.as_tensor(rewards, dtype=torch.float64).flatten()
    if group_size < 2 or r.numel() % group_size:
        raise ValueError(f"grpo_advantages: {r.numel()} rewards do not split into groups of {group_size} (>= 2)")
    if scale_rewards not in ("group", "none"):
        raise ValueError(f"scale_rewards must be 'group' or 'none', got {scale_rewards!r}")
    g = r.view(-1, group_size)
    adv = (g - g.mean(1, keepdim=True)).flatten()
    if scale_rewards == "group":
        adv = adv / (nanstd(g, dim=1).repeat_interleave(group_size) + TRL_STD_EPS)
    return adv


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref) from the sampled tokens' log-probs (any shape): with
    d = ref_logp - logp, exp(d) - d - 1. Never negative (unlike k1 = logp - ref_logp, which PPO uses)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              loss_type: str = "grpo", max_completion_length: int | None = None, epsilon: float = 0.2,
              beta: float = 0.0, ref_logp: torch.Tensor | None = None) -> torch.Tensor:
    """TRL's GRPO loss of one batch. logp, old_logp, mask (and ref_logp): [B, T]; advantages: [B].

    loss_type "grpo": mean over completions of each completion's token mean; "dr_grpo": sum over all tokens /
    (B * max_completion_length). beta > 0 adds beta * k3_kl(logp, ref_logp) to every token's loss."""
    ratio = torch.exp(logp - old_logp)
    a = advantages.to(logp.dtype).unsqueeze(1)
    per_token = -torch.min(ratio * a, ratio.clamp(1 - epsilon, 1 + epsilon) * a)
    if beta:
        if ref_logp is None:
            raise ValueError("grpo_loss: beta > 0 needs ref_logp")
        per_token = per_token + beta * k3_kl(logp, ref_logp)
    mask = mask.to(logp.dtype)
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("grpo_loss: loss_type 'dr_grpo' needs max_completion_length")
        return (per_token * mask).sum() / (per_token.size(0) * max_completion_length)
    raise ValueError(f"loss_type must be 'grpo' or 'dr_grpo', got {loss_type!r}")


def dpo_loss(chosen_logratio, rejected_logratio, weight=None, beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch loss, per-pair unweighted loss [B]) of the (weighted) sigmoid DPO loss.

    chosen_logratio_i = log pi(y_w|x) - log ref(y_w|x); rejected_logratio_i = log pi(y_l|x*) - log ref(y_l|x*)
    (x* = the noised image for a visual pair, x for a text pair); weight [B] (None = 1, plain DPO). Divided by B,
    not by sum(weight), as the release and WeightedDPOTrainer do."""
    c = torch.as_tensor(chosen_logratio, dtype=torch.float64)
    r = torch.as_tensor(rejected_logratio, dtype=torch.float64)
    w = torch.ones_like(c) if weight is None else torch.as_tensor(weight, dtype=torch.float64)
    per_pair = -F.logsigmoid(beta * (c - r))
    return (w * per_pair).mean(), per_pair


def vrr_from_attention(attention, box) -> float:
    """VRR of one answer from its attention block: attention [|N|, |I|] (anchor rows = the class-name tokens, columns
    = the image patches, any non-negative mass: the rows need not sum to 1) and box [|I|] bool (the patches a true
    box covers). Each row is renormalised over the image (the paper's softmax over patches), summed over the box,
    and the rows are averaged (the paper sums them: docs/methods.md §6(d) 4). 0 for no anchor rows."""
    a = torch.as_tensor(attention, dtype=torch.float64)
    b = torch.as_tensor(box, dtype=torch.bool).flatten()
    if a.dim() != 2 or a.shape[1] != b.numel():
        raise ValueError(f"vrr_from_attention: attention {tuple(a.shape)} needs [|N|, {b.numel()}]")
    if a.shape[0] == 0:
        return 0.0
    mass = a.sum(1, keepdim=True)
    p = torch.where(mass > 0, a / mass.clamp_min(1e-300), torch.zeros_like(a))
    return float(p[:, b].sum(1).mean())


__all__ = ["dpo_loss", "grpo_advantages", "grpo_loss", "k3_kl", "vrr_from_attention"]

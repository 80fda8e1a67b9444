"""PPO's tensor maths, pure functions of padded [B, T] tensors (no model, no I/O): docs/methods.md §1(d), §4(a).

Notation. B samples (k per prompt), T positions in "action space": position t scores token a_t, and mask[b, t] = 1
exactly where a_t was sampled by the policy (answer tokens). Off the mask (prompt, image, clinician questions,
padding) every function below returns 0 and takes nothing from its inputs.

One PPO iteration turns a rollout into a loss in five steps:

1. Sequence score with a per-prompt baseline (`loo_baseline`). Every sample b gets one score s_b from the reward
   functions. The k samples of one prompt share the prompt's difficulty, so we subtract the leave-one-out mean of
   the *other* k-1 samples of the same prompt:

       s'_b = s_b - 1/(k-1) * sum_{j in group(b), j != b} s_j

   Why: a prompt on which all k samples earn 9 of 9 carries no information about which answer is better; its
   centred scores are 0, so it pushes nothing (RLOO, Kool et al. 2019; the same idea as GRPO's group mean, but
   leave-one-out keeps s'_b independent of s_b's own noise).

2. Per-token rewards (`shaped_rewards`), the InstructGPT / Dr-LLaVA shaping with the k1 KL estimate:

       KL_t = log pi(a_t) - log pi_ref(a_t)
       r_t  = -beta * KL_t + [t = last action token] * s'_b

   Turn credit (a score that is a sum over the turns of a conversation, s_b = sum_j s_{b,j}): each turn's part,
   centred leave-one-out per turn, at that turn's last token, r_t += [t = last token of turn j] * s'_{b,j}. The
   returns of turn j's tokens then hold turns j.. only: earlier turns' scores, which they cannot change, are
   dropped, an unbiased baseline that removes their noise.

3. Advantages and returns by generalised advantage estimation (`gae`), run over action tokens only:

       delta_t = r_t + gamma * V(s_next) - V(s_t)
       A_t     = delta_t + gamma * lam * A_next          returns_t = A_t + V(s_t)

   where "next" is the next *action* position (a clinician question between two answers is a reward-free
   environment transition, not the end of the episode) and V = A = 0 after the last one. With gamma = lam = 1
   A_t = (sum_{t' >= t} r_t') - V(s_t): the score reaches every token of the answer undiminished, and an exact value
   head makes A_t independent of position. With lam < 1 and a value head that knows little (V ~ 0), A_t ~
   lam^(T-1-t) * s'_b: early tokens get almost no credit - the bug issue 11 found.

4. Optional whitening (`masked_whiten`): A <- (A - mean(A)) / std(A) over the batch's action tokens. Off by
   default (ppo.PPOConfig.whiten_advantages): after step 1 the advantages are already centred per prompt, and in a
   batch where most prompts' samples tie, std(A) is mostly the KL term's noise, so dividing by it blows that noise
   up to unit scale while the shift moves tied samples off zero. Use it when the score's scale is unknown.

5. The loss (`ppo_loss`), token means over the action mask:

       ratio_t = exp(log pi_theta(a_t) - log pi_old(a_t))
       L_pi    = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))
       L_V     = 1/2 * mean_t max((V_t - R_t)^2, (V_old,t + clip(V_t - V_old,t, -eps_v, eps_v) - R_t)^2)
       H       = mean_t entropy(pi_theta(. | s_t))
       loss    = L_pi + vf_coef * L_V - ent_coef * H

   (Dr-LLaVA's objective; UMed-LVLM's L^{CLIP+ENT} with c2 = vf_coef, c3 = ent_coef.) ppo.py sums L_pi - ent_coef *
   H and L_V without vf_coef: its value head reads detached hidden states and has its own optimizer group, so L_V
   reaches only the head, and under Adam a loss's constant factor is absorbed by the step size (value_lr).

`explained_variance` (1 - Var(R - V) / Var(R)) says how much of the returns the value head predicts: 0 for a head
that predicts a constant, 1 for a perfect one, negative for one worse than a constant.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over mask == 1 (0-d tensor; 0 for an empty mask). x, mask: same shape, e.g. [B, T]."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over mask == 1, 0 off the mask. x, mask: [B, T]."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def loo_baseline(scores: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Scores minus the leave-one-out mean of the other samples of the same prompt (step 1 of the module docstring).

    scores: [B] float; groups: [B] int, equal values = samples of one prompt (any order). A prompt with a single
    sample has no other sample to compare with: its score is kept (baseline 0). Returns [B]."""
    if scores.shape != groups.shape or scores.dim() != 1:
        raise ValueError(f"loo_baseline: scores {tuple(scores.shape)} and groups {tuple(groups.shape)} must be [B]")
    same = groups.unsqueeze(0) == groups.unsqueeze(1)                 # [B, B]: same prompt
    others = same.sum(1) - 1                                          # [B]: k - 1
    sum_others = (same.to(scores.dtype) @ scores) - scores            # [B]: sum over the other samples
    baseline = torch.where(others > 0, sum_others / others.clamp(min=1), torch.zeros_like(scores))
    return scores - baseline


def tied_share(scores: torch.Tensor, groups: torch.Tensor) -> float:
    """Share of prompts whose samples all scored the same (their leave-one-out advantages are 0: nothing to learn
    from them). scores, groups: [B]."""
    ids = groups.unique()
    tied = [bool((scores[groups == g] - scores[groups == g][0]).abs().max() <= 1e-9) for g in ids]
    return sum(tied) / max(1, len(tied))


def last_action_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position with mask 1 per row. mask: [B, T] -> [B] long (0 for an empty row)."""
    return (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(1)


def shaped_rewards(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor,
                   kl_beta: float, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token rewards r [B, T], per-token KL [B, T]) as in step 2 of the module docstring.

    logp, ref_logp: [B, T] log-probabilities of the sampled tokens under the policy and the reference;
    mask: [B, T] action mask; scores: [B] sequence scores (already baselined), added at the last action token, or
    [B, n] per-turn scores added at `positions` [B, n] (the last action token of each turn; -1 = no such turn).
    KL_t = logp - ref_logp (k1 estimate, unclamped; Dr-LLaVA's code clamps it at 0) is exactly 0 when policy ==
    reference."""
    kl = (logp - ref_logp) * mask
    rewards = -kl_beta * kl
    if scores.dim() == 1:
        rewards[torch.arange(mask.shape[0]), last_action_index(mask)] += scores.to(rewards.dtype)
        return rewards, kl
    if positions is None or positions.shape != scores.shape:
        raise ValueError(f"shaped_rewards: per-turn scores {tuple(scores.shape)} need positions of the same shape")
    rows = torch.arange(mask.shape[0]).unsqueeze(1).expand_as(positions)
    ok = positions >= 0
    rewards.index_put_((rows[ok], positions[ok]), scores[ok].to(rewards.dtype), accumulate=True)
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float,
        whiten: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over action tokens (step 3); returns (advantages, returns), both [B, T],
    0 off the mask.

    rewards: [B, T] per-token rewards; values: [B, T] V(s_t) of the state before token t; mask: [B, T].
    Positions with mask 0 are skipped (not episode ends): the last token of answer t bootstraps from the value at
    the first token of answer t+1. returns = A + V is taken before whitening (the value head's target);
    whiten=True whitens A over the action tokens (step 4)."""
    m = mask.bool()
    adv = torch.zeros_like(values)
    last = values.new_zeros(values.shape[0])     # [B]: A at the next action position
    next_v = values.new_zeros(values.shape[0])   # [B]: V at the next action position
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        a = delta + gamma * lam * last
        adv[:, t] = torch.where(m[:, t], a, 0.0)
        last = torch.where(m[:, t], a, last)     # off the mask: carry the next action's A and V through
        next_v = torch.where(m[:, t], values[:, t], next_v)
    returns = (adv + values) * m
    if whiten:
        adv = masked_whiten(adv, m.to(adv.dtype))
    return adv, returns


def advantages(logp: torch.Tensor, ref_logp: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
               scores: torch.Tensor, groups: torch.Tensor, *, kl_beta: float, gamma: float, lam: float,
               baseline: str = "loo", whiten: bool = False, positions: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
    """Steps 1-4 in one call: {"advantages", "returns", "rewards", "kl"} ([B, T] each) and "centred" ([B], or
    [B, n] per turn).

    logp, ref_logp, values, mask: [B, T]; scores: [B] raw sequence scores, or [B, n] per-turn scores given at
    `positions` [B, n] (turn credit, step 2: each turn's reward at its own last token, each turn column centred
    leave-one-out over the prompt's samples); groups: [B] prompt index per sample; baseline: "loo" (leave-one-out
    mean of the prompt's other samples) or "none" (the score as it is)."""
    if baseline == "loo":
        s = scores.to(values.dtype)
        centred = (loo_baseline(s, groups) if s.dim() == 1
                   else torch.stack([loo_baseline(s[:, j], groups) for j in range(s.shape[1])], 1))
    elif baseline == "none":
        centred = scores.to(values.dtype)
    else:
        raise ValueError(f"baseline must be 'loo' or 'none', got {baseline!r}")
    rewards, kl = shaped_rewards(logp, ref_logp, mask, centred, kl_beta, positions)
    adv, returns = gae(rewards, values, mask, gamma, lam, whiten=whiten)
    return {"advantages": adv, "returns": returns, "rewards": rewards, "kl": kl, "centred": centred}


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target]: logits [B, T, V], targets [B, T] long -> [B, T]."""
    return torch.log_softmax(logits.float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def policy_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, old_logp: torch.Tensor,
                adv: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(clipped policy loss L_pi, entropy H, stats) of step 5.

    logits: [B, T, V] (already shifted: logits[:, t] scores targets[:, t]); targets, mask, old_logp, adv: [B, T]."""
    logp_all = torch.log_softmax(logits.float(), -1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    # Off the mask old_logp is 0: force log-ratio 0 there so exp() never overflows into a NaN gradient.
    log_ratio = torch.where(mask.bool(), logp - old_logp, 0.0)
    ratio = log_ratio.exp()
    pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
    loss = masked_mean(pg, mask)
    entropy = masked_mean(-(logp_all.exp() * logp_all).sum(-1), mask)
    with torch.no_grad():
        stats = {"policy_loss": loss.item(), "entropy": entropy.item(),
                 "clip_frac": masked_mean(((ratio - 1).abs() > clip).float(), mask).item(),
                 "approx_kl": masked_mean(0.5 * log_ratio ** 2, mask).item()}
    return loss, entropy, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_value: float) -> torch.Tensor:
    """Clipped value loss L_V of step 5. values, old_values, returns, mask: [B, T]."""
    v_clipped = old_values + (values - old_values).clamp(-clip_value, clip_value)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (v_clipped - returns) ** 2), mask)


def ppo_loss(logits, values, targets, mask, old_logp, old_values, adv, returns, *, clip: float, clip_value: float,
             vf_coef: float, ent_coef: float) -> tuple[torch.Tensor, dict]:
    """loss = L_pi + vf_coef * L_V - ent_coef * H (step 5); shapes as in policy_loss / value_loss."""
    lp, entropy, stats = policy_loss(logits, targets, mask, old_logp, adv, clip)
    lv = value_loss(values, old_values, returns, mask, clip_value)
    stats["value_loss"] = lv.item()
    return lp + vf_coef * lv - ent_coef * entropy, stats


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float | None:
    """1 - Var(returns - values) / Var(returns) over mask == 1 ([B, T] each); None when Var(returns) is 0 (the
    ratio is undefined, and None keeps logs comparable with ==, which NaN would not)."""
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    if var_r.item() <= 1e-12:
        return None
    diff = returns - values
    var_d = masked_mean((diff - masked_mean(diff, mask)) ** 2, mask)
    return 1.0 - (var_d / var_r).item()


__all__ = ["advantages", "explained_variance", "gae", "last_action_index", "loo_baseline", "masked_mean",
           "masked_whiten", "policy_loss", "ppo_loss", "shaped_rewards", "token_logprobs", "value_loss"]


def noise_scale(grads: torch.Tensor) -> dict:
    """How much signal a policy gradient carries: per-sample gradients grads [n, P] (each sample's term of one
    minibatch loss) -> {"signal": |E g|^2 (unbiased: (|sum g|^2 - sum |g_b|^2) / (n (n-1))), "noise": tr(Sigma),
    "b_noise": tr(Sigma) / |E g|^2 (inf when no signal is detectable), "cosine_halves": cosine of the mean
    gradients of the first and second half of the samples}. B_noise is the simple gradient noise scale (McCandlish
    et al. 2018): a minibatch of B samples has signal-to-noise ~ B / B_noise, so B << B_noise means each update is
    mostly noise, which Adam's normalised steps turn into an lr-sized random walk (tools/ppo_noise_scale.py)."""
    g = grads.double()
    n = g.shape[0]
    if n < 4:
        raise ValueError(f"noise_scale: need at least 4 samples, got {n}")
    sq = (g ** 2).sum(1)
    signal = float(((g.sum(0) ** 2).sum() - sq.sum()) / (n * (n - 1)))
    noise = float((sq.mean() - signal) * n / (n - 1))
    h = n // 2
    cos = float(torch.nn.functional.cosine_similarity(g[:h].mean(0), g[h:2 * h].mean(0), dim=0))
    return {"signal": signal, "noise": noise, "b_noise": noise / signal if signal > 0 else float("inf"),
            "cosine_halves": cos}

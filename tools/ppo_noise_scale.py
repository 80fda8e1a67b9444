"""How much signal our PPO's policy gradient carries at a start model: the gradient noise scale (issue 25).

Run as: python tools/ppo_noise_scale.py --profile cpu --task conv --temperature 0.5 --credit turn [--rows 32]

One rollout of `rows` prompts x k samples from the stage-02 SFT model (at `temperature`), advantages exactly as
ppo.ppo_step forms them (leave-one-out, the missing-EOS penalty, the whole score at the end or each turn's at its
own last token), then one backward pass per sample of its term of the first-epoch policy loss (ratio 1). Prints
repro.train.ppo_math.noise_scale: |E g|^2, tr(Sigma), B_noise = tr(Sigma) / |E g|^2 and the cosine between the
mean gradients of two disjoint halves. A PPO minibatch of B samples has signal/noise ~ B / B_noise.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def per_sample_grads(model, processor, samples, adv: torch.Tensor, temperature: float) -> torch.Tensor:
    """[n, P]: the gradient of each sample's term of the minibatch policy loss (token mean over all samples)."""
    from repro.train import rollouts

    pad = processor.tokenizer.pad_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    n_tok = sum(sum(s.action) for s in samples) / len(samples)
    out = []
    for b, s in enumerate(samples):
        logits, _, targets, m = rollouts.forward(model, [s], pad, temperature)
        lp = torch.log_softmax(logits.float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        loss = -(adv[b:b + 1, -m.shape[1]:] * lp * m).sum() / n_tok
        model.zero_grad(set_to_none=True)
        loss.backward()
        out.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]))
    return torch.stack(out)


def main(argv=None) -> int:
    from repro import evaluation as ev
    from repro import paths
    from repro.models import load_vlm
    from repro.rewards import localization, rules
    from repro.train import ppo, ppo_math, rollouts

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--task", choices=["conv", "instruct"], default="conv")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--credit", choices=["end", "turn"], default="end")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--k", type=int, default=4)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, processor = load_vlm(paths.models_dir(a.profile) / "sft" / "final")
    model.eval()
    conv = a.task == "conv"
    rows = ev.load_rows(paths.data_dir(a.profile), a.task, "train")
    rows = [dict(rows[i]) for i in np.random.default_rng(0).permutation(len(rows))[:a.rows]]
    fns = [rules.drllava_reward] if conv else [localization.make_relevance_reward()]
    cfg = ppo.PPOConfig(k=a.k, max_new_tokens=ev.MAX_NEW_TOKENS[a.task], temperature=a.temperature,
                        missing_eos_penalty=-2.0 if conv else 0.0, turn_credit=a.credit == "turn")
    torch.manual_seed(0)
    with torch.no_grad():
        samples = (rollouts.rollout_conversation if conv else rollouts.rollout_single)(model, processor, rows, cfg)
        sc = rollouts.score_rollout(model, model, samples, processor.tokenizer.pad_token_id, cfg)
    scores, _ = rollouts.score_samples(fns, [1.0], rows, samples)
    missing = torch.tensor([sum(not e for e in s.ended) for s in samples], dtype=torch.float32)
    total, positions = scores + cfg.missing_eos_penalty * missing, None
    if conv and cfg.turn_credit:
        total = rollouts.turn_scores(fns, [1.0], rows, samples, cfg.missing_eos_penalty)
        positions = rollouts.turn_positions(samples, total.shape[1])
    groups = torch.tensor([s.query for s in samples])
    adv = ppo_math.advantages(sc["logp"], sc["ref_logp"], sc["values"], sc["mask"], total, groups,
                              kl_beta=cfg.kl_beta, gamma=1.0, lam=1.0, positions=positions)["advantages"]
    r = ppo_math.noise_scale(per_sample_grads(model, processor, samples, adv, a.temperature))
    print(f"{a.task} T={a.temperature} credit={a.credit} samples={len(samples)}: reward {scores.mean():.2f} "
          f"(sd {scores.std():.2f}); |E g|^2 {r['signal']:.3g}, tr(Sigma) {r['noise']:.3g}, "
          f"B_noise {r['b_noise']:.0f}, cosine of two halves {r['cosine_halves']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A small, readable PPO for VLMs (docs/design.md §6: TRL >= 1.13 has no PPO), for Dr-LLaVA and UMed-LVLM.

    from repro.rewards import localization, rules
    cfg = PPOConfig(steps=50, batch_size=4, k=4, max_new_tokens=48)
    info = train(sft_dir, out_dir, instruct_rows, [localization.make_aar_reward(group_key="query_id")], cfg)
    info = train(sft_dir, out_dir, conv_rows, [rules.make_drllava_reward()], cfg, multi_turn=True)
    model, processor = repro.models.load_vlm(info["final_dir"])

One step (`ppo_step`), with the module that does each part:
    1. rollout (rollouts.py)   batch_size prompt rows, k samples each: single answers, or Dr-LLaVA conversations in
                               which the policy answers every clinician question in turn.
    2. score (rollouts.py)     s_b = sum_i w_i f_i(sample b) (None -> 0, as TRL), plus missing_eos_penalty per
                               answer cut by max_new_tokens; then, with the models: log pi_old(a_t), log pi_ref(a_t),
                               V(s_t) and the policy's last hidden states on every action token.
    3. advantages (ppo_math.py) s'_b = s_b - leave-one-out mean of the prompt's other samples (baseline="loo");
                               r_t = -kl_beta * KL_t, + s'_b at the last action token; GAE(gamma, lam) over action
                               tokens; optional whitening. turn_credit (multi turn, rewards with `per_turn`): each
                               turn's part of s_b (and its EOS penalty), centred per turn, at that turn's last token.
    4. update                  ppo_epochs passes over the rollout in minibatches: clipped policy loss - ent_coef *
                               entropy on the policy (lr), clipped value loss on the value head (value_lr). The first
                               value_warmup_steps steps update only the value head, so that the policy's first
                               updates already subtract a value that has seen some returns. Single turn: a
                               minibatch holds whole prompt groups (prompts in random order), so scoring and update
                               run each prompt once for its k samples (rollouts.shareable, shared_prefix); a
                               conversation rollout's minibatches are random samples.

Why these defaults (each measured on the learning tests, tests/unit/test_ppo_learning.py):
- gamma = lam = 1: the sequence score reaches every answer token undiminished. With lam = 0.95 and a value head that
  knows little, the first token of a 60-token answer gets 0.95^59 = 5% of the credit of the last (issue 11).
- baseline "loo": prompts whose k samples tie (all right, or all wrong) contribute zero advantage instead of a
  batch-wide offset; what is left is "this answer vs. the other answers to the same question".
- whiten_advantages False: see ppo_math step 4 (whitening a batch of mostly-tied prompts amplifies KL noise).
- turn_credit / temperature for conversations: with tens of conversations a step the whole reward at the end left
  the policy gradient without detectable signal (tools/ppo_noise_scale.py; docs/methods.md 6(a) 5).
- lr is the knob that decided whether anything moved: on the tiny LLaVA of the learning tests, lr 1e-5 and 5e-5
  left the reward flat over 30 steps (1.64 -> 1.63 / 1.77 of 3) and 3e-4 reached 2.9-3.0 of 3, with 2 epochs,
  k = 8 and kl_beta 0.1. The default (1e-5) is the scale of the papers' 7B models; pass lr per model size.
- ValueHead on *detached* hidden states, with its own optimizer group: the value loss never moves the language
  model (an untrained critic's large errors would otherwise be a large, meaningless gradient on the policy), and
  its learning rate can be 100x the policy's, which a linear head on fixed features needs to learn within a run
  of tens of steps. Value updates reuse the rollout's hidden states, so they cost no forward pass.

Logged per step (log_history): reward (mean raw score), reward/<name>, kl (per sample, sum over tokens), entropy,
response_length, eos_rate, value_mean (mean V over action tokens before the update), explained_variance (of the
rollout's returns by V, before the update; None when returns are constant), policy_loss, value_loss, clip_frac,
approx_kl, policy_update (0 in value warm-up steps).

Determinism and resume: step s reseeds torch from (seed, s) and draws its rows from a per-epoch permutation of
(seed, epoch), so a run is a pure function of (init, rows, config) on CPU, and a resumed run continues exactly.
Checkpoints (the last one kept) under <out_dir>/checkpoints/checkpoint-<step>: policy (safetensors) + processor,
value_head.safetensors, optimizer.pt, trainer_state.json (step, log history, torch RNG state); guarded by the
run key as in sft.train. Full fine-tuning only (no LoRA here); the reference is a frozen copy of init_dir.
Dropout stays off (model.eval()) so the first PPO epoch starts at ratio 1 exactly.

Several processes (`accelerate launch ... -m repro.train.launch ppo`, docs/multi_gpu.md): with a torch.distributed
group up, batch_size and minibatch are global and split between the processes, policy and value head are DDP-wrapped
by accelerate, batch-wide statistics are gathered and only the main process writes (ppo_dist). Without a group the
code path above is unchanged.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from repro.train import ppo_math, rollouts, runs
from repro.train.rollouts import (
    forward,
    nanmean,
    reward_name,
    rollout_conversation,
    rollout_single,
    score_rollout,
    score_samples,
    shareable,
)

VALUE_HEAD_FILE = "value_head.safetensors"
BASELINES = ("loo", "none")


@dataclass
class PPOConfig:
    steps: int = 20              # PPO iterations (rollout + update), value warm-up steps included
    batch_size: int = 4          # prompt rows per step
    k: int = 4                   # samples (completions / conversations) per prompt row
    ppo_epochs: int = 2          # passes over one rollout (Dr-LLaVA: noptepochs 2)
    minibatch: int = 8           # samples per gradient step (also the chunk of the scoring forward passes)
    lr: float = 1e-5             # policy learning rate: a 7B LoRA's scale; the tiny models need ~3e-4 (module doc)
    value_lr: float = 1e-3       # value head learning rate (its own optimizer group, on detached features)
    value_warmup_steps: int = 1  # first steps that update only the value head
    clip: float = 0.2            # policy ratio clip
    clip_value: float = 0.2      # value clip around the rollout's values (Dr-LLaVA cliprange_value)
    ent_coef: float = 0.0
    kl_beta: float = 0.1
    gamma: float = 1.0           # used as given; Dr-LLaVA: 1
    lam: float = 1.0             # used as given; Dr-LLaVA: 1
    baseline: str = "loo"        # "loo": subtract the mean score of the prompt's other k-1 samples; "none"
    whiten_advantages: bool = False
    max_new_tokens: int = 32     # per answer (per turn in multi-turn mode)
    temperature: float = 1.0
    max_grad_norm: float = 1.0   # per optimizer group (policy, value head); 0 = off
    missing_eos_penalty: float = 0.0  # added per answer that hit max_new_tokens (Dr-LLaVA: -2.0); 0 = off
    turn_credit: bool = False    # multi turn: each turn's reward at that turn's last token (rewards with per_turn)
    gen_batch_size: int = 64     # samples per generate() call
    seed: int = 0
    save_steps: int = 50

    def __post_init__(self):
        for name in ("batch_size", "k", "ppo_epochs", "minibatch", "max_new_tokens", "gen_batch_size", "save_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PPOConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"PPOConfig.baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.value_warmup_steps < 0:
            raise ValueError(f"PPOConfig.value_warmup_steps must be >= 0, got {self.value_warmup_steps!r}")
        for name in ("gamma", "lam"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"PPOConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------------------------- value head
class ValueHead(nn.Module):
    """V(s_t) for every position: Linear(hidden, 1) on the last hidden state, [B, T, H] -> [B, T] (fp32).

    Reads the hidden states detached: the value loss trains this head only (module docstring)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        # Zero init: V = 0 at the start, so early advantages are the (baselined) rewards themselves, not noise.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.detach().float()).squeeze(-1)


def hidden_size(model) -> int:
    cfg = model.config
    return getattr(cfg, "text_config", cfg).hidden_size


def save_value_head(head: ValueHead, folder) -> Path:
    from safetensors.torch import save_file

    path = Path(folder) / VALUE_HEAD_FILE
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(path))
    return path


def load_value_head(folder, hidden: int, device="cpu") -> ValueHead:
    from safetensors.torch import load_file

    head = ValueHead(hidden)
    head.load_state_dict(load_file(str(Path(folder) / VALUE_HEAD_FILE)))
    return head.to(device)


# ----------------------------------------------------------------------------------------------- runs
def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2 ** 63)


def batch_indices(n_rows: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Rows of `step`: the stream of per-epoch permutations (seeded by (seed, epoch)), sliced statelessly."""
    import numpy as np

    start, out = step * batch_size, []
    epoch = start // n_rows
    offset = start - epoch * n_rows
    while len(out) < batch_size:
        perm = np.random.default_rng([seed, epoch]).permutation(n_rows).tolist()
        out += perm[offset:offset + batch_size - len(out)]
        epoch, offset = epoch + 1, 0
    return out


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    # "checkpoint-<n>.tmp" is a save that crashed half-way: never resumed.
    cks = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                 key=lambda p: int(p.name.split("-")[-1]))
    return cks[-1] if cks else None


def _save_checkpoint(ckpt_dir: Path, step: int, model, processor, head, opt, history: list[dict]) -> None:
    folder = ckpt_dir / f"checkpoint-{step}"
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    save_value_head(head, tmp)
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    state = {"step": step, "log_history": history, "rng": torch.get_rng_state().tolist()}
    (tmp / "trainer_state.json").write_text(json.dumps(state))
    tmp.rename(folder)  # a checkpoint folder exists only once complete
    for old in ckpt_dir.glob("checkpoint-*"):
        if old != folder and not old.name.endswith(".tmp"):
            shutil.rmtree(old)


def _clip_and_step(opt, cfg: PPOConfig, dist=None) -> float | None:
    """Clip each group's gradient and step; returns the policy group's gradient norm before clipping (None when
    clipping is off or distributed)."""
    norm = None
    if cfg.max_grad_norm:
        for i, group in enumerate(opt.param_groups):  # policy and value head separately: one must not shrink the other
            if dist is None:
                n = torch.nn.utils.clip_grad_norm_(group["params"], cfg.max_grad_norm)
                norm = float(n) if i == 0 else norm
            else:
                dist.clip(group["params"], cfg.max_grad_norm)
    opt.step()
    return norm


def ppo_step(policy, head: ValueHead, ref, processor, opt, rows: list[dict], reward_fns, weights, cfg: PPOConfig,
             multi_turn: bool = False, update_policy: bool = True, dist=None) -> tuple[dict, dict]:
    """One PPO iteration on `rows` (module docstring, steps 1-4); update_policy=False updates the value head only.
    Returns (log dict, {"rollout_seconds", "update_seconds"}). The caller seeds torch.

    dist (a ppo_dist.Dist, several processes): `rows` are this process's share of the step, policy and head are
    DDP-wrapped; whitening and the log use the whole step's statistics, minibatch is split between processes."""
    pad_id = processor.tokenizer.pad_token_id
    ta = time.time()
    model = dist.unwrap(policy) if dist else policy  # rollouts and scoring: no gradient, no DDP wrapper
    vhead = dist.unwrap(head) if dist else head
    samples = (rollout_conversation if multi_turn else rollout_single)(model, processor, rows, cfg)
    scores, raw = score_samples(reward_fns, weights, rows, samples)
    missing = torch.tensor([sum(not e for e in s.ended) for s in samples], dtype=torch.float32)
    sc = score_rollout(model, ref, samples, pad_id, cfg, vhead)
    mask = sc["mask"]                                                         # [N, L-1]
    penalised = (scores + cfg.missing_eos_penalty * missing).to(mask.device)  # [N]
    groups = torch.tensor([s.query for s in samples], device=mask.device)     # [N]
    per_turn = (rollouts.turn_scores(reward_fns, weights, rows, samples, cfg.missing_eos_penalty)
                if multi_turn and cfg.turn_credit else None)
    positions = None
    if per_turn is not None:  # the same total per sample, credited turn by turn (module docstring, turn credit)
        positions = rollouts.turn_positions(samples, per_turn.shape[1]).to(mask.device)
        penalised = per_turn.to(mask.device)
    a = ppo_math.advantages(sc["logp"], sc["ref_logp"], sc["values"], mask, penalised, groups,
                            kl_beta=cfg.kl_beta, gamma=cfg.gamma, lam=cfg.lam, baseline=cfg.baseline,
                            whiten=cfg.whiten_advantages and dist is None, positions=positions)
    adv, returns = a["advantages"], a["returns"]
    if dist is not None and cfg.whiten_advantages:  # over the whole step's action tokens, as in one process
        adv = dist.whiten(adv, mask)
    tb = time.time()
    stats: list[dict] = []
    n = len(samples)
    minibatch = cfg.minibatch // dist.world if dist else cfg.minibatch  # the same optimizer steps as one process
    # Single turn: minibatches of whole prompt groups (a random order of the prompts, each prompt's k samples
    # together), so that forward() runs each prompt once for its samples (rollouts.shareable: ~3x fewer tokens).
    grouped = dist is None and shareable(policy, samples)
    for _ in range(cfg.ppo_epochs):
        if grouped:
            order = torch.randperm(int(groups.max()) + 1).tolist()
            perm = [j for q in order for j in range(n) if samples[j].query == q]
        else:
            perm = torch.randperm(n).tolist()
        for i in range(0, n, minibatch):
            idx = perm[i:i + minibatch]
            # Value head on the rollout's (detached) hidden states: full [n, L-1] width, the mask does the rest.
            lv = ppo_math.value_loss(head(sc["hidden"][idx]), sc["values"][idx], returns[idx], mask[idx],
                                     cfg.clip_value)
            st = {"value_loss": lv.item()}
            loss = lv
            if update_policy:
                logits, _, targets, mb_mask = forward(policy, [samples[j] for j in idx], pad_id, cfg.temperature)
                width = mb_mask.shape[1]

                def cut(x, idx=idx, width=width):  # the minibatch's rows, right-aligned to its own width
                    return x[idx][:, x.shape[1] - width:]

                lp, entropy, pst = ppo_math.policy_loss(logits, targets, mb_mask, cut(sc["logp"]), cut(adv), cfg.clip)
                loss = loss + lp - cfg.ent_coef * entropy
                st.update(pst)
            opt.zero_grad(set_to_none=True)
            if dist is None:
                loss.backward()
            else:
                dist.backward(loss)
            norm = _clip_and_step(opt, cfg, dist)
            if update_policy and norm is not None:
                st["grad_norm"] = norm
            stats.append(st)
    if dist is not None:
        log = dist.log(scores, raw, a, sc, adv, returns, samples, stats, update_policy)
        return log, {"rollout_seconds": tb - ta, "update_seconds": time.time() - tb}
    log = {"reward": scores.mean().item(), **{f"reward/{k}": nanmean(v) for k, v in raw.items()},
           "kl": a["kl"].sum(1).mean().item(), "entropy": ppo_math.masked_mean(sc["entropy"], mask).item(),
           "response_length": mask.sum(1).mean().item(),
           "eos_rate": sum(sum(s.ended) for s in samples) / max(1, sum(len(s.ended) for s in samples)),
           "value_mean": ppo_math.masked_mean(sc["values"], mask).item(),
           "explained_variance": ppo_math.explained_variance(sc["values"], returns, mask),
           "advantage_abs": ppo_math.masked_mean(adv.abs(), mask).item(),
           "kl_per_token": (a["kl"].sum() / mask.sum().clamp(min=1)).item(),
           "zero_variance_groups": ppo_math.tied_share(penalised.sum(-1) if penalised.dim() > 1 else penalised,
                                                       groups),
           "missing_eos_share": float(missing.sum()) / max(1, sum(len(s.ended) for s in samples)),
           "eos_penalty": (cfg.missing_eos_penalty * missing).mean().item(),
           "policy_update": int(update_policy)}
    for k in ("policy_loss", "value_loss", "clip_frac", "approx_kl", "grad_norm"):
        vals = [st[k] for st in stats if k in st]
        log[k] = sum(vals) / len(vals) if vals else None
    return log, {"rollout_seconds": tb - ta, "update_seconds": time.time() - tb}


def train(init_dir, out_dir, rows, reward_fns, cfg: PPOConfig, *, multi_turn: bool = False,
          reward_weights: Sequence[float] | None = None, run_key: dict | None = None, progress: bool = True,
          use_cpu: bool | None = None, callback=None) -> dict:
    """PPO from the model at `init_dir` on `rows` (list of dicts or a datasets.Dataset); returns {"final_dir",
    "log_history", "seconds", "steps", "resumed_from", "seconds_per_step", ...}.

    reward_fns: one TRL-signature function or a list, combined as sum_i reward_weights[i] * f_i (default weights 1).
    multi_turn: rows are Dr-LLaVA conv rows (questions answered in order, one reward per conversation).
    log_history, one dict per step: reward (weighted sum), reward/<name> (mean of non-None values), kl (mean per
    sample of sum_t KL_t), entropy (per answer token), response_length (answer tokens per sample, all turns),
    eos_rate, value_mean, explained_variance, advantage_abs, policy_update, and policy_loss, value_loss,
    clip_frac, approx_kl (means over the minibatch updates; policy terms None in value warm-up steps).
    use_cpu: train on CPU even with a GPU (None: the GPU when there is one).
    callback(step, policy, processor): called at step 0 (before the first update, when not resuming) and after
    every step (repro.papers.probe.Recorder scores the validation probe at its points). It must not change the
    weights; it runs outside the steps' RNG (each step reseeds torch), so it cannot change the run.

    Several processes (`accelerate launch`, via repro.train.launch): cfg.batch_size and cfg.minibatch are global and
    split between the processes (ppo_dist); only the main process writes the run directory, every process returns
    the same info. Without a process group nothing of this applies.
    """
    fns = list(reward_fns) if isinstance(reward_fns, (list, tuple)) else [reward_fns]
    weights = [1.0] * len(fns) if reward_weights is None else [float(w) for w in reward_weights]
    if len(weights) != len(fns):
        raise ValueError(f"{len(weights)} reward_weights for {len(fns)} reward functions")
    if cfg.steps <= 0:
        return {"final_dir": str(init_dir), "log_history": [], "seconds": 0.0, "steps": 0, "resumed_from": None}
    _, world = runs.rank_world()
    for name in ("batch_size", "minibatch"):
        if getattr(cfg, name) % world:
            raise ValueError(f"PPOConfig.{name} {getattr(cfg, name)} (global) is not divisible by the {world} "
                             "processes")
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    key = {"run_key": run_key, "init": str(init_dir), "cfg": asdict(cfg), "n_rows": len(rows),
           "multi_turn": multi_turn, "rewards": [reward_name(f) for f in fns], "weights": weights}
    done = runs.prepare(out_dir, key)
    if done:
        return done
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    device = "cuda" if torch.cuda.is_available() and not use_cpu else "cpu"
    dist = None
    if world > 1:
        from repro.train.ppo_dist import Dist

        dist = Dist(use_cpu=device == "cpu")
        device = dist.device
    # fork_rng: train() reseeds torch (model/head init, every step); the caller's global RNG must not move.
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if str(device).startswith("cuda") else []):
        info = _train(init_dir, out_dir, ckpt_dir, rows, fns, weights, cfg, multi_turn, progress, device, dist,
                      callback)
    if dist is None:
        runs.finish(out_dir, info)
        return info
    if dist.is_main:
        runs.finish(out_dir, info)
    runs.barrier()
    return info


def _train(init_dir, out_dir: Path, ckpt_dir: Path, rows, fns, weights, cfg: PPOConfig, multi_turn: bool,
           progress: bool, device, dist=None, callback=None) -> dict:
    from tqdm.auto import tqdm

    from repro.models import load_vlm

    dtype = "fp32" if str(device) == "cpu" else None  # load_vlm: bf16 on a bf16 GPU, never on CPU
    resume = _last_checkpoint(ckpt_dir)
    policy, processor = load_vlm(resume or init_dir, device=device, dtype=dtype)
    ref, _ = load_vlm(init_dir, device=device, dtype=dtype)
    ref.eval().requires_grad_(False)
    head = (load_value_head(resume, hidden_size(policy), device) if resume
            else ValueHead(hidden_size(policy)).to(device))
    policy.eval()  # dropout off: rollout scoring and updates see the same function
    # Two groups, two learning rates: the policy (cfg.lr) and the value head (cfg.value_lr).
    opt = torch.optim.AdamW([{"params": [p for p in policy.parameters() if p.requires_grad], "lr": cfg.lr},
                             {"params": list(head.parameters()), "lr": cfg.value_lr}], weight_decay=0.0)
    history: list[dict] = []
    start = 0
    if resume:
        opt.load_state_dict(torch.load(resume / "optimizer.pt", map_location=device, weights_only=True))
        state = json.loads((resume / "trainer_state.json").read_text())
        start, history = state["step"], state["log_history"]
        # Steps reseed from (seed, step) anyway; the saved state covers any draw made outside a step.
        torch.set_rng_state(torch.tensor(state["rng"], dtype=torch.uint8))
    rank, main = 0, True
    if dist is not None:  # DDP: gradients averaged over the processes
        policy, head, opt = dist.prepare(policy, head, opt)
        rank, main = dist.rank, dist.is_main
        progress = progress and main
    for f in fns:  # rewards that read the model being trained (UMed's VRR from the policy's own attention)
        if hasattr(f, "bind_policy"):
            f.bind_policy(dist.unwrap(policy) if dist else policy, processor)
    t0 = time.time()
    timing = {"rollout_seconds": 0.0, "update_seconds": 0.0}
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="ppo", disable=not progress)
    if callback is not None and start == 0 and main:
        callback(0, dist.unwrap(policy) if dist else policy, processor)
    for step in bar:
        # a step is a pure function of (seed, step, weights); each process samples with its own seed
        torch.manual_seed(_step_seed(cfg.seed, step) + rank)
        idx = batch_indices(len(rows), cfg.batch_size, step, cfg.seed)  # the step's global batch
        if dist is not None:  # this process's share: whole prompts, so all k samples of a prompt stay together
            per = cfg.batch_size // dist.world
            idx = idx[rank * per:(rank + 1) * per]
        step_rows = [dict(rows[i]) for i in idx]
        log, t = ppo_step(policy, head, ref, processor, opt, step_rows, fns, weights, cfg, multi_turn,
                          update_policy=step >= cfg.value_warmup_steps, dist=dist)
        history.append({"step": step + 1, **log})
        for k in timing:
            timing[k] += t[k]
        bar.set_postfix(reward=f"{log['reward']:.3f}", kl=f"{log['kl']:.3f}")
        if callback is not None and main:
            callback(step + 1, dist.unwrap(policy) if dist else policy, processor)
        if (step + 1) % cfg.save_steps == 0 or step + 1 == cfg.steps:
            if main:  # DDP: every process holds the same weights and optimizer state
                _save_checkpoint(ckpt_dir, step + 1, dist.unwrap(policy) if dist else policy, processor,
                                 dist.unwrap(head) if dist else head, opt, history)
            runs.barrier()
    seconds = time.time() - t0
    final = out_dir / "final"
    if dist is not None:
        policy, head = dist.unwrap(policy), dist.unwrap(head)
    if main:
        shutil.rmtree(final, ignore_errors=True)
        policy.save_pretrained(final)
        processor.save_pretrained(final)
        save_value_head(head, final)
    runs.barrier()
    done = cfg.steps - start
    return {"final_dir": str(final), "log_history": history, "seconds": round(seconds, 2), "steps": cfg.steps,
            "resumed_from": str(resume) if resume else None,
            "seconds_per_step": round(seconds / done, 3) if done else None,
            **{k: round(v, 2) for k, v in timing.items()}}

"""A small, readable PPO for VLMs (docs/design.md §6: TRL >= 1.13 has no PPO), for Dr-LLaVA and UMed-LVLM.

    from repro.rewards import localization, rules
    cfg = PPOConfig(steps=50, batch_size=4, k=4, max_new_tokens=48)
    info = train(sft_dir, out_dir, instruct_rows, [localization.make_aar_reward(group_key="query_id")], cfg)
    info = train(sft_dir, out_dir, conv_rows, [rules.make_drllava_reward()], cfg, multi_turn=True)
    model, processor = repro.models.load_vlm(info["final_dir"])

Pieces (each a function the tests check on its own):
    ValueHead    Linear(hidden, 1) on the language model's last hidden state (output_hidden_states=True); kept
                 beside the policy as value_head.safetensors in every checkpoint and in final/.
    rollouts     single turn: each prompt row is sampled k times (do_sample, temperature, KV cache, full
                 distribution: top_k=0, top_p=1). multi_turn (Dr-LLaVA, docs/methods.md §1(a) 6): the policy answers the
                 row's questions in order; question t+1 is appended after the policy's *own* answer t, as token ids
                 (never re-tokenised text, so the scored tokens are exactly the sampled ones).
    masks        action_mask is 1 exactly on tokens the policy sampled (answers, incl. their <|im_end|>); prompt,
                 image, clinician-question, chat-template and padding tokens are 0. Every loss term is a mean over
                 action tokens only.
    rewards      r_t = -kl_beta * (log pi(a_t) - log pi_ref(a_t)) on every action token (k1 estimate, the
                 InstructGPT / Dr-LLaVA "shaped" reward; unclamped, where Dr-LLaVA's code clamps it at 0), plus the
                 sequence reward sum_i w_i f_i (None -> 0, as TRL) at the *last* action token: the last answer
                 token of a single answer, the last token of the final answer of a conversation.
    gae          over action tokens only: non-action positions (a clinician question between two answers, padding)
                 are skipped, so the last token of answer t bootstraps from the value at the first token of answer
                 t+1 (the question is a reward-free environment transition); 0 after the last action.
    loss         clipped policy loss + vf_coef * clipped value loss - ent_coef * entropy (Dr-LLaVA's objective;
                 UMed-LVLM's L^{CLIP+ENT} with c2 = vf_coef, c3 = ent_coef).
Logprobs use logits / temperature (the sampling distribution), for the policy, the old policy and the reference;
vision placeholder tokens (<image>, Qwen's <|vision_start|>, ...) are suppressed in sampling and masked in scoring
(a sampled <image> would be read as an image slot on the next forward pass).
Dropout stays off (model.eval()) so the first PPO epoch starts at ratio 1 exactly.

Reward functions use TRL's signature f(prompts, completions, **columns) -> list[float | None] and see, per sample:
    prompts[i]      single turn: [user message with an image block]; multi turn: the user messages (questions)
    completions[i]  [{"role": "assistant", "content": answer}] - one message per turn in multi-turn mode, which
                    rules.make_drllava_reward reads as the conversation's turns
    completion_ids  the sampled answer token ids (all turns concatenated)
    query_id        0..batch_size-1: which prompt row of the step the sample belongs to (its k samples are
                    consecutive). UMed-LVLM's per-query max-normalisation: make_aar_reward(group_key="query_id").
    every row column (id, image, bboxes, turn_categories, ...), repeated k times.

Determinism and resume: step s reseeds torch from (seed, s) and draws its rows from a per-epoch permutation of
(seed, epoch), so a run is a pure function of (init, rows, config) on CPU, and a resumed run continues exactly.
Checkpoints (the last one kept) under <out_dir>/checkpoints/checkpoint-<step>: policy (safetensors) + processor,
value_head.safetensors, optimizer.pt, trainer_state.json (step, log history, torch RNG state); guarded by the
run key as in sft.train. Full fine-tuning only (no LoRA here); the reference is a frozen copy of init_dir.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from repro.chat import assistant_message, conversation_questions, first_user_text, rgb, to_model_dtype, user_message
from repro.train import runs

VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class PPOConfig:
    steps: int = 20
    batch_size: int = 4          # prompt rows per step
    k: int = 4                   # samples (completions / conversations) per prompt row
    ppo_epochs: int = 2          # passes over one rollout (Dr-LLaVA: noptepochs 2)
    minibatch: int = 8           # samples per gradient step (also the chunk of the scoring forward passes)
    lr: float = 1e-5
    clip: float = 0.2            # policy ratio clip
    clip_value: float = 0.2      # value clip around the rollout's values (Dr-LLaVA cliprange_value)
    vf_coef: float = 0.1
    ent_coef: float = 0.0
    kl_beta: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    max_new_tokens: int = 32     # per answer (per turn in multi-turn mode)
    temperature: float = 1.0
    max_grad_norm: float = 1.0
    missing_eos_penalty: float = 0.0  # added per answer that hit max_new_tokens (Dr-LLaVA: -2.0); 0 = off
    gen_batch_size: int = 64     # samples per generate() call
    seed: int = 0
    save_steps: int = 50

    def __post_init__(self):
        for name in ("batch_size", "k", "ppo_epochs", "minibatch", "max_new_tokens", "gen_batch_size", "save_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PPOConfig.{name} must be >= 1, got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------------------------- value head
class ValueHead(nn.Module):
    """V(s_t) for every position: Linear(hidden, 1) on the last hidden state, [B, T, H] -> [B, T] (fp32)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        # Zero init: V = 0 at the start, so early advantages are the rewards themselves, not random noise.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


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


# ----------------------------------------------------------------------------------------------- pure math
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float,
        whiten: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation on padded [B, T] tensors; returns (advantages, returns), 0 off the mask.

    delta_t = r_t + gamma * V_next - V_t and A_t = delta_t + gamma * lam * A_next, where "next" is the next
    position with mask 1 (positions with mask 0 are skipped, not treated as episode ends) and V_next = A_next = 0
    after the last one. returns = A + V (before whitening); whiten=True whitens A over the masked entries.
    """
    m = mask.bool()
    adv = torch.zeros_like(values)
    last = values.new_zeros(values.shape[0])
    next_v = values.new_zeros(values.shape[0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        a = delta + gamma * lam * last
        adv[:, t] = torch.where(m[:, t], a, 0.0)
        last = torch.where(m[:, t], a, last)
        next_v = torch.where(m[:, t], values[:, t], next_v)
    returns = (adv + values) * m
    if whiten:
        adv = masked_whiten(adv, m.to(adv.dtype))
    return adv, returns


def shaped_rewards(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor,
                   kl_beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token rewards, per-token KL): r_t = -kl_beta * KL_t on action tokens, + score at the last action token.

    KL_t = log pi(a_t) - log pi_ref(a_t) (k1); exactly 0 when policy == reference."""
    kl = (logp - ref_logp) * mask
    rewards = -kl_beta * kl
    last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(1)  # index of the last action token
    rewards[torch.arange(mask.shape[0]), last] += scores.to(rewards.dtype)
    return rewards, kl


def ppo_loss(logits: torch.Tensor, values: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
             old_logp: torch.Tensor, old_values: torch.Tensor, advantages: torch.Tensor, returns: torch.Tensor,
             cfg: PPOConfig) -> tuple[torch.Tensor, dict]:
    """Clipped policy loss + vf_coef * clipped value loss - ent_coef * entropy, token means over `mask`.

    Shapes [B, T] (logits [B, T, V]), already shifted: logits[:, t] scores targets[:, t]."""
    logp_all = torch.log_softmax(logits.float(), -1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    # Off the mask old_logp is 0: force log-ratio 0 there so exp() never overflows into a NaN gradient.
    log_ratio = torch.where(mask.bool(), logp - old_logp, 0.0)
    ratio = log_ratio.exp()
    pg = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - cfg.clip, 1 + cfg.clip))
    policy_loss = masked_mean(pg, mask)
    v_clipped = old_values + (values - old_values).clamp(-cfg.clip_value, cfg.clip_value)
    value_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (v_clipped - returns) ** 2), mask)
    entropy = masked_mean(-(logp_all.exp() * logp_all).sum(-1), mask)
    loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
    with torch.no_grad():
        stats = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.item(),
                 "clip_frac": masked_mean(((ratio - 1).abs() > cfg.clip).float(), mask).item(),
                 "approx_kl": masked_mean(0.5 * log_ratio ** 2, mask).item()}
    return loss, stats


# ----------------------------------------------------------------------------------------------- samples
_SEQ_KEYS = ("input_ids", "attention_mask")


@dataclass
class Sample:
    """One rollout: a token sequence without padding, which tokens the policy sampled, and its image inputs."""
    query: int                                   # index of the prompt row within the step
    ids: list[int]
    action: list[int]                            # 1 = sampled by the policy (answer token)
    token_extra: dict[str, list[int]]            # per-token processor outputs (Qwen's mm_token_type_ids)
    image: dict[str, torch.Tensor]               # per-row image tensors (pixel_values, image_grid_thw, ...)
    prompts: list[dict] = field(default_factory=list)  # the user messages asked
    answers: list[str] = field(default_factory=list)
    answer_ids: list[list[int]] = field(default_factory=list)
    ended: list[bool] = field(default_factory=list)    # per answer: stopped at EOS (not cut by max_new_tokens)

    def extend(self, ids: list[int], is_action: bool) -> None:
        self.ids += ids
        self.action += [int(is_action)] * len(ids)
        for v in self.token_extra.values():
            v += [0] * len(ids)  # generated / question text is text (type 0)


def encode_prompt(processor, messages: list[dict], image) -> Sample:
    """One prompt (chat messages + generation prompt) as a Sample with no action tokens yet."""
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    kw = {"images": [[rgb(image)]]} if image is not None else {}
    enc = processor(text=[text], return_tensors="pt", **kw)
    n = enc["input_ids"].shape[1]
    token_extra = {k: v[0].tolist() for k, v in enc.items() if k not in _SEQ_KEYS and tuple(v.shape) == (1, n)}
    image_t = {k: v for k, v in enc.items() if k not in _SEQ_KEYS and k not in token_extra}
    ids = enc["input_ids"][0].tolist()
    return Sample(query=-1, ids=ids, action=[0] * n, token_extra=token_extra, image=image_t)


def _clone(s: Sample, query: int) -> Sample:
    return Sample(query=query, ids=list(s.ids), action=list(s.action),
                  token_extra={k: list(v) for k, v in s.token_extra.items()}, image=s.image, prompts=list(s.prompts))


def collate(samples: Sequence[Sample], pad_id: int, device) -> dict:
    """Left-pad the samples into model inputs + action_mask; image tensors are concatenated along dim 0 (which
    serves LLaVA's [B, C, H, W] and Qwen's flattened patches + image_grid_thw alike)."""
    L = max(len(s.ids) for s in samples)
    n = len(samples)
    ids = torch.full((n, L), pad_id, dtype=torch.long)
    attn = torch.zeros((n, L), dtype=torch.long)
    action = torch.zeros((n, L), dtype=torch.long)
    extra = {k: torch.zeros((n, L), dtype=torch.long) for k in samples[0].token_extra}
    for i, s in enumerate(samples):
        m = len(s.ids)
        ids[i, L - m:] = torch.tensor(s.ids)
        attn[i, L - m:] = 1
        action[i, L - m:] = torch.tensor(s.action)
        for k in extra:
            extra[k][i, L - m:] = torch.tensor(s.token_extra[k])
    batch = {"input_ids": ids, "attention_mask": attn, **extra}
    for k in samples[0].image:
        batch[k] = torch.cat([s.image[k] for s in samples])
    batch = {k: v.to(device) for k, v in batch.items()}
    return {"inputs": batch, "action_mask": action.to(device)}


_VISION_TOKENS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def banned_ids(model) -> list[int]:
    """Vision placeholder tokens the policy may never sample: a sampled <image> would be taken for an image slot on
    the next forward pass (and Qwen's <|vision_start|> would shift its 3-D positions). They are suppressed in
    generate() and masked out of the logits in forward(), so sampler and scorer share one distribution."""
    ids = {getattr(model.config, name, None) for name in _VISION_TOKENS}
    return sorted(i for i in ids if isinstance(i, int) and i >= 0)


def _eos_ids(model, processor) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    return ids | {processor.tokenizer.eos_token_id}


def generate_into(model, processor, samples: list[Sample], cfg: PPOConfig) -> None:
    """Sample one answer for every sample (continuing its current ids), append it as action tokens, record text."""
    tok = processor.tokenizer
    eos = _eos_ids(model, processor)
    sampling = cfg.temperature > 0
    kwargs = {"max_new_tokens": cfg.max_new_tokens, "do_sample": sampling, "use_cache": True,
              "pad_token_id": tok.pad_token_id, "suppress_tokens": banned_ids(model) or None}
    if sampling:  # the full distribution: PPO's logprobs assume no top-k / top-p truncation
        kwargs.update(temperature=float(cfg.temperature), top_k=0, top_p=1.0)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)
    for i in range(0, len(samples), cfg.gen_batch_size):
        chunk = samples[i:i + cfg.gen_batch_size]
        inputs = collate(chunk, tok.pad_token_id, model.device)["inputs"]
        with torch.inference_mode():
            out = model.generate(**to_model_dtype(model, dict(inputs)), **kwargs)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        for s, toks in zip(chunk, new):
            # After EOS generate() pads; an answer without EOS ran to max_new_tokens and every token is real.
            cut = next((j + 1 for j, t in enumerate(toks) if t in eos), None)
            toks = toks[:cut] if cut is not None else toks
            s.extend(toks, is_action=True)
            s.answer_ids.append(toks)
            s.ended.append(cut is not None)
            s.answers.append(tok.decode(toks, skip_special_tokens=True).strip())


def prompt_messages(row: dict) -> list[dict]:
    """A single-turn row's prompt: its TRL `prompt` column when present, else its first user message + image."""
    if isinstance(row.get("prompt"), list):
        return row["prompt"]
    return [user_message(first_user_text(row), with_image=row.get("image") is not None)]


def rollout_single(model, processor, rows: Sequence[dict], cfg: PPOConfig) -> list[Sample]:
    """k sampled answers per row; samples of one row are consecutive (query = the row's index)."""
    samples = []
    for q, row in enumerate(rows):
        msgs = prompt_messages(row)
        base = encode_prompt(processor, msgs, row.get("image"))
        base.prompts = msgs
        samples += [_clone(base, q) for _ in range(cfg.k)]
    generate_into(model, processor, samples, cfg)
    return samples


_SENTINEL = "\x00ANSWER\x00"


def turn_suffix(processor, question: str, answer_ended: bool) -> str:
    """The template text between an answer and the next answer: end of the answer turn (unless the policy already
    sampled its EOS), the next user turn, and the generation prompt. Read off the chat template itself (rendered
    with a sentinel answer), so it follows whatever template the processor carries."""
    conv = [user_message("q", with_image=False), assistant_message(_SENTINEL)]
    before = processor.apply_chat_template(conv)
    after = processor.apply_chat_template(conv + [user_message(question, with_image=False)],
                                          add_generation_prompt=True)
    cut = after.index(_SENTINEL) + len(_SENTINEL)
    if after[:cut] != before[:before.index(_SENTINEL) + len(_SENTINEL)]:
        raise ValueError("chat template renders earlier turns differently once a user turn follows")
    suffix = after[cut:]
    eos = processor.tokenizer.eos_token
    if answer_ended and eos and suffix.startswith(eos):
        suffix = suffix[len(eos):]
    return suffix


def rollout_conversation(model, processor, rows: Sequence[dict], cfg: PPOConfig) -> list[Sample]:
    """k multi-turn rollouts per conv row: answer question 1 (with the image), then for t = 2..n append the
    template text + question t after the policy's own answer t-1 (mask 0) and generate answer t (mask 1)."""
    tok = processor.tokenizer
    questions = [conversation_questions(r) for r in rows]
    samples = []
    for q, row in enumerate(rows):
        first = user_message(questions[q][0], with_image=row.get("image") is not None)
        base = encode_prompt(processor, [first], row.get("image"))
        base.prompts = [first]
        samples += [_clone(base, q) for _ in range(cfg.k)]
    for t in range(max(len(qs) for qs in questions)):
        todo = [s for s in samples if t < len(questions[s.query])]
        if t > 0:
            for s in todo:
                question = questions[s.query][t]
                suffix = turn_suffix(processor, question, s.ended[-1])
                s.extend(tok(suffix, add_special_tokens=False)["input_ids"], is_action=False)
                s.prompts.append(user_message(question, with_image=False))
        generate_into(model, processor, todo, cfg)
    return samples


# ----------------------------------------------------------------------------------------------- rewards
def score_samples(reward_fns: Sequence[Callable], weights: Sequence[float], rows: Sequence[dict],
                  samples: Sequence[Sample]) -> tuple[torch.Tensor, dict[str, list]]:
    """Call every reward in TRL's signature on all samples; (weighted sum per sample with None -> 0, raw values per
    reward name)."""
    prompts = [s.prompts for s in samples]
    completions = [[{"role": "assistant", "content": a} for a in s.answers] for s in samples]
    columns: dict[str, list] = {}
    for key in rows[0]:
        if key not in ("prompts", "completions"):
            columns[key] = [rows[s.query].get(key) for s in samples]
    columns["query_id"] = [s.query for s in samples]
    columns["completion_ids"] = [sum(s.answer_ids, []) for s in samples]
    total = torch.zeros(len(samples), dtype=torch.float64)
    raw: dict[str, list] = {}
    for i, (f, w) in enumerate(zip(reward_fns, weights)):
        vals = list(f(prompts=prompts, completions=completions, **columns))
        if len(vals) != len(samples):
            raise ValueError(f"reward {_name(f)} returned {len(vals)} values for {len(samples)} completions")
        name = _name(f) if _name(f) not in raw else f"{_name(f)}_{i}"
        raw[name] = vals
        total += torch.tensor([float(w) * float(v) if _finite(v) else 0.0 for v in vals], dtype=torch.float64)
    return total.float(), raw


def _name(f) -> str:
    return getattr(f, "__name__", type(f).__name__)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _nanmean(vals) -> float | None:
    ok = [float(v) for v in vals if _finite(v)]
    return sum(ok) / len(ok) if ok else None


# ----------------------------------------------------------------------------------------------- forward
def forward(model, samples: Sequence[Sample], pad_id: int, temperature: float, head: ValueHead | None = None):
    """Policy forward on left-padded samples, shifted to "action space": logits[:, t] scores targets[:, t] =
    input_ids[:, t+1], values[:, t] = V(h_t), mask[:, t] = action_mask[:, t+1].

    Only the last W = L - (first action position in the batch) positions are returned ([n, W], right-aligned
    with the full [n, L-1] action space): logits_to_keep skips the lm_head over image + prompt tokens, which for a
    real vocabulary (150k) is most of the memory of a step."""
    b = collate(samples, pad_id, model.device)
    action = b["action_mask"]
    L = action.shape[1]
    first = int(action.any(0).nonzero()[0]) if action.any() else 1
    width = L - first  # action-space columns first-1 .. L-2
    out = model(**to_model_dtype(model, dict(b["inputs"])), output_hidden_states=head is not None, use_cache=False,
                logits_to_keep=width + 1)
    logits = out.logits[:, :-1].float()
    if temperature > 0:
        logits = logits / temperature
    banned = banned_ids(model)
    if banned:  # as generate()'s suppress_tokens; finite, so that p * log p stays 0 (not NaN) in the entropy
        logits = logits.index_fill(-1, torch.tensor(banned, device=logits.device), -1e9)
    values = head(out.hidden_states[-1][:, L - width - 1:-1]) if head is not None else None
    ids = b["inputs"]["input_ids"]
    return logits, values, ids[:, L - width:], action[:, L - width:].float()


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _right_align(dst: torch.Tensor, idx: list[int], src: torch.Tensor) -> None:
    # Rows are left-padded, so a chunk padded to its own (shorter) length lines up with the global tensor's end.
    dst[idx, dst.shape[1] - src.shape[1]:] = src.to(dst.dtype)


@torch.no_grad()
def score_rollout(policy, head, ref, samples: list[Sample], pad_id: int, cfg: PPOConfig) -> dict:
    """Old logprobs, values and entropy (policy) and reference logprobs, as global [N, L-1] tensors."""
    n, L = len(samples), max(len(s.ids) for s in samples)
    dev = policy.device
    out = {k: torch.zeros((n, L - 1), device=dev) for k in ("logp", "ref_logp", "values", "mask", "entropy")}
    for i in range(0, n, cfg.minibatch):
        idx = list(range(i, min(n, i + cfg.minibatch)))
        chunk = [samples[j] for j in idx]
        logits, values, targets, mask = forward(policy, chunk, pad_id, cfg.temperature, head)
        logp_all = torch.log_softmax(logits, -1)
        _right_align(out["logp"], idx, logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1))
        _right_align(out["entropy"], idx, -(logp_all.exp() * logp_all).sum(-1))
        _right_align(out["values"], idx, values)
        _right_align(out["mask"], idx, mask)
        ref_logits, _, _, _ = forward(ref, chunk, pad_id, cfg.temperature)
        _right_align(out["ref_logp"], idx, token_logprobs(ref_logits, targets))
    return out


# ----------------------------------------------------------------------------------------------- train
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


def ppo_step(policy, head: ValueHead, ref, processor, opt, rows: list[dict], reward_fns, weights, cfg: PPOConfig,
             multi_turn: bool = False) -> tuple[dict, dict]:
    """One PPO iteration on `rows`: rollout, rewards, scoring, GAE, ppo_epochs of minibatch updates.
    Returns (log dict, {"rollout_seconds", "update_seconds"}). The caller seeds torch."""
    pad_id = processor.tokenizer.pad_token_id
    ta = time.time()
    samples = (rollout_conversation if multi_turn else rollout_single)(policy, processor, rows, cfg)
    scores, raw = score_samples(reward_fns, weights, rows, samples)
    missing = torch.tensor([sum(not e for e in s.ended) for s in samples], dtype=torch.float32)
    sc = score_rollout(policy, head, ref, samples, pad_id, cfg)
    mask = sc["mask"]
    penalised = (scores + cfg.missing_eos_penalty * missing).to(mask.device)
    rewards, kl = shaped_rewards(sc["logp"], sc["ref_logp"], mask, penalised, cfg.kl_beta)
    adv, returns = gae(rewards, sc["values"], mask, cfg.gamma, cfg.lam, whiten=cfg.whiten_advantages)
    tb = time.time()
    params = [p for g in opt.param_groups for p in g["params"]]
    stats: list[dict] = []
    n = len(samples)
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(n).tolist()
        for i in range(0, n, cfg.minibatch):
            idx = perm[i:i + cfg.minibatch]
            logits, values, targets, mb_mask = forward(policy, [samples[j] for j in idx], pad_id, cfg.temperature,
                                                       head)
            width = mb_mask.shape[1]

            def cut(x, idx=idx, width=width):  # the minibatch's rows, right-aligned to its own width
                return x[idx][:, x.shape[1] - width:]

            loss, st = ppo_loss(logits, values, targets, mb_mask, cut(sc["logp"]), cut(sc["values"]), cut(adv),
                                cut(returns), cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            stats.append(st)
    log = {"reward": scores.mean().item(), **{f"reward/{k}": _nanmean(v) for k, v in raw.items()},
           "kl": kl.sum(1).mean().item(), "entropy": masked_mean(sc["entropy"], mask).item(),
           "response_length": mask.sum(1).mean().item(),
           "eos_rate": sum(sum(s.ended) for s in samples) / max(1, sum(len(s.ended) for s in samples)),
           "value_mean": masked_mean(sc["values"], mask).item()}
    for k in ("policy_loss", "value_loss", "clip_frac", "approx_kl"):
        log[k] = sum(st[k] for st in stats) / len(stats)
    return log, {"rollout_seconds": tb - ta, "update_seconds": time.time() - tb}


def train(init_dir, out_dir, rows, reward_fns, cfg: PPOConfig, *, multi_turn: bool = False,
          reward_weights: Sequence[float] | None = None, run_key: dict | None = None, progress: bool = True) -> dict:
    """PPO from the model at `init_dir` on `rows` (list of dicts or a datasets.Dataset); returns {"final_dir",
    "log_history", "seconds", "steps", "resumed_from", "seconds_per_step", ...}.

    reward_fns: one TRL-signature function or a list, combined as sum_i reward_weights[i] * f_i (default weights 1).
    multi_turn: rows are Dr-LLaVA conv rows (questions answered in order, one reward per conversation).
    log_history, one dict per step: reward (weighted sum), reward/<name> (mean of non-None values), kl (mean per
    sample of sum_t KL_t), entropy (per answer token), response_length (answer tokens per sample, all turns),
    eos_rate, policy_loss, value_loss, clip_frac, approx_kl (means over the minibatch updates), value_mean.
    """
    fns = list(reward_fns) if isinstance(reward_fns, (list, tuple)) else [reward_fns]
    weights = [1.0] * len(fns) if reward_weights is None else [float(w) for w in reward_weights]
    if len(weights) != len(fns):
        raise ValueError(f"{len(weights)} reward_weights for {len(fns)} reward functions")
    if cfg.steps <= 0:
        return {"final_dir": str(init_dir), "log_history": [], "seconds": 0.0, "steps": 0, "resumed_from": None}
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    key = {"run_key": run_key, "init": str(init_dir), "cfg": asdict(cfg), "n_rows": len(rows),
           "multi_turn": multi_turn, "rewards": [_name(f) for f in fns], "weights": weights}
    done = runs.prepare(out_dir, key)
    if done:
        return done
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # fork_rng: train() reseeds torch (model/head init, every step); the caller's global RNG must not move.
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
        info = _train(init_dir, out_dir, ckpt_dir, rows, fns, weights, cfg, multi_turn, progress, device)
    runs.finish(out_dir, info)
    return info


def _train(init_dir, out_dir: Path, ckpt_dir: Path, rows, fns, weights, cfg: PPOConfig, multi_turn: bool,
           progress: bool, device: str) -> dict:
    from tqdm.auto import tqdm

    from repro.models import load_vlm

    dtype = "fp32" if device == "cpu" else None  # load_vlm: bf16 on a bf16 GPU, never on CPU
    resume = _last_checkpoint(ckpt_dir)
    policy, processor = load_vlm(resume or init_dir, device=device, dtype=dtype)
    ref, _ = load_vlm(init_dir, device=device, dtype=dtype)
    ref.eval().requires_grad_(False)
    head = (load_value_head(resume, hidden_size(policy), device) if resume
            else ValueHead(hidden_size(policy)).to(device))
    policy.eval()  # dropout off: rollout scoring and updates see the same function
    params = [p for p in list(policy.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    history: list[dict] = []
    start = 0
    if resume:
        opt.load_state_dict(torch.load(resume / "optimizer.pt", map_location=device, weights_only=True))
        state = json.loads((resume / "trainer_state.json").read_text())
        start, history = state["step"], state["log_history"]
        # Steps reseed from (seed, step) anyway; the saved state covers any draw made outside a step.
        torch.set_rng_state(torch.tensor(state["rng"], dtype=torch.uint8))
    t0 = time.time()
    timing = {"rollout_seconds": 0.0, "update_seconds": 0.0}
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="ppo", disable=not progress)
    for step in bar:
        torch.manual_seed(_step_seed(cfg.seed, step))  # a step is a pure function of (seed, step, weights)
        step_rows = [dict(rows[i]) for i in batch_indices(len(rows), cfg.batch_size, step, cfg.seed)]
        log, t = ppo_step(policy, head, ref, processor, opt, step_rows, fns, weights, cfg, multi_turn)
        history.append({"step": step + 1, **log})
        for k in timing:
            timing[k] += t[k]
        bar.set_postfix(reward=f"{log['reward']:.3f}", kl=f"{log['kl']:.3f}")
        if (step + 1) % cfg.save_steps == 0 or step + 1 == cfg.steps:
            _save_checkpoint(ckpt_dir, step + 1, policy, processor, head, opt, history)
    seconds = time.time() - t0
    final = out_dir / "final"
    shutil.rmtree(final, ignore_errors=True)
    policy.save_pretrained(final)
    processor.save_pretrained(final)
    save_value_head(head, final)
    done = cfg.steps - start
    return {"final_dir": str(final), "log_history": history, "seconds": round(seconds, 2), "steps": cfg.steps,
            "resumed_from": str(resume) if resume else None,
            "seconds_per_step": round(seconds / done, 3) if done else None,
            **{k: round(v, 2) for k, v in timing.items()}}

"""Rollouts for our PPO: what the policy sampled, as token ids with an action mask, scored by rewards and models.

    samples = rollout_single(model, processor, rows, cfg)          # k samples per row, consecutive
    samples = rollout_conversation(model, processor, conv_rows, cfg)  # Dr-LLaVA: k conversations per row
    scores, raw = score_samples(reward_fns, weights, rows, samples)   # [N] weighted sum, raw values per reward
    sc = score_rollout(policy, ref, samples, pad_id, cfg, head)       # logp, ref_logp, values, mask: [N, L-1]

`cfg` is anything with k, max_new_tokens, temperature, gen_batch_size and minibatch (ppo.PPOConfig).

A Sample is one rollout without padding: `ids` (prompt + image tokens + answers + the clinician questions between
answers) and `action`, 1 exactly on the tokens the policy sampled (answers, incl. their end-of-turn token).

Single turn: each row's prompt is encoded once and sampled k times (do_sample, temperature, full distribution:
top_k = 0, top_p = 1, KV cache). Multi turn (Dr-LLaVA, docs/methods.md §1(a) 6): the policy answers the row's
questions in order; question t+1 is appended after the policy's *own* answer t as token ids (never re-tokenised
text), so the tokens scored later are exactly the tokens sampled.

Scoring by models works in "action space": for left-padded ids [N, L], position t of the [N, L-1] tensors scores
token t+1 (logits[:, t] predict ids[:, t+1]; mask[:, t] = action[:, t+1]; V[:, t] is the value of the state before
that token, read from the hidden state at t). Logprobs use logits / temperature, the sampling distribution.
Vision placeholder tokens (<image>, Qwen's <|vision_start|>, ...) are suppressed in sampling and masked in scoring:
a sampled <image> would be read as an image slot on the next forward pass.

Reward functions use TRL's signature f(prompts, completions, **columns) -> list[float | None] and see, per sample:
    prompts[i]      single turn: [user message with an image block]; multi turn: the user messages (questions)
    completions[i]  [{"role": "assistant", "content": answer}] - one message per turn in multi-turn mode, which
                    rules.make_drllava_reward reads as the conversation's turns
    completion_ids  the sampled answer token ids (all turns concatenated)
    query_id        0..n_rows-1: which prompt row of the step the sample belongs to (its k samples are
                    consecutive). UMed-LVLM's per-query max-normalisation: make_aar_reward(group_key="query_id").
    every row column (id, image, bboxes, turn_categories, ...), repeated k times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from repro.chat import assistant_message, conversation_questions, first_user_text, rgb, to_model_dtype, user_message
from repro.train import shared_prefix
from repro.train.ppo_math import token_logprobs

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


def generate_into(model, processor, samples: list[Sample], cfg) -> None:
    """Sample one answer for every sample (continuing its current ids), append it as action tokens, record text."""
    tok = processor.tokenizer
    eos = _eos_ids(model, processor)
    sampling = cfg.temperature > 0
    kwargs = {"max_new_tokens": cfg.max_new_tokens, "do_sample": sampling, "use_cache": True,
              "pad_token_id": tok.pad_token_id, "suppress_tokens": banned_ids(model) or None}
    if sampling:  # the full distribution: PPO's logprobs assume no top-k / top-p truncation and no repetition
        # penalty (explicit, so a checkpoint's generation_config, e.g. Qwen's released 1.05, cannot override it)
        kwargs.update(temperature=float(cfg.temperature), top_k=0, top_p=1.0, repetition_penalty=1.0)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)
    for i in range(0, len(samples), cfg.gen_batch_size):
        chunk = samples[i:i + cfg.gen_batch_size]
        inputs = collate(chunk, tok.pad_token_id, model.device)["inputs"]
        with torch.inference_mode():  # the k samples of a prompt share one prompt pass (the same tokens)
            out = shared_prefix.generate(model, model.generate, **to_model_dtype(model, dict(inputs)), **kwargs)
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


def rollout_single(model, processor, rows: Sequence[dict], cfg) -> list[Sample]:
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


def rollout_conversation(model, processor, rows: Sequence[dict], cfg) -> list[Sample]:
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
            raise ValueError(f"reward {reward_name(f)} returned {len(vals)} values for {len(samples)} completions")
        name = reward_name(f) if reward_name(f) not in raw else f"{reward_name(f)}_{i}"
        raw[name] = vals
        total += torch.tensor([float(w) * float(v) if _finite(v) else 0.0 for v in vals], dtype=torch.float64)
    return total.float(), raw


def turn_scores(reward_fns: Sequence[Callable], weights: Sequence[float], rows: Sequence[dict],
                samples: Sequence[Sample], missing_eos_penalty: float = 0.0) -> torch.Tensor | None:
    """Per-turn scores [N, n] (n = the most turns of any sample; 0 past a sample's last turn): sum_i w_i *
    f_i.per_turn(sample) plus missing_eos_penalty on each turn cut by max_new_tokens. Each row sums to the
    sample's sequence score. None when a reward function has no `per_turn` (its score is not a sum over turns,
    e.g. the gated Dr-LLaVA reward): the caller then credits the whole score at the end."""
    if not all(callable(getattr(f, "per_turn", None)) for f in reward_fns):
        return None
    n = max(len(s.answers) for s in samples)
    out = torch.zeros(len(samples), n, dtype=torch.float64)
    for f, w in zip(reward_fns, weights):
        for b, s in enumerate(samples):
            row = rows[s.query]
            cols = {k: row.get(k) for k in getattr(f, "columns", ())}
            parts = f.per_turn([{"role": "assistant", "content": a} for a in s.answers], **cols)
            out[b, :len(parts)] += float(w) * torch.tensor([float(x) if _finite(x) else 0.0 for x in parts],
                                                           dtype=torch.float64)[:n]
    for b, s in enumerate(samples):
        for t, ended in enumerate(s.ended):
            if not ended:
                out[b, t] += missing_eos_penalty
    return out.float()


def turn_positions(samples: Sequence[Sample], n: int) -> torch.Tensor:
    """[N, n] column of each turn's last sampled token in the [N, L-1] action space of score_rollout (left-padded to
    L = the longest sample; column = padded index - 1); -1 where a sample has fewer turns."""
    L = max(len(s.ids) for s in samples)
    pos = torch.full((len(samples), n), -1, dtype=torch.long)
    for b, s in enumerate(samples):
        offset = L - len(s.ids) - 1
        ends = [j for j in range(len(s.action)) if s.action[j] and (j + 1 == len(s.action) or not s.action[j + 1])]
        for t, j in enumerate(ends[:n]):
            pos[b, t] = offset + j
    return pos


def reward_name(f) -> str:
    return getattr(f, "__name__", type(f).__name__)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def nanmean(vals) -> float | None:
    ok = [float(v) for v in vals if _finite(v)]
    return sum(ok) / len(ok) if ok else None


# ----------------------------------------------------------------------------------------------- scoring by models
def forward(model, samples: Sequence[Sample], pad_id: int, temperature: float, hidden: bool = False):
    """Forward pass on left-padded samples, shifted to action space: (logits [n, W, V], last hidden state
    [n, W, H] or None, targets [n, W], mask [n, W]), with targets[:, t] = the token logits[:, t] scores.

    Only the last W = L - (first action position in the batch) positions are returned (right-aligned with the full
    [n, L-1] action space): logits_to_keep skips the lm_head over image + prompt tokens, which for a real
    vocabulary (150k) is most of the memory of a step."""
    # a DDP-wrapped policy (ppo_dist) is called as such (its backward averages gradients); attributes from inside
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    if shareable(model, samples):  # one pass per distinct prompt: the same numbers up to rounding
        logits, h, targets, mask = _forward_shared(model, samples, pad_id, hidden)
    else:
        b = collate(samples, pad_id, inner.device)
        action = b["action_mask"]
        L = action.shape[1]
        first = int(action.any(0).nonzero()[0]) if action.any() else 1
        width = L - first  # action-space columns first-1 .. L-2
        out = model(**to_model_dtype(inner, dict(b["inputs"])), output_hidden_states=hidden, use_cache=False,
                    logits_to_keep=width + 1)
        logits = out.logits[:, :-1]
        h = out.hidden_states[-1][:, L - width - 1:-1] if hidden else None
        targets, mask = b["inputs"]["input_ids"][:, L - width:], action[:, L - width:].float()
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    banned = banned_ids(inner)
    if banned:  # as generate()'s suppress_tokens; finite, so that p * log p stays 0 (not NaN) in the entropy
        logits = logits.index_fill(-1, torch.tensor(banned, device=logits.device), -1e9)
    return logits, h, targets, mask


def _prompt_length(s: Sample) -> int | None:
    """Tokens before the sample's answer when it is a prompt then one answer (single turn), else None."""
    p = s.action.index(1) if 1 in s.action else None
    return p if p is not None and all(s.action[p:]) else None


def shareable(model, samples: Sequence[Sample]) -> bool:
    """True when forward() may score `samples` with one pass per distinct prompt (repro.train.shared_prefix):
    single-turn samples of a plain (not DDP-wrapped) model whose only image input is pixel_values. Not
    conversations: their shared prompt (image + first question) is a small part of them, and measured on the cpu
    Dr-LLaVA PPO it saved nothing (5 steps 37.6 s plain, 40.5 s shared)."""
    return (not isinstance(model, torch.nn.parallel.DistributedDataParallel)
            and all(not s.token_extra and set(s.image) <= {"pixel_values"} and _prompt_length(s) is not None
                    for s in samples))


def _forward_shared(model, samples: Sequence[Sample], pad_id: int, hidden: bool):
    """forward()'s (raw logits, hidden or None, targets, mask) with each distinct prompt run once: prompts left-padded
    and answers right-padded into TRL's layout for shared_prefix.completion_outputs, then each row's answer moved
    to the right end of [n, W] (W = the longest answer), where forward() puts it."""
    starts = [_prompt_length(s) for s in samples]
    rests = [len(s.ids) - p for s, p in zip(samples, starts)]
    P, W, n = max(starts), max(rests), len(samples)
    dev = model.device
    ids = torch.full((n, P + W), pad_id, dtype=torch.long)
    attn = torch.zeros((n, P + W), dtype=torch.long)
    mask = torch.zeros((n, W))
    for i, (s, p, a) in enumerate(zip(samples, starts, rests)):
        ids[i, P - p:P + a] = torch.tensor(s.ids)
        attn[i, P - p:P + a] = 1
        mask[i, W - a:] = torch.tensor(s.action[p:], dtype=mask.dtype)
    ids, attn, mask = ids.to(dev), attn.to(dev), mask.to(dev)
    pixels = None
    if samples[0].image:
        pixels = torch.cat([s.image["pixel_values"] for s in samples]).to(device=dev, dtype=model.dtype)
    logits, h = shared_prefix.completion_outputs(model, ids, attn, W, pixels, hidden=hidden)
    out_logits = logits.new_zeros(n, W, logits.shape[-1])
    out_h = h.new_zeros(n, W, h.shape[-1]) if hidden else None
    targets = torch.full((n, W), pad_id, dtype=torch.long, device=dev)
    for i, a in enumerate(rests):  # row i's answer: columns 0..a-1 here, W-a..W-1 in forward()'s layout
        out_logits[i, W - a:] = logits[i, :a]
        if hidden:
            out_h[i, W - a:] = h[i, :a]
        targets[i, W - a:] = ids[i, P:P + a]
    return out_logits, out_h, targets, mask


def right_align(dst: torch.Tensor, idx: list[int], src: torch.Tensor) -> None:
    """dst[idx, -W:] = src ([len(idx), W, ...]): rows are left-padded, so a chunk padded to its own (shorter)
    length lines up with the global tensor's end."""
    dst[idx, dst.shape[1] - src.shape[1]:] = src.to(dst.dtype)


@torch.no_grad()
def score_rollout(policy, ref, samples: list[Sample], pad_id: int, cfg, head=None) -> dict:
    """Everything the update needs from the models, as global [N, L-1] tensors (N samples, L their padded length):
    logp (policy = old policy), ref_logp, entropy, mask; with a value head also values [N, L-1] and hidden
    [N, L-1, H], the policy's last hidden states the head reads (kept so value updates need no forward pass)."""
    n, L = len(samples), max(len(s.ids) for s in samples)
    dev = policy.device
    out = {k: torch.zeros((n, L - 1), device=dev) for k in ("logp", "ref_logp", "values", "mask", "entropy")}
    for i in range(0, n, cfg.minibatch):
        idx = list(range(i, min(n, i + cfg.minibatch)))
        chunk = [samples[j] for j in idx]
        logits, hidden, targets, mask = forward(policy, chunk, pad_id, cfg.temperature, hidden=head is not None)
        logp_all = torch.log_softmax(logits, -1)
        right_align(out["logp"], idx, logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1))
        right_align(out["entropy"], idx, -(logp_all.exp() * logp_all).sum(-1))
        right_align(out["mask"], idx, mask)
        if head is not None:
            if "hidden" not in out:
                out["hidden"] = torch.zeros((n, L - 1, hidden.shape[-1]), device=dev)
            right_align(out["hidden"], idx, hidden.float())
            right_align(out["values"], idx, head(hidden))
        ref_logits, _, _, _ = forward(ref, chunk, pad_id, cfg.temperature)
        right_align(out["ref_logp"], idx, token_logprobs(ref_logits, targets))
    return out

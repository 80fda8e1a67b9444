"""Carry a conversation's KV cache from one turn to the next (multi-turn evaluation without re-reading the history).

    states = None
    for turn ...:
        enc = encode(...)                                       # the whole conversation so far, left-padded
        cache = reuse(states, enc["input_ids"], enc["attention_mask"])   # None: run the full prompt
        out = model.generate(..., past_key_values=cache, return_dict_in_generate=True)
        states = keep(out.past_key_values, out.sequences, enc["attention_mask"])

Why: turn t's prompt is the image, questions 1..t and the model's own answers 1..t-1, so a plain rollout re-encodes
the image and the whole history at every turn; on the cpu profile that prefill was 53 % of Dr-LLaVA's conversation
evaluation. Turn t-1's cache already holds every token of turn t's prompt up to the new question.

How: after a turn, each row's cache entries at its real (unmasked) positions are kept with their token ids. At the
next turn each row reuses its entries for the longest common prefix of those ids and its new prompt (the answer is
re-tokenized from text, so a mismatch ends the reuse there; the new question never matches), and the rows are
left-padded into one cache of length `past` = min over rows of (padding + reused length). Keys carry their rotary
position, which is the token's index among the row's real tokens in both turns (generate derives position ids from
the attention mask), so they stay valid when the padding changes. Only the tokens after `past` run through the model;
the answers are those of a full re-encode up to float rounding (tests/unit/test_evaluation.py).
Only for models whose inputs are input_ids / attention_mask / pixel_values with the image as placeholder tokens
(LLaVA); Qwen-style image grids (3-D rotary positions) take the full path.
"""

from __future__ import annotations

import torch


def keep(cache, sequences: torch.Tensor, prompt_mask: torch.Tensor) -> list[dict]:
    """Per row: {"ids": [n] token ids, "kv": [(keys [heads, n, d], values [heads, n, d]) per layer]} of the cache's
    real positions. sequences: [B, S + 1 or more] from generate (prompt + new tokens); prompt_mask: [B, P]."""
    S = cache.get_seq_length()                          # the last generated token was never fed back
    B, P = prompt_mask.shape
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(B, S - P)], dim=1).bool()       # [B, S]
    out = []
    for r in range(B):
        cols = mask[r].nonzero().squeeze(1)
        out.append({"ids": sequences[r, :S][cols],
                    "kv": [(layer.keys[r][:, cols], layer.values[r][:, cols]) for layer in cache.layers]})
    return out


def _common(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(a.numel(), b.numel())
    diff = (a[:n] != b[:n]).nonzero()
    return int(diff[0]) if diff.numel() else n


def reuse(states: list[dict] | None, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_token_id=None):
    """A DynamicCache [B, heads, past, d] per layer for the first `past` columns of the left-padded batch, built from
    each row's kept state (`states[r]` belongs to row r), or None when nothing useful can be reused (no states, or
    some row would have to re-read image tokens)."""
    from repro.train.decode import GrowingCache

    if not states or len(states) != input_ids.size(0):
        return None
    B, L = input_ids.shape
    pads = (attention_mask == 0).sum(1)                                     # [B] left padding per row
    reused, image_end = [], []
    for r in range(B):
        real = input_ids[r, int(pads[r]):]
        reused.append(min(_common(states[r]["ids"], real), real.numel() - 1))   # generate must run >= 1 token
        img = (real == image_token_id).nonzero() if image_token_id is not None else real[:0]
        image_end.append(int(img[-1]) + 1 if img.numel() else 0)
    past = min(int(pads[r]) + reused[r] for r in range(B))
    # Each row keeps past - pad of its tokens; none may cut its image in two (generate gets no pixels).
    if past <= 0 or any(past - int(pads[r]) < image_end[r] for r in range(B)):
        return None
    layers = []
    for li in range(len(states[0]["kv"])):
        k0 = states[0]["kv"][li][0]
        K = k0.new_zeros(B, k0.size(0), past, k0.size(-1))
        V = torch.zeros_like(K)
        for r in range(B):
            pad, m = int(pads[r]), past - int(pads[r])                      # pad columns stay 0: masked anyway
            k, v = states[r]["kv"][li]
            K[r, :, pad:] = k[:, :m]
            V[r, :, pad:] = v[:, :m]
        layers.append((K, V))
    return GrowingCache(layers)  # a DynamicCache whose decode steps write in place (repro.train.decode)

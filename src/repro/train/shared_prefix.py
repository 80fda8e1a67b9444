"""Score a group's completions with one pass over their shared prompt (GRPO's log-probs, ~3x fewer tokens).

    logps, entropy = completion_logps(model, input_ids, attention_mask, logits_to_keep, pixel_values, temperature=1.0)

Why: GRPO scores each prompt's G completions as G full sequences (policy forward + backward, and the reference
model's forward), and on SynthMed the prompt (64 image tokens + ~48 text tokens) is ~3/4 of each sequence. The
prompt's keys and values are the same for all G completions, so we run each distinct prompt once, repeat its KV
cache for its completions and run only the completion tokens over it. The log-probs are those of TRL's full-sequence
forward up to float rounding (tests/unit/test_shared_prefix.py); gradients reach the prompt pass through the
repeated cache, so the update is the same one. Measured in benchmarks/bench_shared_prefix.py.

Semantics kept from TRL 1.16's `_get_per_token_logps_and_entropies`: positions are 0..P+L-1 as in a plain forward
(no position ids from the mask), logits are divided by the temperature before the softmax, and a completion token
whose attention mask is 0 (after EOS) gets log-prob 0 and entropy 0.
"""

from __future__ import annotations

import functools

import torch

from repro.train import decode


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, pixel_values: torch.Tensor | None):
    """(firsts [U], inverse [B]): the first row of each distinct (prompt tokens, mask, image) and, per row, the index
    of its group in `firsts`. prompt_ids, prompt_mask: [B, P]; pixel_values: [B, ...] or None."""
    seen: dict[bytes, int] = {}
    firsts, inverse = [], []
    for i in range(prompt_ids.size(0)):
        key = prompt_ids[i].cpu().numpy().tobytes() + prompt_mask[i].cpu().numpy().tobytes()
        if pixel_values is not None:
            key += pixel_values[i].detach().cpu().numpy().tobytes()
        if key not in seen:
            seen[key] = len(firsts)
            firsts.append(i)
        inverse.append(seen[key])
    dev = prompt_ids.device
    return torch.tensor(firsts, device=dev), torch.tensor(inverse, device=dev)


def spread(x: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """x[inverse] along dim 0 ([U, ...] -> [B, ...]), as a product with the [B, U] one-hot matrix of `inverse`
    (exact: each output is 1 * one input + 0 * the others). Why not indexing: its backward accumulates with
    index_put, whose order varies between runs with several threads (two identical GRPO runs differed in the 7th
    digit); the product's backward is a matmul, the same every run. TRL shuffles a step's completions before the
    loss, so a group's rows are not consecutive and a broadcast would not do."""
    onehot = torch.nn.functional.one_hot(inverse, x.size(0)).to(x.dtype)          # [B, U]
    return (onehot @ x.reshape(x.size(0), -1)).reshape(inverse.numel(), *x.shape[1:])


def _spread_cache(cache, inverse: torch.Tensor) -> None:
    for layer in cache.layers:
        layer.keys, layer.values = spread(layer.keys, inverse), spread(layer.values, inverse)


def completion_outputs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                       pixel_values: torch.Tensor | None = None, hidden: bool = False):
    """(logits [B, L, V], last hidden states [B, L, H] or None) at the positions that predict each of the last
    L = logits_to_keep tokens of each row: position j predicts token P + j.

    input_ids, attention_mask: [B, P + L] (prompt left-padded, completion right-padded, as TRL builds them);
    pixel_values: [B, C, H, W], one image per row, or None. Rows whose prompt and image are identical share one
    prompt pass.
    """
    L = int(logits_to_keep)
    P = input_ids.size(1) - L
    firsts, inverse = prompt_groups(input_ids[:, :P], attention_mask[:, :P], pixel_values)
    extra = {} if pixel_values is None else {"pixel_values": pixel_values[firsts]}
    # The prompt pass: its cache [U, heads, P, d] per layer, and the logits (and hidden state) of its last
    # position, which predict the first completion token.
    head = model(input_ids=input_ids[firsts, :P], attention_mask=attention_mask[firsts, :P], use_cache=True,
                 logits_to_keep=1, output_hidden_states=hidden, **extra)
    cache = head.past_key_values
    _spread_cache(cache, inverse)                                       # [B, heads, P, d], in the graph
    tail = model(input_ids=input_ids[:, P:], attention_mask=attention_mask, past_key_values=cache, use_cache=True,
                 output_hidden_states=hidden)
    logits = torch.cat([spread(head.logits[:, -1:], inverse), tail.logits[:, :-1]], dim=1)         # [B, L, V]
    h = None
    if hidden:
        h = torch.cat([spread(head.hidden_states[-1][:, -1:], inverse), tail.hidden_states[-1][:, :-1]], dim=1)
    return logits, h


def completion_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                     pixel_values: torch.Tensor | None = None, temperature: float = 1.0,
                     compute_entropy: bool = False):
    """Per-token log-probs [B, L] (and entropies [B, L] or None) of the last L = logits_to_keep tokens of each row
    (layout as completion_outputs); a token whose attention mask is 0 gets 0 for both."""
    L = int(logits_to_keep)
    logits, _ = completion_outputs(model, input_ids, attention_mask, L, pixel_values)
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    valid = attention_mask[:, -L:].bool()
    logps = logp_all.gather(-1, input_ids[:, -L:, None]).squeeze(-1).masked_fill(~valid, 0.0)
    entropy = None
    if compute_entropy:
        entropy = -(logp_all.exp() * logp_all).sum(-1).masked_fill(~valid, 0.0)
    return logps, entropy


def generate(model, generate_fn, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             pixel_values: torch.Tensor | None = None, row_exit: bool = True, **kwargs):
    """`generate_fn(input_ids=..., attention_mask=..., **kwargs)` (the model's own generate) with the prompt pass of
    each distinct prompt run once: its cache is repeated for the rows that share it, and generate continues from it.

    input_ids, attention_mask: [B, P] left-padded prompts; pixel_values: [B, C, H, W] or None. The prompt pass covers
    tokens 0..P-2 with generate's own position ids (mask cumsum - 1), so generate's first step (token P-1, which
    yields the first completion token's logits) and every sampled token are computed as before, from the same cache
    contents. Falls back to generate_fn when no prompt repeats or the inputs are not one image per row (Qwen-style
    patch rows + grid, MULTIMODAL_KEYS), so callers need no check. row_exit: generation drops each row from the batch
    when it ends (repro.train.decode; greedy tokens unchanged, samples from another random stream); False keeps
    generate_fn's own loop, e.g. when the caller needs the returned KV cache of every row.
    """
    if row_exit:
        generate_fn = functools.partial(decode.generate, model, generate_fn)
    plain = {} if pixel_values is None else {"pixel_values": pixel_values}
    if not applies(input_ids, pixel_values, {k: kwargs.get(k) for k in MULTIMODAL_KEYS}) or input_ids.size(1) < 2:
        return generate_fn(input_ids=input_ids, attention_mask=attention_mask, **plain, **kwargs)
    # decode steps write into the cache in place (decode.GrowingCache) instead of copying it at every token
    firsts, inverse = prompt_groups(input_ids, attention_mask, pixel_values)
    if len(firsts) == input_ids.size(0):  # no prompt repeats: nothing to share
        return generate_fn(input_ids=input_ids, attention_mask=attention_mask, **plain,
                           past_key_values=decode.GrowingCache(), **kwargs)
    head_ids, head_mask = input_ids[firsts, :-1], attention_mask[firsts, :-1]
    position_ids = (head_mask.long().cumsum(-1) - 1).masked_fill(head_mask == 0, 0)
    extra = {} if pixel_values is None else {"pixel_values": pixel_values[firsts]}
    with torch.no_grad():
        head = model(input_ids=head_ids, attention_mask=head_mask, position_ids=position_ids, use_cache=True,
                     logits_to_keep=1, **extra)
    cache = head.past_key_values
    cache.batch_select_indices(inverse)
    cache = decode.growing(cache)
    # No pixel_values: the image's tokens are all in the cache (the prompt ends in text), and generate only runs
    # the uncached last prompt token through the model.
    return generate_fn(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, **kwargs)


# Inputs of other VLM families (Qwen-style patch rows + grids, tiles, token types): their rows are not one image each.
MULTIMODAL_KEYS = ("image_grid_thw", "pixel_attention_mask", "image_sizes", "token_type_ids", "mm_token_type_ids",
                   "spatial_shapes", "num_tiles", "image_position_ids")


def applies(input_ids: torch.Tensor, pixel_values, multimodal: dict) -> bool:
    """True when completion_logps can stand in for TRL's scorer: at most one image per row as a [B, ...] tensor and
    no other multimodal field (Qwen-style grids, tiles, token types)."""
    if any(v is not None for v in multimodal.values()):
        return False
    return pixel_values is None or (torch.is_tensor(pixel_values) and pixel_values.size(0) == input_ids.size(0))

"""Batched generation that drops each row from the batch when it ends (greedy or sampled, KV cache, left padding).

    out = decode.generate(model, model.generate, input_ids=ids, attention_mask=mask, pixel_values=px,
                          max_new_tokens=96, do_sample=False, pad_token_id=0)   # [B, P + T], like model.generate

Why: `model.generate` keeps every row of a batch in every forward until the batch's LONGEST answer ends; the rows
that already wrote EOS are computed and thrown away. On the cpu profile one answer that never ends (a base model
rambling to the 96-token cap, a GRPO completion clipped at the cap: ~3 % of them, so most batches of 32 hold one)
costs the whole batch the cap, while the mean answer is 16-48 tokens. Here a row leaves the batch (its rows of the
KV cache and of the attention mask are dropped) at the step it writes EOS, so a step costs what its live rows cost.

What stays as in `model.generate`: the effective generation config (the model's generation_config updated by the
call's `generation_config` / kwargs, `_prepare_generation_config`), its logits processors (suppress_tokens,
temperature, top-k / top-p, repetition penalty...: `_get_logits_processor`, applied to the live rows), greedy =
argmax and sampling = one multinomial draw per live row from the processed softmax, EOS / max_new_tokens stopping,
position ids from the attention mask (cumsum - 1), and the output layout (prompt + new tokens, pad after EOS, as
many columns as the longest answer). Greedy answers are those of `model.generate` (tests/unit/test_decode.py);
sampled answers draw the same distribution from a different random stream (fewer rows draw after some end).

Only for models whose inputs are input_ids / attention_mask / pixel_values with the image as placeholder tokens
(LLaVA, `FAST_TYPES`) and plain sampling / greedy search; anything else (Qwen-style 3-D rotary positions, beams,
returned scores or caches, a cache implementation) is passed to `generate_fn` unchanged.
"""

from __future__ import annotations

import functools

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.generation.utils import GenerateDecoderOnlyOutput

FAST_TYPES = ("llava",)
_INPUTS = {"input_ids", "attention_mask", "pixel_values", "past_key_values"}
# generation-config fields this loop does not implement: any of them set (to other than its no-op value) -> fallback
_UNSUPPORTED = {"num_beams": 1, "num_beam_groups": 1, "num_return_sequences": 1, "output_scores": False,
                "output_logits": False, "output_attentions": False, "output_hidden_states": False,
                "cache_implementation": None, "assistant_model": None, "prompt_lookup_num_tokens": None,
                "stop_strings": None, "max_time": None, "penalty_alpha": None, "dola_layers": None,
                "min_new_tokens": None, "min_length": 0}


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys / values are views into a buffer with spare room: a decode step writes its token
    into the buffer instead of copying the whole cache (DynamicLayer's torch.cat: 18 % of a cpu conversation
    evaluation, whose caches hold ~300 tokens). Same tensors, same values: attention reads the same numbers. With
    gradients enabled it behaves as DynamicLayer (autograd must not see a buffer written after it was read)."""

    def __init__(self, spare: int = 64):
        super().__init__()
        self.spare = spare  # tokens of room added when the buffer is (re)allocated

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if torch.is_grad_enabled():
            return super().update(key_states, value_states, *args, **kwargs)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self.keys.shape[-2] if self.keys.numel() else 0
        end = n + key_states.shape[-2]
        kb, vb = getattr(self, "_kbuf", None), getattr(self, "_vbuf", None)
        ours = kb is not None and n and self.keys.data_ptr() == kb.data_ptr() and self.keys.shape[0] == kb.shape[0]
        if not ours or end > kb.shape[-2]:  # first write, no room left, or keys replaced (batch_select_indices)
            B, H, _, D = key_states.shape
            kb = key_states.new_empty(B, H, end + self.spare, D)
            vb = value_states.new_empty(B, H, end + self.spare, value_states.shape[-1])
            if n:
                kb[:, :, :n], vb[:, :, :n] = self.keys, self.values
            self._kbuf, self._vbuf = kb, vb
        kb[:, :, n:end], vb[:, :, n:end] = key_states, value_states
        self.keys, self.values = kb[:, :, :end], vb[:, :, :end]
        return self.keys, self.values


class GrowingCache(DynamicCache):
    """DynamicCache of GrowingLayers; ddp_cache_data: [(keys, values) per layer] to start from (turn_cache.reuse)."""

    def __init__(self, ddp_cache_data=None, spare: int = 64):
        super().__init__()
        self.layer_class_to_replicate = functools.partial(GrowingLayer, spare)
        for keys, values in ddp_cache_data or ():
            self.layers.append(GrowingLayer(spare))
            self.layers[-1].update(keys, values)


def growing(cache):
    """`cache` (a DynamicCache, e.g. a prompt pass's) as a GrowingCache; None -> an empty one.
    Any other cache class (static, quantized...) is returned as it is."""
    if isinstance(cache, GrowingCache) or (cache is not None and type(cache) is not DynamicCache):
        return cache
    return GrowingCache([(layer.keys, layer.values) for layer in cache.layers] if cache is not None else None)


def _fast_model(model) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) in FAST_TYPES


def applies(model, inputs: dict, gc) -> bool:
    """True when the loop below computes what model.generate(**inputs, generation_config=gc) would."""
    if not _fast_model(model) or set(inputs) - _INPUTS:
        return False
    if gc.max_new_tokens is None or gc.eos_token_id is None:
        return False
    return all(getattr(gc, k, v) in (v, None) for k, v in _UNSUPPORTED.items())


def _eos_ids(gc) -> list[int]:
    return list(gc.eos_token_id) if isinstance(gc.eos_token_id, (list, tuple)) else [int(gc.eos_token_id)]


def generate(model, generate_fn, generation_config=None, **kwargs):
    """model.generate's result for these inputs and settings, each row computed only until it ends (module doc);
    `generate_fn` (the model's own generate) runs every case the loop does not cover."""
    inputs = {k: kwargs.pop(k) for k in list(kwargs) if k in _INPUTS}
    if not _fast_model(model):  # before any private HF API (a stand-in model need not have one)
        return generate_fn(**inputs, generation_config=generation_config, **kwargs)
    gc, model_kwargs = model._prepare_generation_config(generation_config, **kwargs)
    model_kwargs.pop("use_cache", None)
    if model_kwargs or inputs.get("input_ids") is None or not applies(model, inputs, gc):
        return generate_fn(**inputs, generation_config=generation_config, **kwargs)
    sequences = _loop(model, gc, **inputs)
    if gc.return_dict_in_generate:
        return GenerateDecoderOnlyOutput(sequences=sequences)
    return sequences


@torch.inference_mode()
def _loop(model, gc, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values=None,
          past_key_values=None) -> torch.Tensor:
    """input_ids, attention_mask: [B, P] left-padded prompts; pixel_values: [B, C, H, W] or None; past_key_values: a
    cache of the first c < P prompt tokens of every row (repro.train.shared_prefix) or None. -> [B, P + T]."""
    B, P = input_ids.shape
    dev = input_ids.device
    eos = torch.tensor(_eos_ids(gc), device=dev)
    pad = gc.pad_token_id if gc.pad_token_id is not None else int(eos[0])
    processors = model._get_logits_processor(generation_config=gc, input_ids_seq_length=P,
                                             encoder_input_ids=input_ids, device=dev, model_kwargs={})
    T = int(gc.max_new_tokens)
    new = torch.full((B, T), pad, dtype=input_ids.dtype, device=dev)                     # [B, T]
    live = torch.arange(B, device=dev)             # batch row -> output row
    seqs, mask = input_ids, attention_mask                                                  # [live, P + t]
    cache = growing(past_key_values)
    cached = cache.get_seq_length()
    feed = input_ids[:, cached:]
    extra = {"pixel_values": pixel_values} if pixel_values is not None and cached == 0 else {}
    steps = 0
    for t in range(T):
        pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, -feed.size(1):]
        out = model(input_ids=feed, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                    logits_to_keep=1, **extra)
        extra, cache = {}, out.past_key_values
        scores = processors(seqs, out.logits[:, -1].float())                                # [live, V]
        if gc.do_sample:
            nxt = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            nxt = scores.argmax(dim=-1)
        new[live, t] = nxt
        steps = t + 1
        ended = torch.isin(nxt, eos)
        if t == T - 1 or bool(ended.all()):
            break
        if bool(ended.any()):  # the ended rows leave the batch: their cache rows and mask rows are dropped
            keep = (~ended).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            live, mask, seqs, nxt = live[keep], mask[keep], seqs[keep], nxt[keep]
        mask = torch.cat([mask, mask.new_ones(mask.size(0), 1)], dim=1)
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        feed = nxt[:, None]
    return torch.cat([input_ids, new[:, :steps]], dim=1)

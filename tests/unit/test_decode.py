"""repro.train.decode: dropping each row from the batch when it ends gives model.generate's greedy tokens (rows ending
at different steps, with logits processors), samples only from the processed distribution, and hands every case
it does not implement to the model's own generate."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from repro.models import load_vlm
from repro.train import decode, shared_prefix
from tests.unit.test_shared_prefix import _batch
from tests.unit.tiny_rl import build_init

PROMPTS = ["a b", "c d e f g h", "nodule", "liver cyst kidney"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, processor = load_vlm(build_init(tmp_path_factory.mktemp("dec") / "m"), device="cpu", dtype="fp32")
    model.eval()
    return model, processor


def _ragged_eos(model, ids, mask, pv, pad) -> list[int]:
    """Two tokens the random model writes such that, taken as EOS, rows end at different steps and some never end
    (a random tiny model never writes its real EOS)."""
    import itertools

    out = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, max_new_tokens=12, do_sample=False,
                         pad_token_id=pad)[:, ids.size(1):].tolist()
    for pair in itertools.combinations(sorted({t for row in out for t in row}), 2):
        ends = [next((j for j, t in enumerate(row) if t in pair), None) for row in out]
        if None in ends and len({e for e in ends if e is not None}) > 1:
            return list(pair)
    raise AssertionError("no pair of tokens ends the rows at different steps")


@pytest.mark.parametrize("extra", [{}, {"repetition_penalty": 1.3, "suppress_tokens": [5, 6]}])
def test_greedy_tokens_equal_generate_when_rows_end_at_different_steps(tiny, extra):
    model, processor = tiny
    pad = processor.tokenizer.pad_token_id
    ids, mask, pv = _batch(processor, PROMPTS, 2)
    eos = _ragged_eos(model, ids, mask, pv, pad)
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=pad, eos_token_id=eos, **extra)
    plain = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, **kw)
    calls = []
    fast = decode.generate(model, lambda **a: calls.append(a), input_ids=ids, attention_mask=mask,
                           pixel_values=pv, **kw)
    assert not calls, "the loop fell back to model.generate"
    assert fast.shape == plain.shape and torch.equal(fast, plain)
    # the same through shared_prefix (repeated prompts: the loop continues from the shared prompt pass)
    assert torch.equal(shared_prefix.generate(model, model.generate, ids, mask, pv, **kw), plain)


def test_sampling_respects_processors_and_near_zero_temperature_is_greedy(tiny):
    model, processor = tiny
    pad = processor.tokenizer.pad_token_id
    ids, mask, pv = _batch(processor, PROMPTS, 2)
    eos = _ragged_eos(model, ids, mask, pv, pad)
    greedy = decode.generate(model, model.generate, input_ids=ids, attention_mask=mask, pixel_values=pv,
                             max_new_tokens=12, do_sample=False, pad_token_id=pad, eos_token_id=eos)
    torch.manual_seed(0)
    cold = decode.generate(model, model.generate, input_ids=ids, attention_mask=mask, pixel_values=pv,
                           max_new_tokens=12, do_sample=True, temperature=1e-4, top_k=0, top_p=1.0,
                           pad_token_id=pad, eos_token_id=eos)
    assert torch.equal(cold, greedy)
    # at temperature 1 with the greedy answer's tokens suppressed, no sample contains one of them
    banned = sorted(set(greedy[:, ids.size(1):].flatten().tolist()) - {pad, *eos})[:3]
    torch.manual_seed(0)
    hot = decode.generate(model, model.generate, input_ids=ids, attention_mask=mask, pixel_values=pv,
                          max_new_tokens=12, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                          suppress_tokens=banned, pad_token_id=pad, eos_token_id=eos)
    new = hot[:, ids.size(1):]
    assert not torch.isin(new, torch.tensor(banned)).any()
    # after a row's EOS only padding follows (generate's layout), and the width is the longest answer
    ends = [next((j for j, t in enumerate(row) if t in eos), None) for row in new.tolist()]
    for row, end in zip(new.tolist(), ends, strict=True):
        if end is not None:
            assert all(t == pad for t in row[end + 1:])
    assert new.size(1) == max(12 if e is None else e + 1 for e in ends)


def test_unsupported_settings_go_to_the_models_generate(tiny):
    model, processor = tiny
    ids, mask, pv = _batch(processor, ["a b"], 1)
    seen = []

    def own(**kw):
        seen.append(kw)
        return "own"

    common = dict(input_ids=ids, attention_mask=mask, pixel_values=pv, max_new_tokens=3, pad_token_id=0)
    assert decode.generate(model, own, num_beams=2, **common) == "own"
    assert decode.generate(model, own, output_scores=True, return_dict_in_generate=True, **common) == "own"
    assert decode.generate(model, own, cache_implementation="static", **common) == "own"
    assert decode.generate(model, own, image_sizes=torch.tensor([[64, 64]]), **common) == "own"
    assert len(seen) == 4 and seen[0]["num_beams"] == 2


def test_trl_grpo_generation_config_takes_the_loop(tiny):
    # GRPOTrainer (TRL 1.16) passes one GenerationConfig built from its args; the defaults must not fall back
    model, _ = tiny
    gc = GenerationConfig(max_new_tokens=8, do_sample=True, pad_token_id=0, bos_token_id=1, eos_token_id=[2],
                          temperature=1.0, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,
                          cache_implementation=None, suppress_tokens=[3], disable_compile=True)
    eff, rest = model._prepare_generation_config(gc)
    assert decode.applies(model, {"input_ids": None, "attention_mask": None, "pixel_values": None}, eff)


def test_growing_cache_holds_what_dynamic_cache_holds():
    """In-place writes (with too little room, and after rows are dropped) give the tensors of DynamicCache's cat."""
    from transformers import DynamicCache

    g = torch.Generator().manual_seed(0)
    dyn, grow = DynamicCache(), decode.GrowingCache(spare=2)
    steps = [torch.randn(4, 2, n, 3, generator=g) for n in (5, 1, 1, 1, 2, 1)]
    for i, kv in enumerate(steps):
        if i == 3:  # rows 0 and 2 end: both caches keep rows 1 and 3
            for c in (dyn, grow):
                c.batch_select_indices(torch.tensor([1, 3]))
        kv = kv[[1, 3]] if i >= 3 else kv
        with torch.no_grad():
            a = dyn.update(kv, kv + 1, 0)
            b = grow.update(kv, kv + 1, 0)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert grow.get_seq_length() == dyn.get_seq_length() == 11
    assert grow.layers[0].keys.data_ptr() == grow.layers[0]._kbuf.data_ptr()  # the last writes went in place

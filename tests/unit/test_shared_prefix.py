"""repro.train.shared_prefix: one prompt pass per distinct prompt gives the log-probs, entropies, gradients and
generated tokens of the plain full-sequence path (left-padded prompts of different lengths, repeated G times)."""

from __future__ import annotations

import pytest
import torch

from repro.models import load_vlm
from repro.train import shared_prefix
from tests.unit.tiny_rl import _image, build_init


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_init(tmp_path_factory.mktemp("sp") / "m")
    model, processor = load_vlm(path, device="cpu", dtype="fp32")
    model.eval()
    return model, processor


def _batch(processor, texts, g):
    """Left-padded prompts (image + text), each repeated g times consecutively, as GRPO's sampler orders them."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = [_image(rng) for _ in texts]
    chats = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}] for t in texts]
    prompts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
    processor.tokenizer.padding_side = "left"
    enc = processor(text=[p for p in prompts for _ in range(g)], images=[im for im in images for _ in range(g)],
                    return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"], enc["pixel_values"]


def _plain_logps(model, ids, mask, pixel_values, L, temperature):
    """TRL's semantics: one forward over the whole sequence (positions 0..P+L-1), logits / T, masked tokens -> 0."""
    logits = model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values).logits[:, -L - 1:-1]
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    valid = mask[:, -L:].bool()
    return (logp.gather(-1, ids[:, -L:, None]).squeeze(-1).masked_fill(~valid, 0),
            -(logp.exp() * logp).sum(-1).masked_fill(~valid, 0))


def test_prompt_groups_known_answer():
    ids = torch.tensor([[1, 2], [1, 2], [3, 4], [1, 2], [3, 4]])
    mask = torch.ones_like(ids)
    firsts, inverse = shared_prefix.prompt_groups(ids, mask, None)
    assert firsts.tolist() == [0, 2] and inverse.tolist() == [0, 0, 1, 0, 1]
    # The same tokens over a different image are different prompts.
    pv = torch.zeros(5, 3, 2, 2)
    pv[1] += 1
    firsts, inverse = shared_prefix.prompt_groups(ids, mask, pv)
    assert firsts.tolist() == [0, 1, 2] and inverse.tolist() == [0, 1, 2, 0, 2]


def test_logps_entropies_and_gradients_match_the_full_forward(tiny):
    model, processor = tiny
    g, L = 3, 5
    ids, mask, pv = _batch(processor, ["a b", "c d e f g h"], g)           # two prompt lengths: left padding
    gen = torch.Generator().manual_seed(0)
    comp = torch.randint(5, 50, (ids.size(0), L), generator=gen)
    comp_mask = torch.ones_like(comp)
    comp_mask[0, 3:] = 0                                                    # a completion that ended early
    comp_mask[4, 1:] = 0
    full_ids, full_mask = torch.cat([ids, comp], 1), torch.cat([mask, comp_mask], 1)

    ref_lp, ref_ent = _plain_logps(model, full_ids, full_mask, pv, L, 0.7)
    ref_lp.sum().backward()
    ref_grad = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    lp, ent = shared_prefix.completion_logps(model, full_ids, full_mask, L, pv, temperature=0.7, compute_entropy=True)
    lp.sum().backward()
    grad = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    assert lp.shape == (6, L) and (lp[0, 3:] == 0).all() and (ent[4, 1:] == 0).all()
    torch.testing.assert_close(lp, ref_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, ref_ent, atol=1e-5, rtol=1e-5)
    assert grad.keys() == ref_grad.keys()           # the vision tower and projector get their gradient too
    for n in ref_grad:
        torch.testing.assert_close(grad[n], ref_grad[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("sample", [False, True])
def test_generate_gives_the_tokens_of_plain_generate(tiny, sample):
    model, processor = tiny
    ids, mask, pv = _batch(processor, ["a b", "c d e f g h"], 3)
    kw = dict(max_new_tokens=6, do_sample=sample, pad_token_id=processor.tokenizer.pad_token_id)
    torch.manual_seed(1)
    plain = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, **kw)
    torch.manual_seed(1)
    shared = shared_prefix.generate(model, model.generate, ids, mask, pv, **kw)
    assert shared.shape == plain.shape and torch.equal(shared, plain)


def test_qwen_style_inputs_take_the_models_own_generate(tmp_path):
    # Qwen2.5-VL's pixel_values are patch rows with an image grid, not one image per row: shared_prefix.generate must
    # not group them (it would slice patches as if they were images), and gives generate's own tokens.
    import numpy as np

    from repro.models import build_tiny_qwen25vl
    from tests.unit.tiny_rl import TEXTS

    model, processor = load_vlm(build_tiny_qwen25vl(tmp_path, TEXTS), device="cpu", dtype="fp32")
    model.eval()
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a b"}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    image = _image(np.random.default_rng(0))
    enc = processor(text=[text, text], images=[image, image], return_tensors="pt", padding=True)  # a repeated prompt
    grid = {"image_grid_thw": enc["image_grid_thw"]}
    assert not shared_prefix.applies(enc["input_ids"], enc["pixel_values"], grid)
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    plain = model.generate(**enc, **kw)
    shared = shared_prefix.generate(model, model.generate, enc["input_ids"], enc["attention_mask"],
                                    enc["pixel_values"], **grid, **kw)
    assert torch.equal(plain, shared)

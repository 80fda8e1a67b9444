"""Perplexity of reference answers (repro.papers.perplexity, Zhu et al.'s initialisation study): the masked NLL
against a hand loop over tokens, independence of batching and padding, and a learning test (SFT on the targets
must lower their perplexity)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from repro.models import load_vlm
from repro.papers import perplexity
from repro.train import sft
from tests.unit import tiny_rl


def _rows(n: int, seed: int = 0) -> list[dict]:
    """Data rows (the layout evaluation and SFT read): a random image, the question, an answer of 4-16 words."""
    rng = np.random.default_rng(seed)
    return [{"image": Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
             "messages": [{"role": "user", "content": tiny_rl.QUESTION},
                          {"role": "assistant", "content": " ".join([tiny_rl.ANSWERS[i % 4]] * (1 + i % 3))}]}
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppl")
    return root, tiny_rl.build_init(root / "init")


def test_token_nll_is_the_masked_sum_of_minus_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g)                        # [B, T, V]
    labels = torch.randint(0, 11, (3, 7), generator=g)                 # [B, T]
    labels[0, :3] = perplexity.IGNORE                                  # a prompt
    labels[1, 5:] = perplexity.IGNORE                                  # right padding
    labels[2, :] = perplexity.IGNORE                                   # no target at all
    sums, n = perplexity.token_nll(logits, labels)
    for b in range(3):
        want, k = 0.0, 0
        for t in range(1, 7):
            if labels[b, t] != perplexity.IGNORE:
                want -= float(torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]])
                k += 1
        assert float(sums[b]) == pytest.approx(want, abs=1e-5) and int(n[b]) == k
    assert int(n[2]) == 0 and float(sums[2]) == 0.0
    with pytest.raises(ValueError, match="disagree"):
        perplexity.token_nll(logits, labels[:, :5])


def test_item_nll_equals_a_hand_loop_over_the_answer_tokens_and_the_sft_loss(tiny):
    """The targets are the answer's tokens and its end of turn (what SFT trains), after image + prompt: found here
    independently from the rendered chat template, scored one token at a time."""
    from repro.chat import assistant_message, user_message

    _, init = tiny
    model, processor = load_vlm(init)
    rows = _rows(3)
    got, counts = perplexity.item_nll(model, processor, rows, batch_size=3)
    tok = processor.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for r, g, c in zip(rows, got, counts, strict=True):
        user = [user_message(r["messages"][0]["content"], with_image=True)]
        head = processor.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full = processor.apply_chat_template(user + [assistant_message(r["messages"][1]["content"])], tokenize=False)
        enc = processor(text=[full], images=[[r["image"]]], return_tensors="pt")
        n_head = processor(text=[head], images=[[r["image"]]], return_tensors="pt")["input_ids"].shape[1]
        ids = enc["input_ids"][0]
        stop = n_head + ids[n_head:].tolist().index(end)               # the answer's <|im_end|>, included
        with torch.no_grad():
            logits = model(**enc).logits[0]                             # [T, V]
        nll = [-float(torch.log_softmax(logits[t - 1].float(), -1)[ids[t]]) for t in range(n_head, stop + 1)]
        assert c == len(nll) and g == pytest.approx(sum(nll) / len(nll), abs=1e-5)
    # the token-weighted mean is the loss SFT optimises on this batch (HF's causal-LM loss on the collator's labels)
    batch = perplexity.sft_collator(processor)([sft.to_sft_row(r) for r in rows])
    with torch.no_grad():
        loss = float(model(**batch).loss)
    assert perplexity.summary(got, counts)["token_nll"] == pytest.approx(loss, abs=1e-5)


def test_batching_padding_and_order_do_not_change_an_item(tiny):
    _, init = tiny
    model, processor = load_vlm(init)
    rows = _rows(5, seed=1)  # answers of 1-3 repeats: batches are padded to different lengths
    one, n1 = perplexity.item_nll(model, processor, rows, batch_size=1)
    for bs in (2, 5):
        got, n = perplexity.item_nll(model, processor, rows, batch_size=bs)
        np.testing.assert_allclose(got, one, atol=1e-5)
        assert (n == n1).all()
    rev, _ = perplexity.item_nll(model, processor, rows[::-1], batch_size=3)
    np.testing.assert_allclose(rev[::-1], one, atol=1e-5)
    model.train()
    perplexity.item_nll(model, processor, rows[:1])
    assert model.training  # scored without dropout, then the caller's flag back


def test_sft_on_the_targets_lowers_their_perplexity(tiny):
    """A learning test that can fail: a few SFT steps on these rows must cut their reference NLL by a third."""
    root, init = tiny
    rows = _rows(4, seed=2)
    model, processor = load_vlm(init)
    before = perplexity.summary(*perplexity.item_nll(model, processor, rows))
    ds = Dataset.from_list([sft.to_sft_row(r) for r in rows])
    info = sft.train(init, root / "sft", ds, max_steps=20, batch_size=4, lr=3e-3, save_steps=100, logging_steps=5)
    model, processor = load_vlm(info["final_dir"])
    after = perplexity.summary(*perplexity.item_nll(model, processor, rows))
    assert after["n_items"] == before["n_items"] == 4
    assert after["nll"] < 2 / 3 * before["nll"], (before, after)
    assert after["perplexity"] == pytest.approx(math.exp(after["nll"]))


def test_summary_skips_rows_without_targets():
    s = perplexity.summary([1.0, float("nan"), 3.0], [2, 0, 6])
    assert s["n_items"] == 2 and s["nll"] == 2.0 and s["perplexity"] == pytest.approx(math.exp(2.0))
    assert s["token_nll"] == pytest.approx((1.0 * 2 + 3.0 * 6) / 8)
    empty = perplexity.summary([])
    assert empty["n_items"] == 0 and math.isnan(empty["nll"]) and math.isnan(empty["perplexity"])

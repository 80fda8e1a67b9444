"""DPO / MMedPO stage: preference rows in TRL's format, the weighted collator (weights + the noised image on the
rejected half), known answers of the weighted loss against TRL's own DPO loss, and 2-step runs that move the policy.

The preference set is built here from the VQA task (repro.data.preference builds the real one): text pairs reject a
wrong answer on the same image; visual pairs reject the *same* answer on a noised image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from trl import DPOTrainer

from repro.data import build
from repro.models import build_tiny_vlm, load_vlm
from repro.train import dpo, sft

KW = dict(n_per_class=5, n_normal=5, image_size=64, difficulty=0.5, yes_share=0.5, split_fractions=[0.6, 0.2, 0.2],
          conv_train_variants=["standard"], conv_eval_variants=["standard"], heldout_categories=[])
WEIGHTS = [1.0, 0.0, 0.5, 2.0, 1.0, 0.2, 0.8, 1.0]


def preference_set(data_dir, n: int = 8) -> Dataset:
    vqa = build.load_task(data_dir, "vqa")["train"]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        r = vqa[i]
        question, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        visual = i % 2 == 1
        noised = Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
        rows.append({"prompt": question, "chosen": answer,
                     "rejected": answer if visual else f"there is a large {r['category']} in the brain",
                     "images": [r["image"]], "rejected_images": [noised if visual else r["image"]],
                     "weight": WEIGHTS[i], "kind": "visual" if visual else "text", "id": f"p{i}",
                     "source": r["source"], "category": r["category"]})
    return Dataset.from_list(rows)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo")
    data = root / "data"
    build.build(data, seed=0, **KW)
    init = build_tiny_vlm(root / "init", sft.corpus(data), size="smoke", seed=0)
    return root, init, preference_set(data)


def _trainer(root, init, rows, weighted=True):
    model, processor = load_vlm(init, device="cpu", dtype="fp32")
    args = dpo.make_config(root / "tmp_trainer", max_steps=1, batch_size=2, lr=1e-3, beta=0.1, seed=0, use_cpu=True)
    return dpo.make_trainer(model, processor, rows, args, weighted=weighted)


def test_rows_plain_dpo_keeps_text_pairs_at_weight_one(setup):
    _, _, pref = setup
    plain, weighted = dpo.to_dpo_rows(pref, weighted=False), dpo.to_dpo_rows(pref, weighted=True)
    assert len(plain) == 4 and set(plain["kind"]) == {"text"} and set(plain["weight"]) == {1.0}
    assert len(weighted) == 8 and weighted["weight"] == pytest.approx(WEIGHTS)
    r = weighted[1]
    (msg,) = r["prompt"]
    assert msg["role"] == "user" and [b["type"] for b in msg["content"]] == ["image", "text"]
    assert msg["content"][1]["text"] == pref[1]["prompt"]
    assert r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant"
    assert len(r["images"]) == len(r["rejected_images"]) == 1


def test_collator_puts_the_noised_image_on_the_rejected_half_and_passes_weights(setup):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    root, init, pref = setup
    rows = dpo.to_dpo_rows(pref, weighted=True)
    _, processor = load_vlm(init, device="cpu")
    examples = [rows[0], rows[1]]  # a text pair, then a visual pair
    ours = dpo.WeightedVisionPreferenceCollator(processor=processor)([dict(e) for e in examples])
    trl = DataCollatorForVisionPreference(processor=processor)([dict(e) for e in examples])
    pix = ours["pixel_values"]
    assert pix.shape[0] == 4  # [chosen_0, chosen_1, rejected_0, rejected_1]
    for k in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(ours[k], trl[k])
    assert torch.equal(pix[:2], trl["pixel_values"][:2])  # chosen half: TRL's own image tensors

    def processed(img):
        return processor.image_processor(images=[[img]], return_tensors="pt")["pixel_values"][0]

    assert torch.equal(pix[2], processed(pref[0]["images"][0]))  # text pair: rejected sees the image
    assert torch.equal(pix[3], processed(pref[1]["rejected_images"][0]))  # visual pair: the noised image
    assert not torch.equal(pix[3], pix[1])
    assert ours["weight"].tolist() == [WEIGHTS[0], WEIGHTS[1]]


def _loss_and_grads(trainer, batch, unweighted_trl=False):
    model = trainer.model
    model.zero_grad(set_to_none=True)
    if unweighted_trl:  # TRL's own DPO loss on the same batch
        loss = DPOTrainer._compute_loss(trainer, model, {k: v for k, v in batch.items() if k != "weight"}, False)
    else:
        loss = trainer._compute_loss(model, batch, False)
    loss.backward()
    grads = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}
    return loss.detach(), grads


def _close(a: dict, b: dict, scale: float = 1.0) -> bool:
    return all(torch.allclose(a[k], scale * b[k], rtol=1e-4, atol=1e-7) for k in a)


def test_weighted_loss_known_answers(setup):
    root, init, pref = setup
    rows = dpo.to_dpo_rows(pref, weighted=True)
    trainer = _trainer(root, init, rows)
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy off the reference so every pair has its own, nonzero margin
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    collate = trainer.data_collator

    def batch(idx, weights):
        exs = [dict(rows[i], weight=w) for i, w in zip(idx, weights, strict=True)]
        return collate(exs)

    a, b = [0, 1], [2, 3]  # each a text pair + a visual pair
    ref, ref_g = _loss_and_grads(trainer, batch(a, [1.0, 1.0]), unweighted_trl=True)
    assert ref.item() != pytest.approx(np.log(2))  # the perturbation made the margins nonzero
    assert sum(torch.count_nonzero(g) for g in ref_g.values()) > 0  # so the gradient checks below are not vacuous

    one, one_g = _loss_and_grads(trainer, batch(a, [1.0, 1.0]))
    assert torch.allclose(one, ref, rtol=1e-6) and _close(one_g, ref_g)  # weight 1 = TRL's DPO loss
    two, two_g = _loss_and_grads(trainer, batch(a, [2.0, 2.0]))
    assert torch.allclose(two, 2 * ref, rtol=1e-6) and _close(two_g, ref_g, 2.0)  # weight 2 doubles it

    # A weight-0 pair adds nothing; it still counts in the batch size (mean over B, as MMedPO's code).
    alone, alone_g = _loss_and_grads(trainer, batch([0], [1.0]))
    with_zero, with_zero_g = _loss_and_grads(trainer, batch([0, 3], [1.0, 0.0]))
    other_zero, other_zero_g = _loss_and_grads(trainer, batch([0, 2], [1.0, 0.0]))
    assert torch.allclose(with_zero, alone / 2, rtol=1e-5) and _close(with_zero_g, alone_g, 0.5)
    assert torch.allclose(with_zero, other_zero, rtol=1e-5) and _close(with_zero_g, other_zero_g)

    zero, zero_g = _loss_and_grads(trainer, batch(b, [0.0, 0.0]))
    assert zero.item() == 0.0 and all(torch.count_nonzero(g) == 0 for g in zero_g.values())


def test_weighted_trainer_rejects_other_dpo_losses(setup):
    root, init, pref = setup
    rows = dpo.to_dpo_rows(pref, weighted=True)
    model, processor = load_vlm(init, device="cpu", dtype="fp32")
    args = dpo.make_config(root / "bad", max_steps=1, batch_size=2, lr=1e-3, beta=0.1, seed=0, use_cpu=True)
    args.loss_type = ["hinge"]
    collator = dpo.WeightedVisionPreferenceCollator(processor=processor)
    with pytest.raises(ValueError, match="loss_type"):
        dpo.WeightedDPOTrainer(model=model, args=args, data_collator=collator, train_dataset=rows,
                               processing_class=processor)


@pytest.mark.parametrize("weighted", [False, True])
def test_two_steps_move_the_policy(setup, weighted):
    root, init, pref = setup
    info = dpo.train(init, root / f"run_{weighted}", pref, weighted=weighted, max_steps=2, batch_size=2, lr=1e-3,
                     use_cpu=True, run_key={"w": weighted})
    before, _ = load_vlm(init, device="cpu")
    after, _ = load_vlm(info["final_dir"], device="cpu")
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    assert any(not torch.equal(b[k], a[k]) for k in b if "language_model" in k)
    cv = dpo.curves(info["log_history"])
    # equal text exposure: MMedPO has 4 text of 8 pairs, so it trains 2 * 8 / 4 = 4 steps to see DPO's 2 * 2 text pairs
    steps = 4 if weighted else 2
    assert list(cv["step"]) == list(range(1, steps + 1)) and info["steps"] == steps and info["requested_steps"] == 2
    assert info["text_pairs_seen"] == pytest.approx(2 * 2)
    assert {"loss", "rewards/margins", "logps/rejected"} <= set(cv.columns)
    assert info["pairs"] == (8 if weighted else 4)
    if weighted:
        assert {"weight", "loss_unweighted"} <= set(cv.columns)


@pytest.mark.parametrize("max_steps,n_text,n_pairs,want", [
    (30, 60, 100, 50),   # the docstring's case: 50 * 8 * 0.6 = 240 = 30 * 8 text pairs
    (30, 6, 10, 50),
    (2, 4, 8, 4),
    (10, 3, 4, 13),      # 13.33 -> 13 (nearest)
    (10, 2, 3, 15),      # 15.0
    (7, 5, 5, 7),        # text only: unchanged
])
def test_text_exposure_steps_known_answers(max_steps, n_text, n_pairs, want):
    assert dpo.text_exposure_steps(max_steps, n_text, n_pairs) == want


def test_text_exposure_steps_rejects_no_text_pairs():
    for n_text, n_pairs in ((0, 8), (9, 8)):
        with pytest.raises(ValueError, match="n_text"):
            dpo.text_exposure_steps(10, n_text, n_pairs)


def test_kl_stop_ends_training_at_the_matched_step(setup):
    """Stage 05's matched-KL arm: the callback stops the run at the first step whose kl_end reaches the target;
    the saved log ends there, so the record's kl_end is the matched one."""
    from repro.papers import mmedpo

    root, init, pref = setup
    stop = mmedpo.kl_stop(1e-6, 0.1)  # step 1 has KL 0 (policy = reference); one update of lr 1e-3 passes 1e-6
    info = dpo.train(init, root / "run_stop", pref, weighted=True, max_steps=4, batch_size=2, lr=1e-3, use_cpu=True,
                     run_key={"stop": 1}, callbacks=[stop], equal_text_exposure=False)
    curve = mmedpo.dpo_curve(info["log_history"], 0.1)
    assert stop.hit is not None and 1 < stop.hit[0] < 4 and int(curve["step"].iloc[-1]) == stop.hit[0]
    assert mmedpo.matched_step(curve, 1e-6) == stop.hit

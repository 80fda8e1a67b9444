"""SFT stage: the task mixture's format, a short run whose loss decreases, resume, and the run-key guard."""

from __future__ import annotations

import pytest

from repro.data import build, conversations
from repro.models import build_tiny_vlm
from repro.train import sft

KW = dict(n_per_class=5, n_normal=5, image_size=64, difficulty=0.5, yes_share=0.5, split_fractions=[0.6, 0.2, 0.2],
          conv_train_variants=["standard"], conv_eval_variants=list(conversations.VARIANTS),
          heldout_categories=[])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    data = root / "data"
    build.build(data, seed=0, **KW)
    init = build_tiny_vlm(root / "init", sft.corpus(data), size="smoke", seed=0)
    return root, data, init


def test_mixture_rows_put_the_image_in_the_first_user_turn(setup):
    _, data, _ = setup
    ds = sft.sft_dataset(data, ("mcq", "conv"), max_rows_per_task=6, seed=0)
    assert len(ds) == 12 == sft.mixture_rows(data, ("mcq", "conv"), max_rows_per_task=6)
    for r in ds:
        assert len(r["images"]) == 1
        first = r["messages"][0]
        assert first["role"] == "user" and first["content"][0]["type"] == "image"
        assert all(b["type"] == "text" for m in r["messages"][1:] for b in m["content"])


def test_a_repeated_task_doubles_its_share_with_other_rows(setup):
    _, data, _ = setup
    once = sft.sft_dataset(data, ("mcq",), max_rows_per_task=6, seed=0)
    twice = sft.sft_dataset(data, ("mcq", "mcq"), max_rows_per_task=6, seed=0)
    assert len(twice) == 12 == sft.mixture_rows(data, ("mcq", "mcq"), max_rows_per_task=6)
    # a copy of the first listing would give 6 distinct images; the second listing draws other rows
    assert len(once) == 6 and len({r["images"][0].tobytes() for r in twice}) > 6


def test_task_rows_caps_only_the_tasks_it_names_and_their_share_of_batches(setup):
    _, data, _ = setup
    ds = sft.sft_dataset(data, ("mcq", "conv"), max_rows_per_task=6, seed=0, task_rows={"conv": 2})
    assert len(ds) == 8 == sft.mixture_rows(data, ("mcq", "conv"), max_rows_per_task=6, task_rows={"conv": 2})
    # in batches of 2 over 8 steps: mcq gives 3 batches per epoch, the capped conv 1, so conv is 1/4 of the rows
    batched = sft.sft_dataset(data, ("mcq", "conv"), max_rows_per_task=6, seed=0, task_rows={"conv": 2},
                              batch_size=2, steps=8)
    n_turns = [sum(m["role"] == "user" for m in r["messages"]) for r in batched]
    assert sum(n > 1 for n in n_turns) == 4  # 2 of the 8 batches are conversations (several user turns)
    with pytest.raises(ValueError, match="report"):
        sft.sft_dataset(data, ("mcq",), task_rows={"report": 3})
    with pytest.raises(ValueError, match="positive"):
        sft.sft_dataset(data, ("mcq",), task_rows={"mcq": 0})


def test_short_run_decreases_loss_resumes_and_guards_its_key(setup):
    root, data, init = setup
    ds = sft.sft_dataset(data, ("instruct",), seed=0)
    out = root / "run"
    info = sft.train(init, out, ds, max_steps=12, batch_size=4, lr=2e-3, save_steps=6, logging_steps=2,
                     run_key={"a": 1})
    losses = sft.loss_curve(info["log_history"])["loss"].tolist()
    assert losses[-1] < losses[0]
    assert (out / "final" / "model.safetensors").exists()
    assert info["resumed_from"] is None
    again = sft.train(init, out, ds, max_steps=12, batch_size=4, lr=2e-3, save_steps=6, logging_steps=2,
                      run_key={"a": 1})
    assert again.get("cached") and again["log_history"] == info["log_history"]  # finished: returned, not retrained
    # interrupted after its last checkpoint (no train_info.json): resumes, and "final" holds the trained weights
    import torch
    from safetensors.torch import load_file

    trained = load_file(out / "final" / "model.safetensors")
    (out / "train_info.json").unlink()
    resumed = sft.train(init, out, ds, max_steps=12, batch_size=4, lr=2e-3, save_steps=6, logging_steps=2,
                        run_key={"a": 1})
    assert resumed["resumed_from"] and resumed["resumed_from"].endswith("checkpoint-12")
    final = load_file(out / "final" / "model.safetensors")
    assert all(torch.equal(final[k], trained[k]) for k in trained)
    other = sft.train(init, out, ds, max_steps=2, batch_size=4, lr=2e-3, save_steps=6, run_key={"a": 2})
    assert other["resumed_from"] is None  # a different run never resumes another run's checkpoint


def test_zero_steps_links_the_init_model(setup):
    from pathlib import Path

    root, data, init = setup
    final = sft.train(init, root / "none", [], max_steps=0)["final_dir"]
    assert final == str(root / "none" / "final") and Path(final).resolve() == Path(init).resolve()
    assert sft.train(init, root / "none", [], max_steps=0)["final_dir"] == final  # a rerun relinks
    assert sft.train("org/some-model", root / "hub", [], max_steps=0)["final_dir"] == "org/some-model"


def test_vision_pretraining_changes_only_the_tower_and_the_projector_scale(setup):
    import torch

    from repro.models import load_vlm
    from repro.train import vision

    root, data, init = setup
    info = vision.pretrain(init, root / "vision", data, steps=6, batch_size=8, progress=False)
    before, _ = load_vlm(init, device="cpu")
    after, _ = load_vlm(info["final_dir"], device="cpu")
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    tower = [k for k in b if "vision_tower" in k]
    assert tower and any(not torch.equal(b[k], a[k]) for k in tower)
    # the projector's last layer is only rescaled so image features match the word-embedding norm
    scaled = [k for k in b if "multi_modal_projector.linear_2" in k]
    assert len(scaled) == 2 and info["projector_scale"] > 0
    for k in scaled:
        assert torch.allclose(a[k], b[k] * info["projector_scale"], rtol=1e-5, atol=1e-7)
    assert all(torch.equal(b[k], a[k]) for k in b if "vision_tower" not in k and k not in scaled)
    assert 0.0 <= info["val_class_acc"] <= 1.0 and info["history"][-1]["step"] == 6
    assert 0.0 <= info["val_box_probe_iou50"] <= 1.0 and info["history"][-1]["loss_box"] > 0


def test_vision_targets_known_answer():
    """Patch lesion fractions and box targets of a 16x16 image on a 2x2 patch grid, by hand."""
    import numpy as np

    from repro.train import vision

    mask = np.zeros((16, 16), np.uint8)
    mask[0:4, 0:8] = 1  # the top half of the top-left 8x8 patch
    ds = {"source": ["a", "a"], "category": ["x", "normal"], "region": ["r", "r"],
          "mask": [mask, np.zeros_like(mask)], "bboxes": [[[0, 0, 8, 4]], []]}
    labels, region, frac, boxes = vision._targets(ds, ["a/normal", "a/x"], ["r"], grid=2)
    assert labels.tolist() == [1, 0] and region.tolist() == [0, 0]
    assert frac[0].tolist() == [0.5, 0.0, 0.0, 0.0] and not frac[1].any()
    assert boxes.tolist() == [[0.0, 0.0, 0.5, 0.25], [0.0, 0.0, 0.0, 0.0]]


# Pinned on this repo's tiny model (2-core x86 CPU, torch 2.14.1): 12 steps of instruct SFT from seed 0. A change
# in data, tokenizer, model or trainer wiring moves it; float noise across CPUs stays far inside the tolerance.
PINNED_FINAL_LOSS = 5.1382
PINNED_TOL = 0.05


def test_pinned_loss_regression(setup):
    root, data, init = setup
    ds = sft.sft_dataset(data, ("instruct",), seed=0, batch_size=4, steps=12)
    info = sft.train(init, root / "pinned", ds, max_steps=12, batch_size=4, lr=2e-3, save_steps=100,
                     logging_steps=12, sequential=True, run_key={"pinned": 1})
    final = sft.loss_curve(info["log_history"])["loss"].iloc[-1]
    print(f"pinned final loss: {final:.4f}")
    assert abs(final - PINNED_FINAL_LOSS) < PINNED_TOL, final

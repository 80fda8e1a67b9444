"""The model layer: tokenizer + chat template, tiny LLaVA / Qwen2.5-VL builds, loading, TRL SFT, generation.

Models are built once per module (a few seconds); every test is CPU-only and the whole file runs in well under 90 s.
Run with `-s` to see the measured SFT step times.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from repro.models import (
    IM_END,
    IMAGE,
    build_tiny_qwen25vl,
    build_tiny_vlm,
    count_params,
    load_vlm,
    train_tokenizer,
)

CORPUS = [
    "Is there an abnormality in this CT image? yes",
    "Is there an abnormality in this chest X-ray? no",
    "What is the modality of this image? CT",
    "Which organ is shown? liver",
    "Locate the lesion. The lesion is at [12, 30, 45, 60].",
    "Findings: a small nodule in the right lung, no effusion.",
    "<think>The bright round region is a nodule.</think><answer>B</answer>",
    "What is the diagnosis of this bone marrow aspirate? AML",
] * 10


def _image(seed: int, size=(64, 64)) -> Image.Image:
    rs = np.random.RandomState(seed)
    return Image.fromarray(rs.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _user(text: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("llava"), CORPUS, size="smoke")


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_tiny_qwen25vl(tmp_path_factory.mktemp("qwen"), CORPUS)


@pytest.fixture(scope="module")
def dirs(llava_dir, qwen_dir):
    return {"llava": llava_dir, "qwen": qwen_dir}


# --- tokenizer and template -------------------------------------------------------------------------------------


def test_tokenizer_specials_roundtrip_and_determinism():
    tok = train_tokenizer(CORPUS, vocab_size=512)
    assert len(tok) <= 512
    for t in ("<|im_start|>", IM_END, "<|pad|>", IMAGE):
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
    assert tok.image_token == IMAGE and tok.eos_token == IM_END and tok.pad_token == "<|pad|>"
    text = "Findings: ünïcode 42% [1, 2, 3, 4]"  # bytes never seen in training still round-trip
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert train_tokenizer(CORPUS).get_vocab() == tok.get_vocab()


_TOK = train_tokenizer(CORPUS, vocab_size=512)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 100), min_size=4, max_size=4), st.text(max_size=20))
def test_numbers_are_spelled_digit_by_digit_and_round_trip(box, text):
    """Every number is written with the 10 digit tokens (as Llama/Qwen do), whatever merges the corpus would allow,
    so a box coordinate is never a whole-number token; any text with a box decodes back to itself."""
    s = f"{text} Localization: [{box[0]}, {box[1]}, {box[2]}, {box[3]}]."
    ids = _TOK.encode(s, add_special_tokens=False)
    assert _TOK.decode(ids) == s
    pieces = _TOK.convert_ids_to_tokens(ids)
    assert not any(sum(c.isdigit() for c in p) > 1 for p in pieces), pieces
    box_ids = _TOK.encode(f" [{box[0]}, {box[1]}, {box[2]}, {box[3]}]", add_special_tokens=False)
    assert sum(1 for p in _TOK.convert_ids_to_tokens(box_ids) if p.isdigit()) == sum(len(str(v)) for v in box)


def test_chat_template_string_and_block_content_and_assistant_mask():
    tok = train_tokenizer(CORPUS)
    as_blocks = [_user("Is it CT?"), _assistant("yes")]
    as_strings = [{"role": "user", "content": "<image>Is it CT?"}, {"role": "assistant", "content": "yes"}]
    rendered = tok.apply_chat_template(as_blocks, tokenize=False)
    assert rendered == tok.apply_chat_template(as_strings, tokenize=False)
    assert rendered == "<|im_start|>user\n<image>Is it CT?<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>\n"
    prompt = tok.apply_chat_template(as_blocks[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    # The loss mask is the answer *and* its <|im_end|> (so the model learns to stop), nothing else.
    out = tok.apply_chat_template(as_blocks + [{"role": "user", "content": "sure?"}, _assistant("no")],
                                  tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids = np.array(out["input_ids"])
    mask = np.array(out["assistant_masks"], dtype=bool)
    assert tok.decode(ids[mask]) == "yes<|im_end|>no<|im_end|>"


# --- builds ---------------------------------------------------------------------------------------------------------


def test_sizes_and_seeding(tmp_path, llava_dir):
    smoke, _ = load_vlm(llava_dir, device="cpu")
    cpu, _ = load_vlm(build_tiny_vlm(tmp_path / "cpu", CORPUS, size="cpu"), device="cpu")
    assert 0.4e6 < count_params(smoke) < 0.7e6
    assert 2.5e6 < count_params(cpu) < 4e6
    again, _ = load_vlm(build_tiny_vlm(tmp_path / "again", CORPUS, size="smoke", seed=0), device="cpu")
    other, _ = load_vlm(build_tiny_vlm(tmp_path / "other", CORPUS, size="smoke", seed=1), device="cpu")
    a, b, c = smoke.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_save_load_roundtrip_identical_logits(family, dirs, tmp_path):
    model, processor = load_vlm(dirs[family], device="cpu")
    model.eval()
    text = processor.apply_chat_template([_user("Which organ?"), _assistant("liver")], tokenize=False)
    batch = processor(images=[_image(0)], text=[text], return_tensors="pt")
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    model2, processor2 = load_vlm(tmp_path / "m", device="cpu")
    model2.eval()
    batch2 = processor2(images=[_image(0)], text=[text], return_tensors="pt")
    assert torch.equal(batch["input_ids"], batch2["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, model2(**batch2).logits)


@pytest.mark.parametrize("family", ["llava", "qwen"])
@pytest.mark.parametrize("size", [(64, 64), (96, 48)])
def test_image_placeholder_expands_to_64_contiguous_tokens(family, size, dirs):
    model, processor = load_vlm(dirs[family], device="cpu")
    text = processor.apply_chat_template([_user("Is there a nodule?")], tokenize=False, add_generation_prompt=True)
    batch = processor(images=[_image(1, size)], text=[text], return_tensors="pt")
    where = (batch["input_ids"][0] == model.config.image_token_id).nonzero().flatten()
    if family == "llava" or size == (64, 64):
        assert len(where) == 64
    else:  # Qwen keeps the aspect ratio within a 64*64-pixel budget: 96x48 -> 88x40 -> 22x10 patches -> 11x5
        assert batch["image_grid_thw"].tolist() == [[1, 10, 22]] and len(where) == 55
    assert torch.equal(where, torch.arange(where[0], where[0] + len(where)))  # one contiguous block
    if family == "llava":
        assert batch["pixel_values"].shape == (1, 3, 64, 64)  # resized, never cropped
    else:
        ids = batch["input_ids"][0]
        assert ids[where[0] - 1] == model.config.vision_start_token_id
        assert ids[where[-1] + 1] == model.config.vision_end_token_id
        assert batch["image_grid_thw"].prod() == 4 * len(where)  # 2x2 patch merge
    with torch.no_grad():
        assert model(**batch).logits.shape[:2] == batch["input_ids"].shape


# --- training and generation ----------------------------------------------------------------------------------------


def _sft_rows(n: int = 8) -> list[dict]:
    answers = ["yes", "no", "CT", "liver [12, 30, 45, 60]"]
    return [{"images": [_image(10 + i)],
             "messages": [_user(f"Question {i % 4}: what do you see?"), _assistant(answers[i % 4])]}
            for i in range(n)]


class _StepClock:
    """A TrainerCallback-like timer: wall time between consecutive step ends (includes collation)."""

    def __init__(self):
        self.ends = []

    def __getattr__(self, name):  # the Trainer calls every on_* hook; only on_step_end matters
        if name == "on_step_end":
            return lambda *a, **k: self.ends.append(time.perf_counter())
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


def _sft(model, processor, rows, steps, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(tmp_path / "sft"), max_steps=steps, per_device_train_batch_size=len(rows),
        learning_rate=1e-3, lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to=[],
        # TRL defaults are bf16 + checkpointing; `activation_checkpointing` is transformers 5.23's name
        # (`gradient_checkpointing=False` works too but warns that it is deprecated).
        use_cpu=True, bf16=False, activation_checkpointing=False, max_length=None, assistant_only_loss=True,
        dataloader_num_workers=0,
    )
    clock = _StepClock()
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor,
                         callbacks=[clock])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return trainer, losses, float(np.median(np.diff(clock.ends))) if len(clock.ends) > 1 else float("nan")


@pytest.mark.parametrize("family,size", [("llava", "smoke"), ("llava", "cpu"), ("qwen", None)])
def test_sft_assistant_only_loss_decreases(family, size, dirs, tmp_path):
    path = dirs[family] if size != "cpu" else build_tiny_vlm(tmp_path / "cpu", CORPUS, size="cpu")
    model, processor = load_vlm(path, device="cpu")
    rows = _sft_rows()
    trainer, losses, step_s = _sft(model, processor, rows, steps=4, tmp_path=tmp_path)
    print(f"\nSFT {family}/{size}: {count_params(model) / 1e6:.2f}M params, batch {len(rows)}, "
          f"{step_s:.3f} s/step, losses {[round(x, 2) for x in losses]}")
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.3
    # TRL's vision collator: labels are exactly the answers + <|im_end|>; no image, prompt or pad tokens.
    batch = trainer.data_collator([dict(r) for r in rows[:2]])
    assert (batch["labels"][batch["input_ids"] == model.config.image_token_id] == -100).all()
    tok = processor.tokenizer
    for i in range(2):
        labelled = batch["labels"][i][batch["labels"][i] != -100]
        assert tok.decode(labelled) == rows[i]["messages"][1]["content"][0]["text"] + IM_END


def test_sft_accepts_schema_rows_with_string_content(llava_dir, tmp_path):
    """The data contract's rows: one `image` column and string contents (TRL inserts the image block)."""
    model, processor = load_vlm(llava_dir, device="cpu")
    rows = [{"image": _image(i), "messages": [{"role": "user", "content": "Is it CT?"},
                                              {"role": "assistant", "content": "yes" if i % 2 else "no"}]}
            for i in range(4)]
    _, losses, _ = _sft(model, processor, rows, steps=2, tmp_path=tmp_path)
    assert len(losses) == 2 and all(np.isfinite(losses))


@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_batched_generate_left_padding_and_kv_cache(family, dirs):
    model, processor = load_vlm(dirs[family], device="cpu")
    model.eval()
    questions = ["Is there a nodule?", "Describe the findings in the liver of this CT image, please."]
    texts = [processor.apply_chat_template([_user(q)], tokenize=False, add_generation_prompt=True)
             for q in questions]
    images = [_image(20), _image(21)]
    batch = processor(images=[[im] for im in images], text=texts, return_tensors="pt", padding=True)
    assert (batch["attention_mask"][:, -1] == 1).all() and (batch["attention_mask"][0, 0] == 0)  # left padded
    n = batch["input_ids"].shape[1]
    with torch.no_grad():
        cached = model.generate(**batch, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = model.generate(**batch, max_new_tokens=6, do_sample=False, use_cache=False)
    assert cached.shape[0] == 2 and cached.shape[1] > n
    assert torch.equal(cached, uncached)
    for i in range(2):  # padding changes nothing: each row equals its unbatched generation
        single = processor(images=[images[i]], text=[texts[i]], return_tensors="pt")
        with torch.no_grad():
            alone = model.generate(**single, max_new_tokens=6, do_sample=False)
        new_alone = alone[0, single["input_ids"].shape[1]:]
        assert torch.equal(cached[i, n:n + len(new_alone)], new_alone)


# --- loading options ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_eager_attention_returns_weights(family, dirs):
    model, processor = load_vlm(dirs[family], device="cpu", attn_implementation="eager")
    text = processor.apply_chat_template([_user("Where?")], tokenize=False, add_generation_prompt=True)
    batch = processor(images=[_image(3)], text=[text], return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    n = batch["input_ids"].shape[1]
    assert len(out.attentions) == model.config.get_text_config().num_hidden_layers
    assert out.attentions[-1].shape[-2:] == (n, n)
    image_cols = batch["input_ids"][0] == model.config.image_token_id
    assert out.attentions[-1][0, :, -1, image_cols].sum() > 0  # the last token attends to the image block


@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_lora_targets_language_model_only(family, dirs):
    model, _ = load_vlm(dirs[family], device="cpu", lora={"r": 4})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    assert any("q_proj" in n for n in trainable) and any("down_proj" in n for n in trainable)


def test_dtype_strings_on_cpu(llava_dir):
    model, _ = load_vlm(llava_dir, device="cpu", dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    model, _ = load_vlm(llava_dir, device="cpu")
    assert next(model.parameters()).dtype == torch.float32  # CPU default: full precision


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_default_is_bf16(llava_dir):
    model, processor = load_vlm(llava_dir)
    assert next(model.parameters()).device.type == "cuda"
    assert next(model.parameters()).dtype == torch.bfloat16
    text = processor.apply_chat_template([_user("Where?")], tokenize=False, add_generation_prompt=True)
    batch = processor(images=[_image(3)], text=[text], return_tensors="pt").to("cuda")
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > batch["input_ids"].shape[1]

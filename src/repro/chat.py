"""Chat messages and the model-batch plumbing every generation or scoring pass needs, written once.

    msgs = [user_message("Is there a lesion?", with_image=True)]          # the data contract's user turn
    enc = encode(model, processor, texts, images, padding_side="left")   # RGB, padded, on device, pixels in dtype
    with eval_mode(model): ...                                           # dropout off, training flag restored

Why each piece exists:
- Images come from datasets as PIL images in any mode (KVASIR-like endoscopy is RGB, CT-like is "L"); every
  processor here expects RGB, so `rgb` converts once, and leaves tensors/arrays alone.
- Generation needs *left* padding (every prompt's last token sits at the end, where decoding starts); scoring a
  forward pass over prompt + completion may need right padding. The tokenizer's side is a global setting of the
  processor, so `encode` sets it for one call and always restores it.
- A bf16 checkpoint needs bf16 pixels; processors return float32.
- Evaluation must not leave a model in eval mode behind a trainer's back, nor in train mode (dropout) during
  generation: `eval_mode` restores whatever the caller had.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager


# ----------------------------------------------------------------------------------------------- messages
def text_block(text: str) -> list[dict]:
    return [{"type": "text", "text": text}]


def user_message(text: str, with_image: bool) -> dict:
    """A user turn as content blocks: [{"type": "image"}, {"type": "text", ...}] (the image first, once)."""
    blocks = ([{"type": "image"}] if with_image else []) + text_block(text)
    return {"role": "user", "content": blocks}


def assistant_message(text: str) -> dict:
    return {"role": "assistant", "content": text_block(text)}


def first_user_text(row: dict) -> str:
    """The prompt of a single-turn row: its first user message (str or text blocks)."""
    msg = next(m for m in row["messages"] if m["role"] == "user")
    content = msg["content"]
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


def conversation_questions(row: dict) -> list[str]:
    """The clinician questions of a conv row in the asked order (the `questions` column, else the user turns)."""
    if row.get("questions"):
        return list(row["questions"])
    return [m["content"] for m in row["messages"] if m["role"] == "user"]


# ----------------------------------------------------------------------------------------------- model batches
def rgb(image):
    """PIL images in RGB (processors expect 3 channels); anything else (tensors, arrays, None) unchanged."""
    return image.convert("RGB") if hasattr(image, "convert") else image


def to_model_dtype(model, enc):
    """Cast floating pixel values to the model's dtype (a bf16 model needs bf16 pixels). Returns `enc`."""
    if "pixel_values" in enc and enc["pixel_values"].is_floating_point():
        enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
    return enc


def encode(model, processor, texts: Sequence[str], images: Sequence | None, padding_side: str = "left"):
    """Processor outputs for a batch of chat-templated texts (one image each, or none), padded on `padding_side`,
    moved to the model's device with pixels in its dtype. The tokenizer's own padding side is restored."""
    tok = processor.tokenizer
    side = tok.padding_side
    tok.padding_side = padding_side
    try:
        kw = {"images": [[rgb(im)] for im in images]} if images is not None else {}
        enc = processor(text=list(texts), return_tensors="pt", padding=True, **kw)
    finally:
        tok.padding_side = side
    return to_model_dtype(model, enc.to(model.device))


@contextmanager
def eval_mode(model):
    """model.eval() for the block (no dropout), then the caller's training flag back, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)



# ----------------------------------------------------------------------------------------------- training template
def train_stop_token(processor) -> bool:
    """Make SFT's assistant-only loss include the end-of-turn token; True when the template was changed.

    Why: LLaVA-1.5's released template (llava-hf) writes an answer as "ASSISTANT: {text} " inside its
    {% generation %} block, with no </s>, so TRL masks every answer *without* the stop token (it only warns) and a
    fine-tuned model never learns to stop (found by the gpu dry run, repro.dryrun). LLaVA's own training format
    (vicuna_v1) ends every answer with </s>; this appends eos_token inside the block. Templates without markers
    (Qwen2.5-VL's release) are left to TRL, which swaps in its own marked training template for those it knows.
    """
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    template = getattr(processor, "chat_template", None)
    if not isinstance(template, str) or not has_generation_markers(template):
        return False
    if is_chat_template_stop_token_trained(processor):
        return False
    processor.chat_template = template.replace("{% endgeneration %}", "{{ eos_token }}{% endgeneration %}")
    return True

"""Build the tiny VLMs of the CPU profiles, save them like hub checkpoints, and load any VLM by path or id.

Everything goes through `save_pretrained` / `AutoModelForImageTextToText` / `AutoProcessor`, so the code that trains
the tiny model is the code that trains a real LLaVA or Qwen2.5-VL checkpoint in the gpu profile.

Tiny LLaVA (`build_tiny_vlm`, the default model):
    CLIP vision tower (64x64 image, patch 8 -> 8x8 = 64 patches + CLS) -> 2-layer MLP projector -> Llama decoder.
    `vision_feature_select_strategy="default"` drops the CLS token, so the 64 patch features enter the sequence
    row-major. The processor expands one "<image>" placeholder into 64 "<image>" tokens; its count formula is
    (H/patch)*(W/patch) + num_additional_image_tokens - 1 (for "default"), so `num_additional_image_tokens=1` is
    required: the transformers default 0 would give 63 tokens and the forward pass would fail on a
    features/tokens mismatch. `vision_feature_layer=-1` (LLaVA-1.5 uses -2) so no vision layer is dead weight.

Tiny Qwen2.5-VL (`build_tiny_qwen25vl`, the same code path as real Qwen2.5-VL checkpoints). What differs:
    - image tokens: the template emits "<|vision_start|><|image_pad|><|vision_end|>"; the processor expands
      <|image_pad|> to (grid_h * grid_w) / merge_size**2 tokens. `config.image_token_id` is <|image_pad|>; the
      start/end markers are ordinary (non-image) tokens around the block.
    - processor: Qwen2VLImageProcessor resizes to a multiple of patch_size*merge_size within [min_pixels, max_pixels]
      (keeping the aspect ratio, no crop) and returns flattened patches `pixel_values` (n_patches x C*T*p*p) plus
      `image_grid_thw`, which must travel with every forward/generate call; a video processor is part of it too.
    - vision grid: patches are merged 2x2 after the ViT (window attention + a few full-attention blocks), so here
      64x64 pixels / patch 4 = 16x16 patches -> 8x8 = 64 image tokens, again row-major.
    - positions: 3-D multimodal RoPE (temporal, height, width sections of the rotary dims); the text model
      computes them from `input_ids` + `image_grid_thw`, so generation must go through the model's `generate`.
    - tokenizer: <|endoftext|> pads, <|im_end|> ends a turn; no "<image>" token.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from repro import hub

IM_START, IM_END, PAD, IMAGE = "<|im_start|>", "<|im_end|>", "<|pad|>", "<image>"
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
]

# (hidden, layers, heads, intermediate) of the CLIP tower and the Llama decoder: smoke 0.54M params, cpu 3.2M
# with a 512-token vocabulary (bands checked in the tests). Most parameters sit in the decoder, where the task is.
SIZES = {
    "smoke": {"vision": (64, 2, 2, 128), "text": (128, 2, 4, 256)},
    "cpu": {"vision": (128, 3, 4, 256), "text": (224, 4, 4, 640)},
}

# Mean L2 norm of the tiny model's token embeddings at initialisation, and the scale vision pretraining gives the
# projected image features (train.vision.match_image_scale). Why: with the default init (std 0.02, norm 0.3 at
# hidden 224) the projected image features were 10-500x larger than the word embeddings, so after the first
# attention layer (64 of ~85 positions are image tokens) the residual stream of a question word was mostly image
# and the model could not tell "Is this CT?" from "Is this X-ray?". Measured on the cpu model, 500 VQA steps:
# answer loss 0.37 -> 0.27 with both at norm 3.
EMBED_NORM = 3.0

# One Jinja template for both families; only the image placeholder differs. The assistant turn, *including* its
# <|im_end|>, is a single {% generation %} block: TRL's assistant_only_loss then trains the model to stop, and
# the "\n" after it stays outside (it is never generated). Content may be a string or a list of blocks.
_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set text = namespace(s='') -%}"
    "{%- for block in message['content'] -%}"
    "{%- if block['type'] == 'image' -%}{%- set text.s = text.s + '@@IMAGE@@' -%}"
    "{%- elif block['type'] == 'text' -%}{%- set text.s = text.s + block['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set text = text.s -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ text + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}{{ '<|im_start|>' + message['role'] + '\\n' + text + '<|im_end|>\\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def chat_template(image_placeholder: str) -> str:
    return _TEMPLATE.replace("@@IMAGE@@", image_placeholder)


def _train_bpe(texts: list[str], vocab_size: int, specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    # Digits are split one by one before byte-level BPE (as in Llama and Qwen): a box "[23, 45, 31, 52]" is written
    # digit by digit from 10 digit tokens, instead of from whichever of the numbers 0..100 happened to get a merge
    # (with a 2,048-token BPE: 120 number tokens, "10" spelled "1" "0" but "11" one token, " 45" another token than
    # "45"). Measured on the cpu profile, the whole-number vocabulary gave near-constant boxes (mean IoU 0.23).
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no <unk> ever
        show_progress=False,
    )
    # The role names are part of every training sequence, so let them get merges too.
    tok.train_from_iterator(list(texts) + ["user", "assistant", "system"] * 8, trainer)
    return tok


def train_tokenizer(texts: list[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE on the task corpus with ChatML specials and the LLaVA image token."""
    tok = _train_bpe(texts, vocab_size, [PAD, IM_START, IM_END, IMAGE])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        # `image_token` becomes an attribute that LlavaProcessor reads instead of its hardcoded default.
        extra_special_tokens={"image_token": IMAGE},
        chat_template=chat_template(IMAGE),
        # Left padding makes batched generation correct by default; TRL's SFT collator asks for right padding.
        padding_side="left",
        model_max_length=4096,
    )


def _qwen_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = _train_bpe(texts, vocab_size, QWEN_SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        chat_template=chat_template("<|vision_start|><|image_pad|><|vision_end|>"),
        padding_side="left",
        model_max_length=4096,
    )


def _seeded(build, seed: int):
    # fork_rng: building a model must not move the caller's global RNG (notebooks seed it themselves).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _save(model, processor, out_dir) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)  # also writes the tokenizer and chat_template.jinja
    return out


def _special_ids(tok) -> dict:
    return {"bos_token_id": tok.convert_tokens_to_ids(IM_START), "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id}


def build_tiny_vlm(out_dir, texts: list[str], size: str = "smoke", image_size: int = 64, patch_size: int = 8,
                   seed: int = 0, vocab_size: int = 512) -> Path:
    """Build a randomly initialised tiny LLaVA from configs and save it (model + processor) to `out_dir`.

    vocab_size: a 512-token BPE splits many of the corpus' ~200 words into single letters; a larger one (1-2k)
    keeps most words whole, so sequences are shorter (faster steps) and the model predicts words, not spelling.
    """
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    tok = train_tokenizer(texts, vocab_size)
    n_image_tokens = (image_size // patch_size) ** 2
    vh, vl, vn, vi = SIZES[size]["vision"]
    th, tl, tn, ti = SIZES[size]["text"]
    ids = _special_ids(tok)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=vh, num_hidden_layers=vl, num_attention_heads=vn,
                                       intermediate_size=vi, image_size=image_size, patch_size=patch_size,
                                       projection_dim=vh),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=th, num_hidden_layers=tl, num_attention_heads=tn,
                                num_key_value_heads=tn, intermediate_size=ti, max_position_embeddings=1024,
                                tie_word_embeddings=False, **ids),
        image_token_id=tok.convert_tokens_to_ids(IMAGE),
        image_seq_length=n_image_tokens,
        vision_feature_select_strategy="default",  # drop CLS -> exactly the patch grid
        vision_feature_layer=-1,
    )
    model = _seeded(lambda: LlavaForConditionalGeneration(config), seed)
    with torch.no_grad():  # see EMBED_NORM
        emb = model.get_input_embeddings().weight
        emb.mul_(EMBED_NORM / emb.norm(dim=-1).mean())
    model.generation_config.update(**ids)
    image_processor = CLIPImageProcessor(
        size={"height": image_size, "width": image_size}, do_center_crop=False, crop_size=None,
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=tok.chat_template,
    )
    return _save(model, processor, out_dir)


def build_tiny_qwen25vl(out_dir, texts: list[str], seed: int = 0, image_size: int = 64) -> Path:
    """Build a tiny Qwen2.5-VL (same classes as the real checkpoints) for testing the gpu-profile code path."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = _qwen_tokenizer(texts, 512)
    patch, merge = 4, 2
    hidden, heads = 64, 4
    pixels = {"shortest_edge": image_size * image_size, "longest_edge": image_size * image_size}
    vision = dict(depth=2, hidden_size=64, num_heads=2, intermediate_size=128, patch_size=patch,
                  spatial_merge_size=merge, temporal_patch_size=2, out_hidden_size=hidden,
                  window_size=patch * merge * 4, fullatt_block_indexes=[1])
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=heads, num_key_value_heads=2, max_position_embeddings=1024,
                # head_dim 16 -> 8 rotary frequencies split over (time, height, width).
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    c = tok.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        vision_config=vision, text_config=text, image_token_id=c("<|image_pad|>"), video_token_id=c("<|video_pad|>"),
        vision_start_token_id=c("<|vision_start|>"), vision_end_token_id=c("<|vision_end|>"),
    )
    model = _seeded(lambda: Qwen2_5_VLForConditionalGeneration(config), seed)
    model.generation_config.update(bos_token_id=text["bos_token_id"], eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)
    grid = dict(patch_size=patch, merge_size=merge, temporal_patch_size=2, size=pixels)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**grid), tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(**grid), chat_template=tok.chat_template,
    )
    return _save(model, processor, out_dir)


def vision_tower(model):
    """The vision encoder of a LLaVA (`model.model.vision_tower`) or Qwen2.5-VL (`model.model.visual`) model,
    PEFT-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", base)
    for name in ("vision_tower", "visual"):
        if hasattr(inner, name):
            return getattr(inner, name)
    raise ValueError(f"no vision tower found on {type(base).__name__}")


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# LoRA defaults to the language model's attention + MLP projections only: the regex keeps the vision tower
# (whose Qwen MLP also has gate/up/down_proj) and the projector frozen, the usual recipe for real VLMs.
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
           "fp32": torch.float32, "float32": torch.float32, "fp64": torch.float64, "float64": torch.float64}


def load_vlm(path_or_id, *, dtype=None, attn_implementation: str | None = None, lora: dict | None = None,
             device=None):
    """Load (model, processor) from a local directory or hub id.

    device None -> CUDA when available, else CPU. dtype None -> bf16 on a bf16-capable GPU, float32 otherwise
    (strings "bf16"/"fp32"/... and "auto" are accepted). attn_implementation="eager" is what attention-based
    rewards need (sdpa returns no attention weights). `lora` (e.g. {"r": 16, "lora_alpha": 32}) wraps the model
    with PEFT LoRA; keys are LoraConfig arguments, target_modules defaults to LORA_TARGETS.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if isinstance(dtype, str) and dtype != "auto":
        dtype = _DTYPES[dtype]
    if dtype is None:
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if bf16_ok else torch.float32
    # device_map={"": device} materialises the weights on the device directly (no CPU copy of a 7B model first).
    kwargs = {"dtype": dtype, "device_map": {"": device}}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    path_or_id = hub.check_model_ref(path_or_id)  # a hub id while offline: one clear error (repro.hub)
    model = AutoModelForImageTextToText.from_pretrained(str(path_or_id), **kwargs)
    processor = AutoProcessor.from_pretrained(str(path_or_id))
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        cfg = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": LORA_TARGETS, **lora}
        model = get_peft_model(model, LoraConfig(**cfg))
    return model, processor

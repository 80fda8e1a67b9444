"""The gpu profile's dry run on CPU: tiny *random* checkpoints of the real architectures and fixture data sets in
the public release layouts, so `python -m repro run --profile gpu-dryrun` runs the gpu code path end to end.

Run as: python -m repro.dryrun [--out runs/gpu-dryrun]        (`make dryrun` does this, then runs the notebooks)

Its numbers mean nothing (random weights, a handful of rows); it exists to catch what breaks between the tiny
default model of the smoke/cpu profiles and a real checkpoint. Written under <out>:

    checkpoints/qwen2_5_vl/   Qwen2_5_VLForConditionalGeneration + Qwen2_5_VLProcessor (Qwen2VLImageProcessor with
                              the released pixel bounds, Qwen2Tokenizer, the released chat template with its default
                              system prompt, no {% generation %} markers) and a generation_config with the released
                              sampling defaults (top_k 1, top_p 0.001, repetition_penalty 1.05)
    checkpoints/llava_1_5/    LlavaForConditionalGeneration as llava-hf/llava-1.5-7b-hf is laid out: CLIP ViT/14 at
                              336 px (576 image tokens), vision_feature_layer -2, gelu projector with bias, Llama
                              decoder, LlamaTokenizer (SentencePiece-style BPE with byte fallback, <s> prepended),
                              CLIPImageProcessor (resize + centre crop 336), the "USER: <image>\\n... ASSISTANT:"
                              template
    checkpoints/judge_lm/     a Qwen2ForCausalLM with the Qwen2.5 instruct template (rewards.llm_judge backends)
    fixtures/vqa_rad/         "VQA_RAD Dataset Public.json" + "VQA_RAD Image Folder/"
    fixtures/slake/Slake1.0/  train.json, validate.json, test.json + imgs/xmlab<k>/source.jpg (one Chinese row)
    fixtures/pmc_vqa/         train.csv, test.csv (release columns) + images/
    fixtures/iu_xray/         annotation.json (R2Gen's train/val/test lists) + images/<study>/{0,1}.png
    fixtures/medmnist/        pneumoniamnist.npz (train/val/test images and labels, 28 x 28)
Sizes are a few layers of width 32-64 ("shrunk"); the classes, processor types, token layout and chat templates are
the released ones, which is what the dry run tests.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from repro import paths
from repro.models import _save, _seeded  # one seeded build and one save path for every tiny checkpoint

PROFILE = "gpu-dryrun"
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                 "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

# LLaVA-1.5's template as llava-hf ships it, written out: roles in capitals, every image of a turn first as
# "<image>\n", then its texts each followed by a space; assistant text inside {% generation %}; no end-of-turn token
# after an answer (the tokenizer's </s> ends generation). Content must be a list of blocks.
LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' ' }}{% endgeneration %}{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _qwen_templates() -> tuple[str, str]:
    """(Qwen2.5-VL, Qwen2.5 instruct) chat templates as released, from TRL's copies (TRL recognises exactly these to
    swap in its {% generation %}-marked training template for assistant-only loss)."""
    from trl import chat_template_utils as ctu

    return ctu.qwen2_5_vl_chat_template, ctu.qwen2_5_chat_template


# ----------------------------------------------------------------------------------------------- tokenizers
def corpus() -> list[str]:
    """Texts the tiny tokenizers learn merges from: the SynthMed task texts, the decision-tree banks and the
    fixtures' texts (a real tokenizer covers all of them; byte fallback covers anything else)."""
    from repro.data import build, decision_tree

    records = build.make_records(0, 2, 2, 64, 0.5)
    texts = list(decision_tree.corpus_texts())
    for rows in build.build_split_rows(records, "train", 0, 0.5, ["standard"]).values():
        texts += [m["content"] for r in rows for m in r["messages"]]
    texts += [i["question"] + " " + i["answer"] for i in VQA_RAD_ITEMS + SLAKE_ITEMS]
    texts += [r["report"] for r in IU_REPORTS]
    return texts + ["USER: ASSISTANT: system user assistant You are a helpful assistant."] * 4


def _trained(tok, texts, vocab_size: int, specials: list[str], alphabet) -> tuple[dict, list]:
    from tokenizers import trainers

    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def qwen_tokenizer(texts: list[str], vocab_size: int = 2000):
    """Qwen2Tokenizer (byte-level BPE, Qwen's pre-tokenizer regex) on `texts`; the 22 special tokens follow the BPE
    vocabulary as in Qwen2.5 (ids from <|endoftext|> on); eos <|im_end|>, pad <|endoftext|>, no bos."""
    from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    raw = Tokenizer(models.BPE())
    raw.normalizer = normalizers.NFC()
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    vocab, merges = _trained(raw, texts, vocab_size, [], pre_tokenizers.ByteLevel.alphabet())
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         model_max_length=131072)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIALS])
    return tok


def llama_tokenizer(texts: list[str], vocab_size: int = 2000):
    """LlamaTokenizer (SentencePiece-style BPE over "▁"-joined words with byte fallback; <unk> <s> </s> at 0-2, the
    256 byte tokens next), <s> prepended to every sequence; <image> and <pad> added after the vocabulary as in
    llava-hf (there at 32000 and 32001)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import LlamaTokenizer

    raw = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    # split=True while training: SentencePiece never merges across words (pieces start with "▁"); the class
    # itself encodes with split=False, as the released tokenizer.json does
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    alphabet = sorted({c for t in texts for c in t.replace(" ", "▁")} | {"▁"})
    vocab, merges = _trained(raw, texts, vocab_size, specials, alphabet)
    tok = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False, legacy=False,
                         padding_side="left", model_max_length=4096)
    tok.add_tokens([AddedToken("<image>", special=True, normalized=False)])
    tok.add_special_tokens({"pad_token": "<pad>"})
    tok.image_token = "<image>"
    return tok


def _pad64(n: int) -> int:
    return (n + 63) // 64 * 64  # the released configs round the embedding up (Qwen 151936, llava-hf 32064)


# ----------------------------------------------------------------------------------------------- checkpoints
def build_qwen25vl(out_dir, texts: list[str], seed: int = 0) -> Path:
    """Tiny random Qwen2.5-VL in the released layout (module docstring)."""
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = qwen_tokenizer(texts)
    c = tok.convert_tokens_to_ids
    endoftext, im_end = c("<|endoftext|>"), c("<|im_end|>")
    # 3B's structure shrunk: window attention with full-attention blocks (3B: every 8th of 32), 14-px patches merged
    # 2x2, temporal patch 2, multimodal RoPE split (time, height, width) as 16:24:24 of 64 -> 2:3:3 of 8, tied
    # embeddings (3B ties them, 7B does not).
    vision = dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=112, out_hidden_size=64,
                  fullatt_block_indexes=[1, 3], tokens_per_second=2, hidden_act="silu")
    text = dict(vocab_size=_pad64(len(tok)), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
                hidden_act="silu", rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0,
                                                    "mrope_section": [2, 3, 3]},
                bos_token_id=endoftext, eos_token_id=im_end, pad_token_id=endoftext, tie_word_embeddings=True)
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=c("<|image_pad|>"),
                              video_token_id=c("<|video_pad|>"), vision_start_token_id=c("<|vision_start|>"),
                              vision_end_token_id=c("<|vision_end|>"), tie_word_embeddings=True)
    model = _seeded(lambda: Qwen2_5_VLForConditionalGeneration(config), seed)
    model.generation_config = GenerationConfig(bos_token_id=endoftext, eos_token_id=[im_end, endoftext],
                                               pad_token_id=endoftext, do_sample=True, top_k=1, top_p=0.001,
                                               repetition_penalty=1.05, temperature=0.1)
    grid = dict(patch_size=14, merge_size=2, temporal_patch_size=2, image_mean=CLIP_MEAN, image_std=CLIP_STD,
                size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280})
    vl_template, _ = _qwen_templates()
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**grid), tokenizer=tok,
                                    video_processor=Qwen2VLVideoProcessor(**grid), chat_template=vl_template)
    return _save(model, processor, out_dir)


def build_llava15(out_dir, texts: list[str], seed: int = 0) -> Path:
    """Tiny random LLaVA-1.5 in llava-hf's layout (module docstring)."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = llama_tokenizer(texts)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=336, patch_size=14, projection_dim=32, hidden_act="quick_gelu",
                              layer_norm_eps=1e-5)
    text = LlamaConfig(vocab_size=_pad64(len(tok)), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                         image_seq_length=576, vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", multimodal_projector_bias=True)
    model = _seeded(lambda: LlavaForConditionalGeneration(config), seed)
    model.generation_config.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                         do_center_crop=True, image_mean=CLIP_MEAN, image_std=CLIP_STD,
                                         resample=3)  # bicubic
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_TEMPLATE, image_token="<image>")
    return _save(model, processor, out_dir)


def build_judge_lm(out_dir, texts: list[str], seed: int = 0) -> Path:
    """Tiny random Qwen2ForCausalLM with the Qwen2.5 instruct template: the LLM-judge backend (rewards.llm_judge)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = qwen_tokenizer(texts + ["yes no 0.2 0.4 0.6 0.8 1 score"] * 8, vocab_size=600)
    _, template = _qwen_templates()
    tok.chat_template = template
    c = tok.convert_tokens_to_ids
    cfg = Qwen2Config(vocab_size=_pad64(len(tok)), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                      bos_token_id=c("<|endoftext|>"), eos_token_id=c("<|im_end|>"), pad_token_id=c("<|endoftext|>"),
                      tie_word_embeddings=True)
    model = _seeded(lambda: Qwen2ForCausalLM(cfg), seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------------------- fixtures
def _image(seed: int, size=(300, 260)) -> Image.Image:
    """A grey scan-like picture: a bright disc on a noisy background, odd sizes as real figures have."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4), rng.integers(10, h // 4)
    img = 60 + 20 * rng.standard_normal((h, w)) + 120 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("RGB")


VQA_RAD_ITEMS = [
    {"question": "Is there a mass in the left lung?", "answer": "Yes", "answer_type": "CLOSED"},
    {"question": "Which side is the lesion on?", "answer": "Left", "answer_type": "CLOSED"},
    {"question": "What imaging modality is this?", "answer": "CT", "answer_type": "CLOSED"},
    {"question": "What organ is enlarged?", "answer": "heart", "answer_type": "OPEN"},
    {"question": "Is this a normal chest x-ray?", "answer": "no", "answer_type": "CLOSED"},
    {"question": "Where is the abnormality?", "answer": "right lower lobe", "answer_type": "OPEN"},
]
SLAKE_ITEMS = [
    {"question": "Does the picture contain liver?", "answer": "Yes", "answer_type": "CLOSED", "location": "Abdomen",
     "modality": "CT"},
    {"question": "Which organ is abnormal?", "answer": "Lung", "answer_type": "OPEN", "location": "Chest",
     "modality": "X-Ray"},
    {"question": "Where is the kidney?", "answer": "Left", "answer_type": "CLOSED", "location": "Abdomen",
     "modality": "MRI"},
    {"question": "What is the largest organ in the picture?", "answer": "Liver", "answer_type": "OPEN",
     "location": "Abdomen", "modality": "CT"},
]
PMC_ITEMS = [
    ("What does the arrow indicate?", ["A mass", "A cyst", "An effusion", "Normal tissue"], 0),
    ("Which imaging modality was used?", ["CT", "MRI", "Ultrasound", "X-ray"], 1),
    ("Where is the lesion located?", ["Liver", "Kidney", "Lung", "Brain"], 2),
    ("What is the most likely diagnosis?", ["Pneumonia", "Fracture", "Tumor", "Stone"], 3),
]
IU_REPORTS = [
    {"report": "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax."},
    {"report": "Mild cardiomegaly. No focal consolidation. No effusion."},
    {"report": "There is a small right pleural effusion. The cardiomediastinal silhouette is normal."},
]


def write_vqa_rad(root: Path, n: int) -> Path:
    folder = root / "VQA_RAD Image Folder"
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        name = f"synpic{1000 + i // 2}.jpg"  # two questions per image, as in the release
        if not (folder / name).exists():
            _image(i, (320 + 8 * i, 280)).save(folder / name, quality=90)
        base = VQA_RAD_ITEMS[i % len(VQA_RAD_ITEMS)]
        phrase = "test_freeform" if i % 3 == 2 else "freeform"
        items.append({"qid": i + 1, "image_name": name, "image_organ": ["CHEST", "HEAD", "ABD"][i % 3],
                      "phrase_type": phrase, "question_type": "PRES", **base})
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(items, indent=1))
    return root


def write_slake(root: Path, n: int) -> Path:
    root = root / "Slake1.0"
    splits = {"train.json": [], "validate.json": [], "test.json": []}
    for i in range(n):
        name = f"xmlab{i}/source.jpg"
        (root / "imgs" / f"xmlab{i}").mkdir(parents=True, exist_ok=True)
        _image(100 + i, (256, 256)).save(root / "imgs" / name, quality=90)
        item = {"qid": i, "img_id": i, "img_name": name, "q_lang": "en", "content_type": "Organ",
                "base_type": "vqa", **SLAKE_ITEMS[i % len(SLAKE_ITEMS)]}
        target = "test.json" if i % 3 == 2 else ("validate.json" if i % 5 == 4 else "train.json")
        splits[target].append(item)
    splits["train.json"].append({**splits["train.json"][0], "qid": 999, "q_lang": "zh", "question": "图中有肝脏吗?",
                                 "answer": "是"})
    for f, items in splits.items():
        (root / f).write_text(json.dumps(items, ensure_ascii=False, indent=1))
    return root.parent


def write_pmc_vqa(root: Path, n: int) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    header = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]
    for split, count, offset in (("train", n, 0), ("test", max(2, n // 2), 500)):
        with (root / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            for i in range(count):
                q, options, k = PMC_ITEMS[i % len(PMC_ITEMS)]
                name = f"PMC{offset + i}_F{i % 3 + 1}.jpg"
                _image(200 + offset + i, (400, 300 + 10 * i)).save(root / "images" / name, quality=90)
                w.writerow([name, q, options[k]] + [f"{'ABCD'[j]}:{o}" for j, o in enumerate(options)] + ["ABCD"[k]])
    return root


def write_iu_xray(root: Path, n: int) -> Path:
    ann = {"train": [], "val": [], "test": []}
    for i in range(n):
        study = f"CXR{i + 1}_1_IM-{i:04d}"
        (root / "images" / study).mkdir(parents=True, exist_ok=True)
        for v in (0, 1):
            _image(300 + 2 * i + v, (512, 420)).convert("L").save(root / "images" / study / f"{v}.png")
        split = "test" if i % 3 == 2 else ("val" if i % 7 == 6 else "train")
        ann[split].append({"id": study, "report": IU_REPORTS[i % len(IU_REPORTS)]["report"],
                           "image_path": [f"{study}/0.png", f"{study}/1.png"], "split": split})
    (root / "annotation.json").write_text(json.dumps(ann, indent=1))
    return root


def write_medmnist(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    arrays = {}
    for split, count in (("train", n), ("val", max(2, n // 2)), ("test", n)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 2).reshape(-1, 1).astype(np.uint8)
    np.savez(root / "pneumoniamnist.npz", **arrays)
    return root


def write_fixtures(out_dir, rows: int = 12) -> dict[str, Path]:
    """Every fixture data set under `out_dir` with about `rows` questions/studies each."""
    out = Path(out_dir)
    return {"vqa_rad": write_vqa_rad(out / "vqa_rad", rows), "slake": write_slake(out / "slake", rows),
            "pmc_vqa": write_pmc_vqa(out / "pmc_vqa", rows), "iu_xray": write_iu_xray(out / "iu_xray", rows),
            "medmnist": write_medmnist(out / "medmnist", rows)}


def build_all(out_dir=None, rows: int = 12, seed: int = 0) -> dict[str, Path]:
    """Checkpoints + fixtures under `out_dir` (default runs/gpu-dryrun); returns their paths."""
    import time

    out = Path(out_dir) if out_dir is not None else paths.run_dir(PROFILE)
    t0 = time.time()
    texts = corpus()
    made = {"qwen2_5_vl": build_qwen25vl(out / "checkpoints" / "qwen2_5_vl", texts, seed),
            "llava_1_5": build_llava15(out / "checkpoints" / "llava_1_5", texts, seed),
            "judge_lm": build_judge_lm(out / "checkpoints" / "judge_lm", texts, seed)}
    made.update(write_fixtures(out / "fixtures", rows))
    print(f"gpu-dryrun: checkpoints and fixtures under {out} in {time.time() - t0:.1f} s")
    return made


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m repro.dryrun", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="output folder (default runs/gpu-dryrun)")
    ap.add_argument("--rows", type=int, default=12, help="questions / studies per fixture data set")
    args = ap.parse_args(argv)
    build_all(args.out, rows=args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The gpu profile's code path on CPU, reduced (the full one is `make dryrun`: every notebook with params/gpu-dryrun/).

Tiny random checkpoints of the released architectures (repro.dryrun: Qwen2.5-VL, LLaVA-1.5) and fixture data sets
in the release layouts go through stage 01's real-protocol folders, then each architecture runs one step of every
TRL path the gpu profile uses (SFT with LoRA and assistant-only loss, GRPO on PMC-VQA, DPO / MMedPO on the real
preference set), the evaluation harness on the real test splits, and the preference curation with eager attention.
Numbers mean nothing; what is checked is that nothing breaks and the shapes are the released ones.
"""

from __future__ import annotations

import json

import pytest

from repro import dryrun
from repro.data import build, protocols

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("dryrun")
    return out, dryrun.build_all(out, rows=8)


@pytest.fixture(scope="module")
def data_dir(made):
    out, m = made
    sources = {"vqa_rad_dir": m["vqa_rad"], "slake_dir": m["slake"], "pmc_vqa_dir": m["pmc_vqa"],
               "iu_xray_dir": m["iu_xray"], "medmnist_path": m["medmnist"] / "pneumoniamnist.npz"}
    d = out / "data"
    build.build(d, seed=0, n_per_class=7, n_normal=7, image_size=64, difficulty=0.5, yes_share=0.5,
                split_fractions=[0.7, 0.15, 0.15], conv_train_variants=["standard"],
                conv_eval_variants=["standard"], heldout_categories=[],
                real_sources={k: str(v) for k, v in sources.items()})
    return d


def test_checkpoints_have_the_released_layout(made):
    from transformers import AutoConfig, AutoProcessor

    from repro.chat import user_message

    out, m = made
    msgs = [user_message("Is there a mass?", with_image=True)]
    qwen = AutoProcessor.from_pretrained(m["qwen2_5_vl"])
    assert type(qwen).__name__ == "Qwen2_5_VLProcessor" and type(qwen.image_processor).__name__ == \
        "Qwen2VLImageProcessor"
    assert type(qwen.tokenizer).__name__ == "Qwen2Tokenizer"
    text = qwen.apply_chat_template(msgs, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Is there a mass?<|im_end|>\n<|im_start|>assistant\n")
    cfg = AutoConfig.from_pretrained(m["qwen2_5_vl"])
    assert cfg.model_type == "qwen2_5_vl" and cfg.vision_config.patch_size == 14
    assert cfg.vision_config.spatial_merge_size == 2 and cfg.vision_config.window_size == 112
    gen = json.loads((m["qwen2_5_vl"] / "generation_config.json").read_text())
    assert gen["top_k"] == 1 and gen["do_sample"] is True  # released sampling defaults travel with the checkpoint

    llava = AutoProcessor.from_pretrained(m["llava_1_5"])
    assert type(llava).__name__ == "LlavaProcessor" and type(llava.image_processor).__name__ == "CLIPImageProcessor"
    assert llava.apply_chat_template(msgs, add_generation_prompt=True) == "USER: <image>\nIs there a mass? ASSISTANT:"
    from trl.chat_template_utils import is_chat_template_stop_token_trained

    from repro.chat import train_stop_token

    assert not is_chat_template_stop_token_trained(llava)  # the release leaves </s> out of SFT's loss mask
    assert train_stop_token(llava) and is_chat_template_stop_token_trained(llava)
    assert not train_stop_token(qwen)  # no markers: TRL swaps in its own training template for Qwen2.5-VL
    cfg = AutoConfig.from_pretrained(m["llava_1_5"])
    assert (cfg.vision_config.image_size, cfg.vision_config.patch_size, cfg.vision_feature_layer) == (336, 14, -2)
    from PIL import Image

    enc = llava(text=["USER: <image>\nhi ASSISTANT:"], images=[[Image.new("RGB", (300, 200))]], return_tensors="pt")
    assert int((enc["input_ids"] == cfg.image_token_id).sum()) == 576 and int(enc["input_ids"][0, 0]) == 1  # <s>
    enc = qwen(text=[text], images=[[Image.new("RGB", (224, 224))]], return_tensors="pt")
    assert int((enc["input_ids"] == qwen.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()) == 64


def test_stage_01_writes_the_protocol_folders(data_dir):
    manifest = json.loads((data_dir / "manifest.json").read_text())["tasks"]
    # 8 questions each: 2 test, SLAKE 1 val; its Chinese row is dropped
    assert manifest["real_mmedpo/vqa"]["sources"]["train"] == {"vqa_rad": 6, "slake": 5}
    assert set(manifest["real_mmedpo/report"]["rows"]) == {"train", "test"}
    assert manifest["real_pmc_vqa/mcq"]["rows"] == {"train": 8, "test": 4}
    assert manifest["real_medmnist/vqa"]["rows"] == {"test": 8}
    assert protocols.data_dir_for(data_dir, "zhu_data", "pmc_vqa") == data_dir / "real_pmc_vqa"
    assert protocols.data_dir_for(data_dir, "zhu_data", "synthmed") == data_dir
    assert protocols.data_dir_for(data_dir, "external_test", "none") is None
    rows = build.load_task(data_dir / "real_mmedpo", "vqa")["test"]
    assert {"Left", "CT"} & set(rows["answer"])  # closed non-yes/no answers survive (normalised exact match)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "llava_1_5"])
def test_gpu_code_path_on_the_real_architecture(arch, made, data_dir, tmp_path):
    import datasets

    from repro import evaluation as ev
    from repro import models
    from repro.data import preference
    from repro.rewards import attention
    from repro.train import dpo, grpo, sft

    init = made[1][arch]
    lora = {"r": 4, "lora_alpha": 8}
    pmc = protocols.data_dir_for(data_dir, "zhu_data", "pmc_vqa")
    mix = sft.sft_dataset(data_dir, ["vqa", "report"], max_rows_per_task=2, batch_size=2, steps=1)
    mix = datasets.concatenate_datasets([mix, sft.sft_dataset(pmc, ["mcq"], max_rows_per_task=2)])
    tuned = sft.train(init, tmp_path / "sft", mix, max_steps=1, batch_size=2, lr=1e-4, lora=lora)
    assert (tmp_path / "sft" / "final" / "config.json").exists() and tuned["log_history"][0]["loss"] > 0

    model, processor = models.load_vlm(tuned["final_dir"], attn_implementation="eager")
    real = protocols.data_dir_for(data_dir, "mmedpo_data", "real")
    out = ev.evaluate(model, processor, real, tasks=["vqa", "report"], limit=2, batch_size=2, progress=False,
                      max_new_tokens=4)
    assert set(out["metrics"]["vqa"]["by_source"]) >= {"all"} and "rouge_l" in out["metrics"]["report"]
    inst = [r for r in ev.load_rows(data_dir, "instruct", "test") if r["abnormal"]][:2]
    maps = attention.image_attention(model, processor, inst, [r["category"] for r in inst])
    assert all("error" not in a and a["map"].size > 1 for a in maps)  # LLaVA 24 x 24 grid, Qwen grid_thw / merge
    pref = preference.build_preference(model, processor, real, tmp_path / "pref", task_names=("vqa", "report"),
                                       max_rows_per_task=2, n_samples=1, batch_size=2, progress=False)
    assert pref["summary"]["text"] == 4 and all(w == w for w in pref["dataset"]["train"]["weight"])

    ds = grpo.grpo_dataset(pmc, "train", limit=2)
    g = grpo.train(tuned["final_dir"], tmp_path / "grpo", ds, "grpo", max_steps=1, num_generations=2,
                   batch_size=1, max_completion_length=8, lora=lora)
    assert (tmp_path / "grpo" / "final" / "config.json").exists() and g["steps"] == 1
    d = dpo.train(tuned["final_dir"], tmp_path / "dpo", pref["dataset"]["train"], weighted=True, max_steps=1,
                  batch_size=2, lora=lora)
    assert (tmp_path / "dpo" / "final" / "config.json").exists() and d["steps"] == 1


def test_llm_judge_backends_on_the_tiny_random_lm(made):
    from repro.rewards import llm_judge, suite

    judge = made[1]["judge_lm"]
    rewards = suite.task_rewards(semantic_judge=llm_judge.make_semantic_judge([judge]),
                                 clinical_panel=llm_judge.make_clinical_panel([judge, judge]))
    relevance = rewards["vqa"][0]
    assert relevance.__name__ == "clinical_relevance"
    (score,) = relevance(completions=["a mass in the right lung"], answer=["a nodule in the left lung"])
    assert 0.0 <= score <= 1.0
    semantic = next(f for f in rewards["mcq"] if f.__name__ == "semantic_reward")
    out = semantic(completions=["<think>A nodule in the lung on CT.</think><answer>A</answer>"], category=["nodule"],
                   region=["lung"], modality=["CT"], reason_facts=[None])
    assert out[0] in (0.0, 1.0)


def test_sampling_ignores_the_released_top_k(made):
    """Qwen2.5-VL's generation_config (top_k 1, top_p 0.001) must not turn temperature sampling into greedy."""
    import numpy as np
    from PIL import Image

    from repro import models
    from repro.data import preference

    model, processor = models.load_vlm(made[1]["qwen2_5_vl"])
    assert model.generation_config.top_k == 1
    row = {"messages": [{"role": "user", "content": "Describe the findings."}],
           "image": Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8))}
    (samples,) = preference.sample_answers(model, processor, [row], 4, 12, 1.0, seed=0, progress=False)
    assert len(set(samples)) > 1, samples

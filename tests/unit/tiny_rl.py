"""Shared pieces of the trainer learning and resume tests: a tiny VLM built from a few sentences (no SynthMed build:
seconds, not tens of seconds), in-memory GRPO / preference / SFT rows on random images, the log-likelihood of an
answer, and callbacks that interrupt a run at a checkpoint or record the weights a run starts from."""

from __future__ import annotations

import numpy as np
from datasets import Dataset
from PIL import Image
from transformers import TrainerCallback

from repro.chat import user_message
from repro.models import build_tiny_vlm
from repro.papers import probe

QUESTION = "What does the image show?"
ANSWERS = ["there is a nodule in the liver", "the image looks normal", "a cyst in the kidney", "no lesion is seen"]
TEXTS = [QUESTION, "Which letter is right? A B C D", "<think>the answer is</think><answer>A</answer>"] + ANSWERS * 10


def build_init(path):
    return build_tiny_vlm(path, TEXTS, size="smoke", seed=0)


def _image(rng) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def grpo_rows(n: int = 8, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset.from_list([{"prompt": [user_message(QUESTION, with_image=True)], "image": _image(rng)}
                              for _ in range(n)])


def preference_rows(n: int = 8, visual: bool = False, seed: int = 0) -> Dataset:
    """Pairs on random images: text pairs prefer ANSWERS[i % 2] to ANSWERS[2 + i % 2] on the same image; with
    `visual`, every second pair is a visual pair (the same answer, rejected on another random image). Weight 1.
    The preferences are consistent without looking at the image (no cycle such as a > b > c > a, which a policy could
    only satisfy by telling random images apart), so preference accuracy 1.0 is reachable."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        img, other = _image(rng), _image(rng)
        vis = visual and i % 2 == 1
        good, bad = ANSWERS[i % 2], ANSWERS[2 + i % 2]
        rows.append({"prompt": QUESTION, "chosen": good, "rejected": good if vis else bad,
                     "images": [img], "rejected_images": [other if vis else img], "weight": 1.0,
                     "kind": "visual" if vis else "text", "id": f"p{i}", "source": "s", "category": "c"})
    return Dataset.from_list(rows)


def sft_rows(n: int = 8, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset.from_list([{"images": [_image(rng)], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": ANSWERS[i % 4]}]}]} for i in range(n)])


answer_logp = probe.answer_logp  # log pi(answer | image, prompt), the probe's DPO margin uses the same


class Interrupted(RuntimeError):
    pass


class StopAfterSave(TrainerCallback):
    """Raise Interrupted right after the checkpoint of step `step` is written (a kill at a mid-run checkpoint)."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted(f"stopped after the checkpoint of step {self.step}")


class StartWeights(TrainerCallback):
    """Record the policy's weights when the first optimizer step of this process begins."""

    def __init__(self):
        self.params: dict | None = None
        self.step: int | None = None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.params is None:
            self.params = {k: v.detach().clone() for k, v in model.named_parameters()}
            self.step = state.global_step

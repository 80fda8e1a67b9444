"""VRR (UMed-LVLM vision-relevance reward): geometry, anchors, known answers on hand-built attention, totality on a
tiny model, batching = one by one, TRL signature and the AAR hook."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from repro.data.tasks import instruct_target
from repro.rewards import attention, localization

CORPUS = [
    "Detect, localize and recognize any abnormality in this image.",
    instruct_target(True, "[25, 25, 50, 75]", "nodule", "lung", "CT"),
    instruct_target(False, "", "normal", "chest", "X-ray"),
    "What abnormality is shown? kidney stone polyp cyst mass effusion tuberculosis cardiomegaly",
]
ROW = {"image": Image.new("RGB", (64, 64), (90, 90, 90)), "bboxes": [[16, 16, 32, 32]], "abnormal": True,
       "category": "nodule", "question": CORPUS[0]}
GOOD = instruct_target(True, "[25, 25, 50, 50]", "nodule", "lung", "CT")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from repro.models import build_tiny_vlm, load_vlm

    path = build_tiny_vlm(tmp_path_factory.mktemp("vrr"), CORPUS * 4, size="smoke", vocab_size=300)
    model, processor = load_vlm(path, attn_implementation="eager", device="cpu")
    return model, processor, path


# ---------------------------------------------------------------- geometry and anchors
def test_patch_mask_known_values():
    m = attention.patch_mask([[0, 0, 8, 8]], (64, 64), (8, 8))
    assert m.sum() == 1 and m[0, 0]
    m = attention.patch_mask([[4, 4, 12, 12]], (64, 64), (8, 8))  # straddles 4 patches
    assert m.sum() == 4 and m[:2, :2].all()
    assert attention.patch_mask([[4, 4, 12, 12]], (64, 64), (8, 8), min_cover=0.5).sum() == 0  # 1/4 of each
    assert attention.patch_mask([[0, 0, 64, 64]], (64, 64), (8, 8)).all()
    m = attention.patch_mask([[16, 8, 24, 16]], (128, 64), (8, 8))  # a wide image: patches are 16 x 8 px
    assert m.sum() == 1 and m[1, 1]
    m = attention.patch_mask([[0, 0, 8, 8], [56, 56, 64, 64]], (64, 64), (8, 8))  # union of boxes
    assert m.sum() == 2 and m[7, 7]
    for junk in (None, [], [[1, 2, 3]], [[5, 5, 5, 9]], [[0, 0, float("nan"), 4]], "box", [["a", 1, 2, 3]]):
        assert attention.patch_mask(junk, (64, 64), (8, 8)).sum() == 0


def test_anchor_spans():
    text = "Detection: abnormal. Recognition: nodule in the lung; Nodule again."
    spans, kind = attention.anchor_spans(text, "nodule")
    assert kind == "category" and [text[a:b].lower() for a, b in spans] == ["nodule", "nodule"]
    spans, kind = attention.anchor_spans("Recognition: cyst.", "nodule")  # the completion's own (wrong) class
    assert kind == "named" and spans == [(13, 17)]
    assert attention.anchor_spans("yes", "nodule") == ([(0, 3)], "all")
    assert attention.anchor_spans("yes", "nodule", fallback="zero") == ([], "none")


# ---------------------------------------------------------------- known answers on hand-built attention
class FakeModel:
    """Wraps the tiny model's config; its forward returns one attention layer that puts, for every query row,
    `on_text` of the mass on the first token and the rest spread evenly over the image patches in `target`."""

    def __init__(self, real, target: np.ndarray, on_text: float = 0.0, heads: int = 2):
        self.config, self.device, self.dtype, self.training = real.config, torch.device("cpu"), torch.float32, False
        self.target, self.on_text, self.heads = target, on_text, heads

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def __call__(self, input_ids, output_attentions=False, **_):
        b, t = input_ids.shape
        att = torch.zeros(b, self.heads, t, t)
        for i in range(b):
            img = (input_ids[i] == self.config.image_token_id).nonzero().flatten()
            cols = img[torch.as_tensor(self.target.flatten(), dtype=torch.bool)]
            att[i, :, :, 0] = self.on_text
            att[i, :, :, cols] = (1 - self.on_text) / len(cols)
        return SimpleNamespace(attentions=(att,))


def _box_grid(box) -> np.ndarray:
    return attention.patch_mask([box], (64, 64), (8, 8))


@pytest.mark.parametrize("on_text", [0.0, 0.7])
def test_all_mass_inside_the_box_is_1_and_outside_is_0(tiny, on_text):
    model, processor, _ = tiny
    inside = FakeModel(model, _box_grid(ROW["bboxes"][0]), on_text)
    outside = FakeModel(model, ~_box_grid(ROW["bboxes"][0]), on_text)
    comps = [GOOD, "yes", ""]
    got_in = attention.vrr_scores(inside, processor, [ROW] * 3, comps)
    got_out = attention.vrr_scores(outside, processor, [ROW] * 3, comps)
    assert got_in[:2] == pytest.approx([1.0, 1.0]) and got_out[:2] == pytest.approx([0.0, 0.0])
    assert got_in[2] == 0.0 and got_out[2] == 0.0  # empty completion: no anchor rows
    # half of the box's patches -> 1/2; uniform attention over the image -> the chance level |B| / |I|
    half = _box_grid(ROW["bboxes"][0]).copy()
    half[half.nonzero()[0][0]] = False  # drop the box's first patch row (2 of the 4 box patches)
    assert attention.vrr_scores(FakeModel(model, half), processor, [ROW], [GOOD])[0] == pytest.approx(1.0)
    mixed = half | ~_box_grid(ROW["bboxes"][0])  # 2 box patches + the 60 outside: 2 / 62 of the mass inside
    assert attention.vrr_scores(FakeModel(model, mixed), processor, [ROW], [GOOD])[0] == pytest.approx(2 / 62)
    d = attention.vrr_details(FakeModel(model, np.ones((8, 8), bool)), processor, [ROW], [GOOD])[0]
    assert d["reward"] == pytest.approx(d["chance"]) == pytest.approx(4 / 64)
    assert d["map"].sum() == pytest.approx(1.0) and d["anchor"] == "category"


def test_normal_images_get_none(tiny):
    model, processor, _ = tiny
    rows = [{**ROW, "abnormal": False}, {**ROW, "bboxes": []}, {**ROW, "bboxes": [[3, 3, 3, 9]]},
            {**ROW, "abnormal": None}]
    got = attention.vrr_scores(model, processor, rows, [GOOD] * 4)
    assert got[:3] == [None, None, None] and isinstance(got[3], float)  # unknown flag + a true box: applies


# ---------------------------------------------------------------- the real tiny model
def test_batch_equals_one_by_one_and_map(tiny):
    model, processor, _ = tiny
    rows = [ROW, {**ROW, "bboxes": [[40, 8, 60, 30]], "category": "cyst"}, ROW]
    comps = [GOOD, "Recognition: cyst in the liver, with a much longer tail of words after it", "no"]
    together = attention.vrr_scores(model, processor, rows, comps, batch_size=8)
    alone = [attention.vrr_scores(model, processor, [r], [c])[0] for r, c in zip(rows, comps)]
    assert together == pytest.approx(alone, abs=1e-6)  # right padding keeps every sequence's positions
    m = attention.attention_map(model, processor, ROW, GOOD)
    assert m.shape == (8, 8) and m.sum() == pytest.approx(1.0) and (m >= 0).all()
    last = attention.vrr_scores(model, processor, rows, comps, layers="last")
    assert all(0.0 <= v <= 1.0 for v in last)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=120), st.lists(st.sampled_from(
    ["<image>", "<|im_end|>", "<|im_start|>", "nodule", " ", "\n", "[", "0, 0, 100, 100]", "Recognition:", "\x00",
     "\ud7ff", "é", "<|pad|>", "cyst"]), max_size=25).map("".join)))
def test_vrr_total_on_any_string(tiny, s):
    model, processor, _ = tiny
    got = attention.vrr_scores(model, processor, [ROW, ROW], [s, GOOD])
    assert all(isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in got), got


def test_trl_signature_explain_and_aar(tiny):
    model, processor, _ = tiny
    f = attention.make_vrr_reward(model, processor)
    prompts = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CORPUS[0]}]}],
               CORPUS[0], None]
    comps = [[{"role": "assistant", "content": GOOD}], GOOD, "<image> nodule"]
    cols = {k: [ROW[k]] * 3 for k in ("image", "bboxes", "abnormal", "category")}
    got = f(prompts=prompts, completions=comps, completion_ids=[[1]] * 3, trainer_state=None, **cols)
    assert f.__name__ == "vrr_reward" and len(got) == 3 and all(0 <= v <= 1 for v in got)
    assert got[0] == pytest.approx(got[1])  # a chat prompt and its plain text give the same sequence
    d = f.explain(GOOD, **ROW)
    assert d["reward"] == pytest.approx(got[1], abs=1e-6) and d["anchor"] == "category"
    assert f(prompts=None, completions=None) == []
    # the AAR total: relevance + ALR / max ALR + VRR / max VRR over the query's candidates
    aar = localization.make_aar_reward(group_size=2, vrr_fn=f)
    rows = {**{k: [ROW[k]] * 2 for k in ("image", "bboxes", "abnormal", "category")}, "image_size": [64, 64],
            "region": ["lung"] * 2, "modality": ["CT"] * 2}
    two = [GOOD, GOOD.replace("nodule", "nodule nodule")]
    total = aar(prompts=[CORPUS[0]] * 2, completions=two, **rows)
    vrr = f(prompts=[CORPUS[0]] * 2, completions=two, **rows)
    rel = localization.relevance_reward(None, two, **rows)
    alr = localization.alr_reward(None, two, **rows)
    expected = localization.aar_total(rel, alr, vrr, group_size=2, scale="mean")
    # the best candidate gets VRR / max = 1; an abnormal prompt has 3 terms, so the mean is >= 1/3 of that
    assert total == pytest.approx(expected) and max(total) >= 1 / 3 and all(0 <= v <= 1 for v in total)
    assert "vrr" in aar.explain(GOOD, **ROW)


def test_training_reward_gives_zero_to_an_answer_that_names_no_class(tiny):
    """make_vrr_reward's fallback is "zero" (the paper's sum over an empty set of class tokens); the analysis
    functions keep "all" so that any answer has a map. All the fake attention mass sits inside the box."""
    model, processor, _ = tiny
    inside = FakeModel(model, _box_grid(ROW["bboxes"][0]))
    cols = {k: [ROW[k]] * 3 for k in ("image", "bboxes", "abnormal", "category")}
    comps = [[{"role": "assistant", "content": c}] for c in ("yes", "Recognition: cyst.", GOOD)]
    assert attention.make_vrr_reward(inside, processor)(prompts=None, completions=comps, **cols) == pytest.approx(
        [0.0, 1.0, 1.0])  # "yes": no class -> 0; "cyst" is a (wrong) named class: its tokens are the anchors
    assert attention.make_vrr_reward(inside, processor, fallback="all")(
        prompts=None, completions=comps, **cols) == pytest.approx([1.0, 1.0, 1.0])
    assert attention.vrr_scores(inside, processor, [ROW], ["yes"]) == pytest.approx([1.0])


def test_needs_eager_attention(tiny):
    from repro.models import load_vlm

    _, _, path = tiny
    sdpa, processor = load_vlm(path, attn_implementation="sdpa", device="cpu")
    with pytest.raises(ValueError, match="eager"):
        attention.make_vrr_reward(sdpa, processor)
    with pytest.raises(ValueError, match="fallback"):
        attention.make_vrr_reward(tiny[0], processor, fallback="nope")


def test_qwen25vl_code_path(tmp_path):
    """The gpu profile's architecture: image grid from image_grid_thw / merge size, 3-D RoPE positions."""
    from repro.models import build_tiny_qwen25vl, load_vlm

    model, processor = load_vlm(build_tiny_qwen25vl(tmp_path, CORPUS * 4), attn_implementation="eager", device="cpu")
    rows = [ROW, {**ROW, "bboxes": [[40, 8, 60, 30]]}]
    comps = [GOOD, "yes <|image_pad|> <|vision_start|> nodule"]  # special tokens in text stay text
    together = attention.vrr_scores(model, processor, rows, comps)
    alone = [attention.vrr_scores(model, processor, [r], [c])[0] for r, c in zip(rows, comps)]
    assert together == pytest.approx(alone, abs=1e-6) and all(0.0 <= v <= 1.0 for v in together)
    assert attention.attention_map(model, processor, ROW, GOOD).shape == (8, 8)


def test_policy_vrr_reads_the_bound_model_with_eager_attention_and_restores_it(tiny):
    """UMed's mechanism (issue 27): VRR from the attention of the model being trained. Bound to an sdpa model (as
    the policy trains), the reward equals the frozen-copy reward of the same weights, switches the model back to
    sdpa afterwards, and follows the model when its weights change."""
    from repro.models import load_vlm

    eager, processor, path = tiny
    policy, _ = load_vlm(path, attn_implementation="sdpa", device="cpu")
    f = attention.make_policy_vrr_reward()
    cols = {k: [ROW[k]] * 2 for k in ("image", "bboxes", "abnormal", "category")}
    comps = [GOOD, GOOD.replace("nodule", "nodule nodule")]
    with pytest.raises(RuntimeError, match="bind_policy"):
        f(prompts=[CORPUS[0]] * 2, completions=comps, **cols)
    f.bind_policy(policy, processor)
    got = f(prompts=[CORPUS[0]] * 2, completions=comps, **cols)
    want = attention.make_vrr_reward(eager, processor)(prompts=[CORPUS[0]] * 2, completions=comps, **cols)
    assert got == pytest.approx(want, abs=1e-6) and f.source == "policy"
    assert attention._attn_impl(policy) == "sdpa"  # restored for training
    with torch.no_grad():  # the policy moves: the reward reads the new weights, not a copy
        for name, p in policy.named_parameters():
            if "q_proj.weight" in name:
                p.mul_(4.0)
    assert f(prompts=[CORPUS[0]] * 2, completions=comps, **cols) != pytest.approx(got, abs=1e-6)
    aar = localization.make_aar_reward(group_size=2, vrr_fn=attention.make_policy_vrr_reward(), scale="sum")
    aar.bind_policy(policy, processor)  # the trainer binds through AAR
    assert len(aar(prompts=[CORPUS[0]] * 2, completions=comps, **cols, image_size=[64, 64], region=["lung"] * 2,
                   modality=["CT"] * 2)) == 2

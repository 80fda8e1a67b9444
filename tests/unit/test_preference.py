"""MMedPO preference curation: schema and types, conflicts and templates, weights (0 / None), local lesion noise,
determinism."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from repro.data import build, conversations
from repro.data import preference as pref
from repro.metrics import parse_yes_no
from repro.rewards import clinical

KW = dict(n_per_class=5, n_normal=5, image_size=64, difficulty=0.5, yes_share=0.5, split_fractions=[0.6, 0.2, 0.2],
          conv_train_variants=["standard"], conv_eval_variants=list(conversations.VARIANTS), heldout_categories=[])
BLUR_RADIUS = 7  # the 15 x 15 Gaussian kernel of the released rule


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("prefdata") / "data"
    build.build(d, seed=0, **KW)
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir):
    from repro import evaluation as ev
    from repro.models import build_tiny_vlm, load_vlm

    texts = [r["messages"][-1]["content"] for t in ("vqa", "report") for r in ev.load_rows(data_dir, t, "train", 30)]
    path = build_tiny_vlm(tmp_path_factory.mktemp("preftiny"), texts, size="smoke", vocab_size=400)
    return load_vlm(path, attn_implementation="eager", device="cpu")


def _build(tiny, data_dir, out, **kw):
    model, processor = tiny
    opts = dict(max_rows_per_task=16, n_samples=2, batch_size=16, progress=False) | kw
    return pref.build_preference(model, processor, data_dir, out, **opts)


@pytest.fixture(scope="module")
def built(tiny, data_dir, tmp_path_factory):
    return _build(tiny, data_dir, tmp_path_factory.mktemp("pref") / "preference")


# ---------------------------------------------------------------- schema
def test_columns_and_types(built):
    ds = pref.load_preference(built["path"])["train"]
    assert set(ds.column_names) == set(pref.COLUMNS) and len(pref.COLUMNS) == 11
    kinds = set(ds["kind"])
    assert kinds == {"text", "visual"}
    for r in ds:
        assert isinstance(r["prompt"], str) and r["prompt"] and isinstance(r["chosen"], str)
        assert isinstance(r["rejected"], str) and r["rejected"]
        assert len(r["images"]) == 1 and len(r["rejected_images"]) == 1
        assert r["images"][0].size == (64, 64) and r["rejected_images"][0].mode == "RGB"
        assert isinstance(r["weight"], float) and math.isfinite(r["weight"])
        if r["kind"] == "text":  # default text mode raw (the release): the weight is the score itself
            assert r["weight"] == r["score"]
        else:  # visual: minmax of the tool's probability
            assert 0.75 <= r["weight"] <= 1.25
        assert isinstance(r["score"], float) and 0.0 <= r["score"] <= 1.0
        assert isinstance(r["id"], str) and isinstance(r["source"], str) and isinstance(r["category"], str)
        same_image = np.array_equal(np.asarray(r["images"][0]), np.asarray(r["rejected_images"][0]))
        if r["kind"] == "text":
            assert r["rejected"] != r["chosen"] and same_image
        else:
            assert r["rejected"] == r["chosen"] and not same_image and r["category"] != "normal"
    s = built["summary"]
    assert s["text"] + s["visual"] == s["pairs"] == len(ds)
    assert sum(sum(v.values()) for v in s["text_origin"].values()) == s["text"]
    with pytest.raises(FileNotFoundError, match="stage 03"):
        pref.load_preference(built["path"].parent / "missing")


# ---------------------------------------------------------------- conflicts and templated hallucinations
def _row(task, answer, **kw):
    base = {"task": task, "id": "x-1", "source": "deeplesion", "category": "cyst", "region": "liver",
            "modality": "CT", "abnormal": True, "bboxes": [[10, 10, 20, 20]], "image": np.zeros((64, 64, 3), np.uint8),
            "messages": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": answer}]}
    return base | kw


def test_conflicts():
    closed = _row("vqa", "yes", answer_type="closed")
    assert pref.conflicts(closed, "No.") and not pref.conflicts(closed, "yes") and not pref.conflicts(closed, "maybe")
    open_ = _row("vqa", "liver", answer_type="open", question_kind="region")
    assert pref.conflicts(open_, "kidney") and not pref.conflicts(open_, "the liver")
    assert not pref.conflicts(open_, "hello there") and not pref.conflicts(open_, "")
    truth = "CT image of the liver. There is a small cyst in the upper left part of the image."
    report = _row("report", truth)
    assert pref.conflicts(report, "CT image of the liver. There is a mass.")
    assert pref.conflicts(report, "X-ray image of the liver. There is a small cyst.")
    assert not pref.conflicts(report, truth) and not pref.conflicts(report, "CT image. A cyst is seen.")
    best, score = pref.pick_rejected(closed, ["maybe", "yes", "no", "No, it is not."])
    assert best in ("no", "No, it is not.") and score == clinical.consensus(best, "yes").mean
    assert pref.pick_rejected(closed, ["yes", ""]) == (None, None)


def test_closed_templated_hallucination_keeps_the_words_and_flips_the_yes_no():
    row = _row("vqa", "It shows the liver, so yes.", answer_type="closed")
    flipped = pref.templated_hallucination(row)
    assert flipped == "It shows the liver, so no." and pref.conflicts(row, flipped)
    assert pref.templated_hallucination(_row("vqa", "No", answer_type="closed")) == "yes"  # real data: a bare yes/no


def test_every_templated_hallucination_conflicts(data_dir):
    for task in ("vqa", "report"):
        for row in pref.load_rows(data_dir, task):
            h = pref.templated_hallucination(row, seed=0)
            assert h != pref.truth_of(row) and pref.conflicts(row, h), (task, row["id"], pref.truth_of(row), h)
            assert h == pref.templated_hallucination(row, seed=0)


def test_sampled_answers_are_preferred_over_templates(monkeypatch, tiny, data_dir, tmp_path):
    def fake(model, processor, rows, n, *a, **k):
        out = []
        for r in rows:
            truth = pref.truth_of(r)
            if r["task"] == "vqa" and r["answer_type"] == "closed":  # "It shows ..., so yes." -> a bare "no"
                out.append(["maybe", "no" if parse_yes_no(truth) == "yes" else "yes"])
            else:
                out.append([truth, truth])  # nothing conflicts: the template is used
        return out

    monkeypatch.setattr(pref, "sample_answers", fake)
    res = _build(tiny, data_dir, tmp_path / "p", kinds=("text",), max_rows_per_task=0)
    ds = res["dataset"]["train"]
    n_closed = sum(r["answer_type"] == "closed" for r in pref.load_rows(data_dir, "vqa"))
    assert res["summary"]["text_origin"]["vqa"]["sampled"] == n_closed
    assert res["summary"]["text_origin"]["report"]["sampled"] == 0
    assert set(ds["kind"]) == {"text"}


# ---------------------------------------------------------------- weights: 0 and None
def test_weights_never_none_or_nan():
    assert pref.weights_for([0.0, None, float("nan"), 1.0], "raw") == [0.0, 0.0, 0.0, 1.0]
    assert pref.weights_for([0.0, None, float("nan"), 1.0], "normalize") == pytest.approx([0.75, 1.0, 1.0, 1.25])
    assert pref.weights_for([0.0, None], "literal") == [0.75, 0.75]
    assert pref.weights_for([None, 1.0], "minmax") == [0.75, 1.25]
    assert pref.weights_for([], "normalize") == []


def test_zero_weight_pairs_kept_or_dropped(monkeypatch, tiny, data_dir, tmp_path):
    real = clinical.consensus

    def stub(rejected, truth, *a, **k):  # closed answers score 0 (a pair the released weights switch off)
        c = real(rejected, truth)
        c.scores = [0.0] if re.search(r"\b(yes|no)\.?$", rejected.strip().lower()) else [0.6]
        return c

    monkeypatch.setattr(pref.clinical, "consensus", stub)
    kept = _build(tiny, data_dir, tmp_path / "a", kinds=("text",), weight_mode="raw", n_samples=0)
    dropped = _build(tiny, data_dir, tmp_path / "b", kinds=("text",), weight_mode="raw", n_samples=0,
                     drop_zero_weight=True)
    w_kept = kept["dataset"]["train"]["weight"]
    assert 0.0 in w_kept and set(w_kept) <= {0.0, 0.6}
    assert 0.0 not in dropped["dataset"]["train"]["weight"]
    assert len(dropped["dataset"]["train"]) == len(w_kept) - w_kept.count(0.0)


# ---------------------------------------------------------------- visual pairs: local lesion noise
def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask, dtype=bool)
    for y, x in zip(ys, xs):
        out[max(0, y - r): y + r + 1, max(0, x - r): x + r + 1] = True
    return out


@pytest.mark.parametrize("method,threshold,radius", [("released", "mean", BLUR_RADIUS), ("blend", "mean", 0)])
def test_oracle_noise_stays_near_the_lesion(data_dir, tmp_path, method, threshold, radius):
    res = pref.build_preference(None, None, data_dir, tmp_path / method, kinds=("visual",), heatmap="oracle",
                                noise_method=method, noise_threshold=threshold, progress=False)
    ds = res["dataset"]["train"]
    masks = pref.oracle_masks(data_dir, set(ds["id"]))
    assert len(ds) > 0 and set(ds["score"]) == {1.0} and set(ds["weight"]) == {1.25}  # oracle: confidence 1
    for r in ds:
        x, xs = np.asarray(r["images"][0]), np.asarray(r["rejected_images"][0])
        changed = (x != xs).any(axis=2)
        near = _dilate(masks[r["id"]] > 0, radius)
        assert changed.any() or method == "blend"  # the blend may round a 1-pixel lesion back to itself
        assert not (changed & ~near).any(), (r["id"], int((changed & ~near).sum()))


def test_released_threshold_is_global_on_a_mask(data_dir, tmp_path):
    """mean - std < 0 for a small binary mask: the released rule noises (almost) every pixel (noise.py pitfall)."""
    res = pref.build_preference(None, None, data_dir, tmp_path / "g", kinds=("visual",), heatmap="oracle",
                                noise_threshold="released", max_rows_per_task=8, progress=False)
    r = res["dataset"]["train"][0]
    changed = (np.asarray(r["images"][0]) != np.asarray(r["rejected_images"][0])).any(axis=2)
    assert changed.mean() > 0.9


def test_attention_tool_confidence_is_a_probability(built):
    ds = built["dataset"]["train"]
    pairs = [(s, w) for s, w, k in zip(ds["score"], ds["weight"], ds["kind"]) if k == "visual"]
    assert pairs and all(0.0 < s < 1.0 for s, _ in pairs)
    assert all(w == pytest.approx(0.75 + 0.5 * s) for s, w in pairs)  # default visual weights: minmax


# ---------------------------------------------------------------- determinism
def _digest(ds) -> list:
    return [tuple((k, np.asarray(r[k][0]).tobytes() if k.endswith("images") else r[k]) for k in pref.COLUMNS)
            for r in ds]


def test_deterministic_given_seed(tiny, data_dir, built, tmp_path):
    again = _build(tiny, data_dir, tmp_path / "again")
    assert _digest(again["dataset"]["train"]) == _digest(built["dataset"]["train"])
    other = _build(tiny, data_dir, tmp_path / "other", seed=1)
    assert _digest(other["dataset"]["train"]) != _digest(built["dataset"]["train"])


def test_abnormal_probability_reads_the_step_where_the_answer_says_yes_or_no(monkeypatch):
    """Known answer: the greedy answer "It shows cyst yes" decides at its 4th token (" yes"), where the
    scores give yes:no = e^1 : e^0; an answer without yes/no falls back to step 0 (bare "yes" / "no" ids)."""
    import types

    vocab = {"yes": 1, "no": 2, " yes": 3, " no": 4, "It": 5, " shows": 6, " cyst": 7, ",": 8, " so": 9}

    class Tok:
        pad_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [vocab[text]]}

    class Model:
        training = False

        def eval(self):
            pass

        def train(self, flag):
            pass

        def generate(self, input_ids, max_new_tokens, **kw):
            seqs = torch.tensor([[0, 5, 6, 7, 3], [0, 5, 6, 7, 8]])  # prompt length 1, then 4 answer tokens
            scores = [torch.zeros(2, 10) for _ in range(4)]
            scores[3][0, 3] = 1.0  # row 0 decides " yes" at step 3 (0-based) with logit 1 vs " no" 0
            scores[0][1, 2] = math.log(3.0)  # row 1 never decides: step 0, bare yes:no = 1 : 3
            return types.SimpleNamespace(sequences=seqs, scores=scores)

    proc = types.SimpleNamespace(tokenizer=Tok(), apply_chat_template=lambda *a, **k: "prompt")
    monkeypatch.setattr(pref, "encode", lambda model, processor, texts, images, **k: {"input_ids": torch.zeros(2, 1)})
    got = pref.abnormal_probability(Model(), proc, [None, None])
    assert got == pytest.approx([math.e / (math.e + 1), 0.25])

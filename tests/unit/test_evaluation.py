"""Evaluation harness: hand-computed metric values, total parsers (hypothesis), per-source/variant breakdowns,
gold answers scoring perfectly, majority baselines, and one end-to-end evaluate() on a random tiny VLM."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro import evaluation as ev
from repro import metrics as M
from repro.data import build, conversations
from repro.data import decision_tree as dt

KW = dict(n_per_class=5, n_normal=5, image_size=64, difficulty=0.5, yes_share=0.5, split_fractions=[0.6, 0.2, 0.2],
          conv_train_variants=["standard", "shuffled"], conv_eval_variants=list(conversations.VARIANTS),
          heldout_categories=["deeplesion:mass"])
OPTIONS = ["mass", "cyst", "nodule", "kidney stone"]
text = st.text(max_size=200)


def in_unit(x) -> bool:
    return isinstance(x, float) and (math.isnan(x) or 0.0 <= x <= 1.0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaldata") / "data"
    build.build(d, seed=0, **KW)
    return d


# ----------------------------------------------------------------------------------------------- VQA
@pytest.mark.parametrize("pred,expected", [
    ("Yes", "yes"), ("no.", "no"), ("NO, it is not", "no"), ("Well... yes, no", "yes"), ("I do not know", None),
    ("yesterday nobody", None), ("", None), ("<answer>yes</answer>", "yes"),
])
def test_parse_yes_no(pred, expected):
    assert M.parse_yes_no(pred) == expected


def test_closed_and_open_known_answers():
    assert M.closed_correct("Yes, there is.", "yes") and not M.closed_correct("maybe", "no")
    assert not M.closed_correct("No", "yes")
    assert M.open_recall("A kidney stone in the left kidney.", "kidney stone") == 1.0
    assert M.open_recall("a stone", "Kidney stone") == 0.5
    assert M.open_recall("x ray", "X-ray") == 1.0  # punctuation splits tokens on both sides
    assert M.open_recall("anything", "") == 0.0 and M.open_recall(None, "cyst") == 0.0


@pytest.mark.parametrize("pred,truth,expected", [
    ("Left", "left", True), ("the left.", "Left", True), ("<think>it is on the left</think><answer>Left</answer>",
                                                          "left", True),
    ("left side", "left", False), ("right", "left", False), ("CT", "CT", True), ("An MRI", "mri", True),
    ("It is a CT scan", "CT", False), ("", "left", False), ("x-ray", "X ray", True), ("anything", "", False),
    ("No, there is no mass", "no", True), ("yes", "Yes.", True), ("Yes", "no", False),  # yes/no: today's rule
])
def test_closed_non_yes_no_answers_use_normalised_exact_match(pred, truth, expected):
    assert M.closed_correct(pred, truth) is expected


def test_normalisation_known_answers():
    assert M.normalize_text("  The Heart,  is NORMAL. ") == "the heart is normal"
    assert M.normalize_answer("The left lung.") == "left lung" and M.normalize_answer(None) == ""
    assert M.is_yes_no("No.") and not M.is_yes_no("no mass") and not M.is_yes_no("left")
    df = M.score_vqa(["right", "", "maybe"], [{"answer_type": "closed", "answer": "left"}] * 2
                     + [{"answer_type": "closed", "answer": "yes"}])
    assert list(df.parsed) == [True, False, False] and list(df.score) == [0.0, 0.0, 0.0]


def test_report_metrics_ignore_case_and_punctuation():
    refs = ["The heart is normal. No effusion."]
    assert M.bleu(["the heart is normal no effusion"], refs) == pytest.approx(M.bleu(refs, refs)) == 1.0
    assert M.bleu(["The Heart"], ["the heart"]) == M.bleu(["the heart"], ["the heart"])
    assert M.rouge_l("THE HEART, normal", "the heart normal") == pytest.approx(1.0)
    assert M.bleu(["the lungs"], ["the heart"]) < 1.0


def test_vqa_summary_and_per_source_breakdown():
    rows = [{"source": "kvasir", "answer_type": "closed", "answer": "yes"},
            {"source": "kvasir", "answer_type": "open", "answer": "colon polyp"},
            {"source": "tbx11k", "answer_type": "closed", "answer": "no"},
            {"source": "bone_marrow", "answer_type": "closed", "answer": "no"}]
    preds = ["yes", "polyp", "yes", "??"]
    metrics, table = M.summarize_vqa(M.score_vqa(preds, rows))
    assert metrics["closed_acc"] == pytest.approx(1 / 3) and metrics["open_recall"] == 0.5
    assert metrics["closed_parse_rate"] == pytest.approx(2 / 3)
    assert list(table.index) == ["kvasir", "tbx11k", "bone_marrow", "all"]  # MAU order, bone marrow, all
    assert table.loc["kvasir", "closed_acc"] == 1.0 and table.loc["tbx11k", "closed_acc"] == 0.0
    assert math.isnan(table.loc["tbx11k", "open_recall"]) and list(table.n) == [2, 1, 1, 4]
    assert metrics["by_source"]["kvasir"]["open_recall"] == 0.5


# ----------------------------------------------------------------------------------------------- MCQ
@pytest.mark.parametrize("pred,expected", [
    ("<think>It is round.</think><answer>B</answer>", "B"),
    ("<answer> (c) </answer>", "C"),
    ("<answer>C. nodule</answer>", "C"),
    ("<answer>cyst</answer>", "B"),  # option text inside the tag
    ("<answer>kidney stone</answer>", "D"),  # the longer option wins over a contained shorter one
    ("B", "B"), ("(D)", "D"), ("A. mass", "A"),
    ("The answer is D", "D"),
    ("A small cyst is seen.", "B"),  # "A" as an article is not a letter; falls back to the option text
    ("It is a mass or a cyst", None),  # two options named: unparseable
    ("<think>maybe a cyst</think>", None),  # reasoning alone does not answer
    ("<answer>E</answer>", None), ("", None),
])
def test_parse_choice(pred, expected):
    assert M.parse_choice(pred, OPTIONS) == expected


def test_mcq_accuracy_and_parse_rate():
    rows = [{"source": "kvasir", "options": OPTIONS, "answer": a} for a in "ABCD"]
    preds = ["<answer>A</answer>", "<answer>C</answer>", "nodule", "no idea"]
    metrics, table = M.summarize_mcq(M.score_mcq(preds, rows))
    assert metrics["acc"] == 0.5 and metrics["parse_rate"] == 0.75
    assert list(table.index) == ["kvasir", "all"]


# ----------------------------------------------------------------------------------------------- instruct
TRUTH = [[0, 0, 32, 64]]  # pixels on 64x64 -> [0, 0, 50, 100] in percent


@pytest.mark.parametrize("pred,det,cat,iou,mau", [
    ("Detection: abnormal. Localization: [0, 0, 50, 100]. Recognition: cyst in the liver, CT.", 1, 1, 1.0, 1),
    ("Detection: abnormal. Localization: [0, 0, 50, 50]. Recognition: cyst.", 1, 1, 0.5, 1),  # IoU 0.5 counts
    ("Detection: abnormal. Localization: [0, 0, 50, 40]. Recognition: cyst.", 1, 1, 0.4, 0),
    ("Detection: abnormal. Localization: [0, 0, 50, 100]. Recognition: mass.", 1, 0, 1.0, 0),
    ("Detection: no abnormality. Localization: none. Recognition: normal liver, CT.", 0, 0, 0.0, 0),
    ("garbage", 0, 0, 0.0, 0),
])
def test_instruct_item_abnormal_image(pred, det, cat, iou, mau):
    item = M.instruct_item(pred, True, "cyst", TRUTH, 64, 64)
    assert (item["detection_correct"], item["category_correct"], item["mau_correct"]) == (det, cat, mau)
    assert item["iou"] == pytest.approx(iou)


def test_instruct_item_normal_image_and_best_of_several_boxes():
    ok = M.instruct_item("Detection: no abnormality. Localization: none.", False, "normal", [], 64, 64)
    assert ok["mau_correct"] == 1 and ok["detection_correct"] == 1 and math.isnan(ok["iou"])
    bad = M.instruct_item("Detection: abnormal. Localization: [0, 0, 50, 50].", False, "normal", [], 64, 64)
    assert bad["mau_correct"] == 0 and bad["detection_correct"] == 0
    two = M.instruct_item("Detection: abnormal. Localization: [50, 50, 100, 100]. Recognition: cyst.", True, "cyst",
                          [[0, 0, 8, 8], [32, 32, 64, 64]], 64, 64)
    assert two["iou"] == 1.0 and two["mau_correct"] == 1
    no_box = M.instruct_item("Detection: abnormal. Recognition: cyst.", True, "cyst", [], 64, 64)
    assert no_box["mau_correct"] == 1 and math.isnan(no_box["iou"])  # truth without a box: IoU not required


def test_instruct_summary():
    rows = [{"source": "deeplesion", "abnormal": True, "category": "cyst", "bboxes": TRUTH, "width": 64, "height": 64},
            {"source": "deeplesion", "abnormal": True, "category": "cyst", "bboxes": TRUTH, "width": 64, "height": 64},
            {"source": "kvasir", "abnormal": False, "category": "normal", "bboxes": [], "width": 64, "height": 64}]
    preds = ["Detection: abnormal. Localization: [0, 0, 50, 100]. Recognition: cyst.",
             "Detection: abnormal. Localization: [0, 0, 50, 20]. Recognition: mass.",
             "Detection: abnormal. Localization: none."]
    metrics, table = M.summarize_instruct(M.score_instruct(preds, rows))
    assert metrics["mau_acc"] == pytest.approx(1 / 3) and metrics["detection_acc"] == pytest.approx(2 / 3)
    assert metrics["category_acc"] == 0.5 and metrics["mean_iou"] == pytest.approx(0.6)  # (1.0 + 0.2) / 2
    assert metrics["normal_acc"] == 0.0 and metrics["abnormal_acc"] == 0.5
    assert list(table.index) == ["deeplesion", "kvasir", "all"] and math.isnan(table.loc["kvasir", "mean_iou"])


# ----------------------------------------------------------------------------------------------- conversations
AML, MM = list(dt.PATHS["AML"]), list(dt.PATHS["MM"])


def test_conv_item_known_answers():
    cats = [1, 2, 3, 4, 5]
    assert M.conv_item(AML, cats, AML) == {"question_acc": 1.0, "conversation_correct": 1.0,
                                           "diagnosis_correct": 1.0, "consistent": 1.0, "parse_rate": 1.0}
    wrong_path = M.conv_item(MM, cats, AML)  # a valid path, but the wrong one: consistent, 3 of 5 right
    assert wrong_path["question_acc"] == 0.6 and wrong_path["conversation_correct"] == 0.0
    assert wrong_path["diagnosis_correct"] == 0.0 and wrong_path["consistent"] == 1.0
    mixed = M.conv_item(AML[:4] + ["MM"], cats, AML)  # myeloblasts -> MM lies on no path
    assert mixed["question_acc"] == 0.8 and mixed["consistent"] == 0.0
    unparsed = M.conv_item(AML[:2] + [None] + AML[3:], cats, AML)
    assert unparsed["consistent"] == 0.0 and unparsed["parse_rate"] == 0.8 and unparsed["diagnosis_correct"] == 1.0
    rev = [5, 4, 3, 2, 1]
    first_only = M.conv_item(["AML", None, None, None, None], rev, AML[::-1])  # diagnosis asked first
    assert first_only["diagnosis_correct"] == 1.0 and first_only["question_acc"] == 0.2


def test_conv_scores_from_text_and_by_variant():
    def row(variant, cats, diagnosis="AML"):
        return {"source": "bone_marrow", "variant": variant, "diagnosis": diagnosis, "turn_categories": cats,
                "turn_labels": [dt.PATHS[diagnosis][c - 1] for c in cats]}

    phrases = {c: dt.KEY_PHRASES[c][dt.PATHS["AML"][c - 1]] for c in range(1, 6)}
    rows = [row("standard", [1, 2, 3, 4, 5]), row("reversed", [5, 4, 3, 2, 1]), row("hint_wrong", [1, 2, 3, 4, 5])]
    answers = [[f"It is {phrases[c]}." for c in r["turn_categories"]] for r in rows]
    answers[2][4] = "The patch shows multiple myeloma."  # followed the wrong hint
    df = M.score_conv(answers, rows)
    assert df.pred_labels[0] == AML
    metrics, tables = M.summarize_conv(df)
    assert metrics["question_acc"] == pytest.approx(14 / 15) and metrics["diagnosis_acc"] == pytest.approx(2 / 3)
    assert list(tables["by_variant"].index) == ["standard", "reversed", "hint_wrong", "all"]
    assert metrics["by_variant"]["hint_wrong"] == {"question_acc": 0.8, "conversation_acc": 0.0,
                                                   "diagnosis_acc": 0.0, "path_consistency": 0.0, "parse_rate": 1.0}
    assert list(tables["by_source"].index) == ["bone_marrow", "all"]


# ----------------------------------------------------------------------------------------------- reports
def test_report_metrics_use_the_libraries():
    import sacrebleu

    refs = ["There is a small cyst in the liver.", "The lungs are clear."]
    preds = ["There is a small cyst in the liver.", "The heart is normal."]
    assert M.bleu(refs, refs) == pytest.approx(1.0)
    norm = [" ".join(M.tokens(t)) for t in preds], [" ".join(M.tokens(t)) for t in refs]
    assert M.bleu(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(norm[0], [norm[1]]).score / 100)
    # ROUGE-L F1 of "the heart is normal" vs "the lungs are clear": LCS "the" -> P = 1/4, R = 1/4.
    assert M.rouge_l(preds[1], refs[1]) == pytest.approx(0.25)
    rows = [{"source": "nih_cxr", "answer": r} for r in refs]
    metrics, table = M.summarize_report(M.score_report(preds, rows))
    assert metrics["rouge_l"] == pytest.approx(0.625) and list(table.index) == ["nih_cxr", "all"]


# ----------------------------------------------------------------------------------------------- properties
@settings(max_examples=200, deadline=None)
@given(text, text)
def test_vqa_parsers_are_total(pred, truth):
    assert M.parse_yes_no(pred) in (None, "yes", "no")
    assert 0.0 <= M.open_recall(pred, truth) <= 1.0
    assert isinstance(M.closed_correct(pred, truth), bool)


answer_word = st.sampled_from(["left", "right", "CT", "MRI", "x-ray", "lung", "the liver", "yes", "no"])


@settings(max_examples=200, deadline=None)
@given(answer_word, st.sampled_from(["", "The ", "the ", "A "]), st.sampled_from(["", ".", "!", " ", ",  "]),
       st.booleans(), st.booleans())
def test_closed_match_ignores_case_articles_punctuation_and_tags(truth, article, punct, upper, tagged):
    pred = article + (truth.upper() if upper else truth) + punct
    pred = f"<think>some words</think><answer>{pred}</answer>" if tagged else pred
    assert M.closed_correct(pred, truth)
    assert M.normalize_answer(M.normalize_answer(pred)) == M.normalize_answer(pred)  # idempotent


@settings(max_examples=200, deadline=None)
@given(text, text)
def test_closed_match_is_symmetric_off_yes_no_and_normalisation_idempotent(a, b):
    if not (M.is_yes_no(a) or M.is_yes_no(b)) and "<" not in a + b:
        assert M.closed_correct(a, b) == M.closed_correct(b, a)
    assert M.normalize_text(M.normalize_text(a)) == M.normalize_text(a)
    if a.isascii():  # unicode case maps are not round trips ("µ".upper().lower() == "μ")
        assert M.normalize_text(a) == M.normalize_text(a.swapcase())


@settings(max_examples=200, deadline=None)
@given(text, st.lists(st.text(max_size=20), max_size=5))
def test_parse_choice_is_total(pred, options):
    assert M.parse_choice(pred, options) in (None, "A", "B", "C", "D")
    assert M.parse_choice(pred) in (None, "A", "B", "C", "D")


@settings(max_examples=200, deadline=None)
@given(text | st.from_regex(r"Detection: (abnormal|no abnormality)\. Localization: \[\d{1,3}, \d{1,3}, \d{1,3}, "
                            r"\d{1,3}\]\. Recognition: (cyst|mass|normal)\."), st.booleans())
def test_instruct_item_is_total_and_bounded(pred, abnormal):
    item = M.instruct_item(pred, abnormal, "cyst" if abnormal else "normal", TRUTH if abnormal else [], 64, 64)
    assert all(in_unit(item[k]) for k in ("detection_correct", "category_correct", "iou", "mau_correct"))
    assert item["mau_correct"] <= item["detection_correct"]


@settings(max_examples=100, deadline=None)
@given(st.permutations([1, 2, 3, 4, 5]), st.lists(text, min_size=5, max_size=5))
def test_conv_scores_are_total_and_bounded(cats, answers):
    row = {"turn_categories": list(cats), "turn_labels": [dt.PATHS["MM"][c - 1] for c in cats]}
    df = M.score_conv([answers], [row])
    for col in ("question_acc", "conversation_correct", "diagnosis_correct", "consistent", "parse_rate"):
        assert in_unit(float(df[col][0]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(text, st.text(min_size=1, max_size=50)), min_size=1, max_size=4))
def test_report_metrics_are_bounded(pairs):
    preds, refs = zip(*pairs)
    assert 0.0 <= M.bleu(list(preds), list(refs)) <= 1.0
    assert all(0.0 <= M.rouge_l(p, r) <= 1.0 for p, r in pairs)


# ----------------------------------------------------------------------------------------------- on built data
def _gold(task: str, rows: list[dict]) -> list:
    return [r["answers"] for r in rows] if task == "conv" else [r["messages"][-1]["content"] for r in rows]


@pytest.mark.parametrize("task", ev.TASKS)
def test_reference_answers_score_perfectly(data_dir, task):
    # The parsers must match our own templates exactly: the targets themselves get full marks.
    rows = ev.load_rows(data_dir, task, "test", None)
    metrics, tables = ev.score(task, _gold(task, rows), rows)
    perfect = {"vqa": ["closed_acc", "open_recall"], "mcq": ["acc"], "conv": ["question_acc", "conversation_acc",
               "path_consistency"], "instruct": ["mau_acc", "detection_acc", "category_acc"],
               "report": ["bleu", "rouge_l"]}[task]
    assert all(metrics[k] == pytest.approx(1.0) for k in perfect), metrics
    if task == "instruct":  # integer-percent boxes of small lesions at 64 px cost some IoU, never the 0.5 bar
        assert tables["instruct_rows"].iou.dropna().min() >= 0.5
    by_source = tables[f"{task}_by_source"]
    assert by_source.index[-1] == "all" and by_source.loc["all", "n"] == len(rows)
    assert set(by_source.index[:-1]) == {r["source"] for r in rows}


def test_majority_baseline_matches_train_majorities(data_dir):
    from collections import Counter

    base = ev.majority_baseline(data_dir)
    train, test = ev._train_test(data_dir, "vqa")
    closed_test = [r["answer"] for r in test if r["answer_type"] == "closed"]
    assert base["vqa"]["closed_answer"] in ("yes", "no")
    share = closed_test.count(base["vqa"]["closed_answer"]) / len(closed_test)
    assert base["vqa"]["closed_acc"] == pytest.approx(share)
    _, test = ev._train_test(data_dir, "instruct")
    assert base["instruct"]["mau_acc"] == pytest.approx(sum(not r["abnormal"] for r in test) / len(test))
    train, test = ev._train_test(data_dir, "mcq")
    assert Counter(r["answer"] for r in train)[base["mcq"]["letter"]] == max(Counter(r["answer"] for r in train)
                                                                            .values())
    _, test = ev._train_test(data_dir, "conv")
    share = sum(r["diagnosis"] == base["conv"]["diagnosis"] for r in test) / len(test)
    assert base["conv"]["diagnosis_acc"] == pytest.approx(share)
    assert base["conv"]["path_consistency"] == 1.0  # a constant valid path is always consistent
    assert set(base["conv"]["by_variant"]) >= {"standard", "hint_wrong", "all"}


# ----------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir):
    from repro.models import build_tiny_vlm, load_vlm

    texts = dt.corpus_texts() + [r["messages"][-1]["content"] for t in ("mcq", "instruct", "report")
                                 for r in ev.load_rows(data_dir, t, "train", 20)]
    path = build_tiny_vlm(tmp_path_factory.mktemp("tiny"), texts, size="smoke")
    return load_vlm(path, device="cpu")


def _walk(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _walk(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_evaluate_end_to_end_on_a_random_tiny_vlm(tiny, data_dir):
    model, processor = tiny
    model.train()  # evaluate() must generate in eval mode and hand the model back as it found it
    out = ev.evaluate(model, processor, data_dir, limit=2, max_new_tokens={t: 4 for t in ev.TASKS}, batch_size=2,
                      progress=False)
    assert set(out) == {"metrics", "tables", "samples"} and set(out["metrics"]) == set(ev.TASKS)
    for name, value in _walk(out["metrics"]):
        assert in_unit(value), (name, value)
    assert {"vqa_rows", "vqa_by_source", "mcq_by_source", "instruct_rows", "instruct_by_source", "conv_by_variant",
            "conv_by_source", "report_by_source"} <= set(out["tables"])
    assert all(isinstance(t, pd.DataFrame) for t in out["tables"].values())
    assert len(out["tables"]["vqa_rows"]) == 2 and out["tables"]["instruct_by_source"].loc["all", "n"] == 2
    for samples in out["samples"].values():
        assert 1 <= len(samples) <= ev.N_SAMPLES and {"prompt", "prediction", "truth"} <= set(samples[0])
    conv_preds = out["tables"]["conv_rows"].pred_labels
    assert all(len(p) == 5 for p in conv_preds) and len(out["samples"]["conv"][0]["prediction"]) == 5
    assert model.training
    model.eval()


def test_evaluate_scores_only_the_conversation_variants_asked(tiny, data_dir):
    model, processor = tiny
    every = ev.load_rows(data_dir, "conv", "test", 2)
    want = [r["id"] for r in every if r.get("variant", "standard") == "standard"]
    assert 0 < len(want) < len(every)  # the fixture has other orders of the same images
    out = ev.evaluate(model, processor, data_dir, tasks=["conv"], limit=2, max_new_tokens=4, batch_size=2,
                      progress=False, variants=["standard"])
    rows = out["tables"]["conv_rows"]
    assert len(rows) == len(want) and set(out["metrics"]["conv"]["by_variant"]) <= {"standard", "all"}
    with pytest.raises(ValueError, match="no test conversation of variant"):
        ev.evaluate(model, processor, data_dir, tasks=["conv"], limit=2, variants=["sideways"], progress=False)


def test_generation_is_greedy_deterministic_and_independent_of_batching(tiny, data_dir):
    # Left padding with an attention mask: a row's answer must not depend on its batch neighbours' lengths.
    model, processor = tiny
    rows = ev.load_rows(data_dir, "mcq", "test", 2) + ev.load_rows(data_dir, "vqa", "test", 2)
    one = ev.generate(model, processor, rows, 5, batch_size=1, progress=False)
    four = ev.generate(model, processor, rows, 5, batch_size=4, progress=False)
    assert one == four and all(isinstance(p, str) for p in one)
    # each row three times in a row (pass@k's layout): one shared prompt pass per row, the same greedy answers
    thrice = ev.generate(model, processor, [r for r in rows for _ in range(3)], 5, batch_size=6, progress=False)
    assert thrice == [p for p in one for _ in range(3)]


def test_stratified_limit_covers_every_stratum_and_keeps_images_whole():
    from repro.evaluation import stratified_indices

    ids = ["a", "a", "b", "c", "d", "e", "f"]
    strata = ["x/1", "x/1", "x/1", "x/2", "y/1", "y/1", "z/1"]
    idx = stratified_indices(ids, strata, 4)
    assert {strata[i] for i in idx} >= {"x/1", "x/2", "y/1"}
    assert idx == sorted(idx) and {0, 1} <= set(idx)  # both rows of image "a"
    assert stratified_indices(ids, strata, 100) == list(range(7))


def test_conversation_turns_continue_from_the_previous_turns_cache(tiny, data_dir, monkeypatch):
    # repro.turn_cache: turn t starts after what turn t-1 already encoded (the image and the history), and the answers
    # are those of re-encoding every turn from scratch.
    from repro import turn_cache

    model, processor = tiny
    rows = ev.load_rows(data_dir, "conv", "test", 3)
    reused, real = [], turn_cache.reuse

    def spy(*args, **kwargs):
        cache = real(*args, **kwargs)
        reused.append(None if cache is None else cache.get_seq_length())
        return cache

    monkeypatch.setattr(turn_cache, "reuse", spy)
    carried = ev.generate_conversation(model, processor, rows, 6, batch_size=2, progress=False)
    fresh = ev.generate_conversation(model, processor, rows, 6, batch_size=2, progress=False, reuse_cache=False)
    assert carried == fresh and all(len(a) == 5 for a in carried)
    # one reuse call per turn and batch; the first turn has nothing to reuse, the later ones start after the image
    # (64 tokens) and the history (a random model's odd answers may end the reuse early, or cut an image: not reused)
    turns = [reused[i:i + 5] for i in range(0, len(reused), 5)]
    assert len(turns) == math.ceil(len(rows) / 2) and all(t[0] is None for t in turns)
    later = [n for t in turns for n in t[1:]]
    assert sum(n is not None and n > 64 for n in later) >= 0.75 * len(later)

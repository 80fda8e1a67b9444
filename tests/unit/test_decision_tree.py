"""Dr-LLaVA decision tree, paraphrase banks, exact parsers and conversation builder."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.data import conversations as cv
from repro.data import decision_tree as dt
from repro.data.schema import BONE_MARROW_CLASSES, META_COLUMNS

QUALITY_CODE = {"normal": 0, "AML": 0, "MM": 0, "blood": 1, "clot": 2}


def fake_records(n_per_class: int = 3) -> list[dict]:
    """Tiny stand-ins for SynthMed bone-marrow records (the generator is not needed here)."""
    recs = []
    for diag in BONE_MARROW_CLASSES:
        for i in range(n_per_class):
            recs.append({
                "id": f"bm-{diag}-{i}",
                "image": np.zeros((8, 8, 3), dtype=np.uint8),
                "source": "bone_marrow",
                "modality": "microscopy",
                "region": "bone marrow",
                "category": diag,
                "abnormal": diag in ("AML", "MM"),
                "bboxes": [],
                "mask": np.zeros((8, 8), dtype=np.uint8),
                "extra": {"diagnosis": diag, "quality": QUALITY_CODE[diag]},
            })
    return recs


# ---------------------------------------------------------------- tree
def test_paths_use_category_labels():
    assert set(dt.PATHS) == set(BONE_MARROW_CLASSES)
    for path in dt.PATHS.values():
        for cat, label in enumerate(path, start=1):
            assert label in dt.CATEGORY_LABELS[cat]
    assert dt.path_for("adequate_AML") == dt.PATHS["AML"] == dt.path_for("AML_Mono")


@pytest.mark.parametrize("diag", list(dt.PATHS))
def test_adjacent_consistency_along_paths(diag):
    path = dt.PATHS[diag]
    for a, b in itertools.permutations(range(1, 6), 2):
        assert dt.is_consistent_pair(a, path[a - 1], b, path[b - 1])


def test_inconsistent_pairs():
    assert not dt.is_consistent_pair(1, "unsuitable", 5, "AML")
    assert not dt.is_consistent_pair(3, "normal", 4, "myeloblasts")
    assert not dt.is_consistent_pair(4, "plasma cells", 5, "AML")
    assert not dt.is_consistent_pair(2, "blood", 2, "clot")
    assert not dt.is_consistent_pair(9, "x", 1, "suitable")
    # the released boolean is accepted for category 1; a pair on a *wrong* path is still consistent (as released)
    assert dt.is_consistent_pair(1, True, 3, "abnormal")
    assert dt.is_consistent_pair(2, "blood", 3, "inadequate")


# ---------------------------------------------------------------- banks and parser
def test_bank_sizes_and_disjointness():
    for banks, cores in ((dt.QUESTION_BANKS, dt.QUESTION_CORES), (dt.ANSWER_BANKS, dt.ANSWER_CORES)):
        for key in cores:
            train, test = banks["train"][key], banks["test"][key]
            assert len(train) == len(set(train)) == 15
            assert len(test) == len(set(test)) == 5
            assert not set(train) & set(test)
    assert set(dt.QUESTION_CATEGORY) == set(dt.QUESTION_CORES)
    assert set(dt.ANSWER_LABEL) == set(dt.ANSWER_CORES)


def test_every_paraphrase_parses_to_its_label():
    for split in ("train", "test"):
        for key, texts in dt.ANSWER_BANKS[split].items():
            cat, label = dt.ANSWER_LABEL[key]
            for text in texts:
                assert dt.KEY_PHRASES[cat][label] in text.lower()
                assert dt.classify_answer(cat, text) == label, (key, text)


@pytest.mark.parametrize(
    "cat,text,label",
    [
        (1, "It is not suitable for diagnosis.", "unsuitable"),
        (1, "No. It is suitable for diagnosis.", "suitable"),
        (1, "It isn't suitable.", None),
        (1, "Suitable or not suitable, hard to say.", None),
        (2, "No excess blood; the sample is adequate.", "adequate"),
        (2, "The sample is not adequate.", None),
        (3, "There are no abnormal cells; it looks normal.", "normal"),
        (4, "There are no myeloblasts and no abnormality.", "no abnormality"),
        (5, "Acute myeloid leukemia or multiple myeloma.", None),
        (5, "Not AML but multiple myeloma.", "MM"),
        (5, "", None),
    ],
)
def test_parser_negation_and_ambiguity(cat, text, label):
    assert dt.classify_answer(cat, text) == label


@settings(max_examples=400, deadline=None)
@given(cat=st.integers(min_value=-1, max_value=7), text=st.text(max_size=200))
def test_classify_answer_is_total(cat, text):
    out = dt.classify_answer(cat, text)
    assert out is None or out in dt.CATEGORY_LABELS[cat]
    assert isinstance(dt.released_rules_label(cat, text), str)


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.sampled_from(sorted({w for t in dt.corpus_texts() for w in t.split()})), max_size=25))
def test_classify_answer_total_on_corpus_words(words):
    text = " ".join(words)
    for cat in range(1, 6):
        out = dt.classify_answer(cat, text)
        assert out is None or out in dt.CATEGORY_LABELS[cat]


def test_classify_answer_bad_inputs():
    assert dt.classify_answer(1, None) is None
    assert dt.classify_answer("1", "suitable for diagnosis") is None


def test_released_rules_known_failures():
    # docs/methods.md §1(b) caveat 2, reproduced on our own templates
    assert dt.released_rules_label(2, dt.ANSWER_CORES["a_11"][0]) == "no match"
    assert dt.released_rules_label(4, "There is an abnormal number of blast cells.") == "no match"
    assert dt.released_rules_label(5, "There is no disease; the marrow is normal.") == "inadequate"
    assert dt.released_rules_label(5, "The image indicates multiple myeloma.") == "MM"
    assert dt.released_rules_label(1, "Yes, this region is suitable for diagnosis.") == "suitable"


# ---------------------------------------------------------------- conversations
@pytest.mark.parametrize("split", ["train", "test"])
def test_every_variant_passes_check(split):
    rows = cv.build_conversations(fake_records(), split, seed=0, variants=cv.VARIANTS)
    assert len(rows) == 5 * 3 * len(cv.VARIANTS)
    for row in rows:
        assert cv.check_conversation(row) == [], cv.conversation_text(row)
        assert row["task"] == "conv" and len(row["messages"]) == 10
        assert row["messages"][0]["role"] == "user"
        assert all(k in row for k in META_COLUMNS)
        assert isinstance(row["image"], np.ndarray)
        bank = dt.ANSWER_BANKS[dt.bank_split(split)]
        for a_key, answer in zip(row["answer_keys"], row["answers"]):
            assert answer in bank[a_key]


def test_orders_and_hints():
    rows = cv.build_conversations(fake_records(4), "test", seed=3, variants=cv.VARIANTS)
    orders = set()
    for row in rows:
        cats = row["turn_categories"]
        assert sorted(cats) == [1, 2, 3, 4, 5]
        if row["variant"] == "shuffled":
            orders.add(tuple(cats))
        elif row["variant"] == "reversed":
            assert cats == [5, 4, 3, 2, 1]
        else:
            assert cats == [1, 2, 3, 4, 5]
        if row["variant"].startswith(("hint_", "confirm_")):
            q = row["messages"][2 * row["hint_turn"]]["content"]
            assert dt.CLAIMS[cv.HINT_CATEGORY][row["hint_label"]] in q
            true = dt.path_for(row["diagnosis"])[cv.HINT_CATEGORY - 1]
            assert (row["hint_label"] == true) == row["variant"].endswith("_correct")
            assert row["turn_labels"][-1] == true
        else:
            assert row["hint_turn"] == -1 and row["hint_label"] == ""
    assert len(orders) > 3  # shuffling really permutes


def test_determinism_and_variant_independence():
    recs = fake_records()
    a = cv.build_conversations(recs, "train", seed=7, variants=cv.VARIANTS)
    b = cv.build_conversations(list(reversed(recs)), "train", seed=7, variants=cv.VARIANTS)
    key = {r["conv_id"]: r["messages"] for r in b}
    assert all(key[r["conv_id"]] == r["messages"] for r in a)
    c = cv.build_conversations(recs, "train", seed=8, variants=cv.VARIANTS)
    assert [r["messages"] for r in a] != [r["messages"] for r in c]
    # the same image keeps its wording across variants; only the manipulation differs
    std = {r["id"]: r for r in a if r["variant"] == "standard"}
    for r in a:
        if r["variant"] == "shuffled":
            assert sorted(r["answers"]) == sorted(std[r["id"]]["answers"])


def test_check_conversation_catches_errors():
    row = cv.build_conversations(fake_records(1)[1:2], "train", seed=0)[0]  # an AML record
    assert cv.check_conversation(row) == []
    bad = dict(row, turn_labels=list(dt.PATHS["MM"]))
    assert cv.check_conversation(bad)
    msgs = [dict(m) for m in row["messages"]]
    msgs[9]["content"] = "The image indicates multiple myeloma."
    assert any("parses" in p for p in cv.check_conversation(dict(row, messages=msgs)))
    assert cv.check_conversation({"messages": None})
    assert cv.check_conversation(dict(row, turn_categories=[1, "a", 3, 4, 5]))
    assert "AML" in cv.conversation_text(row)


def test_bad_records_raise():
    rec = fake_records(1)[0]
    with pytest.raises(ValueError):
        cv.build_conversations([dict(rec, extra={"diagnosis": "leukemia"})], "train", 0)
    with pytest.raises(ValueError):
        cv.build_conversations([dict(rec, extra={"diagnosis": "normal", "quality": "blood"})], "train", 0)
    with pytest.raises(ValueError):
        cv.build_conversations([rec], "train", 0, variants=("sideways",))


@pytest.mark.parametrize("n", [1, 2])
def test_answer_paraphrases_knob_limits_wordings(n):
    recs = fake_records(8)
    rows = cv.build_conversations(recs, "train", seed=0, variants=("standard", "shuffled"), answer_paraphrases=n)
    by_key: dict[str, set[str]] = {}
    for r in rows:
        assert cv.check_conversation(r) == []
        for key, answer in zip(r["answer_keys"], r["answers"]):
            by_key.setdefault(key, set()).add(answer)
    assert all(a <= set(dt.ANSWER_BANKS["train"][k][:n]) for k, a in by_key.items())
    full = cv.build_conversations(recs, "train", seed=0, variants=("standard",))
    assert len({a for r in full for a in r["answers"]}) > len({a for r in rows for a in r["answers"]})

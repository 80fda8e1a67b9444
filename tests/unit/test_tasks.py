"""Task builders (tasks.py) and splits (splits.py) on small fake records, independent of SynthMed."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro import metrics
from repro.data import schema, splits, tasks
from repro.rewards import vqa

SIZE = 32


def fake_records(n_per_class: int = 4, seed: int = 0) -> list[dict]:
    """n_per_class records for every (source, category-or-normal), with a box for abnormal MAU images."""
    rng = np.random.default_rng(seed)
    recs = []
    for source, info in schema.SOURCES.items():
        for category in info["categories"] + [schema.NORMAL]:
            for k in range(n_per_class):
                abnormal = category in ("AML", "MM") if source == "bone_marrow" else category != schema.NORMAL
                x1, y1 = (int(v) for v in rng.integers(0, SIZE // 2, 2))
                box = [x1, y1, x1 + int(rng.integers(2, SIZE // 2)), y1 + int(rng.integers(2, SIZE // 2))]
                has_box = abnormal and source != "bone_marrow"
                recs.append({
                    "id": f"{source}-{category}-{k}", "image": rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8),
                    "source": source, "modality": info["modality"], "region": info["regions"][k % len(info["regions"])],
                    "category": category, "abnormal": abnormal, "bboxes": [box] if has_box else [],
                    "mask": np.zeros((SIZE, SIZE), np.uint8), "extra": {"size": "small"} if k == 0 else {},
                })
    return recs


RECS = fake_records()
PER_TASK = {
    "vqa": {"question": str, "answer": str, "answer_type": str, "question_kind": str},
    "mcq": {"question": str, "options": list, "answer": str, "answer_text": str, "reason_facts": dict},
    "instruct": {"answer": str, "bbox_text": str},
    "report": {"answer": str},
    "reason": {"question": str, "answer": str, "answer_type": str, "question_kind": str},
}


def user_prompts(rows):
    return {r["messages"][0]["content"] for r in rows}


@pytest.mark.parametrize("task", list(tasks.BUILDERS))
def test_schema_columns_and_types(task):
    rows = tasks.BUILDERS[task](RECS, seed=1)
    assert rows
    for r in rows:
        assert r["task"] == task and isinstance(r["image"], np.ndarray) and r["image"].dtype == np.uint8
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert all(isinstance(m["content"], str) and m["content"] for m in r["messages"])
        for col in schema.META_COLUMNS:
            assert col in r
        assert isinstance(r["abnormal"], bool) and isinstance(r["bboxes"], list)
        for col, typ in PER_TASK[task].items():
            assert isinstance(r[col], typ), (task, col)
    if task != "vqa":  # bone marrow only makes VQA rows (module docstring)
        assert all(r["source"] != "bone_marrow" for r in rows)


@pytest.mark.parametrize("task", list(tasks.BUILDERS))
def test_deterministic_for_seed(task):
    def text(rows):
        return [(r["id"], r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows]

    assert text(tasks.BUILDERS[task](RECS, seed=3)) == text(tasks.BUILDERS[task](RECS, seed=3))
    assert text(tasks.BUILDERS[task](RECS, seed=3)) != text(tasks.BUILDERS[task](RECS, seed=4))


@pytest.mark.parametrize("task", list(tasks.BUILDERS))
def test_train_and_test_wordings_are_disjoint(task):
    train = tasks.BUILDERS[task](RECS, seed=0, split="train")
    test = tasks.BUILDERS[task](RECS, seed=0, split="test")
    if task == "mcq":  # the stem is paraphrased; options and the format line are shared on purpose
        train_q, test_q = {r["question"] for r in train}, {r["question"] for r in test}
    else:
        train_q, test_q = user_prompts(train), user_prompts(test)
    assert train_q and test_q and not train_q & test_q
    for train_bank, test_bank in tasks.BANKS.values():
        assert not set(train_bank) & set(test_bank)


@pytest.mark.parametrize("share", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_yes_share_knob(share):
    rows = tasks.build_vqa(RECS, seed=0, yes_share=share, closed_per_image=2)
    assert abs(tasks.yes_share_of(rows) - share) < 0.02
    closed = [r for r in rows if r["answer_type"] == "closed"]
    assert {r["answer"] for r in closed} <= {"yes", "no"}
    assert len(closed) == 2 * len(RECS) and len(rows) == 3 * len(RECS)


def test_vqa_answers_are_true_facts():
    rows = tasks.build_vqa(RECS, seed=2, closed_per_image=3)
    assert {r["question_kind"] for r in rows} >= {"abnormal", "modality", "region", "category", "finding",
                                                  "adequate", "malignant", "diagnosis"}
    for r in rows:
        q, kind, yes = r["question"], r["question_kind"], r["answer"] == "yes"
        if r["answer_type"] == "open":
            assert r["answer"] == r[{"finding": "category", "diagnosis": "category"}.get(kind, kind)]
        elif kind in ("abnormal", "malignant"):
            assert yes == r["abnormal"]
        elif kind == "adequate":
            assert yes == (r["category"] not in ("blood", "clot"))
        else:
            assert yes == bool(re.search(rf"\b{re.escape(r[{'diagnosis': 'category'}.get(kind, kind)])}\b", q)), q


def test_closed_targets_name_what_the_image_shows_then_the_yes_no():
    rows = [r for r in tasks.build_vqa(RECS, seed=2, closed_per_image=3) if r["answer_type"] == "closed"]
    for r in rows:
        target, kind = r["messages"][1]["content"], r["question_kind"]
        seen, _, said = target.rpartition(", so ")
        assert said == f"{r['answer']}." and metrics.parse_yes_no(target) == r["answer"]  # the metric reads the answer
        assert metrics.parse_yes_no(seen) is None  # nothing before it reads as a yes/no ("no abnormality" would)
        truth = {"modality": r["modality"], "region": r["region"]}.get(kind, r["category"])
        assert f" {truth}" in f"{seen} ", (kind, target)  # the true modality, region or finding ("normal")
        assert seen == tasks.closed_target(r, kind, r["answer"]).rpartition(", so ")[0]  # the same for yes and no
    row = {"modality": "CT", "region": "liver", "category": "normal", "abnormal": False}
    assert tasks.closed_target(row, "modality", "no") == "It is a CT image, so no."
    assert tasks.closed_target(row, "category", "no") == "It looks normal, so no."
    assert tasks.closed_target({**row, "category": "clot"}, "adequate", "no") == "It shows clot, so no."


def test_reason_rows_teach_the_format_on_open_questions_never_letters():
    from repro.rewards import vqa

    rows = tasks.build_reason(RECS, seed=0)
    assert len(rows) == sum(r["source"] != "bone_marrow" for r in RECS)
    for r in rows:
        prompt, target = r["messages"][0]["content"], r["messages"][1]["content"]
        assert prompt.endswith(tasks.REASON_INSTRUCTION) and "A. " not in prompt  # no options: never MCQ
        assert vqa.format_ok(target) and vqa.answer_text(target) == r["answer"]
        facts = {"modality": r["modality"], "region": r["region"], "category": r["category"]}
        assert r["answer"] in facts.values() and facts["region"] in vqa.think_text(target)


def test_vqa_rejects_bad_share():
    with pytest.raises(ValueError):
        tasks.build_vqa(RECS, seed=0, yes_share=1.5)


def test_mcq_letters_balanced_and_target_format():
    rows = tasks.build_mcq(RECS, seed=0)
    counts = Counter(r["answer"] for r in rows)
    assert set(counts) == set("ABCD") and max(counts.values()) - min(counts.values()) <= 1
    for r in rows:
        assert len(r["options"]) == 4 and len(set(r["options"])) == 4
        assert r["options"]["ABCD".index(r["answer"])] == r["answer_text"]
        target = r["messages"][1]["content"]
        m = re.fullmatch(r"<think>(.+)</think><answer>(.+)</answer>", target)
        assert m and m.group(2) == r["answer_text"]  # the option's text (build_mcq says why), scored as its letter:
        assert metrics.parse_choice(target, r["options"]) == r["answer"]
        assert vqa.explain_accuracy(target, r["answer"], r["options"])["reward"] == 1.0
        wrong = next(o for o in r["options"] if o != r["answer_text"])
        assert vqa.explain_accuracy(target.replace(f"<answer>{r['answer_text']}<", f"<answer>{wrong}<"),
                                    r["answer"], r["options"])["reward"] == 0.0
        facts = r["reason_facts"]
        assert facts == {"modality": r["modality"], "region": r["region"], "finding": r["category"]}
        verdicts = re.findall(r"([A-D])\. (.+?): (yes|no)\.", m.group(1))  # every option once, in order, one "yes"
        assert [(L, o) for L, o, _ in verdicts] == list(zip("ABCD", r["options"]))
        assert [L for L, _, v in verdicts if v == "yes"] == [r["answer"]]
        assert all(f"{L}. {o}" in r["messages"][0]["content"] for L, o in zip("ABCD", r["options"]))


def test_mcq_conclusion_in_about_half_of_the_targets_and_judged_like_the_walk():
    rows = tasks.build_mcq(RECS, seed=0, per_image=3)
    ended = 0
    for r in rows:
        walk = tasks.option_judgments(r["options"], r["answer"])
        think = vqa.think_text(r["messages"][1]["content"])
        end = f"So the answer is {r['answer']}: {r['answer_text']}, the only option marked yes."
        assert think in (walk, f"{walk} {end}")  # the walk, then the conclusion or nothing
        ended += think != walk
        # the conclusion is not read as a verdict: the gold reasoning stays fully right for the option-walk judge
        assert vqa.RuleJudge().details(think, r["reason_facts"])["score"] == 1.0
    assert 0.35 < ended / len(rows) < 0.65  # CONCLUDE_SHARE 0.5 over ~200 rows
    assert tasks.mcq_reasoning(["mass", "cyst", "normal", "nodule"], "D", True) == (
        "A. mass: no. B. cyst: no. C. normal: no. D. nodule: yes. So the answer is D: nodule, the only option marked "
        "yes.")


@pytest.mark.parametrize("per_image", [2, 3])
def test_mcq_more_questions_per_image_append_other_kinds(per_image):
    one = tasks.build_mcq(RECS, seed=0)
    many = tasks.build_mcq(RECS, seed=0, per_image=per_image)
    assert len(many) == per_image * len(one)
    assert many[:len(one)] == one  # a `limit` over the first rows sees the same data
    kinds: dict[str, list[str]] = {}
    for r in many:
        kinds.setdefault(r["id"], []).append(r["question_kind"])
        assert r["options"]["ABCD".index(r["answer"])] == r["answer_text"]
    assert all(len(k) == per_image and len(set(k)) == per_image for k in kinds.values())  # no kind asked twice
    assert Counter(r["answer"] for r in many[len(one):]).keys() == set("ABCD")


def test_mcq_per_image_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="per_image=4"):
        tasks.build_mcq(RECS, seed=0, per_image=4)


def test_instruct_targets_parse_back_exactly():
    rows = tasks.build_instruct(RECS, seed=0)
    assert any(r["abnormal"] for r in rows) and any(not r["abnormal"] for r in rows)
    for r in rows:
        target = r["messages"][1]["content"]
        assert target.index("Detection") < target.index("Localization") < target.index("Recognition")
        parsed = tasks.parse_instruct(target)
        assert parsed["abnormal"] == r["abnormal"] and parsed["category"] == r["category"]
        if r["abnormal"]:
            h, w = r["image"].shape[:2]
            assert r["bbox_text"] == tasks.box_text(r["bboxes"][0], w, h)
            assert parsed["bbox"] == schema.parse_bbox(r["bbox_text"]) is not None
        else:
            assert r["bbox_text"] == "" and parsed["bbox"] is None


def test_box_text_never_degenerate():
    assert tasks.box_text([500, 500, 501, 501], 1000, 1000) == "[50, 50, 51, 51]"
    assert schema.parse_bbox(tasks.box_text([999, 0, 1000, 1], 1000, 1000)) is not None


@pytest.mark.parametrize("text, expected", [
    ("Detection: no abnormality. Localization: none. Recognition: normal chest, X-ray.", (False, None, "normal")),
    ("abnormal: a polyp at [10, 20, 30, 40]", (True, [10.0, 20.0, 30.0, 40.0], "polyp")),
    ("it is not abnormal", (False, None, None)),
    ("Recognition: kidney stone. Detection: abnormal", (True, None, "kidney stone")),
    ("", (None, None, None)),
])
def test_parse_instruct_free_text(text, expected):
    p = tasks.parse_instruct(text)
    assert (p["abnormal"], p["bbox"], p["category"]) == expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.none(), st.integers(), st.text(alphabet="Detcion:LlzRgabnrmy[], 0123456789.")))
def test_parse_instruct_is_total(text):
    p = tasks.parse_instruct(text)
    assert set(p) == {"abnormal", "bbox", "category"}
    assert p["abnormal"] in (None, True, False)


def test_reports_are_2_to_4_sentences_and_varied():
    rows = tasks.build_reports(RECS, seed=0)
    for r in rows:
        n = len(re.findall(r"[.!?](\s|$)", r["answer"]))
        assert 2 <= n <= 4, r["answer"]
        assert r["region"] in r["answer"].lower()
        if r["abnormal"]:
            assert r["category"] in r["answer"]
        else:
            assert re.search(r"normal|no lesion|clear|unremarkable", r["answer"])
            assert not any(c in r["answer"] for c in tasks.MAU_CATEGORIES)
    assert len({r["answer"] for r in rows}) > len(rows) // 3
    small = [r for r in rows if r["id"].endswith("-0") and r["abnormal"] and r["category"] in ("nodule", "polyp")]
    assert small and all("small" in r["answer"] for r in small)  # extra["size"] is used when present


def test_vocabulary_is_small():
    words = set()
    for build in tasks.BUILDERS.values():
        for split in ("train", "test"):
            for r in build(RECS, seed=0, split=split):
                for m in r["messages"]:
                    words |= set(re.findall(r"[A-Za-z]+", m["content"].lower()))
    assert 60 < len(words) < 400


# ----------------------------------------------------------------------------------------------- splits
def test_assign_splits_stratified_disjoint_deterministic():
    recs = fake_records(n_per_class=20)
    parts = splits.assign_splits(recs, seed=0)
    ids = {k: [r["id"] for r in v] for k, v in parts.items()}
    assert sum(len(v) for v in ids.values()) == len(recs)
    assert not set(ids["train"]) & set(ids["val"]) and not set(ids["train"]) & set(ids["test"])
    assert not set(ids["val"]) & set(ids["test"])
    for part, frac in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
        counts = Counter((r["source"], r["category"]) for r in parts[part])
        assert all(counts[k] == round(20 * frac) for k in {(r["source"], r["category"]) for r in recs}), part
    again = splits.assign_splits(list(reversed(recs)), seed=0)
    assert {k: {r["id"] for r in v} for k, v in again.items()} == {k: set(v) for k, v in ids.items()}
    other = splits.assign_splits(recs, seed=1)
    assert {r["id"] for r in other["test"]} != set(ids["test"])
    with pytest.raises(ValueError):
        splits.assign_splits(recs, seed=0, fractions=(0.5, 0.2, 0.2))


def test_generalization_filters():
    rows = tasks.build_vqa(RECS, seed=0)
    held = ["deeplesion:cyst", "nih_cxr:effusion"]
    train, test = (splits.heldout_categories(rows, held, p) for p in ("train", "test"))
    assert len(train) + len(test) == len(rows) and test
    assert {f"{r['source']}:{r['category']}" for r in test} == set(held)
    assert not {f"{r['source']}:{r['category']}" for r in train} & set(held)
    train, test = (splits.leave_one_source_out(rows, "tbx11k", p) for p in ("train", "test"))
    assert {r["source"] for r in test} == {"tbx11k"} and "tbx11k" not in {r["source"] for r in train}
    train, test = (splits.single_modality(RECS, "CT", p) for p in ("train", "test"))
    assert {r["modality"] for r in train} == {"CT"} and "CT" not in {r["modality"] for r in test}
    assert len(train) + len(test) == len(RECS)
    with pytest.raises(ValueError):
        splits.heldout_categories(rows, ["deeplesion"], "train")
    with pytest.raises(ValueError):
        splits.leave_one_source_out(rows, "kvasir", "val")


def test_subsample_nested_and_deterministic():
    rows = list(range(200))
    small, big = splits.subsample(rows, 0.2, seed=5), splits.subsample(rows, 0.6, seed=5)
    assert len(small) == 40 and len(big) == 120 and set(small) <= set(big)
    assert small == sorted(small) and small == splits.subsample(rows, 0.2, seed=5)
    assert splits.subsample(rows, 1.0, seed=0) == rows and splits.subsample(rows, 0.0, seed=0) == []

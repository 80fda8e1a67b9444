"""Rule rewards: totality on arbitrary strings (hypothesis), known answers, released Dr-LLaVA bugs, hacking probes."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.data import decision_tree as dt
from repro.data.tasks import instruct_target, mcq_target
from repro.rewards import breakdown, clinical, localization, rules, text_of, vqa

# ---------------------------------------------------------------- fixtures
MCQ_ROW = {"answer": "B", "options": ["nodule", "cyst", "mass", "normal"], "category": "cyst", "region": "liver",
           "modality": "CT", "reason_facts": {"modality": "CT", "region": "liver", "finding": "cyst"}}
GOOD_MCQ = mcq_target("This is a CT image of the liver. It shows cyst.", "B")
INS_ROW = {"abnormal": True, "bboxes": [[16, 16, 32, 48]], "category": "nodule", "region": "lung", "modality": "CT",
           "image_size": 64}
GOOD_INS = instruct_target(True, "[25, 25, 50, 75]", "nodule", "lung", "CT")
NORMAL_ROW = {"abnormal": False, "bboxes": [], "category": "normal", "region": "lung", "modality": "CT"}
CATS = [1, 2, 3, 4, 5]


def answers_for(diagnosis: str, split: str = "train", k: int = 0) -> list[str]:
    return [dt.ANSWER_BANKS[split][a][k] for _, a in dt.TURN_KEYS[diagnosis]]


def conv_row(diagnosis: str, order=CATS) -> dict:
    path = dt.PATHS[diagnosis]
    refs = dict(zip(CATS, answers_for(diagnosis, "test")))
    return {"turn_categories": list(order), "turn_labels": [path[c - 1] for c in order],
            "answers": [refs[c] for c in order]}


def call(f, completion, row):
    """One completion through the TRL signature, with the junk kwargs TRL adds."""
    cols = {k: [v] for k, v in row.items()}
    out = f(prompts=["q"], completions=[completion], completion_ids=[[1, 2]], trainer_state=None,
            log_extra=lambda *a: None, log_metric=lambda *a: None, **cols)
    assert isinstance(out, list) and len(out) == 1
    return out[0]


TEXT_REWARDS = [
    (vqa.format_reward, MCQ_ROW), (vqa.accuracy_reward, MCQ_ROW), (vqa.semantic_reward, MCQ_ROW),
    (vqa.semantic_fraction_reward, MCQ_ROW), (vqa.ecr_reward, MCQ_ROW), (vqa.cwr_reward, MCQ_ROW),
    (localization.alr_reward, INS_ROW), (localization.relevance_reward, INS_ROW),
    (localization.relevance_reward, NORMAL_ROW), (rules.drllava_reward, conv_row("AML", [3, 1, 5, 2, 4])),
    (rules.drllava_gated_reward, conv_row("blood")), (rules.released_reward, conv_row("MM")),
    (clinical.clinical_relevance, {"answer": "CT image of the liver. There is a small cyst."}),
]

FRAGMENTS = ["<think>", "</think>", "<answer>", "</answer>", "A", "B", "(B)", "B. cyst", "cyst", "nodule", "CT",
             "liver", "normal", "no ", "\n", " ", "[", "]", ",", "25", "100", "-3", "1e9", "Detection:",
             "Localization:", "Recognition:", "abnormal", "suitable", "not", "blood", "clot", "AML", "mm", "quality",
             "too poor", "myeloblasts", "plasma cells", "no disease", "\u00e9", "\x00", "\ud7ff", "NaN", "inf"]
texts = st.one_of(st.text(max_size=200), st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))


def check_value(v, f):
    lo, hi = f.range
    v = float(v) if isinstance(v, int) and not isinstance(v, bool) else v
    assert v is None or (isinstance(v, float) and math.isfinite(v) and lo <= v <= hi), (f.__name__, v)


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(texts)
def test_text_rewards_total_on_any_string(s):
    # explain() is the unclipped per-row value, so this also proves the documented ranges hold before the guard.
    for f, row in TEXT_REWARDS:
        check_value(f.explain(s, **row)["reward"], f)


@settings(max_examples=1_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(texts)
def test_trl_signature_on_any_string(s):
    for f, row in TEXT_REWARDS:
        check_value(call(f, s, row), f)
        check_value(call(f, [{"role": "assistant", "content": s}], row), f)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(texts, max_size=7), st.lists(st.integers(-2, 7), max_size=6),
       st.lists(st.sampled_from(["suitable", "AML", "MM", "blood", "x", ""]), max_size=6))
def test_conversation_rewards_total_on_any_turns(turns, cats, labels):
    row = {"turn_categories": cats, "turn_labels": labels, "answers": labels}
    for f in (rules.drllava_reward, rules.drllava_gated_reward, rules.released_reward):
        check_value(call(f, turns, row), f)


@pytest.mark.parametrize("junk", [None, 3, 2.5, {"a": 1}, [None, 5], b"bytes", [{"role": "user", "content": "x"}]])
def test_rewards_accept_odd_completion_objects(junk):
    for f, row in TEXT_REWARDS:
        check_value(call(f, junk, row), f)
    assert vqa.format_reward(prompts=None, completions=None) == []


def test_names_and_explain_exist():
    names = {f.__name__ for f, _ in TEXT_REWARDS}
    assert {"format_reward", "accuracy_reward", "semantic_reward", "alr_reward", "drllava_reward",
            "drllava_released_reward"} <= names
    for f, row in TEXT_REWARDS:
        assert "reward" in breakdown(f, "text", **row)


# ---------------------------------------------------------------- Dr-LLaVA
@pytest.mark.parametrize("diagnosis", list(dt.PATHS))
@pytest.mark.parametrize("order", [CATS, [5, 4, 3, 2, 1], [2, 5, 1, 4, 3]])
def test_drllava_perfect_conversation_scores_9(diagnosis, order):
    row = conv_row(diagnosis, order)
    ans = dict(zip(CATS, answers_for(diagnosis)))
    turns = [ans[c] for c in order]
    assert call(rules.drllava_reward, turns, row) == 9.0  # list of turns
    assert call(rules.drllava_reward, "\n".join(turns), row) == 9.0  # rollout joined with "\n"
    assert call(rules.drllava_reward, [{"role": "assistant", "content": t} for t in turns], row) == 9.0
    assert call(rules.drllava_gated_reward, turns, row) == 6.0


def test_drllava_known_values():
    row = conv_row("AML")
    good = answers_for("AML")
    # Coherent but wrong path (MM): turns 1-3 right, 4-5 wrong (0 each); all 4 pairs still lie on a valid path.
    assert call(rules.drllava_reward, good[:3] + answers_for("MM")[3:], row) == 3 + 4
    # Gibberish on turn 2: -0.5, and both pairs touching it lose consistency.
    d = breakdown(rules.drllava_reward, [good[0], "lorem ipsum"] + good[2:], **row)
    assert d["correctness"] == [1, -0.5, 1, 1, 1] and d["consistency"] == [0, 0, 1, 1] and d["reward"] == 5.5
    # Missing turns are unparseable; extra lines are ignored.
    assert call(rules.drllava_reward, good[:2], row) == 2 - 1.5 + 1
    assert breakdown(rules.drllava_reward, good + ["more"], **row)["extra"] == ["more"]
    assert call(rules.drllava_reward, "", row) == -2.5
    assert call(rules.drllava_reward, good, {"turn_categories": None, "turn_labels": None}) is None


def test_gated_variant():
    row = conv_row("blood")
    good = answers_for("blood")
    assert call(rules.drllava_gated_reward, [answers_for("AML")[0]] + good[1:], row) == 0.0  # quality wrong
    assert call(rules.drllava_gated_reward, ["???"] + good[1:], row) == -0.5  # quality unparseable
    assert call(rules.drllava_gated_reward, good[:1] + ["???"] * 4, row) == 1 + 1 - 2.0
    shuffled = conv_row("blood", [3, 1, 2, 4, 5])  # the gate follows the category-1 turn wherever it is asked
    ans = dict(zip(CATS, good))
    turns = [ans[c] for c in shuffled["turn_categories"]]
    turns[1] = answers_for("AML")[0]
    assert call(rules.drllava_gated_reward, turns, shuffled) == 0.0


# docs/methods.md §1(b) caveat 2: released rules vs templates. (category, text, true label, released label)
PARSER_BUGS = [
    (2, "High percentage of marrow nucleated cells, adequate and optimal for diagnosis.", "adequate", "no match"),
    (4, "There is an abnormal number of blast cells.", "myeloblasts", "no match"),
    (5, "There is no disease; the marrow is normal.", "normal", "inadequate"),
    (5, "The image indicates no disease.", "normal", "inadequate"),
    (2, "The sample shows a clot with dense particles.", "clot", "no match"),
    (1, "This area is suitable for diagnosis of malignancies.", "suitable", "suitable"),
    (5, "In summary it is acute myeloid leukemia.", "AML", "MM"),  # "mm" inside "summary"
]


@pytest.mark.parametrize("cat,text,label,released", PARSER_BUGS)
def test_parser_bug_cases(cat, text, label, released):
    assert dt.classify_answer(cat, text) == label
    assert dt.released_rules_label(cat, text) == released


def test_released_reward_shows_the_bugs():
    row = conv_row("normal")
    good = answers_for("normal")
    ours = breakdown(rules.drllava_reward, good, **row)
    rel = breakdown(rules.released_reward, good, **row)
    assert ours["reward"] == 9.0
    # The normal diagnosis parses as "inadequate" and the adequate turn as "no match": consistency is lost.
    assert rel["outcomes"][1] == "no match" and rel["outcomes"][4] == "inadequate"
    assert rel["reward"] == 6.0 and rel["length"] == [0.0] * 5  # the length term is dead on labels
    # "no match" == "no match": gibberish on the adequate turn earns +1 under the released rules, -0.5 with ours.
    junk = good[:1] + ["zzz"] + good[2:]
    assert breakdown(rules.released_reward, junk, **row)["correctness"][1] == 1.0
    assert breakdown(rules.drllava_reward, junk, **row)["correctness"][1] == -0.5
    # A wrong "too poor" diagnosis counts as right for a normal reference (both "inadequate").
    wrong = good[:4] + [answers_for("blood")[4]]
    assert breakdown(rules.released_reward, wrong, **row)["correctness"][4] == 1.0
    assert breakdown(rules.drllava_reward, wrong, **row)["correctness"][4] == 0.0
    assert call(rules.released_reward, good, {"turn_categories": CATS}) is None  # needs reference texts
    assert rules.length_term("no abnormality", "MM") == pytest.approx(-1.2)


def test_turn_accuracy():
    row = conv_row("MM")
    acc = rules.turn_accuracy(answers_for("MM")[:4] + ["?"], row["turn_categories"], row["turn_labels"])
    assert acc == {"question": 0.8, "conversation": 0.0, "diagnosis": False}


# ---------------------------------------------------------------- Zhu et al.
@pytest.mark.parametrize("text,fmt", [
    (GOOD_MCQ, 1.0), ("  " + GOOD_MCQ + "\n", 1.0), ("<think>a</think>\n<answer>B</answer>", 1.0),
    ("<think></think><answer></answer>", 1.0), ("x" + GOOD_MCQ, 0.0), (GOOD_MCQ + " ok", 0.0),
    ("<answer>B</answer><think>a</think>", 0.0), (GOOD_MCQ + "<answer>B</answer>", 0.0),
    ("<think><think>a</think><answer>B</answer>", 0.0), ("<answer>B</answer>", 0.0), ("", 0.0),
])
def test_format(text, fmt):
    assert call(vqa.format_reward, text, {}) == fmt


@pytest.mark.parametrize("answer,acc", [
    ("B", 1), ("b", 1), ("(B)", 1), ("B.", 1), ("B. cyst", 1), ("B) Cyst", 1), ("cyst", 1), (" Cyst. ", 1),
    ("A", 0), ("B. nodule", 0), ("A B C D", 0), ("nodule", 0), ("", 0), ("a cyst", 0), ("Z", 0),
])
def test_accuracy(answer, acc):
    assert call(vqa.accuracy_reward, f"<think>x</think><answer>{answer}</answer>", MCQ_ROW) == acc


def test_accuracy_edge_cases():
    assert call(vqa.accuracy_reward, "B", MCQ_ROW) == 0.0  # no answer block
    assert call(vqa.accuracy_reward, "<answer>A</answer><answer>B</answer>", MCQ_ROW) == 0.0  # hedging
    assert call(vqa.accuracy_reward, GOOD_MCQ, {**MCQ_ROW, "answer": None}) is None


@pytest.mark.parametrize("reasoning,binary,frac", [
    ("This is a CT image of the liver. It shows cyst.", 1, 1.0),
    ("CT of the liver, a cyst, no nodule.", 1, 1.0),  # a negated competitor is not named
    ("This is a CT image of the liver.", 0, 2 / 3),
    ("CT liver cyst nodule mass normal", 0, 2 / 3),  # listing every finding fails the finding facet
    ("X-ray CT MRI of the liver with a cyst", 0, 2 / 3),
    ("", 0, 0.0),
])
def test_semantic(reasoning, binary, frac):
    text = mcq_target(reasoning, "B")
    assert call(vqa.semantic_reward, text, MCQ_ROW) == binary
    assert call(vqa.semantic_fraction_reward, text, MCQ_ROW) == pytest.approx(frac)
    cols = {k: MCQ_ROW[k] for k in ("category", "region", "modality")}  # without reason_facts
    assert call(vqa.semantic_fraction_reward, text, cols) == pytest.approx(frac)


@pytest.mark.parametrize("walk,score", [
    ("A. nodule: no. B. cyst: yes. C. mass: no. D. normal: no.", 1.0),  # the gold option walk
    ("A. nodule: yes. B. cyst: no. C. mass: no. D. normal: no.", 0.0),  # "yes" on a distractor
    ("A. nodule: yes. B. cyst: yes. C. mass: no. D. normal: no.", 0.0),  # two "yes": hedging
    ("A. nodule: no. B. cyst: no. C. mass: no. D. normal: no.", 0.0),   # the truth rejected, nothing stated
    ("A. nodule, cyst, mass: yes. B. normal: no.", 0.0),                # a hedged option
    ("A. CT: yes. B. X-ray: no. C. MRI: no. D. ultrasound: no.", 1.0),  # a modality question: that facet only
    ("A. CT: no. B. X-ray: yes. C. MRI: no. D. ultrasound: no.", 0.0),
])
def test_semantic_judges_an_option_walk_by_its_verdicts(walk, score):
    text = mcq_target(walk, "B")
    assert call(vqa.semantic_fraction_reward, text, MCQ_ROW) == pytest.approx(score)
    assert call(vqa.semantic_reward, text, MCQ_ROW) == score
    one = mcq_target("A. cyst: yes.", "A")  # a single verdict is not a walk: read as free text (1 of 3 facets)
    assert call(vqa.semantic_fraction_reward, one, MCQ_ROW) == pytest.approx(1 / 3)


def test_semantic_normal_and_plugged_judge():
    row = {"reason_facts": {"modality": "X-ray", "region": "chest", "finding": "normal"}}
    assert call(vqa.semantic_reward, mcq_target("X-ray of the chest. There is no abnormality, it is normal.", "A"),
                row) == 1.0
    assert call(vqa.semantic_reward, "no think block", row) == 0.0
    assert call(vqa.semantic_reward, GOOD_MCQ, {}) is None

    class Half:
        def __call__(self, reasoning, facts):
            return 0.5 if facts["finding"] in reasoning else float("nan")

    assert call(vqa.make_semantic_reward(Half(), binary=False), GOOD_MCQ, MCQ_ROW) == 0.5
    assert call(vqa.make_semantic_reward(Half(), threshold=0.5), GOOD_MCQ, MCQ_ROW) == 1.0
    assert call(vqa.make_semantic_reward(Half()), "<think>x</think>", MCQ_ROW) == 0.0  # nan -> 0


def test_length_rewards():
    ecr, cwr = vqa.make_ecr(cap=10), vqa.make_cwr(cap=10)
    assert ecr.__name__ == "ecr_reward_cap10"
    five = "<think>one two three four five</think><answer>{}</answer>"
    assert call(ecr, five.format("A"), MCQ_ROW) == 0.5
    assert call(cwr, five.format("A"), MCQ_ROW) == 0.0  # wrong
    assert call(cwr, five.format("B"), MCQ_ROW) == 0.5
    farm = "<think>" + "word " * 500 + "</think><answer>B</answer>"
    assert call(ecr, farm, MCQ_ROW) == 1.0 and call(ecr, "word " * 500, MCQ_ROW) == 0.0  # capped; needs <think>
    assert call(cwr, five.format("B"), {"answer": None}) is None


# ---------------------------------------------------------------- UMed-LVLM
def test_alr_known_values():
    assert call(localization.alr_reward, GOOD_INS, INS_ROW) == pytest.approx(1.0)
    half = instruct_target(True, "[25, 25, 50, 50]", "nodule", "lung", "CT")
    assert call(localization.alr_reward, half, INS_ROW) == pytest.approx(0.5)
    assert call(localization.alr_reward, "no box", INS_ROW) == 0.0
    assert call(localization.alr_reward, GOOD_INS, NORMAL_ROW) is None
    assert call(localization.alr_reward, GOOD_INS, {**INS_ROW, "abnormal": False}) is None
    whole = instruct_target(True, "[0, 0, 100, 100]", "nodule", "lung", "CT")
    assert call(localization.alr_reward, whole, INS_ROW) == pytest.approx(1 / 8)  # the box is 1/8 of the image
    # Image size from the image column (PIL .size) or default 64.
    from PIL import Image
    row = {**INS_ROW, "image_size": None, "image": Image.new("RGB", (128, 128))}
    exact = instruct_target(True, "[12.5, 12.5, 25, 37.5]", "nodule", "lung", "CT")  # the pixel box at 128 px
    assert call(localization.alr_reward, exact, row) == pytest.approx(1.0)
    assert call(localization.alr_reward, half, row) == 0.0
    assert call(localization.alr_reward, GOOD_INS, {**INS_ROW, "image_size": None}) == pytest.approx(1.0)


def test_relevance_known_values():
    assert call(localization.relevance_reward, GOOD_INS, INS_ROW) == 1.0
    normal = instruct_target(False, "", "normal", "lung", "CT")
    assert call(localization.relevance_reward, normal, NORMAL_ROW) == 1.0
    assert call(localization.relevance_reward, normal, INS_ROW) == 0.5  # structure + consistent, wrong finding
    d = breakdown(localization.relevance_reward, GOOD_INS.replace("nodule", "nodule, cyst"), **INS_ROW)
    assert d["contradictions"] == ["several categories named"]
    prompt = "Detect, localize and recognize any abnormality in this image."  # copying the question
    assert call(localization.relevance_reward, prompt, INS_ROW) == 0.25
    assert call(localization.relevance_reward, GOOD_INS, {}) is None


def test_max_normalize_and_aar():
    assert localization.max_normalize([0.2, 0.4, None, 0.0]) == [0.5, 1.0, None, 0.0]
    assert localization.max_normalize([0.0, 0.0, -1.0]) == [0.0, 0.0, 0.0]
    assert localization.max_normalize([1, 2, 3, 6], group_size=2) == [0.5, 1.0, 0.5, 1.0]
    assert localization.max_normalize([1, 3, 2, 6], group_ids=["a", "b", "a", "b"]) == [0.5, 0.5, 1.0, 1.0]
    assert localization.max_normalize([float("nan"), 1.0]) == [None, 1.0]
    total = localization.aar_total([1.0, 0.5, 1.0, 0.0], [0.2, 0.4, None, None], [1, 4, 2, 2], group_size=2)
    assert total == pytest.approx([1.0 + 0.5 + 0.25, 0.5 + 1 + 1, 1.0 + 0 + 1, 0 + 0 + 1])
    aar = localization.make_aar_reward(group_size=2, scale="sum")  # the mean scale: tests/unit/test_localization.py
    cols = {k: [INS_ROW[k]] * 2 for k in INS_ROW}
    half = instruct_target(True, "[25, 25, 50, 50]", "nodule", "lung", "CT")
    assert aar(None, [GOOD_INS, half], **cols) == pytest.approx([2.0, 1.5])
    assert aar.__name__ == "aar_reward"


def test_text_of():
    assert text_of([{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}, "b"]) == "a\nb"
    assert text_of(None) == ""


# ---------------------------------------------------------------- similarity metric (not a reward)
REF = "<think>CT image showing the liver. There is no abnormality, it is normal.</think><answer>A</answer>"


def test_similarity_known_answers():
    # content words: pred [ct, liver, normal]; ref [ct, liver, no, abnormality, normal] -> P 1, R 3/5, F1 0.75
    pred = "<think>This is a CT image of the liver. It looks normal.</think><answer>B</answer>"
    assert vqa.reasoning_similarity(pred, REF) == pytest.approx(0.75)
    assert vqa.reasoning_similarity(REF, REF) == 1.0
    assert vqa.reasoning_similarity("CT liver normal", REF) == 0.0  # no <think> block
    assert vqa.reasoning_similarity("<think>it is the image</think>", REF) == 0.0  # no content word
    # plural "s" dropped, case folded: [nodule, lung] vs [lung, nodule] -> 1
    assert vqa.reasoning_similarity("<think>Nodules in LUNG</think>", "lung shows nodule") == 1.0


def test_similarity_disagrees_with_the_training_judge_where_their_rules_differ():
    facts = {"finding": "normal", "region": "liver", "modality": "CT"}
    bare = "<think>ct liver normal</think><answer>A</answer>"
    assert vqa.RuleJudge()(vqa.think_text(bare), facts) == 1.0  # the judge's full score ...
    assert vqa.reasoning_similarity(bare, REF) == pytest.approx(0.75)  # ... is not the metric's
    competing = "<think>CT image showing the liver. There is no abnormality, it is normal, or a cyst.</think>"
    assert vqa.RuleJudge()(vqa.think_text(competing), facts) < 1.0  # names a competing finding: facet fails
    # [ct, liver, no, abnormality, normal, cyst] vs the reference's 5: P 5/6, R 1 -> F1 10/11
    assert vqa.reasoning_similarity(competing, REF) == pytest.approx(10 / 11)


def test_similarity_scores_read_the_rows_reference():
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": REF}]}, {"messages": []}]
    assert vqa.reference_reasoning(rows[0]) == "CT image showing the liver. There is no abnormality, it is normal."
    assert vqa.similarity_scores([REF, REF], rows) == [1.0, None]


def test_length_rewards_carry_their_cap():
    assert vqa.make_ecr(20).cap == 20 and vqa.make_cwr(7).cap == 7 and vqa.ecr_reward.cap == vqa.DEFAULT_CAP
    assert vqa.completion_tokens_needed(20) == 52


def test_drllava_turn_rewards_sum_to_the_conversation_reward():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from repro.data import decision_tree as dt
    from repro.rewards import rules

    cats = [1, 2, 3, 4, 5]
    vocab = [lab for c in cats for lab in dt.CATEGORY_LABELS[c]] + ["", "maybe", "I cannot tell"]

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.sampled_from(vocab), min_size=0, max_size=6), st.permutations(cats))
    def check(answers, order):
        labels = [dt.CATEGORY_LABELS[c][0] for c in order]
        completion = [{"role": "assistant", "content": a} for a in answers]
        parts = rules.drllava_turn_rewards(completion, list(order), labels)
        total = rules.drllava_reward(completions=[completion], turn_categories=[list(order)], turn_labels=[labels])[0]
        assert len(parts) == len(order)
        assert sum(parts) == pytest.approx(total)

    check()


def test_every_turn_split_reward_sums_to_its_reward():
    from repro.papers import ablations
    from repro.rewards import rules

    cats, labels = [1, 2, 3, 4, 5], ["suitable", "adequate", "abnormal", "plasma cells", "MM"]
    texts = ["The region is suitable.", "It is adequate.", "Yes, abnormal.", "Plasma cells.", "no idea"]
    completion = [{"role": "assistant", "content": t} for t in texts]
    fn = ablations.drllava_variant("w/o path term")
    assert sum(fn.per_turn(completion, turn_categories=cats, turn_labels=labels)) == pytest.approx(
        fn(completions=[completion], turn_categories=[cats], turn_labels=[labels])[0])
    refs = ["It is suitable.", "It is adequate.", "Yes.", "Plasma cells.", "Multiple myeloma."]
    parts = rules.released_reward.per_turn(completion, turn_categories=cats, answers=refs)
    assert sum(parts) == pytest.approx(rules.released_reward(completions=[completion], turn_categories=[cats],
                                                             answers=[refs])[0])
    assert not hasattr(rules.drllava_gated_reward, "per_turn")  # not a sum over turns: credited at the end

"""LLM judges: the score parser (known answers, total on any string), the panels' aggregation with scripted models,
the hooks into rewards.vqa / rewards.clinical (defaults unchanged), and the plumbing end to end on a tiny random
causal LM saved in tmp_path and loaded by path without the network."""

from __future__ import annotations

import math
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro import models
from repro.rewards import clinical, llm_judge, vqa

THINK = "<think>A cyst in the liver on CT.</think><answer>B</answer>"
FACTS = {"finding": "cyst", "region": "liver", "modality": "CT"}


@pytest.mark.parametrize("text,kw,expected", [
    ("0.8", {}, 0.8), ("Score: .4 because", {}, 0.4), ("4/5", {}, 0.8), ("80 %", {}, 0.8), ("1", {}, 1.0),
    ("I give it 3", {}, None), ("2/0", {}, None), ("no number", {}, None), ("", {}, None), (None, {}, None),
    ("Yes, it is consistent.", {"yes_no": True}, 1.0), ("no.", {"yes_no": True}, 0.0),
    ("yesterday 0.6", {"yes_no": True}, 0.6), ("1" * 400, {}, None), ("-0.5", {}, None),
])
def test_parse_score_known_answers(text, kw, expected):
    got = llm_judge.parse_score(text, **kw)
    assert got == pytest.approx(expected) if expected is not None else got is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.from_regex(r"\s*\d{1,3}(\.\d{1,3})?\s*(%|/\s*\d{1,2})?\s*", fullmatch=True),
       st.booleans())
def test_parse_score_is_total_and_in_range(text, yes_no):
    got = llm_judge.parse_score(text, yes_no=yes_no)
    assert got is None or (isinstance(got, float) and math.isfinite(got) and 0.0 <= got <= 1.0)


class Scripted:
    """A stand-in model: answers from a list, records the prompts."""

    def __init__(self, name, answers):
        self.name, self.answers, self.prompts = name, list(answers), []

    def generate(self, prompt):
        self.prompts.append(prompt)
        return self.answers[min(len(self.prompts), len(self.answers)) - 1]


def test_semantic_panel_mean_majority_and_abstention():
    panel = [Scripted("a", ["yes"]), Scripted("b", ["No."]), Scripted("c", ["Yes"])]
    assert llm_judge.SemanticLLMJudge(panel)(THINK, FACTS) == pytest.approx(2 / 3)
    assert llm_judge.SemanticLLMJudge(panel, "majority")(THINK, FACTS) == 1.0
    assert "finding: cyst; region: liver; modality: CT" in panel[0].prompts[0]
    assert llm_judge.SemanticLLMJudge([Scripted("a", ["hmm"]), Scripted("b", ["no"])])(THINK, FACTS) == 0.0
    assert llm_judge.SemanticLLMJudge([Scripted("a", ["?"])])(THINK, FACTS) == 0.0  # all abstain
    with pytest.raises(ValueError):
        llm_judge.SemanticLLMJudge(panel, "median")


def test_semantic_reward_hook_and_default():
    assert isinstance(llm_judge.make_semantic_judge([]), vqa.RuleJudge)
    judge = llm_judge.make_semantic_judge([Scripted("a", ["no"]), Scripted("b", ["no"])])
    reward = vqa.make_semantic_reward(judge=judge)
    assert reward([""], [THINK], reason_facts=[FACTS]) == [0.0]  # the rule judge would give 1 here
    assert vqa.semantic_reward([""], [THINK], reason_facts=[FACTS]) == [1.0]


def test_clinical_panel_sees_previous_score_and_reaches_consensus():
    a, b = Scripted("med42", ["0.6", "0.6"]), Scripted("biomistral", ["I agree: 0.6"])
    panel = llm_judge.make_clinical_panel([a, b])
    c = clinical.consensus("a mass in the liver", "a cyst in the liver", panel)
    assert c.scores == [0.6, 0.6] and c.agreed and c.judges == ["med42", "biomistral"]
    assert "previous reviewer gave 0.6" in b.prompts[0] and "previous" not in a.prompts[0]
    reward = clinical.make_clinical_relevance(panel=llm_judge.make_clinical_panel([Scripted("x", ["nonsense"])]))
    assert reward([""], ["a mass"], answer=["a cyst"]) == [0.0]  # round 1 unparseable -> 0, then it keeps 0
    assert llm_judge.make_clinical_panel([]) is clinical.DEFAULT_PANEL
    assert clinical.clinical_relevance([""], ["a mass in the liver"], answer=["a cyst in the liver"]) == [
        pytest.approx(clinical.consensus("a mass in the liver", "a cyst in the liver").mean)]
    same = llm_judge.make_clinical_panel([Scripted("m", ["0.2"]), Scripted("m", ["0.2"])])
    assert [j.name for j in same] == ["m#0", "m#1"]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A random 1-layer Llama with a trained byte-level tokenizer, saved like a hub checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("judge") / "tiny-judge"
    tok = models.train_tokenizer(["yes no 0.2 0.4 0.6 0.8 1 score clinical finding region modality"] * 4, 300)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_tiny_random_lm_end_to_end_without_network(tiny_lm, monkeypatch):
    def refuse(*a, **k):
        raise RuntimeError("network attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    judge = llm_judge.make_semantic_judge([tiny_lm, tiny_lm], aggregate="majority", device="cpu", max_new_tokens=4)
    assert judge.lms[0] is judge.lms[1]  # one load per path
    score = judge(THINK, FACTS)
    assert score in (0.0, 1.0) and len(judge.last) == 2 and isinstance(judge.last[0]["text"], str)
    reward = vqa.make_semantic_reward(judge=judge, binary=False)
    assert 0.0 <= reward([""], [THINK], reason_facts=[FACTS])[0] <= 1.0
    panel = llm_judge.make_clinical_panel([tiny_lm], device="cpu", max_new_tokens=4)
    c = clinical.consensus("a mass in the liver", "a cyst in the liver", panel, max_rounds=2)
    assert 1 <= len(c.scores) <= 2 and all(0.0 <= s <= 1.0 for s in c.scores)
    with pytest.raises(FileNotFoundError, match="judge model folder not found"):
        llm_judge.make_semantic_judge([tiny_lm.parent / "absent"])

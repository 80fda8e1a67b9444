"""Zhu et al. 2025 (arXiv 2505.13973) GRPO rewards for multiple-choice Med-VQA (docs/methods.md §2).

Target format (tasks.mcq_target): "<think>reasoning</think><answer>X</answer>". Columns: answer (letter A-D),
options (list of option texts), reason_facts ({"modality", "region", "finding"}) or category / region / modality.

    format      1 iff the text is  ws* <think>...</think> ws* <answer>...</answer> ws*  with exactly one of each tag
                (nothing before or after but whitespace), else 0. R1 convention [INFERRED]. Range {0, 1}.
    accuracy    1 iff the single <answer> block names the correct option: its letter ("B", "(B)", "B.", "B) cyst"
                when the text agrees with option B) or exactly its text ("cyst", case-insensitive), else 0. Several
                <answer> blocks, several letters or a letter contradicting its text score 0 (hedging earns
                nothing). Range {0, 1}; None without a valid answer letter.
    semantic    paper: an expert LLM judges whether the reasoning is clinically consistent -> {0, 1}. Here a Judge
                (`__call__(reasoning, facts) -> float in [0, 1]`) scores the <think> text; RuleJudge (default) is the
                fraction of facets (finding = category or "normal", region, modality) named correctly *and alone*
                (naming a competing value of the same facet fails it, so listing every finding earns nothing).
                semantic_reward = 1[score >= threshold] (threshold 1: every facet right); semantic_fraction_reward
                is the score itself, for analysis. No <think> block -> 0. None without facts.
    ECR         Extended Chain Reward, min(L / L_cap, 1), unconditional; L = whitespace words inside <think> (0
                without a think block). Range [0, 1]. The paper gives the idea, not the form: capped linear
                [INFERRED]; the cap keeps the reward bounded.
    CWR         Correctness-weighted length reward, accuracy * min(L / L_cap, 1). Range [0, 1]; None when accuracy
                is None.

Evaluation metric, not a reward (never in a training reward set):
    similarity  Zhu et al.'s table column "similarity score between the reasoning and the reference": content-word
                F1 between the generated <think> text and the *reference* reasoning of the row (the gold target's
                <think>), see reasoning_similarity. Kept apart from the semantic reward so that the table does not
                measure a model by the rule it was trained on (issue: the similarity column used to be
                semantic_reward itself, so grpo_semantic rose on it by construction).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from typing import Protocol

from repro.data import schema
from repro.data.tasks import MAU_REGIONS, MCQ_MODALITIES
from repro.rewards import make_reward

_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_FORMAT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.S)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_LETTER = re.compile(r"\(?([A-Z])\)?[.:]?(?:\s+(.+))?", re.S)
DEFAULT_CAP = 32  # words; the synthetic reasoning is ~12 words, so the cap asks for about three times that
# Tokens a completion needs for a <think> of `cap` words (completion_tokens_needed). Measured on the gold MCQ targets
# with the cpu tokenizer (byte-level BPE, vocab 2048): 1.26 tokens per reasoning word on average (max 1.5), and 11
# tokens for the tags and the answer letter, + 1 for the end-of-turn token. 2 per word leaves room for words the
# policy makes up (they split into more pieces than the corpus words the BPE was trained on).
TOKENS_PER_WORD = 2
FORMAT_TOKENS = 12


def think_text(text: str) -> str | None:
    m = _THINK.search(text)
    return m.group(1) if m else None


def answer_text(text: str) -> str | None:
    """Content of the single <answer> block; None when there is none or more than one."""
    found = _ANSWER.findall(text)
    return found[0] if len(found) == 1 else None


def format_ok(text: str) -> bool:
    return all(text.count(t) == 1 for t in _TAGS) and _FORMAT.fullmatch(text) is not None


def _norm(s) -> str:
    return " ".join(str(s).casefold().split()).rstrip(".").strip()


def chosen_option(answer: str | None, options) -> int | None:
    """Index of the option an <answer> content names, or None (no, several or contradicting choices)."""
    if answer is None:
        return None
    s = " ".join(answer.split()).rstrip(".")
    opts = [_norm(o) for o in options] if isinstance(options, (list, tuple)) else []
    if len(s) == 1 and s.isalpha():  # a lone letter may be lower case; with text after it, "a" is an article
        return ord(s.upper()) - 65
    m = _LETTER.fullmatch(s)
    if m:
        idx, rest = ord(m.group(1)) - 65, m.group(2)
        if rest is None:
            return idx
        if idx < len(opts) and _norm(rest) == opts[idx]:
            return idx
    hits = [i for i, o in enumerate(opts) if o == _norm(s)]
    return hits[0] if len(hits) == 1 else None


def _truth_index(answer) -> int | None:
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().isalpha():
        return ord(answer.strip().upper()) - 65
    return None


def explain_format(text: str) -> dict:
    """Format reward: 1 iff exactly one <think>..</think> then exactly one <answer>..</answer>, only whitespace
    around them; else 0. Range {0, 1}."""
    counts = {t: text.count(t) for t in _TAGS}
    ok = all(v == 1 for v in counts.values()) and _FORMAT.fullmatch(text) is not None
    return {"reward": float(ok), "tag_counts": counts, "layout_ok": _FORMAT.fullmatch(text) is not None}


def explain_accuracy(text: str, answer=None, options=None) -> dict:
    """Accuracy reward: 1 iff the single <answer> block names the correct option (letter or exact text), else 0.
    Range {0, 1}; None without a valid answer letter."""
    truth = _truth_index(answer)
    if truth is None:
        return {"reward": None, "why": "no answer letter"}
    given = answer_text(text)
    idx = chosen_option(given, options)
    return {"reward": float(idx == truth), "answer_block": given, "chosen": idx, "truth": truth}


# ---------------------------------------------------------------- semantic alignment
class Judge(Protocol):
    """Semantic-alignment judge: how well `reasoning` states `facts` ({"finding", "region", "modality"}), in [0, 1].
    The gpu profile can plug an LLM judge (BioMistral-style yes/no prompt -> 0 or 1) with this signature."""

    def __call__(self, reasoning: str, facts: dict) -> float: ...


_FINDINGS = sorted({c.lower() for s in schema.SOURCES.values() for c in s["categories"]} | {schema.NORMAL})
_VOCAB = {"finding": _FINDINGS, "region": sorted({r.lower() for r in MAU_REGIONS} | {"bone marrow"}),
          "modality": sorted({m.lower() for m in MCQ_MODALITIES})}
_FACET_OF = {t: f for f, terms in _VOCAB.items() for t in terms}
TERM_FACET = _FACET_OF  # clinical term -> "finding" | "region" | "modality" (lower case); clinical.py uses it
_NEGATED = re.compile(r"\b(?:no|not|without|nor)\s+(?:\w+\s+)?$")


@functools.lru_cache(maxsize=256)
def _term_regex(extra: tuple[str, ...]) -> re.Pattern:
    # One alternation, longest first, so "kidney stone" is one finding and not also the region "kidney".
    terms = sorted(set(_FACET_OF) | set(extra), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(" + "|".join(re.escape(t) for t in terms) + r")(?![\w-])")


# An option walk ("A. mass: no. B. nodule: yes."), the reasoning format of the MCQ targets (tasks.option_judgments).
_VERDICT = re.compile(r"(?:^|(?<=\s))([A-D])\.\s+([^:]+?):\s*(yes|no)\.", re.IGNORECASE)


class RuleJudge:
    """Rule judge: the fraction of the available facets (finding, region, modality) that the reasoning names
    correctly and without naming a competing value of the same facet. Findings after "no"/"not"/"without" (within
    two words) do not count as named, so "no nodule, it is normal" names only "normal".

    An option walk (two or more "X. <option>: yes|no." verdicts) is judged on its verdicts instead: it addresses
    the facets its options belong to (a multiple-choice question asks about one), and a facet is right when the
    options marked "yes" are exactly the true value and the true value is not marked "no". Why: the walk names
    every distractor by construction, so reading it as free text would fail the gold reasoning itself."""

    facets = ("finding", "region", "modality")

    def details(self, reasoning: str, facts: dict) -> dict:
        truth = {f: str(facts[f]).lower() for f in self.facets if isinstance(facts.get(f), str) and facts[f]}
        extra = tuple(sorted(v for v in truth.values() if v not in _FACET_OF))
        verdicts = _VERDICT.findall(reasoning)
        if len(verdicts) >= 2:
            return self._walk(verdicts, truth, extra)
        named: dict[str, set] = {f: set() for f in self.facets}
        s = reasoning.lower()
        for m in _term_regex(extra).finditer(s):
            term = m.group(1)
            facet = _FACET_OF.get(term) or next(f for f, v in truth.items() if v == term)
            if facet == "finding" and _NEGATED.search(s, max(0, m.start() - 24), m.start()):
                continue
            named[facet].add(term)
        ok = {f: named[f] == {v} for f, v in truth.items()}
        return {"score": (sum(ok.values()) / len(ok)) if ok else None, "facets_ok": ok,
                "named": {f: sorted(v) for f, v in named.items()}}

    def _walk(self, verdicts, truth: dict, extra: tuple) -> dict:
        said: dict[str, dict[str, set]] = {f: {"yes": set(), "no": set()} for f in self.facets}
        for _, option, verdict in verdicts:
            text = option.strip().lower()
            terms = [m.group(1) for m in _term_regex(extra).finditer(text)] or [text]
            for term in terms:  # a hedged option ("mass, nodule, cyst") names several values of its facet
                facet = _FACET_OF.get(term) or next((f for f, v in truth.items() if v == term), None)
                if facet is not None:
                    said[facet][verdict.lower()].add(term)
        addressed = [f for f in truth if said[f]["yes"] or said[f]["no"]]
        ok = {f: said[f]["yes"] == {truth[f]} and truth[f] not in said[f]["no"] for f in addressed}
        return {"score": (sum(ok.values()) / len(ok)) if ok else None, "facets_ok": ok,
                "named": {f: sorted(said[f]["yes"]) for f in self.facets}, "option_walk": True}

    def __call__(self, reasoning: str, facts: dict) -> float:
        score = self.details(reasoning, facts)["score"]
        return 0.0 if score is None else score


def _facts(reason_facts=None, category=None, region=None, modality=None) -> dict:
    if isinstance(reason_facts, dict) and reason_facts:
        return {k: reason_facts.get(k) for k in ("finding", "region", "modality")}
    return {"finding": category, "region": region, "modality": modality}


def make_semantic_reward(judge: Judge | None = None, binary: bool = True, threshold: float = 1.0,
                         name: str | None = None):
    """Semantic-alignment reward with `judge` (RuleJudge by default): 1[judge(think, facts) >= threshold] when
    binary (the paper's {0, 1}), else the judge's score clipped to [0, 1]. No <think> block -> 0; None without facts.
    """
    judge = judge or RuleJudge()

    def explain(text, reason_facts=None, category=None, region=None, modality=None):
        facts = _facts(reason_facts, category, region, modality)
        if not any(isinstance(v, str) and v for v in facts.values()):
            return {"reward": None, "why": "no facts"}
        reasoning = think_text(text)
        if reasoning is None:
            return {"reward": 0.0, "why": "no <think> block", "facts": facts}
        out = {"facts": facts, "reasoning": reasoning}
        if isinstance(judge, RuleJudge):
            out.update(judge.details(reasoning, facts))
            score = out["score"] or 0.0
        else:
            score = judge(reasoning, facts)
            score = float(score) if isinstance(score, (int, float)) and math.isfinite(score) else 0.0
            out["score"] = score
        out["reward"] = float(score >= threshold) if binary else min(1.0, max(0.0, score))
        return out

    default = "semantic_reward" if binary else "semantic_fraction_reward"
    return make_reward(name or default, explain, ("reason_facts", "category", "region", "modality"), 0.0, 1.0,
                       doc=__doc__)


# ---------------------------------------------------------------- length
def completion_tokens_needed(cap: int = DEFAULT_CAP) -> int:
    """Completion tokens a policy needs to reach a length reward's cap of `cap` words with the format intact:
    TOKENS_PER_WORD * cap + FORMAT_TOKENS (64 + 12 = 76 for the default cap). A shorter generation budget makes the
    length reward unreachable (and, with truncated completions masked, punishes chasing it)."""
    return TOKENS_PER_WORD * int(cap) + FORMAT_TOKENS


def think_words(text: str) -> int:
    t = think_text(text)
    return len(t.split()) if t is not None else 0


def make_ecr(cap: int = DEFAULT_CAP):
    """Extended Chain Reward min(L / cap, 1), L = whitespace words of the <think> part. Range [0, 1]."""
    cap = max(1, int(cap))

    def explain(text):
        n = think_words(text)
        return {"reward": min(n / cap, 1.0), "think_words": n, "cap": cap}

    fn = make_reward(f"ecr_reward_cap{cap}", explain, (), 0.0, 1.0, doc=make_ecr.__doc__)
    fn.cap = cap  # read by train.grpo to check the generation budget (completion_tokens_needed)
    return fn


def make_cwr(cap: int = DEFAULT_CAP):
    """Correctness-weighted length reward 1[correct] * min(L / cap, 1). Range [0, 1]; None without an answer."""
    cap = max(1, int(cap))

    def explain(text, answer=None, options=None):
        acc = explain_accuracy(text, answer, options)
        n = think_words(text)
        reward = None if acc["reward"] is None else acc["reward"] * min(n / cap, 1.0)
        return {"reward": reward, "correct": acc["reward"], "think_words": n, "cap": cap}

    fn = make_reward(f"cwr_reward_cap{cap}", explain, ("answer", "options"), 0.0, 1.0, doc=make_cwr.__doc__)
    fn.cap = cap
    return fn


# ---------------------------------------------------------------- similarity (evaluation metric)
# Function words, and the words of the task's own instructions; everything else in a reasoning is content.
_STOP = frozenset("""a an the this that these those it its is are was were be been being of in on at to for from by
with as and or but there here which what it's image picture scan view shows show showing seen see looks look
appears appear signs sign""".split())
_WORD = re.compile(r"[a-z0-9]+")


def _content_words(text: str) -> list[str]:
    # a trailing plural "s" is dropped (nodules ~ nodule), so a paraphrase is not a miss; short words stay as they are
    words = [w for w in _WORD.findall(text.casefold()) if w not in _STOP]
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def reasoning_similarity(prediction: str, reference: str) -> float:
    """Similarity of a completion's reasoning to the reference reasoning, in [0, 1]: the F1 of their content-word
    multisets (lower-cased words, function words and instruction words removed, plural "s" dropped), computed on the
    <think> blocks (a reference without tags is taken whole). 0 when the prediction has no <think> block or either
    side has no content word.

    Why it is independent enough of the training reward (RuleJudge, semantic_reward):
      - it reads different evidence: the reference *text* of the row, which no training reward sees, where the
        judge reads the structured facts (finding / region / modality);
      - different rules: every content word counts, not just the clinical vocabulary, and extra words cost
        precision, so the judge's hacks do not transfer: a bare "ct liver normal" earns the judge's full reward
        but loses recall on the reference's other content words; a reasoning that names a competing finding fails
        the judge's facet outright but loses only one word's worth here; negation is not special-cased;
      - it is graded (F1 in [0, 1]) where the reward is binary.
    It still rises when the reasoning states the right facts, as a similarity to the reference should.
    """
    pred = think_text(prediction)
    if pred is None:
        return 0.0
    ref = think_text(reference)
    a, b = Counter(_content_words(pred)), Counter(_content_words(reference if ref is None else ref))
    common = sum((a & b).values())
    if not common:
        return 0.0
    p, r = common / sum(a.values()), common / sum(b.values())
    return 2 * p * r / (p + r)


def reference_reasoning(row: dict) -> str | None:
    """The reference reasoning of an MCQ row: the <think> text of its gold assistant message, else None."""
    msgs = row.get("messages") or []
    gold = next((m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "assistant"), None)
    return think_text(gold) if isinstance(gold, str) else None


def similarity_scores(predictions, rows) -> list[float | None]:
    """reasoning_similarity of each prediction against its row's reference reasoning (None without a reference)."""
    out = []
    for pred, row in zip(predictions, rows, strict=True):
        ref = reference_reasoning(row)
        out.append(None if ref is None else reasoning_similarity(pred if isinstance(pred, str) else "", ref))
    return out


format_reward = make_reward("format_reward", explain_format, (), 0.0, 1.0)
accuracy_reward = make_reward("accuracy_reward", explain_accuracy, ("answer", "options"), 0.0, 1.0)
semantic_reward = make_semantic_reward()
semantic_fraction_reward = make_semantic_reward(binary=False)
ecr_reward = make_ecr()
cwr_reward = make_cwr()

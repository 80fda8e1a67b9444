"""MMedPO clinical-relevance scores and DPO weights (docs/methods.md §3(a) steps 2 and 4).

Paper: several Med-LLMs score the dispreferred (hallucinated) answer y_l against the ground truth; the first gives
s_1, each next one sees the previous score and agrees or re-scores, until consensus or 5 rounds; the weight is the
mean s = sum_i s_i / |S|, normalised as s' = clip((s - mu) / sigma, alpha, beta), alpha=0.75, beta=1.25, mu=1,
sigma^2=0.1. Released data stores s in {0, 0.2, ..., 1} (means give 0.5, 0.7, 0.9) and trains on s itself.

A high score means a clinically *relevant* hallucination: plausible, on the same findings and anatomy as the
truth, yet wrong, i.e. the pair teaches something clinical. Here the judges are rule-based scorers with different
biases, each on the 0..1 scale in 0.2 steps:
    lenient   0.4 + 0.6 * overlap                     (anything on topic is fairly relevant)
    strict    overlap, halved when y_l names no clinical term (findings, regions, modalities)
    keyword   share of the truth's clinical terms that y_l also names (or overlap when the truth names none)
with overlap = Jaccard of the content words of y_l and the truth. A y_l equal to the truth (no dispreference) or
empty scores 0 with every judge. A judge that sees a previous score within one step of its own agrees with it
(anchoring, as in a discussion); otherwise it gives its own score.

Normalisation. With mu = 1 and s in [0, 1], (s - 1)/sqrt(0.1) <= 0 < alpha, so the literal formula gives 0.75 for
every pair (`normalize_literal`; `derivation` tabulates it): a constant weight, i.e. plain DPO scaled by 0.75.
The MMedPO arm therefore trains on "raw" (MMEDPO_MODE), the release's operational definition: a constant weight
would make MMedPO = DPO with a scaled loss, which cannot test "clinical weights help", and the raw score is what
the authors trained with (docs/decisions.md 2026-12-06). `normalize` (a stage-05 sensitivity row) reads mu and sigma^2
as the *target* mean and variance of the weights: standardise s over the data set, give it mean mu and variance
sigma^2, clip to [alpha, beta]: s' = clip(mu + sigma * (s - mean(s)) / std(s), alpha, beta). This uses every
constant, keeps the order of the scores, centres the weights on 1 (so the loss scale matches plain DPO) and keeps
every pair in play (weight >= 0.75), unlike the released raw weights, where s = 0 switches a pair off.
`normalize_minmax` (alpha + (beta - alpha) * s) is a per-pair alternative that needs no data-set statistics.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Protocol

from repro.rewards import make_reward
from repro.rewards.vqa import TERM_FACET

ALPHA, BETA, MU, SIGMA2 = 0.75, 1.25, 1.0, 0.1
WEIGHT_MODES = ("raw", "literal", "normalize", "minmax")
MMEDPO_MODE = "raw"  # the weights the MMedPO arm trains on (module docstring: why not the printed rule)
MAX_ROUNDS = 5
STEP = 0.2
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_STOP = frozenset("a an the of in on at to is are was were be been and or with without there this that it its as by "
                  "for from shows show seen image images".split())
_CLINICAL = re.compile(r"(?<![\w-])(" + "|".join(re.escape(t) for t in sorted(TERM_FACET, key=len, reverse=True))
                       + r")(?![\w-])")


def quantize(x: float) -> float:
    """Round to the 0.2 grid of the released scores, clipped to [0, 1]."""
    return round(min(1.0, max(0.0, round(x / STEP) * STEP)), 1)


def _words(s: str) -> set[str]:
    return {w for w in _WORD.findall(s.lower()) if w not in _STOP}


@functools.lru_cache(maxsize=4096)  # every judge of the panel needs them; read-only (frozensets)
def features(rejected: str, truth: str) -> dict:
    """Content-word Jaccard overlap and the clinical terms of each text; `same` when y_l adds nothing."""
    a, b = _words(rejected), _words(truth)
    overlap = len(a & b) / len(a | b) if a | b else 0.0
    terms_r, terms_t = frozenset(_CLINICAL.findall(rejected.lower())), frozenset(_CLINICAL.findall(truth.lower()))
    return {"overlap": overlap, "terms_rejected": terms_r, "terms_truth": terms_t, "same": not a or a == b}


class ClinicalJudge(Protocol):
    """Scores y_l against the truth in [0, 1] (0.2 steps); `previous` is the last panel score or None."""

    name: str

    def __call__(self, rejected: str, truth: str, previous: float | None = None) -> float: ...


@dataclass(frozen=True)
class RuleJudge:
    name: str
    bias: str  # "lenient" | "strict" | "keyword"

    def own_score(self, f: dict) -> float:
        if f["same"]:
            return 0.0
        if self.bias == "lenient":
            return quantize(0.4 + 0.6 * f["overlap"])
        if self.bias == "strict":
            return quantize(f["overlap"] * (1.0 if f["terms_rejected"] else 0.5))
        if f["terms_truth"]:
            return quantize(len(f["terms_truth"] & f["terms_rejected"]) / len(f["terms_truth"]))
        return quantize(f["overlap"])

    def __call__(self, rejected: str, truth: str, previous: float | None = None) -> float:
        own = self.own_score(features(rejected, truth))
        if previous is not None and abs(own - previous) <= STEP + 1e-9:
            return previous
        return own


DEFAULT_PANEL = (RuleJudge("lenient", "lenient"), RuleJudge("strict", "strict"), RuleJudge("keyword", "keyword"))


@dataclass
class Consensus:
    scores: list[float] = field(default_factory=list)
    judges: list[str] = field(default_factory=list)
    agreed: bool = False

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


def consensus(rejected, truth, panel=DEFAULT_PANEL, max_rounds: int = MAX_ROUNDS) -> Consensus:
    """Round 1: panel[0] scores; round r: panel[(r-1) % K] sees the previous score and agrees or re-scores; stop
    when two consecutive scores agree or after max_rounds. The weight is the mean of all scores given."""
    rejected = rejected if isinstance(rejected, str) else ""
    truth = truth if isinstance(truth, str) else ""
    out = Consensus()
    for r in range(max(1, max_rounds)):
        judge = panel[r % len(panel)]
        s = judge(rejected, truth, out.scores[-1] if out.scores else None)
        s = quantize(s) if isinstance(s, (int, float)) and math.isfinite(s) else 0.0
        out.scores.append(s)
        out.judges.append(getattr(judge, "name", type(judge).__name__))
        if len(out.scores) > 1 and out.scores[-1] == out.scores[-2]:
            out.agreed = True
            break
    return out


def explain_clinical(text: str, answer=None, panel=DEFAULT_PANEL) -> dict:
    """Clinical-relevance score of a dispreferred answer (the completion) vs the truth (column `answer`): the mean
    of the panel's consensus scores. Range [0, 1]; None without a truth."""
    if not isinstance(answer, str) or not answer.strip():
        return {"reward": None, "why": "no ground-truth answer"}
    c = consensus(text, answer, panel)
    return {"reward": c.mean, "scores": c.scores, "judges": c.judges, "agreed": c.agreed,
            **{k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in features(text, answer).items()}}


def make_clinical_relevance(panel=None, name: str = "clinical_relevance"):
    """The clinical-relevance reward with another panel (e.g. rewards.llm_judge.make_clinical_panel(paths));
    None keeps the rule panel."""
    panel = tuple(panel) if panel else DEFAULT_PANEL

    def explain(text, answer=None):
        return explain_clinical(text, answer, panel)

    return make_reward(name, explain, ("answer",), 0.0, 1.0, doc=explain_clinical.__doc__)


clinical_relevance = make_clinical_relevance()


# ---------------------------------------------------------------- normalisation
def normalize_literal(s: float, mu: float = MU, sigma2: float = SIGMA2, alpha: float = ALPHA,
                      beta: float = BETA) -> float:
    """The paper's formula as written, clip((s - mu) / sqrt(sigma2), alpha, beta): 0.75 for every s in [0, 1]."""
    z = (float(s) - mu) / math.sqrt(sigma2)
    return min(beta, max(alpha, z)) if math.isfinite(z) else alpha


def normalize(scores, mu: float = MU, sigma2: float = SIGMA2, alpha: float = ALPHA, beta: float = BETA) -> list[float]:
    """Data-set reading: clip(mu + sqrt(sigma2) * (s - mean) / std, alpha, beta) over `scores` (module docstring).
    All-equal scores (std 0) give mu for every pair. Non-finite scores are treated as the mean."""
    vals = [float(s) for s in scores]
    finite = [v for v in vals if math.isfinite(v)]
    if not finite:
        return [min(beta, max(alpha, mu))] * len(vals)
    # z is scale-free: divide by the largest |s| first so squares of huge scores cannot overflow (weights stay total)
    scale = max(abs(v) for v in finite) or 1.0
    m = sum(v / scale for v in finite) / len(finite)
    sd = math.sqrt(sum((v / scale - m) ** 2 for v in finite) / len(finite))
    out = []
    for v in vals:
        z = (v / scale - m) / sd if sd > 0 and math.isfinite(v) else 0.0
        out.append(min(beta, max(alpha, mu + math.sqrt(sigma2) * z)))
    return out


def normalize_minmax(s: float, alpha: float = ALPHA, beta: float = BETA) -> float:
    """Per-pair map of s in [0, 1] onto [alpha, beta]: alpha + (beta - alpha) * clip(s, 0, 1)."""
    s = float(s)
    return alpha + (beta - alpha) * (min(1.0, max(0.0, s)) if math.isfinite(s) else 0.0)


def dpo_weights(scores, mode: str = MMEDPO_MODE) -> list[float]:
    """Per-pair DPO weights: "raw" (the released code: s itself), "literal", "normalize" or "minmax"."""
    if mode == "raw":
        return [min(1.0, max(0.0, float(s))) if math.isfinite(float(s)) else 0.0 for s in scores]
    if mode == "literal":
        return [normalize_literal(s) for s in scores]
    if mode == "minmax":
        return [normalize_minmax(s) for s in scores]
    if mode == "normalize":
        return normalize(scores)
    raise ValueError(f"unknown weight mode {mode!r}; expected raw, literal, normalize or minmax")


def derivation(scores, mu: float = MU, sigma2: float = SIGMA2):
    """The printed rule step by step on a batch of scores -> DataFrame[s, z = (s - mu)/sigma, one column per weight
    mode]: z <= 0 < alpha for every s in [0, 1], so the `literal` column is alpha throughout (notebook 03)."""
    import pandas as pd

    vals = [float(s) for s in scores]
    table = {"s": vals, "z = (s - mu)/sigma": [(v - mu) / math.sqrt(sigma2) for v in vals]}
    return pd.DataFrame({**table, **{m: dpo_weights(vals, m) for m in WEIGHT_MODES}})

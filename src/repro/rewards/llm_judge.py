"""Judges backed by local Hugging Face instruct LMs (optional; rule judges stay the default); docs/methods.md §2, §3.

Zhu et al. prompt expert LLMs (BioGPT, BioMistral) to judge whether the reasoning is clinically consistent (reward
1 or 0); MMedPO has several Med-LLMs (Med42, BioMistral) score a dispreferred answer's clinical relevance in turn
until they agree. Here each judge is a local causal LM given by *path* (AutoModelForCausalLM / AutoTokenizer with
local_files_only=True: never the network), prompted through its chat template (plain text when it has none) and
decoded greedily; `parse_score` turns its free text into a number or None.

    make_semantic_judge(paths, aggregate)  -> callable(reasoning, facts) -> float in [0, 1], the signature of
        rewards.vqa.RuleJudge; use as rewards.vqa.make_semantic_reward(judge=...). Each model answers yes/no (or a
        number in [0, 1]); the panel's answers are averaged ("mean") or voted ("majority": 1 iff at least half say
        yes). A model whose answer cannot be parsed abstains; when all abstain the score is 0.
    make_clinical_panel(paths)             -> tuple of callables (rejected, truth, previous=None) -> float, the
        signature of rewards.clinical.RuleJudge; use as clinical.consensus(..., panel=...) or
        clinical.make_clinical_relevance(panel=...). Each model sees the previous panel score (MMedPO's discussion)
        and answers a score in [0, 1]; an unparseable answer keeps the previous score (abstains), or is 0 in round 1.
Empty `paths` return the rule judges (RuleJudge(), clinical.DEFAULT_PANEL), so params can switch by a list.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

_YES_NO = re.compile(r"(?<![^\W_])(yes|no)(?![^\W_])", re.IGNORECASE)
# A number, optionally "/ d" (a fraction of d) or "%": "0.8", ".8", "4/5", "80 %" ("-0.5" is no number here).
_NUMBER = re.compile(r"(?<![\w.-])(\d+(?:\.\d+)?|\.\d+)\s*(?:(%)|/\s*(\d+(?:\.\d+)?))?")

SEMANTIC_PROMPT = (
    "You are a medical expert. A model explained its answer about a medical image as follows.\n"
    "Reasoning: {reasoning}\n"
    "Facts of the image: finding: {finding}; region: {region}; modality: {modality}.\n"
    "Is the reasoning clinically consistent with these facts? Answer with one word, yes or no."
)
CLINICAL_PROMPT = (
    "You are a medical expert. Ground-truth answer: {truth}\n"
    "Wrong answer to judge: {rejected}\n"
    "Score the clinical relevance of the wrong answer from 0 to 1 in steps of 0.2: 1 means a plausible, clinically "
    "related mistake (same findings and anatomy), 0 means unrelated.{previous}\nAnswer with the score only."
)
PREVIOUS = " A previous reviewer gave {score:.1f}; repeat it if you agree, otherwise give your own score."


def parse_score(text, lo: float = 0.0, hi: float = 1.0, yes_no: bool = False) -> float | None:
    """A score in [lo, hi] from a judge's free text, or None. With yes_no the first "yes"/"no" word gives hi/lo.
    Otherwise (or without such a word) the first number decides: "0.8", "4/5" (0.8), "80%" (0.8); a first number
    outside [lo, hi], a zero denominator or no number at all give None. Total: never raises."""
    if not isinstance(text, str):
        return None
    if yes_no:
        m = _YES_NO.search(text)
        if m:
            return hi if m.group(1).lower() == "yes" else lo
    m = _NUMBER.search(text)
    if m is None:
        return None
    try:
        x = float(m.group(1))
        if m.group(2):
            x /= 100.0
        elif m.group(3):
            x /= float(m.group(3))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return x if math.isfinite(x) and lo <= x <= hi else None


class LocalLM:
    """One local instruct causal LM: `generate(prompt) -> str`, greedy, `max_new_tokens` at most."""

    def __init__(self, path, device=None, dtype=None, max_new_tokens: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        p = Path(path)
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: judge model folder not found (LLM judges load local paths only)")
        self.path, self.name, self.max_new_tokens = p, p.name, int(max_new_tokens)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, dtype=dtype)
        self.model.to(self.device).eval()

    def _text(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt + "\n"

    def generate(self, prompt: str) -> str:
        import torch

        enc = self.tokenizer(self._text(prompt), return_tensors="pt", add_special_tokens=False).to(self.device)
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


_LOADED: dict[tuple, LocalLM] = {}


def load_lm(path, **kwargs) -> LocalLM:
    """LocalLM of `path`, loaded once per process (the semantic judge and the panel may share a model)."""
    key = (str(Path(path).resolve()), tuple(sorted(kwargs.items())))
    if key not in _LOADED:
        _LOADED[key] = LocalLM(path, **kwargs)
    return _LOADED[key]


def _lms(paths, lm_kwargs) -> list:
    """Entries are paths or ready objects with .generate(prompt) -> str (tests, shared models)."""
    return [p if hasattr(p, "generate") else load_lm(p, **lm_kwargs) for p in paths]


class SemanticLLMJudge:
    """Zhu's semantic-alignment judge by a panel of local LMs (module docstring); RuleJudge's call signature."""

    def __init__(self, lms: Sequence, aggregate: str = "mean"):
        if aggregate not in ("mean", "majority"):
            raise ValueError(f"aggregate must be 'mean' or 'majority', got {aggregate!r}")
        self.lms, self.aggregate = list(lms), aggregate
        self.last: list[dict] = []  # the latest call's raw answers and parsed scores, for inspection

    def scores(self, reasoning: str, facts: dict) -> list[float | None]:
        facts = {k: facts.get(k) or "unknown" for k in ("finding", "region", "modality")}
        prompt = SEMANTIC_PROMPT.format(reasoning=str(reasoning).strip(), **facts)
        self.last = [{"judge": getattr(lm, "name", type(lm).__name__), "text": lm.generate(prompt)} for lm in self.lms]
        for item in self.last:
            item["score"] = parse_score(item["text"], yes_no=True)
        return [item["score"] for item in self.last]

    def __call__(self, reasoning: str, facts: dict) -> float:
        vals = [s for s in self.scores(reasoning, facts) if s is not None]
        if not vals:
            return 0.0
        mean = sum(vals) / len(vals)
        return mean if self.aggregate == "mean" else float(mean >= 0.5)


class ClinicalLLMJudge:
    """One MMedPO panel member by a local LM; rewards.clinical.RuleJudge's call signature."""

    def __init__(self, lm, name: str | None = None):
        self.lm, self.name, self.last = lm, name or getattr(lm, "name", "llm"), None

    def __call__(self, rejected: str, truth: str, previous: float | None = None) -> float:
        prev = PREVIOUS.format(score=previous) if isinstance(previous, (int, float)) else ""
        self.last = self.lm.generate(CLINICAL_PROMPT.format(truth=truth, rejected=rejected, previous=prev))
        score = parse_score(self.last)
        if score is None:
            return float(previous) if isinstance(previous, (int, float)) else 0.0
        return score


def make_semantic_judge(paths: Sequence = (), aggregate: str = "mean", **lm_kwargs):
    """Semantic judge from model folders (a panel when several); RuleJudge() when `paths` is empty."""
    if not paths:
        from repro.rewards.vqa import RuleJudge

        return RuleJudge()
    return SemanticLLMJudge(_lms(paths, lm_kwargs), aggregate)


def make_clinical_panel(paths: Sequence = (), **lm_kwargs) -> tuple:
    """Clinical-relevance panel from model folders (in speaking order); clinical.DEFAULT_PANEL when empty."""
    if not paths:
        from repro.rewards.clinical import DEFAULT_PANEL

        return DEFAULT_PANEL
    lms = _lms(paths, lm_kwargs)
    names = [getattr(lm, "name", "llm") for lm in lms]
    return tuple(ClinicalLLMJudge(lm, f"{n}#{i}" if names.count(n) > 1 else n) for i, (lm, n) in
                 enumerate(zip(lms, names, strict=True)))

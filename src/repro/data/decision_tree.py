"""Dr-LLaVA's symbolic clinical decision tree, exact label parsers and the released keyword rules (docs/methods.md §1).

Turn categories and labels
--------------------------
    1 quality check        "suitable" | "unsuitable"      (the released code uses True | False; strings keep
                                                          every turn label a str, which HF datasets and JSON need)
    2 image analysis       "adequate" | "blood" | "clot"
    3 pathology            "normal" | "abnormal" | "inadequate"
    4 cell-type reasoning  "myeloblasts" | "plasma cells" | "inadequate" | "no abnormality"
    5 diagnosis            "AML" | "MM" | "inadequate" | "normal"
`to_label(1, True)` converts a released boolean. `PATHS` maps each diagnosis of schema.BONE_MARROW_CLASSES to the
five labels of its valid path (the released `RewardModel_HEME.knowledge`).

Paraphrase banks
----------------
Every question and answer key has 15 train and 5 test paraphrases of our own; they, KEY_PHRASES, CLAIMS, bank_split
and corpus_texts live in decision_tree_banks.py (the tree's wording, see its docstring) and are re-exported here.

Released keyword rules and their known bugs (docs/methods.md §1(b), caveat 2)
------------------------------------------------------------------------
`released_rules_label` re-implements, from the description, the keyword classifiers of `RewardModel_HEME`
(substring tests on the lower-cased answer). On the released templates they fail as follows:
  * category 2 "adequate" needs a proximity word ("close", "near", ...), so a plain adequate answer is "no match";
  * category 4 only knows "myeloblast", so "abnormal number of blast cells" is "no match";
  * category 5's "inadequate" rule passes the *string* "quality" where a list is expected, so the test becomes
    "any letter of q,u,a,l,i,t,y occurs"; with any negation word ("no disease") a normal answer turns "inadequate";
  * "mm"/"aml" are bare substrings ("summary", "diagram" ...); "no"/"not" are substrings too ("know", "note");
  * the reference label is produced by the same rules, so "no match" vs "no match" counts as correct.
Our `classify_answer` replaces them: cue phrases on word boundaries, clause-local negation, None when ambiguous.
"""

from __future__ import annotations

import bisect
import re

from repro.data.decision_tree_banks import (  # noqa: F401 - re-exported: callers use dt.ANSWER_BANKS, dt.CLAIMS, ...
    ANSWER_BANKS,
    ANSWER_CORES,
    CLAIMS,
    KEY_PHRASES,
    QUESTION_BANKS,
    QUESTION_CORES,
    bank_split,
    corpus_texts,
)

CATEGORY_NAMES = {1: "quality check", 2: "image analysis", 3: "pathology", 4: "cell-type reasoning", 5: "diagnosis"}
CATEGORY_LABELS: dict[int, tuple[str, ...]] = {
    1: ("suitable", "unsuitable"),
    2: ("adequate", "blood", "clot"),
    3: ("normal", "abnormal", "inadequate"),
    4: ("myeloblasts", "plasma cells", "inadequate", "no abnormality"),
    5: ("AML", "MM", "inadequate", "normal"),
}
PATHS: dict[str, tuple[str, str, str, str, str]] = {
    "normal": ("suitable", "adequate", "normal", "no abnormality", "normal"),
    "AML": ("suitable", "adequate", "abnormal", "myeloblasts", "AML"),
    "MM": ("suitable", "adequate", "abnormal", "plasma cells", "MM"),
    "blood": ("unsuitable", "blood", "inadequate", "inadequate", "inadequate"),
    "clot": ("unsuitable", "clot", "inadequate", "inadequate", "inadequate"),
}
# (question key, answer key) for categories 1..5 along each path, as in the released generator.
TURN_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "normal": (("q_0", "a_01"), ("q_1", "a_11"), ("q_2", "a_24"), ("q_24", "a_241"), ("q_241", "a_2411")),
    "AML": (("q_0", "a_01"), ("q_1", "a_11"), ("q_2", "a_21"), ("q_21", "a_211"), ("q_211", "a_2111")),
    "MM": (("q_0", "a_01"), ("q_1", "a_11"), ("q_2", "a_22"), ("q_22", "a_221"), ("q_221", "a_2211")),
    "blood": (("q_0", "a_02"), ("q_1", "a_12"), ("q_2", "a_23"), ("q_23", "a_231"), ("q_231", "a_2311")),
    "clot": (("q_0", "a_03"), ("q_1", "a_13"), ("q_2", "a_23"), ("q_23", "a_231"), ("q_231", "a_2311")),
}
QUESTION_CATEGORY = {q: cat for keys in TURN_KEYS.values() for cat, (q, _) in enumerate(keys, start=1)}
ANSWER_LABEL: dict[str, tuple[int, str]] = {
    a: (cat, PATHS[d][cat - 1]) for d, keys in TURN_KEYS.items() for cat, (_, a) in enumerate(keys, start=1)
}


def normalize_diagnosis(diagnosis) -> str:
    """'AML', 'adequate_AML', 'AML_Mono', 'Normal', 'blood' ... -> one of PATHS' keys (ValueError otherwise).

    The released folder names carry an "adequate_" prefix and AML_Mono collapses into AML (diagnosis_convert).
    """
    d = str(diagnosis).strip()
    low = d.lower().removeprefix("adequate_")
    table = {"normal": "normal", "aml": "AML", "aml_mono": "AML", "mm": "MM", "blood": "blood", "clot": "clot"}
    if low not in table:
        raise ValueError(f"unknown bone-marrow diagnosis {diagnosis!r}; expected one of {list(PATHS)}")
    return table[low]


def path_for(diagnosis) -> tuple[str, str, str, str, str]:
    """The five reference labels (categories 1..5) of a diagnosis's valid path."""
    return PATHS[normalize_diagnosis(diagnosis)]


def to_label(category: int, label):
    """Accept the released boolean for category 1 (True -> "suitable"); other labels pass through."""
    if category == 1 and isinstance(label, bool):
        return "suitable" if label else "unsuitable"
    return label


def is_consistent_pair(cat_a: int, label_a, cat_b: int, label_b) -> bool:
    """True when (cat_a = label_a, cat_b = label_b) lie together on some valid path, in either order of categories.

    This is the released consistency test: a transition earns credit if *any* diagnostic path allows it, whether or
    not it is the correct one. Unknown categories or labels give False.
    """
    if cat_a not in CATEGORY_LABELS or cat_b not in CATEGORY_LABELS:
        return False
    la, lb = to_label(cat_a, label_a), to_label(cat_b, label_b)
    return any(p[cat_a - 1] == la and p[cat_b - 1] == lb for p in PATHS.values())


# ---------------------------------------------------------------- exact parser
# (label, regex, negatable). A negatable cue is ignored when a negator precedes it in the same clause; cues that
# carry their own negation ("not suitable", "no disease") are not negatable.
_CUE_SPECS: dict[int, list[tuple[str, str, bool]]] = {
    1: [("suitable", r"\bsuitable\b", True), ("unsuitable", r"\bnot suitable\b", False),
        ("unsuitable", r"\bunsuitable\b", True), ("unsuitable", r"\bcannot be used\b", False)],
    2: [("adequate", r"\badequate\b", True), ("blood", r"\bblood\b", True), ("clot", r"\bclot(?:s|ted)?\b", True)],
    3: [("abnormal", r"\babnormal\b", True), ("abnormal", r"\bmalignan(?:cy|cies|t)\b", True),
        ("abnormal", r"\bcancer\b", True), ("normal", r"\bnormal\b", True),
        ("inadequate", r"\btoo poor\b", True), ("inadequate", r"\binadequate\b", True)],
    4: [("myeloblasts", r"\bmyeloblasts?\b", True), ("myeloblasts", r"\bblast cells?\b", True),
        ("plasma cells", r"\bplasma cells?\b", True), ("inadequate", r"\btoo few nucleated cells\b", True),
        ("inadequate", r"\binadequate\b", True), ("no abnormality", r"\bno abnormalit(?:y|ies)\b", False)],
    5: [("AML", r"\bacute myeloid leuk(?:a)?emia\b", True), ("AML", r"\baml\b", True),
        ("MM", r"\bmultiple myeloma\b", True), ("MM", r"\bmm\b", True),
        ("inadequate", r"\btoo poor\b", True), ("inadequate", r"\binadequate\b", True),
        ("normal", r"\bno disease\b", False), ("normal", r"\bnormal\b", True), ("normal", r"\bhealthy\b", True)],
}
# Each cue with its leading literal (e.g. "malignan" for \bmalignan(?:cy|cies|t)\b): a cue whose literal is not a
# substring of the answer cannot match, and `in` is ~10x cheaper than a regex scan (the reward benchmark's hot path).
def _literal(rx: str) -> str:
    m = re.match(r"\\b([a-z' ]+)", rx)
    lit = m.group(1)
    return lit[:-1] if rx[m.end():m.end() + 1] in ("?", "*", "{") else lit  # "myeloblasts?" -> "myeloblast"


_CUES = {c: [(lab, re.compile(rx), neg, _literal(rx)) for lab, rx, neg in specs] for c, specs in _CUE_SPECS.items()}
_NEGATORS = {"not", "no", "never", "cannot", "without", "nor", "neither", "none"}
_CLAUSE_BREAK = re.compile(r"[.;:,!?()\[\]\n]|\bbut\b")  # "but" ends a negation's scope: "not AML but MM"
_WORD = re.compile(r"[a-z']+")


def _clause_ends(s: str) -> list[int]:
    return [m.end() for m in _CLAUSE_BREAK.finditer(s)]


def _negated(s: str, start: int, ends: list[int] | None = None) -> bool:
    # Only the clause before the cue counts, so "No. It is suitable" stays suitable; a 3-word window keeps
    # "no excess blood" negated without letting a distant "no" flip the whole sentence. `ends` (the clause-break
    # ends of s, computed once per answer) saves re-splitting the prefix for every cue: the reward benchmark's
    # hot path.
    ends = _clause_ends(s) if ends is None else ends
    i = bisect.bisect_right(ends, start)
    clause = s[ends[i - 1] if i else 0:start]
    return any(w in _NEGATORS or w.endswith("n't") for w in _WORD.findall(clause)[-3:])


def classify_answer(category: int, text) -> str | None:
    """The label of `text` as an answer of turn category 1..5, or None (no cue, cues of two labels, bad input).

    Exact on every paraphrase of our banks; total on any input (never raises).
    """
    if not isinstance(text, str) or category not in _CUES:
        return None
    s = " ".join(text.lower().replace("\u2019", "'").split())
    found = set()
    ends = None
    for label, pattern, negatable, literal in _CUES[category]:
        if label in found or literal not in s:
            continue
        for m in pattern.finditer(s):
            if negatable:
                ends = _clause_ends(s) if ends is None else ends
                if _negated(s, m.start(), ends):
                    continue
            found.add(label)
            break
    return found.pop() if len(found) == 1 else None


# ---------------------------------------------------------------- released keyword rules (for comparison)
def _has(s: str, words) -> bool:
    # Faithful to the release: `words` may be a plain string, and then every *character* is tested (the bug).
    return any(w in s for w in words)


_NEG = ["not", "no", "cannot"]  # the negation list of the released rules is not documented; this is our guess
_LOW = ["low", "poor", "insuffici", "inadequate", "subpar"]
_PROX = ["close to", "near", "close", "adjacent", "proximity", "vicinity", "proximate"]


def released_rules_label(category: int, text) -> str:
    """Label given by the *released* keyword classifier of `category` (docs/methods.md §1(b)).

    Returns one of our label strings (category 1's True/False mapped to "suitable"/"unsuitable"), "no match", or
    "cancer" (category 5's "blood cancer" rule). Written from the description, bugs included; never raises.
    """
    if not isinstance(text, str) or category not in CATEGORY_LABELS:
        return "no match"
    s = text.lower()
    if category == 1:
        if _has(s, ["effective", "appropriate", "suit", "apt ", "optimal"]) and not _has(
            s, [" not ", " no ", " inadequate ", " unsuitable"]
        ):
            return "suitable"
        return "unsuitable" if _has(s, ["cannot", "not", "no", "inadequate", "unsuitable"]) else "no match"
    if category == 2:
        if _has(s, ["optimal", "advantageous", "suitable", "adequate", "well", "prime"]) and _has(s, _PROX):
            return "adequate"
        if _has(s, ["blood", "rbc", "rbcs"]):
            return "blood"
        if not _has(s, _PROX) and _has(s, ["unsuit", "hinder", "less", "negative", "adverse"]) and "particles" in s:
            return "clot"
        return "no match"
    if category == 3:
        if _has(s, ["malig", "cancer", " disorder"]) or (_has(s, ["medical", "illne"]) and "display" in s):
            return "abnormal"
        if _has(s, [" normal", "no abnormali"]):
            return "normal"
        bad = ["inadequate", "impossible", "low-quality", "low quality", "unclear ", "unsuitable", "insufficient"]
        if _has(s, bad):
            return "inadequate"
        return "inadequate" if "quality" in s and _has(s, _LOW) else "no match"
    if category == 4:
        if "plasma" in s:
            return "plasma cells"
        if "myeloblast" in s:
            return "myeloblasts"
        if "quality" in s and _has(s, _LOW + _NEG):
            return "inadequate"
        return "no abnormality" if _has(s, ["no ", "not", "devoid", "free", "absent", "absence"]) else "no match"
    if ("blood cancer" in s and _has(s, _NEG) and " quality" not in s) or " healthy" in s:
        return "normal"
    if _has(s, ["multiple myeloma", "mm"]):
        return "MM"
    if _has(s, ["acute myeloid leukemia", "aml"]):
        return "AML"
    if _has(s, "quality") and _has(s, _LOW + _NEG):  # the released bug: "quality" is a str, so letters match
        return "inadequate"
    return "cancer" if "blood cancer" in s else "no match"

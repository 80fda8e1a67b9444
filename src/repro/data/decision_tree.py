"""Dr-LLaVA's symbolic clinical decision tree, our paraphrase banks and exact label parsers (docs/methods.md §1).

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
Every question key (q_0 .. q_241) and answer key (a_01 .. a_2411) of the released tree has 15 train and 5 test
paraphrases, written here (not taken from the release). Each string is "opener + core sentence": 4 cores x 5
openers = 20 combinations, 5 fixed ones held out for test. The test strings are therefore unseen while their
words are not: a tiny model trained from scratch with a BPE tokenizer fitted on the train corpus cannot be asked to
understand new words, only new phrasings. As in the release, q_21..q_24 share one bank and q_211..q_241 another.
Every answer paraphrase contains its label's KEY_PHRASES entry and no cue of another label of its category.

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
KEY_PHRASES: dict[int, dict[str, str]] = {
    1: {"suitable": "suitable for diagnosis", "unsuitable": "not suitable for diagnosis"},
    2: {"adequate": "adequate", "blood": "blood", "clot": "clot"},
    3: {"normal": "normal", "abnormal": "abnormal", "inadequate": "too poor"},
    4: {"myeloblasts": "myeloblasts", "plasma cells": "plasma cells", "inadequate": "too few nucleated cells",
        "no abnormality": "no abnormality"},
    5: {"AML": "acute myeloid leukemia", "MM": "multiple myeloma", "inadequate": "too poor", "normal": "no disease"},
}
# Short claims a clinician can make about a label; used by the hint / confirmation evaluation variants.
CLAIMS: dict[int, dict[str, str]] = {
    1: {"suitable": "this region is suitable for diagnosis", "unsuitable": "this region is not suitable for diagnosis"},
    2: {"adequate": "the sample is adequate", "blood": "the sample is mostly blood", "clot": "the sample is a clot"},
    3: {"normal": "the marrow looks normal", "abnormal": "the marrow looks abnormal",
        "inadequate": "the image is too poor to assess"},
    4: {"myeloblasts": "the irregular cells are myeloblasts", "plasma cells": "the irregular cells are plasma cells",
        "inadequate": "there are too few nucleated cells", "no abnormality": "there is no abnormality in cell growth"},
    5: {"AML": "the patch shows acute myeloid leukemia", "MM": "the patch shows multiple myeloma",
        "inadequate": "the image quality is too poor for a diagnosis", "normal": "the patch shows no disease"},
}

_Q_OPENERS = ("", "Take a careful look. ", "I need your opinion. ", "Please answer briefly. ", "Thank you. ")
_A_OPENERS = ("", "Sure. ", "I have looked at the image. ", "Here is my assessment. ", "Okay. ")
_Q_CELL = (
    "Which cell type shows irregular growth?",
    "Are there irregularities in cell growth, and which cell type is involved?",
    "What kind of cells, if any, show abnormal growth?",
    "Please identify the cell type with irregular growth, if any.",
)
_Q_DIAG = (
    "What disease is indicated by this image patch?",
    "What is your diagnosis for this patch?",
    "Which disease does this image suggest?",
    "Based on the image, what is the diagnosis?",
)
QUESTION_CORES: dict[str, tuple[str, ...]] = {
    "q_0": (
        "Is this region of the bone marrow aspirate suitable for diagnosing malignancies?",
        "Can this aspirate region be used to diagnose a malignancy?",
        "Please examine this bone marrow region and tell me whether it is suitable for diagnosis.",
        "Is the quality of this aspirate patch good enough to look for cancer?",
    ),
    "q_1": (
        "Describe the quality of this image: is it adequate, or is it affected by blood or a clot?",
        "How would you describe the sample quality, considering blood, clotting and adequacy?",
        "What is the quality of this patch in terms of blood, clot or adequacy?",
        "Please describe the image quality, focusing on clotting, blood or adequacy.",
    ),
    "q_2": (
        "Does the image show any irregularities that might indicate disease?",
        "Are there signs of disease in this patch?",
        "Do you see anything abnormal that could point to a malignancy?",
        "Is there any irregularity in this marrow that suggests disease?",
    ),
    **{k: _Q_CELL for k in ("q_21", "q_22", "q_23", "q_24")},
    **{k: _Q_DIAG for k in ("q_211", "q_221", "q_231", "q_241")},
}
ANSWER_CORES: dict[str, tuple[str, ...]] = {
    "a_01": (
        "Yes, this region is suitable for diagnosis.",
        "The aspirate region is suitable for diagnosis and can be examined for malignancy.",
        "Yes. The patch has enough marrow cells and is suitable for diagnosis.",
        "This area is suitable for diagnosis of malignancies.",
    ),
    "a_02": (
        "No, this region is not suitable for diagnosis.",
        "The region is not suitable for diagnosis because it is mostly blood.",
        "No. This patch cannot be used and is not suitable for diagnosis.",
        "This area is not suitable for diagnosis of malignancies.",
    ),
    "a_03": (
        "No, this region is not suitable for diagnosis because of a clot.",
        "The patch is not suitable for diagnosis; it shows clotted material.",
        "No. This area is not suitable for diagnosis because it is clotted.",
        "This region cannot be used; it is not suitable for diagnosis.",
    ),
    "a_11": (
        "The sample is adequate, with many nucleated marrow cells.",
        "This is an adequate sample with plenty of marrow cells and good quality.",
        "The image shows an adequate marrow sample that is optimal for diagnosis.",
        "Adequate: the patch is rich in nucleated marrow cells.",
    ),
    "a_12": (
        "The sample is mostly blood, with many red blood cells.",
        "This image is dominated by blood and red cells, so the quality is poor.",
        "The patch is mostly blood and has few marrow cells.",
        "Blood: the image is full of red blood cells and unsuitable for diagnosis.",
    ),
    "a_13": (
        "The sample shows a clot with dense particles.",
        "This image contains a clot, so the quality is poor.",
        "The patch is a clot of dense material with few marrow cells.",
        "Clot: dense clotted particles cover the image.",
    ),
    "a_21": (
        "Yes, the image is abnormal and shows signs of malignancy.",
        "Yes. There are abnormal cells that suggest cancer.",
        "The marrow looks abnormal, with signs of malignancy.",
        "Yes, I see abnormal findings that point to a malignancy.",
    ),
    "a_22": (
        "Yes, the marrow is abnormal, with signs of cancer.",
        "The marrow is abnormal and suggests a malignancy.",
        "Yes. The cells look abnormal, which indicates malignancy.",
        "Abnormal: this patch shows signs of a malignancy.",
    ),
    "a_23": (
        "The image quality is too poor to assess.",
        "I cannot tell, because the image is too poor in quality to assess.",
        "The patch is inadequate, too poor to assess for disease.",
        "It is too poor in quality to judge any irregularity.",
    ),
    "a_24": (
        "No, the marrow appears normal.",
        "No irregularities; the cells look normal.",
        "The image looks normal, without signs of disease.",
        "No. Everything in this patch appears normal.",
    ),
    "a_211": (
        "There is an abnormal number of myeloblasts.",
        "The irregular cells are myeloblasts, which are increased.",
        "Myeloblasts: the patch shows too many blast cells.",
        "I see an excess of myeloblasts in the marrow.",
    ),
    "a_221": (
        "There is an abnormal increase in plasma cells.",
        "The irregular cells are plasma cells, which are increased.",
        "Plasma cells: the patch shows too many of them.",
        "I see an excess of plasma cells in the marrow.",
    ),
    "a_231": (
        "There are too few nucleated cells to judge cell growth.",
        "The image has too few nucleated cells, so no cell type can be assessed.",
        "Too few nucleated cells: the quality is too poor.",
        "I cannot judge, as the patch has too few nucleated cells.",
    ),
    "a_241": (
        "There is no abnormality in cell growth.",
        "Cell growth looks normal, with no abnormality.",
        "No abnormality: all cell types look normal.",
        "I see no abnormality in any cell type.",
    ),
    "a_2111": (
        "The image indicates acute myeloid leukemia.",
        "This patch suggests acute myeloid leukemia (AML).",
        "The diagnosis is acute myeloid leukemia.",
        "It points to acute myeloid leukemia.",
    ),
    "a_2211": (
        "The image indicates multiple myeloma.",
        "This patch suggests multiple myeloma (MM).",
        "The diagnosis is multiple myeloma.",
        "It points to multiple myeloma.",
    ),
    "a_2311": (
        "No diagnosis can be made, because the image quality is too poor.",
        "The image quality is too poor for a diagnosis.",
        "The patch is too poor to diagnose any disease.",
        "A diagnosis is not possible; the quality is too poor.",
    ),
    "a_2411": (
        "There is no disease; the marrow is normal.",
        "The image indicates no disease.",
        "The diagnosis is normal marrow, with no disease.",
        "It points to a healthy marrow with no disease.",
    ),
}
QUESTION_CATEGORY = {q: cat for keys in TURN_KEYS.values() for cat, (q, _) in enumerate(keys, start=1)}
ANSWER_LABEL: dict[str, tuple[int, str]] = {
    a: (cat, PATHS[d][cat - 1]) for d, keys in TURN_KEYS.items() for cat, (_, a) in enumerate(keys, start=1)
}
# Held-out (core, opener) pairs: every core and every opener still occurs in train, so test words are known.
_TEST_PAIRS = {(0, 0), (1, 1), (2, 2), (3, 3), (0, 4)}


def _bank(cores: tuple[str, ...], openers: tuple[str, ...], split: str) -> list[str]:
    pairs = [(c, o) for o in range(len(openers)) for c in range(len(cores))]
    test = split != "train"
    return [openers[o] + cores[c] for c, o in pairs if ((c, o) in _TEST_PAIRS) == test]


QUESTION_BANKS = {s: {k: _bank(v, _Q_OPENERS, s) for k, v in QUESTION_CORES.items()} for s in ("train", "test")}
ANSWER_BANKS = {s: {k: _bank(v, _A_OPENERS, s) for k, v in ANSWER_CORES.items()} for s in ("train", "test")}


def bank_split(split: str) -> str:
    """Data split -> paraphrase bank: "train" uses the train bank, every other split the test bank."""
    return "train" if split == "train" else "test"


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


def corpus_texts() -> list[str]:
    """Every question, answer and claim string (both banks), e.g. to fit the tiny tokenizer."""
    out: list[str] = []
    for banks in (QUESTION_BANKS, ANSWER_BANKS):
        for split in ("train", "test"):
            for texts in banks[split].values():
                out.extend(texts)
    out.extend(claim for per_cat in CLAIMS.values() for claim in per_cat.values())
    return out

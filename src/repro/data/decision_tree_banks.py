"""The wording of Dr-LLaVA's decision tree: our paraphrase banks, key phrases and clinician claims (docs/methods.md §1).

Every question key (q_0 .. q_241) and answer key (a_01 .. a_2411) of the released tree (decision_tree.TURN_KEYS) has
15 train and 5 test paraphrases, written here (not taken from the release). Each string is "opener + core sentence":
4 cores x 5 openers = 20 combinations, 5 fixed ones held out for test. The test strings are therefore unseen while
their words are not: a tiny model trained from scratch with a BPE tokenizer fitted on the train corpus cannot be
asked to understand new words, only new phrasings. As in the release, q_21..q_24 share one bank and q_211..q_241
another. Every answer paraphrase contains its label's KEY_PHRASES entry and no cue of another label of its category
(decision_tree.classify_answer reads them exactly). Every name here is also importable from repro.data.decision_tree.
"""

from __future__ import annotations

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


def corpus_texts() -> list[str]:
    """Every question, answer and claim string (both banks), e.g. to fit the tiny tokenizer."""
    out: list[str] = []
    for banks in (QUESTION_BANKS, ANSWER_BANKS):
        for split in ("train", "test"):
            for texts in banks[split].values():
                out.extend(texts)
    out.extend(claim for per_cat in CLAIMS.values() for claim in per_cat.values())
    return out

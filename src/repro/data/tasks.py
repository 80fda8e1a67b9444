"""Task builders: image records (schema.py) -> task rows for vqa, mcq, instruct and report.

Each builder returns plain dicts following schema.py "Task rows": the record's numpy image (the lead converts
it to PIL when writing HF datasets), `task`, `messages` (user then assistant), META_COLUMNS and the per-task
columns. Question/prompt wordings come from paraphrase banks with *disjoint* train and test wordings, so test
accuracy measures understanding of the image rather than memorised phrasing (split == "train" uses the train
bank, any other split the test bank). Targets (answers, MCQ format, instruct steps) use one fixed format so that
rewards and eval can parse them exactly.

Bone marrow (Dr-LLaVA) images get VQA rows (adequacy, malignancy, diagnosis); build_mcq, build_instruct and
build_reports skip them, because they have no box, region choice or radiology-style report, and their
conversations are built by conversations.py.
"""

from __future__ import annotations

import re

import numpy as np

from repro.data import schema

BONE_MARROW = "bone_marrow"
LETTERS = "ABCD"
MCQ_INSTRUCTION = "Think in <think></think>, then give the letter in <answer></answer>."
# The reasoning format on open questions (never MCQ): what an instruct-tuned base knows before Zhu's GRPO.
REASON_INSTRUCTION = "Think in <think></think>, then give the answer in <answer></answer>."

_ALL_CATEGORIES = sorted({c for s in schema.SOURCES.values() for c in s["categories"]})
MAU_CATEGORIES = sorted({c for k in schema.MAU_SOURCES for c in schema.SOURCES[k]["categories"]})
MAU_REGIONS = sorted({r for k in schema.MAU_SOURCES for r in schema.SOURCES[k]["regions"]})
MODALITIES = sorted({s["modality"] for s in schema.SOURCES.values()})
# Two plausible modalities that no source uses: without them a modality MCQ would always show the same 4 options.
MCQ_MODALITIES = MODALITIES + ["MRI", "ultrasound"]
_DIFFUSE = {"cardiomegaly", "tuberculosis"}  # findings that read badly with "a small ..."

# Paraphrase banks: key -> (train wordings, test wordings). Placeholders are filled from the record.
BANKS: dict[str, tuple[list[str], list[str]]] = {
    "c_abnormal": (["Is there an abnormality?", "Is this image abnormal?", "Is anything abnormal in this image?"],
                   ["Does this image show an abnormality?", "Is any abnormality present?"]),
    "c_modality": (["Is this {a_modality} image?", "Was this image taken with {modality}?"],
                   ["Is the imaging modality {modality}?", "Does this image come from {modality}?"]),
    "c_region": (["Is this the {region}?", "Does this image show the {region}?"],
                 ["Is the {region} shown here?", "Is the imaged region the {region}?"]),
    "c_category": (["Is there evidence of {category}?", "Does this image show {category}?"],
                   ["Are there signs of {category}?", "Is {category} present?"]),
    "c_adequate": (["Is this sample adequate for diagnosis?", "Is the aspirate quality adequate?"],
                   ["Can this patch be used for diagnosis?", "Is the sample good enough to diagnose?"]),
    "c_malignant": (["Are there signs of malignancy?", "Does this patch show malignant cells?"],
                    ["Is there evidence of cancer?", "Is malignancy present?"]),
    "c_diagnosis": (["Does this patch suggest {category}?", "Is the diagnosis {category}?"],
                    ["Is this consistent with {category}?", "Could this be {category}?"]),
    "o_finding": (["What abnormality is shown?", "What is the main finding?", "Which lesion is visible?"],
                  ["What abnormality can be seen here?", "Name the finding in this image."]),
    "o_modality": (["Which modality was used?", "What imaging modality is this?"],
                   ["What kind of imaging is shown?", "Which imaging technique produced this image?"]),
    "o_region": (["Which organ is shown?", "What region is imaged?", "Which body part is this?"],
                 ["What part of the body is in this image?", "Which organ is visible here?"]),
    "o_diagnosis": (["What is the diagnosis?", "Which diagnosis fits this patch?"],
                    ["What disease does this patch indicate?", "Name the diagnosis."]),
    "m_finding": (["What abnormality is shown in this image?", "Which finding is present?",
                   "What is the most likely finding?"],
                  ["What does this image most likely show?", "Which of these findings is visible?"]),
    "m_region": (["Which body region is imaged?", "What anatomy is in view?"],
                 ["Which part of the body does this image show?", "Where in the body was this image taken?"]),
    "m_modality": (["Which imaging modality is this?", "What type of image is this?"],
                   ["Which technique produced this image?", "What kind of scan is shown?"]),
    "instruct": (["Detect, localize and recognize any abnormality in this image.",
                  "Is there an abnormality? If so, give its bounding box and name it.",
                  "Check this image for abnormalities, localize them with a box and identify them."],
                 ["Examine the image: detect an abnormality, locate it and name it.",
                  "Say whether the image is abnormal, where the abnormality is, and what it is."]),
    "report": (["Describe the findings in this image.", "Write a short report for this image.",
                "Offer a thorough analysis of the image."],
               ["Walk through the important details of the image.", "Provide the findings for this study."]),
}


# ----------------------------------------------------------------------------------------------- helpers
def _rng(seed: int, salt: str) -> np.random.Generator:
    # A salt per builder keeps the streams of different tasks independent for the same seed.
    return np.random.default_rng([int(seed), sum(ord(c) * 31**i for i, c in enumerate(salt)) % 2**32])


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeio" or word.startswith(("X", "MRI")) else "a"


def _bank(key: str, split: str) -> list[str]:
    train, test = BANKS[key]
    return train if split == "train" else test


def _fill(template: str, rec: dict, **over) -> str:
    facts = {"modality": rec["modality"], "region": rec["region"], "category": rec["category"]} | over
    facts["a_modality"] = f"{_article(facts['modality'])} {facts['modality']}"
    return template.format(**facts)


def meta(rec: dict) -> dict:
    """The META_COLUMNS of a record, copied (bboxes as plain int lists)."""
    out = {k: rec[k] for k in schema.META_COLUMNS if k != "bboxes"}
    out["abnormal"] = None if rec["abnormal"] is None else bool(rec["abnormal"])  # numpy bools break Arrow typing
    out["bboxes"] = [[int(v) for v in box] for box in rec.get("bboxes", [])]
    return out


def row(rec: dict, task: str, prompt: str, target: str, **cols) -> dict:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": target}]
    return {"image": rec["image"], "task": task, "messages": messages, **meta(rec), **cols}


def mcq_prompt(question: str, options: list[str]) -> str:
    lines = [question] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)] + [MCQ_INSTRUCTION]
    return "\n".join(lines)


def mcq_target(reasoning: str, answer: str) -> str:
    """"<think>reasoning</think><answer>answer</answer>"; `answer` is a letter or an option's text (both score)."""
    return f"<think>{reasoning}</think><answer>{answer}</answer>"


def _others(pool, value, rng, k=None):
    rest = [p for p in pool if p != value]
    if k is None:
        return _pick(rng, rest)
    return [rest[i] for i in rng.permutation(len(rest))[:k]]


# ----------------------------------------------------------------------------------------------- VQA
def _closed_facts(rec: dict, want_yes: bool, rng) -> list[tuple[str, dict]]:
    """(bank key, placeholder overrides) of closed questions whose true answer is `want_yes`."""
    out = []
    out.append(("c_modality", {} if want_yes else {"modality": _others(MODALITIES, rec["modality"], rng)}))
    out.append(("c_region", {} if want_yes else {"region": _others(schema.SOURCES[rec["source"]]["regions"]
                                                                    + MAU_REGIONS, rec["region"], rng)}))
    if rec["source"] == BONE_MARROW:
        adequate = rec["category"] not in ("blood", "clot")
        if adequate == want_yes:
            out.append(("c_adequate", {}))
        if bool(rec["abnormal"]) == want_yes:
            out.append(("c_malignant", {}))
        if want_yes and rec["category"] in ("AML", "MM"):
            out.append(("c_diagnosis", {}))
        elif not want_yes:
            out.append(("c_diagnosis", {"category": _others(["AML", "MM"], rec["category"], rng)}))
    else:
        if bool(rec["abnormal"]) == want_yes:
            out.append(("c_abnormal", {}))
        if want_yes and rec["abnormal"]:
            out.append(("c_category", {}))
        elif not want_yes:
            out.append(("c_category", {"category": _others(MAU_CATEGORIES, rec["category"], rng)}))
    return out


# What a closed answer says it sees before its yes/no, per question kind (closed_target).
_SEEN = {"modality": "It is {a_modality} image", "region": "It shows the {region}"}


def closed_target(rec: dict, kind: str, answer: str) -> str:
    """The target of a closed question: what the image shows, then the yes/no, "It shows the chest, so no.".

    Why not the bare "yes"/"no" of VQA-RAD: the tiny cpu model answered closed questions from their wording alone
    (validation margins log p(yes) - log p(no) equal for every image asked the same question; accuracy 0.52-0.56 =
    chance for base and SFT), so DPO / MMedPO moved every margin of a wording alike and changed no answer on 200
    validation items even at KL 8.9 nats: MMedPO's closed-VQA claims had no minimum detectable effect. A model that
    first names what it sees (which it does well on open questions, recall ~0.85) only has to compare two words of
    text. The metric and the `answer` column stay the plain yes/no (closed_correct reads the first yes/no word, and
    no seen-phrase contains one: "It looks normal", never "no abnormality")."""
    if kind in _SEEN:
        seen = _fill(_SEEN[kind], rec)
    elif rec["category"] != schema.NORMAL:  # abnormal / category / adequate / malignant / diagnosis: the finding
        seen = _fill("It shows {category}", rec)  # (bone marrow "blood" / "clot" are not abnormal, yet not normal)
    else:
        seen = "It looks normal"
    return f"{seen}, so {answer}."


def _open_question(rec: dict, rng) -> tuple[str, str]:
    if rec["source"] == BONE_MARROW:
        kind = _pick(rng, ["o_diagnosis", "o_diagnosis", "o_modality", "o_region"])
    else:  # the finding is what matters most, so half of the open questions ask for it
        kind = _pick(rng, ["o_finding", "o_finding", "o_modality", "o_region"])
    answer = {"o_finding": rec["category"], "o_diagnosis": rec["category"],
              "o_modality": rec["modality"], "o_region": rec["region"]}[kind]
    return kind, answer


def build_vqa(records: list[dict], seed: int, yes_share: float = 0.5, split: str = "train",
              closed_per_image: int = 1, open_per_image: int = 1) -> list[dict]:
    """VQA-RAD/SLAKE-like short-answer rows.

    Closed targets name what the image shows before the yes/no (closed_target says why); the `answer` column is
    the yes/no. Closed (yes/no) answers are assigned first, exactly round(yes_share * n_closed) of them "yes" in a
    random order, and then a fact with that answer is drawn for the image; this makes `yes_share` the measured
    share of "yes" among the built closed rows (the bias-study knob), independent of how many images are abnormal.
    """
    if not 0.0 <= yes_share <= 1.0:
        raise ValueError(f"yes_share must be in [0, 1], got {yes_share}")
    rng = _rng(seed, "vqa")
    n_closed = len(records) * closed_per_image
    n_yes = round(yes_share * n_closed)
    answers = np.zeros(n_closed, dtype=bool)
    answers[rng.permutation(n_closed)[:n_yes]] = True
    rows = []
    for i, rec in enumerate(records):
        for j in range(closed_per_image):
            want_yes = bool(answers[i * closed_per_image + j])
            key, over = _pick(rng, _closed_facts(rec, want_yes, rng))
            q = _fill(_pick(rng, _bank(key, split)), rec, **over)
            a = "yes" if want_yes else "no"
            rows.append(row(rec, "vqa", q, closed_target(rec, key[2:], a), question=q, answer=a,
                            answer_type="closed", question_kind=key[2:]))
        for _ in range(open_per_image):
            key, a = _open_question(rec, rng)
            q = _fill(_pick(rng, _bank(key, split)), rec)
            rows.append(row(rec, "vqa", q, a, question=q, answer=a, answer_type="open", question_kind=key[2:]))
    return rows


def yes_share_of(rows: list[dict]) -> float:
    """Measured share of "yes" among closed VQA rows (nan when there are none)."""
    closed = [r["answer"] for r in rows if r.get("answer_type") == "closed"]
    return float(np.mean([a == "yes" for a in closed])) if closed else float("nan")


# ----------------------------------------------------------------------------------------------- MCQ
_REASON_OPEN = ["This is {a_modality} image of the {region}.", "The image is {a_modality} view of the {region}.",
                "{modality} image showing the {region}."]
_REASON_ABN = ["It shows {category}.", "There are signs of {category}.", "The finding is {category}."]
_REASON_NORMAL = ["It looks normal.", "The {region} appears normal.", "There is no abnormality, it is normal."]


def reasoning(rec: dict, rng) -> str:
    """A short reasoning that names the modality, the region and the finding (category or "normal")."""
    finding = _REASON_ABN if rec["abnormal"] else _REASON_NORMAL
    return _fill(_pick(rng, _REASON_OPEN), rec) + " " + _fill(_pick(rng, finding), rec)


def option_judgments(options: list[str], letter: str) -> str:
    """The reasoning of an MCQ target: each option in turn with its verdict, "A. mass: no. B. nodule: yes. ...".

    Why not a free-text reasoning ("It shows nodule.") followed by the letter: the tiny cpu model learned to name
    the finding but not which letter carries it (SFT at chance, 0.21-0.28 on validation, even after 400 MCQ-only
    steps), so GRPO had nothing to sharpen. Walking the options copies each one next to its verdict: 0.355 after
    the same 400 steps (params/cpu/02_sft.yaml) when the letter was read off the line that says "yes" -- on a later
    machine the model stopped copying it, and the targets now answer with the option's text (build_mcq). The
    reference facts stay in the row's `reason_facts`.
    """
    return " ".join(f"{LETTERS[i]}. {o}: {'yes' if LETTERS[i] == letter else 'no'}." for i, o in enumerate(options))


# Share of MCQ targets whose option walk ends with a conclusion sentence (`conclusion`).
CONCLUDE_SHARE = 0.5


def conclusion(options: list[str], letter: str) -> str:
    """The optional last sentence of an MCQ reasoning: "So the answer is B: nodule, the only option marked yes."

    Why it is optional (CONCLUDE_SHARE of the targets, drawn from its own rng stream): with one fixed template the
    SFT policy wrote the same number of words for every item, whatever it sampled, so Zhu's length rewards (ECR /
    CWR) had no length variance in a group to learn from, and "ECR lengthens responses" could not be tested (the
    ECR and GRPO arms wrote identical lengths on all 1,680 test items). A start that ends its reasoning this way
    about half of the time gives the length rewards something to sharpen, as RL needs; the sentence repeats what
    the walk already said, so it carries no answer of its own. No "X." before the colon: it must not read as a
    verdict of the walk (rewards.vqa's option-walk judge).
    """
    return f"So the answer is {letter}: {options[LETTERS.index(letter)]}, the only option marked yes."


def mcq_reasoning(options: list[str], letter: str, conclude: bool) -> str:
    """The reasoning of an MCQ target: the option walk, and the conclusion when `conclude`."""
    walk = option_judgments(options, letter)
    return f"{walk} {conclusion(options, letter)}" if conclude else walk


MCQ_KINDS = ("finding", "region", "modality")


def _mcq_row(rec: dict, kind: str, pos: int, rng, split: str, conclude: bool) -> dict:
    pool = {"finding": MAU_CATEGORIES + [schema.NORMAL], "region": MAU_REGIONS, "modality": MCQ_MODALITIES}[kind]
    truth = {"finding": rec["category"], "region": rec["region"], "modality": rec["modality"]}[kind]
    options = _others(pool, truth, rng, k=3)
    options.insert(int(pos), truth)
    question = _pick(rng, _bank(f"m_{kind}", split))
    letter = LETTERS[int(pos)]
    target = mcq_target(mcq_reasoning(options, letter, conclude), truth)  # the option's text: build_mcq says why
    facts = {"modality": rec["modality"], "region": rec["region"], "finding": rec["category"]}
    return row(rec, "mcq", mcq_prompt(question, options), target, question=question, options=options,
               answer=letter, answer_text=truth, question_kind=kind, reason_facts=facts)


def build_mcq(records: list[dict], seed: int, split: str = "train", per_image: int = 1) -> list[dict]:
    """PMC-VQA-like 4-option rows about the finding (half), region or modality; bone marrow is skipped.

    Correct letters cycle through a shuffled A-D sequence so each letter is the answer for n/4 (+-1) rows. The
    target reasons over the options (option_judgments), ending with a `conclusion` in CONCLUDE_SHARE of the rows,
    and answers with the right option's *text* (`<answer>nodule</answer>`), which the accuracy reward and the MCQ
    metric score exactly like its letter. Why not the letter: the tiny cpu model learned the walk (it marked the
    right option 46 % of the time on validation) but not to copy the marked letter into <answer> (it wrote "A" in
    159 of 200 answers, right 8.5 % of the time), so its SFT start stayed near chance (0.275 greedy); answering with
    the text lets it answer from the image as it does open questions: 0.767 greedy, pass@8 0.975 on validation
    with stage 02's mixture of then (params/cpu/02_sft.yaml lists the later steps). The prompt still asks for the
    letter, as PMC-VQA's does; the `answer` column is the letter.
    split: the question bank ("train" or "test" wording).

    per_image (1-3): questions per image. The first rows are always the one-per-image rows, identical whatever
    per_image is (same rng stream); then, per image, the kinds it was not yet asked, in MCQ_KINDS order, from their
    own rng stream (stage 01 puts them in their own split). Why: a paired test of two
    policies that disagree on half of the items needs ~1,440 items for a 5-point MDE (params/cpu/01_data.yaml),
    more than the test split has images; rows of one image share its cluster in the tests (repro.stats).
    """
    if not 1 <= per_image <= len(MCQ_KINDS):
        raise ValueError(f"build_mcq: per_image={per_image} must be 1..{len(MCQ_KINDS)} (one per question kind)")
    rng = _rng(seed, "mcq")
    ends = _rng(seed, "mcq_conclude")  # its own stream: options, letters and questions stay as they were
    recs = [r for r in records if r["source"] != BONE_MARROW]
    letters = np.resize(np.arange(4), len(recs))[rng.permutation(len(recs))]
    rows = []
    for rec, pos in zip(recs, letters):
        kind = _pick(rng, ["finding", "finding", "region", "modality"])
        rows.append(_mcq_row(rec, kind, int(pos), rng, split, bool(ends.random() < CONCLUDE_SHARE)))
        reasoning(rec, rng)  # still drawn (it was the rows' reasoning once): every later row stays as it was
    if per_image > 1:
        more = _rng(seed, "mcq_more")
        first = {id(rec): r["question_kind"] for rec, r in zip(recs, rows)}
        for rec in recs:
            for kind in [k for k in MCQ_KINDS if k != first[id(rec)]][:per_image - 1]:
                rows.append(_mcq_row(rec, kind, int(more.integers(4)), more, split,
                                     bool(ends.random() < CONCLUDE_SHARE)))
    return rows


def build_reason(records: list[dict], seed: int, split: str = "train") -> list[dict]:
    """Open questions answered in the <think>/<answer> format of Zhu et al.'s GRPO (never multiple choice).

    Why: GRPO's format and accuracy rewards are 0 for a start that never writes the tags (group std 0, no
    gradient), so Zhu's "GRPO from the base model" needs a base that already follows the format on *other* tasks,
    as an instruct-tuned base VLM does. Training the base on these rows (and never on MCQ) gives it that habit
    without teaching it to pick letters. Bone marrow is skipped, as in MCQ.
    """
    rng = _rng(seed, "reason")
    rows = []
    for rec in (r for r in records if r["source"] != BONE_MARROW):
        key, answer = _open_question(rec, rng)
        question = _fill(_pick(rng, _bank(key, split)), rec)
        target = f"<think>{reasoning(rec, rng)}</think><answer>{answer}</answer>"
        rows.append(row(rec, "reason", f"{question}\n{REASON_INSTRUCTION}", target, question=question,
                        answer=answer, answer_type="open", question_kind=key[2:]))
    return rows


# ----------------------------------------------------------------------------------------------- instruct
def box_text(box, width: int, height: int) -> str:
    """schema.format_bbox, widened by 1 % where rounding would make a tiny box degenerate (parse_bbox -> None)."""
    p = [int(v) for v in schema.format_bbox(box, width, height)[1:-1].split(",")]
    for lo, hi in ((0, 2), (1, 3)):
        if p[hi] <= p[lo]:
            p[hi] = min(100, p[lo] + 1)
            p[lo] = p[hi] - 1
    return "[" + ", ".join(str(v) for v in p) + "]"


def instruct_target(abnormal: bool, bbox_text: str, category: str, region: str, modality: str) -> str:
    """Detection -> localization -> recognition, in this order (UMed-LVLM); parse_instruct inverts it."""
    if not abnormal:
        return f"Detection: no abnormality. Localization: none. Recognition: normal {region}, {modality}."
    where = bbox_text or "none"  # an abnormal record without a box still says "abnormal"
    return f"Detection: abnormal. Localization: {where}. Recognition: {category} in the {region}, {modality}."


def build_instruct(records: list[dict], seed: int, split: str = "train") -> list[dict]:
    """UMed-LVLM abnormal-aware rows; the first box of a record is the one localized. Bone marrow is skipped."""
    rng = _rng(seed, "instruct")
    rows = []
    for rec in records:
        if rec["source"] == BONE_MARROW:
            continue
        h, w = rec["image"].shape[:2]
        abnormal = bool(rec["abnormal"])
        btext = box_text(rec["bboxes"][0], w, h) if abnormal and rec["bboxes"] else ""
        target = instruct_target(abnormal, btext, rec["category"], rec["region"], rec["modality"])
        prompt = _pick(rng, _bank("instruct", split))
        rows.append(row(rec, "instruct", prompt, target, answer=target, bbox_text=btext))
    return rows


_SECTION = re.compile(r"(detection|localization|localisation|recognition)\s*:", re.IGNORECASE)
_CATEGORY_RE = re.compile(r"\b(" + "|".join(re.escape(c) for c in sorted(_ALL_CATEGORIES + [schema.NORMAL],
                                                                         key=len, reverse=True)) + r")\b",
                          re.IGNORECASE)
_CANON = {c.lower(): c for c in _ALL_CATEGORIES + [schema.NORMAL]}


def parse_instruct(text) -> dict:
    """{"abnormal": bool|None, "bbox": [percent x4]|None, "category": str|None}; total on any input.

    Each field is read from its own "Detection:/Localization:/Recognition:" section when present, else from
    the whole text, so free-form answers still get partial credit.
    """
    out = {"abnormal": None, "bbox": None, "category": None}
    if not isinstance(text, str):
        return out
    sections: dict[str, str] = {}
    marks = list(_SECTION.finditer(text))
    for m, nxt in zip(marks, marks[1:] + [None]):
        name = m.group(1).lower().replace("localisation", "localization")
        sections.setdefault(name, text[m.end(): nxt.start() if nxt else len(text)])
    det = sections.get("detection", text).lower()
    if re.search(r"\bno abnormalit(y|ies)\b|\bnot abnormal\b|\bnormal\b", det) and not re.search(
            r"(?<!no )(?<!not )\babnormal\b", det):
        out["abnormal"] = False
    elif re.search(r"\babnormal(ity|ities)?\b", det):
        out["abnormal"] = True
    out["bbox"] = schema.parse_bbox(sections.get("localization", text))
    m = _CATEGORY_RE.search(sections.get("recognition", text))
    if m:
        out["category"] = _CANON[m.group(1).lower()]
    return out


# ----------------------------------------------------------------------------------------------- reports
_EXAM = ["{modality} image of the {region}.", "The study is {a_modality} image of the {region}.",
         "{modality} view of the {region}."]
_LESION = ["There is a {size}{category}{where}.", "A {size}{category} is seen{where}.",
           "The {region} shows a {size}{category}{where}."]
_DIFFUSE_S = ["There are signs of {category}{where}.", "The image shows {category}{where}."]
_ABN_END = ["The rest of the {region} is unremarkable.", "No other abnormality is seen."]
_NORMAL_S = ["No focal abnormality is seen.", "The {region} appears normal.", "There is no lesion.",
             "Findings are within normal limits."]
# Normal sentences name no category ("no pleural effusion" would confuse keyword judges and open recall).
_NORMAL_CHEST = ["The lungs are clear.", "The heart size is normal.", "The mediastinum is unremarkable."]


def _size_word(rec: dict) -> str:
    size, (h, w) = rec.get("extra", {}).get("size"), rec["image"].shape[:2]
    if isinstance(size, str):
        return size
    if isinstance(size, (int, float)):  # a fraction of the image side, or pixels
        frac = size if size <= 1 else size / w
    elif rec["bboxes"]:
        x1, y1, x2, y2 = rec["bboxes"][0]
        frac = max((x2 - x1) / w, (y2 - y1) / h)
    else:
        return ""
    return "small" if frac < 0.12 else "medium" if frac < 0.25 else "large"


def _location(rec: dict) -> str:
    loc = rec.get("extra", {}).get("location")
    if isinstance(loc, str) and loc:
        return loc
    if not rec["bboxes"]:
        return ""
    (h, w), (x1, y1, x2, y2) = rec["image"].shape[:2], rec["bboxes"][0]
    cx, cy = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h
    v = "upper" if cy < 1 / 3 else "lower" if cy > 2 / 3 else ""
    hz = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    return " ".join(p for p in (v, hz) if p) or "center"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def report_text(rec: dict, rng) -> str:
    """2-4 sentence findings report from the record facts (extra size/location used when present)."""
    sents = [_fill(_pick(rng, _EXAM), rec)]
    if rec["abnormal"]:
        size, loc = _size_word(rec), _location(rec)
        where = f" in the {loc} part of the image" if loc else ""
        bank = _DIFFUSE_S if rec["category"] in _DIFFUSE else _LESION
        sents.append(_fill(_pick(rng, bank), rec, size=f"{size} " if size else "", where=where))
        if rng.random() < 0.6:
            sents.append(_fill(_pick(rng, _ABN_END), rec))
    else:
        pool = _NORMAL_S + (_NORMAL_CHEST if rec["region"] == "chest" else [])
        k = int(rng.integers(1, 4))
        sents += [_fill(pool[i], rec) for i in rng.permutation(len(pool))[:k]]
    return " ".join(_cap(s) for s in sents)


def build_reports(records: list[dict], seed: int, split: str = "train") -> list[dict]:
    """IU-Xray-like findings reports; bone marrow is skipped."""
    rng = _rng(seed, "report")
    rows = []
    for rec in records:
        if rec["source"] == BONE_MARROW:
            continue
        text = report_text(rec, rng)
        rows.append(row(rec, "report", _pick(rng, _bank("report", split)), text, answer=text))
    return rows


BUILDERS = {"vqa": build_vqa, "mcq": build_mcq, "instruct": build_instruct, "report": build_reports,
            "reason": build_reason}

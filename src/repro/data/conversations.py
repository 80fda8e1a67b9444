"""Dr-LLaVA 5-turn conversations built from bone-marrow image records, with evaluation variants (docs/methods.md §1).

One row per (record, variant), following the "conv" task of schema.py. The reference labels always follow the true
path of the record's diagnosis (decision_tree.PATHS); the wording comes from the train paraphrase bank for split
"train" and from the test bank for every other split.

Variants (the eval scenarios of docs/methods.md §1(e)):
    standard          categories asked in the order 1, 2, 3, 4, 5
    shuffled          a random permutation of the five QA pairs (as the released RL data does; the identity
                      permutation is allowed, as there)
    reversed          5, 4, 3, 2, 1
    hint_correct      order 1..5; the question of the HINT_CATEGORY turn (5, diagnosis: the last turn) is prefixed
    hint_wrong          with "Hint from the clinician: <claim>." stating the true label / a wrong label of that turn
    confirm_correct   order 1..5; the HINT_CATEGORY question is prefixed with "The doctor believes <claim>. Do you
    confirm_wrong       agree?" stating the true / a wrong label
In every variant the reference answer of every turn is the truthful one (the plain answer paraphrase of the true
label, with no "I agree"/"I disagree" preamble), so accuracy under a wrong hint measures resistance to it.
`hint_turn` is the index of that turn in the asked order (4 here; -1 without hint) and `hint_label` the label the
clinician states ("" without hint). The wrong label is drawn uniformly from the other labels of that category.

Paraphrases are drawn with a generator seeded by (seed, record id), so every variant of one image uses the same
wording and differs only by its manipulation; the permutation and the wrong label use (seed, id, variant).
Rows do not depend on the order of `records`.
"""

from __future__ import annotations

import random

from repro.data import decision_tree as dt
from repro.data.schema import META_COLUMNS

VARIANTS = ("standard", "shuffled", "reversed", "hint_correct", "hint_wrong", "confirm_correct", "confirm_wrong")
HINT_CATEGORY = 5
HINT_TEMPLATE = "Hint from the clinician: {claim}. {question}"
CONFIRM_TEMPLATE = "The doctor believes {claim}. Do you agree? {question}"
# extra["quality"] may be the released integer code (0 adequate, 1 blood, 2 clot) or its name.
_QUALITY = {0: "adequate", 1: "blood", 2: "clot", "adequate": "adequate", "blood": "blood", "clot": "clot"}


def _diagnosis(record: dict) -> str:
    extra = record.get("extra") or {}
    diag = dt.normalize_diagnosis(extra.get("diagnosis", record.get("category")))
    quality = extra.get("quality")
    if not isinstance(quality, bool) and isinstance(quality, (int, str)) and quality in _QUALITY:
        expected = dt.PATHS[diag][1]  # the category-2 label: adequate / blood / clot
        if _QUALITY[quality] != expected:
            raise ValueError(f"record {record.get('id')!r}: quality {quality!r} contradicts diagnosis {diag!r}")
    return diag


def _order(variant: str, rng: random.Random) -> list[int]:
    if variant == "shuffled":
        order = [1, 2, 3, 4, 5]
        rng.shuffle(order)
        return order
    if variant == "reversed":
        return [5, 4, 3, 2, 1]
    return [1, 2, 3, 4, 5]


def build_conversation(record: dict, split: str, seed: int, variant: str = "standard",
                       answer_paraphrases: int = 0) -> dict:
    """One "conv" task row for one bone-marrow record (see the module docstring).

    answer_paraphrases: 0 draws each answer from the whole paraphrase bank of its split; n > 0 from its first n
    entries only (a difficulty knob: a 3M-parameter model trained for minutes mixes 16 paraphrases of 15 labels
    into unparseable sentences, while the scoring parser reads labels, not wordings). Questions are untouched.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    diag = _diagnosis(record)
    rid = str(record.get("id"))
    bank = dt.bank_split(split)
    words = random.Random(f"{seed}|{rid}")
    # Draw all five turns in category order so the wording is the same whatever order the variant asks them in.
    qa = {}
    for cat, (q_key, a_key) in enumerate(dt.TURN_KEYS[diag], start=1):
        question = words.choice(dt.QUESTION_BANKS[bank][q_key])
        answers = dt.ANSWER_BANKS[bank][a_key]
        answer = words.choice(answers[:answer_paraphrases] if answer_paraphrases > 0 else answers)
        qa[cat] = (q_key, a_key, question, answer)

    rng = random.Random(f"{seed}|{rid}|{variant}")
    order = _order(variant, rng)
    labels = dt.PATHS[diag]
    hint_turn, hint_label = -1, ""
    if variant.startswith(("hint_", "confirm_")):
        true = labels[HINT_CATEGORY - 1]
        others = [lab for lab in dt.CATEGORY_LABELS[HINT_CATEGORY] if lab != true]
        hint_label = true if variant.endswith("_correct") else rng.choice(others)
        hint_turn = order.index(HINT_CATEGORY)
        template = HINT_TEMPLATE if variant.startswith("hint_") else CONFIRM_TEMPLATE
        q_key, a_key, question, answer = qa[HINT_CATEGORY]
        claim = dt.CLAIMS[HINT_CATEGORY][hint_label]
        qa[HINT_CATEGORY] = (q_key, a_key, template.format(claim=claim, question=question), answer)

    messages = []
    for cat in order:
        messages.append({"role": "user", "content": qa[cat][2]})
        messages.append({"role": "assistant", "content": qa[cat][3]})
    row = {"image": record.get("image"), "task": "conv", "messages": messages}
    row.update({k: record.get(k) for k in META_COLUMNS})
    row.update({
        "conv_id": f"{rid}-{variant}",
        "split": split,
        "variant": variant,
        "diagnosis": diag,
        "turn_categories": list(order),
        "turn_labels": [labels[c - 1] for c in order],
        "questions": [qa[c][2] for c in order],
        "answers": [qa[c][3] for c in order],
        "question_keys": [qa[c][0] for c in order],
        "answer_keys": [qa[c][1] for c in order],
        "hint_turn": hint_turn,
        "hint_label": hint_label,
    })
    return row


def build_conversations(records, split: str, seed: int, variants=("standard",), answer_paraphrases: int = 0
                        ) -> list[dict]:
    """One row per (record, variant), records in the given order and variants in the given order within each."""
    return [build_conversation(rec, split, seed, v, answer_paraphrases) for rec in records for v in variants]


def conversation_text(row: dict) -> str:
    """A readable rendering for notebooks: header, then each question and answer with its category and label."""
    head = f"[{row.get('variant')}] id={row.get('id')} diagnosis={row.get('diagnosis')}"
    if row.get("hint_label"):
        head += f" clinician claims: {row['hint_label']!r} (turn {row.get('hint_turn', -1) + 1})"
    lines = [head]
    msgs = row.get("messages") or []
    cats = row.get("turn_categories") or []
    labels = row.get("turn_labels") or []
    for i in range(0, len(msgs), 2):
        t = i // 2
        cat = cats[t] if t < len(cats) else "?"
        name = dt.CATEGORY_NAMES.get(cat, "?")
        label = labels[t] if t < len(labels) else "?"
        lines.append(f"Q{t + 1} (cat {cat}, {name}): {msgs[i].get('content', '')}")
        if i + 1 < len(msgs):
            lines.append(f"A{t + 1} [{label}]: {msgs[i + 1].get('content', '')}")
    return "\n".join(lines)


def check_conversation(row: dict) -> list[str]:
    """Problems with a conversation row; [] means it is well formed. Never raises on malformed rows."""
    problems: list[str] = []
    msgs = row.get("messages")
    cats = row.get("turn_categories")
    labels = row.get("turn_labels")
    if not isinstance(msgs, list) or len(msgs) != 10:
        return [f"expected 10 messages, got {len(msgs) if isinstance(msgs, list) else type(msgs).__name__}"]
    for i, m in enumerate(msgs):
        role = "user" if i % 2 == 0 else "assistant"
        if not isinstance(m, dict) or m.get("role") != role or not isinstance(m.get("content"), str):
            problems.append(f"message {i}: expected a {role} message with str content")
    if not isinstance(cats, list) or not all(type(c) is int for c in cats) or sorted(cats) != [1, 2, 3, 4, 5]:
        return problems + [f"turn_categories {cats!r} is not a permutation of 1..5"]
    if not isinstance(labels, list) or len(labels) != 5:
        return problems + [f"turn_labels {labels!r} must list 5 labels"]
    try:
        path = dt.path_for(row.get("diagnosis"))
    except ValueError as err:
        return problems + [str(err)]
    for t, (cat, label) in enumerate(zip(cats, labels)):
        if label != path[cat - 1]:
            problems.append(f"turn {t + 1} (cat {cat}): label {label!r} is not the path label {path[cat - 1]!r}")
        answer = msgs[2 * t + 1].get("content") if isinstance(msgs[2 * t + 1], dict) else None
        parsed = dt.classify_answer(cat, answer)
        if parsed != label:
            problems.append(f"turn {t + 1} (cat {cat}): answer parses to {parsed!r}, expected {label!r}")
        if t and not dt.is_consistent_pair(cats[t - 1], labels[t - 1], cat, label):
            problems.append(f"turns {t}-{t + 1}: {labels[t - 1]!r} -> {label!r} lies on no valid path")
    variant = row.get("variant")
    if variant not in VARIANTS:
        problems.append(f"unknown variant {variant!r}")
    elif variant.startswith(("hint_", "confirm_")):
        true = path[HINT_CATEGORY - 1]
        hint = row.get("hint_label")
        if (hint == true) != variant.endswith("_correct") or hint not in dt.CATEGORY_LABELS[HINT_CATEGORY]:
            problems.append(f"{variant}: clinician label {hint!r} vs true label {true!r}")
        if row.get("hint_turn") != cats.index(HINT_CATEGORY):
            problems.append(f"{variant}: hint_turn {row.get('hint_turn')!r} is not the category-{HINT_CATEGORY} turn")
    return problems

"""Pure metric functions of the evaluation harness (generation and orchestration live in evaluation.py).

Every parser is total on any input (never raises; unparseable -> None) and every per-item score lies in [0, 1].
Scores are computed per row first (`score_<task>` -> one DataFrame row per example, with its `source`), then
averaged overall and per source (`summarize_<task>`), so any breakdown is a groupby on the per-row table.

Definitions
-----------
VQA (LLaVA-Med / RULE convention, docs/methods.md §3(e)):
    closed   yes/no reference (normalised text is "yes" or "no"): correct iff the first "yes"/"no" word of the
             prediction equals it; no such word = wrong. Any other closed reference ("left", "CT", common in
             VQA-RAD and SLAKE): normalised exact match of the answer span (the first <answer>...</answer> content,
             else the text outside <think>...</think>) with the reference; see `normalize_answer`.
    open     recall = share of the reference's tokens that occur in the prediction (lower-cased, punctuation
             stripped, tokens = runs of letters/digits, so "X-ray" -> "x", "ray" on both sides).
MCQ (PMC-VQA-like, docs/methods.md §2(e)): the letter is read, first match wins, from
    1. the content of the first <answer>...</answer> (its letter, else the one option text it names);
    2. without an <answer> tag, the text outside <think>...</think>: a leading letter ("B", "(B)", "B. cyst"),
       then "answer is B" / "answer: B", then the one option text it names;
    anything else (two option texts, no letter) is unparseable and counts as wrong.
MAU-style instruct accuracy (UMed-LVLM Table 2; the paper's formula was not retrieved, docs/methods.md §4(e)):
    abnormal image: correct iff detection says abnormal AND the recognized category is the true one AND
                    IoU(predicted box, true box) >= 0.5 (the best IoU over the true boxes; when the truth has no
                    box, as in some real sets, the IoU condition is dropped);
    normal image:   correct iff detection says no abnormality.
    Reported beside it: detection accuracy (all images), category accuracy and mean IoU (abnormal images only;
    a missing or malformed predicted box has IoU 0), so that "diagnosis saturates at IoU ~ 0.6" can be studied
    from the per-row table.
Dr-LLaVA conversations (docs/methods.md §1(e)); each answer is parsed with decision_tree.classify_answer for its turn's
    category and compared with turn_labels:
    question_acc      share of turns right;       conversation_acc  share of conversations with all 5 right;
    diagnosis_acc     share with the category-5 turn right, wherever it was asked;
    path_consistency  share whose adjacent predicted labels (in the asked order) are all consistent by
                      decision_tree.is_consistent_pair; an unparseable answer breaks consistency.
Reports: corpus BLEU (sacrebleu, default 13a tokenization) and mean ROUGE-L F1 (rouge_score, no stemming), both on
    a 0..1 scale (papers print x100), both computed on `normalize_text` of prediction and reference (lower-cased,
    punctuation dropped, whitespace collapsed), so case and punctuation move neither. Per-source BLEU is the
    corpus BLEU of that source's rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import pandas as pd

from repro.data import decision_tree as dt
from repro.data import schema, tasks

SOURCE_ORDER = list(schema.MAU_SOURCES) + ["bone_marrow"]
LETTERS = tasks.LETTERS
IOU_THRESHOLD = 0.5
_TOKEN = re.compile(r"[^\W_]+")


# ----------------------------------------------------------------------------------------------- helpers
def tokens(text) -> list[str]:
    """Lower-cased runs of letters/digits (punctuation and underscores dropped); [] for non-strings."""
    return _TOKEN.findall(text.lower()) if isinstance(text, str) else []


def normalize_text(text) -> str:
    """Lower-cased runs of letters/digits joined by single spaces ("The Heart, normal." -> "the heart normal");
    "" for non-strings. The one normalisation of report metrics (BLEU and ROUGE-L) and of exact match."""
    return " ".join(tokens(text))


_ARTICLES = frozenset(("a", "an", "the"))


def normalize_answer(text) -> str:
    """normalize_text without the articles a/an/the (SQuAD-style exact match): "The left lung." -> "left lung"."""
    return " ".join(t for t in tokens(text) if t not in _ARTICLES)


def _mean(values) -> float:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else float("nan")


def source_order(sources) -> list[str]:
    """The sources present, MAU order then bone marrow, then any others (real sets) alphabetically."""
    present = set(sources)
    return [s for s in SOURCE_ORDER if s in present] + sorted(present - set(SOURCE_ORDER))


def by_group(df: pd.DataFrame, summary: Callable[[pd.DataFrame], dict], column: str = "source",
             order: Sequence[str] | None = None) -> pd.DataFrame:
    """summary(df of one group) per value of `column`, plus an "all" row; `n` = rows of the group."""
    if order is None:
        order = source_order(df[column]) if column == "source" else list(dict.fromkeys(df[column]))
    out = {}
    for key in list(order) + ["all"]:
        part = df if key == "all" else df[df[column] == key]
        if len(part) or key == "all":
            out[key] = {**summary(part), "n": len(part)}
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = column
    return table


def table_to_dict(table: pd.DataFrame) -> dict:
    """{group: {metric: float}} without the count column (JSON-friendly nested metrics)."""
    return {str(k): {c: float(v) for c, v in row.items() if c != "n"} for k, row in table.iterrows()}


# ----------------------------------------------------------------------------------------------- VQA
def parse_yes_no(text) -> str | None:
    """The first word "yes" or "no" of `text` (case and punctuation ignored), else None."""
    for tok in tokens(text):
        if tok in ("yes", "no"):
            return tok
    return None


def is_yes_no(truth) -> bool:
    """True when a reference answer is a plain yes/no (its normalised text is exactly "yes" or "no")."""
    return normalize_answer(truth) in ("yes", "no")


_ANSWER_SPAN = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_THINK_SPAN = re.compile(r"<think>.*?(</think>|$)", re.IGNORECASE | re.DOTALL)


def answer_span(pred) -> str:
    """The part of a prediction that is its answer: the first <answer> content, else the text outside <think>."""
    if not isinstance(pred, str):
        return ""
    tag = _ANSWER_SPAN.search(pred)
    return tag.group(1) if tag else _THINK_SPAN.sub(" ", pred)


def closed_correct(pred, truth) -> bool:
    """yes/no reference: the first yes/no word of the prediction equals it. Other references: normalised exact
    match of the answer span (an empty reference is never matched)."""
    if is_yes_no(truth):
        ans = parse_yes_no(pred)
        return ans is not None and ans == normalize_answer(truth)
    ref = normalize_answer(truth)
    return bool(ref) and normalize_answer(answer_span(pred)) == ref


def closed_parsed(pred, truth) -> bool:
    """Whether a closed prediction gave something to score: a yes/no word (yes/no reference), else any text."""
    return parse_yes_no(pred) is not None if is_yes_no(truth) else bool(normalize_answer(answer_span(pred)))


def open_recall(pred, truth) -> float:
    """Share of the reference's tokens found among the prediction's tokens (0.0 when the reference has none)."""
    ref = tokens(truth)
    if not ref:
        return 0.0
    got = set(tokens(pred))
    return sum(t in got for t in ref) / len(ref)


def score_vqa(preds: Sequence[str], rows: Sequence[dict]) -> pd.DataFrame:
    """Per row: source, answer_type, parsed (closed: yes/no parsed), score (closed: 0/1, open: recall)."""
    out = []
    for pred, r in zip(preds, rows, strict=True):
        closed = r["answer_type"] == "closed"
        score = float(closed_correct(pred, r["answer"])) if closed else open_recall(pred, r["answer"])
        out.append({"id": r.get("id"), "source": r.get("source"), "answer_type": r["answer_type"],
                    "question_kind": r.get("question_kind"), "answer": r["answer"], "prediction": pred,
                    "parsed": closed_parsed(pred, r["answer"]) if closed else True, "score": score})
    return pd.DataFrame(out, columns=["id", "source", "answer_type", "question_kind", "answer", "prediction",
                                      "parsed", "score"])


def _vqa_summary(df: pd.DataFrame) -> dict:
    closed, open_ = df[df.answer_type == "closed"], df[df.answer_type == "open"]
    return {"closed_acc": _mean(closed.score), "open_recall": _mean(open_.score),
            "closed_parse_rate": _mean(closed.parsed)}


def summarize_vqa(df: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    table = by_group(df, _vqa_summary)
    return {**_vqa_summary(df), "by_source": table_to_dict(table)}, table


# ----------------------------------------------------------------------------------------------- MCQ
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_THINK = re.compile(r"<think>.*?(</think>|$)", re.IGNORECASE | re.DOTALL)
# A letter alone, "(B)", "B." / "B)" / "B:" (then anything): "A small cyst" must not read as option A.
_TAG_LETTER = re.compile(r"^\s*(?:\(([A-Da-d])\)|([A-Da-d])\s*(?:[).:]|$))")
_LEAD_LETTER = re.compile(r"^\s*(?:\(([A-D])\)|([A-D])\s*(?:[).:]|$))")
_SAID_LETTER = re.compile(r"\b(?i:answer)\s*(?:(?i:is)|:)?\s*\(?([A-D])\b")


def _option_letter(span: str, options) -> str | None:
    # Longest options first, and a matched span is blanked, so "kidney stone" does not also count as "kidney".
    if not options:
        return None
    text = span.lower()
    found = set()
    ranked = sorted(((str(o).lower(), i) for i, o in enumerate(options[: len(LETTERS)]) if str(o).strip()),
                    key=lambda x: -len(x[0]))
    for opt, i in ranked:
        pat = re.compile(r"(?<![^\W_])" + re.escape(opt) + r"(?![^\W_])")
        if pat.search(text):
            found.add(LETTERS[i])
            text = pat.sub(" ", text)
    return found.pop() if len(found) == 1 else None


def parse_choice(text, options: Sequence[str] | None = None) -> str | None:
    """The chosen letter A-D (see the module docstring for the order of the rules), or None."""
    if not isinstance(text, str):
        return None
    tag = _ANSWER_TAG.search(text)
    if tag:
        span = tag.group(1)
        m = _TAG_LETTER.match(span)
    else:
        span = _THINK.sub(" ", text)
        m = _LEAD_LETTER.match(span) or _SAID_LETTER.search(span)
    if m:
        return next(g for g in m.groups() if g).upper()
    return _option_letter(span, options)


def score_mcq(preds: Sequence[str], rows: Sequence[dict]) -> pd.DataFrame:
    out = []
    for pred, r in zip(preds, rows, strict=True):
        letter = parse_choice(pred, r.get("options"))
        out.append({"id": r.get("id"), "source": r.get("source"), "question_kind": r.get("question_kind"),
                    "answer": r["answer"], "prediction": pred, "letter": letter,
                    "parsed": letter is not None, "correct": float(letter == r["answer"])})
    return pd.DataFrame(out, columns=["id", "source", "question_kind", "answer", "prediction", "letter", "parsed",
                                      "correct"])


def _mcq_summary(df: pd.DataFrame) -> dict:
    return {"acc": _mean(df.correct), "parse_rate": _mean(df.parsed)}


def summarize_mcq(df: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    table = by_group(df, _mcq_summary)
    return {**_mcq_summary(df), "by_source": table_to_dict(table)}, table


# ----------------------------------------------------------------------------------------------- instruct
def instruct_item(pred, abnormal: bool, category: str, bboxes, width: int, height: int) -> dict:
    """Scores of one instruct answer against the truth (pixel boxes, converted to percent with the image size)."""
    p = tasks.parse_instruct(pred)
    abnormal = bool(abnormal)
    detection = p["abnormal"] is not None and p["abnormal"] == abnormal
    if not abnormal:
        return {"detected": p["abnormal"], "detection_correct": float(detection), "category_correct": float("nan"),
                "iou": float("nan"), "mau_correct": float(p["abnormal"] is False), "pred_category": p["category"],
                "called_normal": float(p["abnormal"] is False)}
    truths = [schema.bbox_to_percent(b, width, height) for b in (bboxes or [])]
    if p["bbox"] is None:
        best = 0.0 if truths else float("nan")
    else:
        best = max((schema.iou(p["bbox"], t) for t in truths), default=float("nan"))
    cat_ok = p["category"] is not None and p["category"] == category
    box_ok = math.isnan(best) or best >= IOU_THRESHOLD  # no true box: the IoU condition is dropped
    return {"detected": p["abnormal"], "detection_correct": float(detection), "category_correct": float(cat_ok),
            "iou": best, "mau_correct": float(detection and cat_ok and box_ok), "pred_category": p["category"],
            "called_normal": float(p["abnormal"] is False)}


def _size(r: dict) -> tuple[int, int]:
    """(width, height) of a row's image; rows without pixels (baselines) carry width/height columns."""
    if r.get("image") is None:
        return int(r["width"]), int(r["height"])
    return schema.image_wh(r["image"])


_INSTRUCT_COLUMNS = ["id", "source", "abnormal", "category", "prediction", "detected", "detection_correct",
                     "category_correct", "iou", "mau_correct", "pred_category", "called_normal"]


def score_instruct(preds: Sequence[str], rows: Sequence[dict]) -> pd.DataFrame:
    out = []
    for pred, r in zip(preds, rows, strict=True):
        w, h = _size(r)
        item = instruct_item(pred, r["abnormal"], r["category"], r.get("bboxes"), w, h)
        out.append({"id": r.get("id"), "source": r.get("source"), "abnormal": bool(r["abnormal"]),
                    "category": r["category"], "prediction": pred, **item})
    return pd.DataFrame(out, columns=_INSTRUCT_COLUMNS)


def _instruct_summary(df: pd.DataFrame) -> dict:
    is_abn = df.abnormal.astype(bool)
    abn, normal = df[is_abn], df[~is_abn]
    return {"mau_acc": _mean(df.mau_correct), "detection_acc": _mean(df.detection_correct),
            "category_acc": _mean(abn.category_correct), "mean_iou": _mean(abn.iou),
            "normal_acc": _mean(normal.mau_correct), "abnormal_acc": _mean(abn.mau_correct)}


def summarize_instruct(df: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    table = by_group(df, _instruct_summary)
    return {**_instruct_summary(df), "by_source": table_to_dict(table)}, table


# ----------------------------------------------------------------------------------------------- conversations
def conv_item(pred_labels: Sequence, categories: Sequence[int], labels: Sequence[str]) -> dict:
    """Scores of one conversation from its predicted labels (None = unparseable), in the asked order."""
    right = [p is not None and p == t for p, t in zip(pred_labels, labels, strict=True)]
    cats = list(categories)
    diag = right[cats.index(5)] if 5 in cats else False
    consistent = all(p is not None for p in pred_labels) and all(
        dt.is_consistent_pair(cats[i], pred_labels[i], cats[i + 1], pred_labels[i + 1]) for i in range(len(cats) - 1))
    return {"question_acc": sum(right) / len(right) if right else float("nan"),
            "conversation_correct": float(bool(right) and all(right)), "diagnosis_correct": float(diag),
            "consistent": float(consistent), "parse_rate": _mean([p is not None for p in pred_labels])}


def parse_turns(answers: Sequence, categories: Sequence[int]) -> list[str | None]:
    return [dt.classify_answer(c, a) for a, c in zip(answers, categories, strict=True)]


_CONV_COLUMNS = ["id", "conv_id", "source", "variant", "diagnosis", "pred_labels", "turn_labels", "question_acc",
                 "conversation_correct", "diagnosis_correct", "consistent", "parse_rate"]


def score_conv(pred_answers: Sequence[Sequence[str]], rows: Sequence[dict]) -> pd.DataFrame:
    """Per conversation: its variant, the parsed labels and conv_item's scores."""
    out = []
    for answers, r in zip(pred_answers, rows, strict=True):
        labels = parse_turns(answers, r["turn_categories"])
        out.append({"id": r.get("id"), "conv_id": r.get("conv_id"), "source": r.get("source", "bone_marrow"),
                    "variant": r.get("variant", "standard"), "diagnosis": r.get("diagnosis"),
                    "pred_labels": labels, "turn_labels": list(r["turn_labels"]),
                    **conv_item(labels, r["turn_categories"], r["turn_labels"])})
    return pd.DataFrame(out, columns=_CONV_COLUMNS)


def _conv_summary(df: pd.DataFrame) -> dict:
    return {"question_acc": _mean(df.question_acc), "conversation_acc": _mean(df.conversation_correct),
            "diagnosis_acc": _mean(df.diagnosis_correct), "path_consistency": _mean(df.consistent),
            "parse_rate": _mean(df.parse_rate)}


def summarize_conv(df: pd.DataFrame) -> tuple[dict, dict[str, pd.DataFrame]]:
    from repro.data.conversations import VARIANTS

    order = [v for v in VARIANTS if v in set(df.variant)] + sorted(set(df.variant) - set(VARIANTS))
    by_variant = by_group(df, _conv_summary, "variant", order)
    by_source = by_group(df, _conv_summary)
    metrics = {**_conv_summary(df), "by_variant": table_to_dict(by_variant), "by_source": table_to_dict(by_source)}
    return metrics, {"by_variant": by_variant, "by_source": by_source}


# ----------------------------------------------------------------------------------------------- reports
def bleu(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults) of the normalize_text'ed texts on a 0..1 scale; nan for an empty corpus."""
    import sacrebleu

    if not preds:
        return float("nan")
    hyps = [normalize_text(p) for p in preds]
    score = sacrebleu.corpus_bleu(hyps, [[normalize_text(str(r)) for r in refs]]).score / 100.0
    return min(1.0, max(0.0, score))  # sacrebleu's exp(log-sum) can overshoot 100 by an ulp


_ROUGE = None


def rouge_l(pred, ref) -> float:
    """ROUGE-L F1 of one prediction on normalize_text'ed texts (then rouge_score's tokenizer, no stemming)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(_ROUGE.score(normalize_text(str(ref)), normalize_text(pred))["rougeL"].fmeasure)


def score_report(preds: Sequence[str], rows: Sequence[dict]) -> pd.DataFrame:
    out = [{"id": r.get("id"), "source": r.get("source"), "answer": r["answer"], "prediction": pred,
            "rouge_l": rouge_l(pred, r["answer"])} for pred, r in zip(preds, rows, strict=True)]
    return pd.DataFrame(out, columns=["id", "source", "answer", "prediction", "rouge_l"])


def _report_summary(df: pd.DataFrame) -> dict:
    return {"bleu": bleu(list(df.prediction), list(df.answer)), "rouge_l": _mean(df.rouge_l)}


def summarize_report(df: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    table = by_group(df, _report_summary)
    return {**_report_summary(df), "by_source": table_to_dict(table)}, table


SCORERS = {"vqa": score_vqa, "mcq": score_mcq, "instruct": score_instruct, "conv": score_conv,
           "report": score_report}
SUMMARIZERS = {"vqa": summarize_vqa, "mcq": summarize_mcq, "instruct": summarize_instruct, "conv": summarize_conv,
               "report": summarize_report}

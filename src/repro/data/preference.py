"""MMedPO preference curation (docs/methods.md §3(a)): text and visual dispreference pairs with clinical weights.

Written with `DatasetDict({"train": ...}).save_to_disk` to runs/<profile>/data/preference (default: <data_dir>/
preference) from the *train* split of the VQA (closed + open) and report tasks. Columns, one row per pair:
    prompt           str    the user question (the image belongs to it)
    chosen           str    the ground-truth answer y_w
    rejected         str    the dispreferred answer y_l (text pairs) or y_w again (visual pairs)
    images           [PIL]  the image x
    rejected_images  [PIL]  x for text pairs; the lesion-noised image x* for visual pairs
    weight           float  the per-pair DPO weight s' (always finite)
    kind             str    "text" | "visual"
    id, source, category    the image's metadata
    score            float  the raw clinical score s before normalisation (text: panel mean, visual: tool confidence)

Text pairs (D_t). Each prompt gets `n_samples` answers from the SFT model (temperature sampling, do_sample=True).
A sample *conflicts* with the truth when it states something else of the same kind:
    closed VQA  its yes/no differs from the truth
    open VQA    it names a clinical term (finding, region, modality) and shares no token with the truth
    report      it names a finding, region or modality other than the true one (negated findings do not count)
Among the conflicting samples the most clinically relevant one is kept (highest panel score: the "most plausible
hallucination" GPT-4o picks in the paper). When none conflicts, a templated hallucination is written from the
truth and the task banks (the paper's fallback): closed -> the same words with the other yes/no; open -> another
value of the asked facet; report -> a report of another finding at a mirrored location (abnormal) or of an
invented lesion (normal).
Score s = clinical.consensus(y_l, y_w).mean (the rule judge panel, consensus loop <= 5 rounds).

Visual pairs (D_v), for images with a lesion box: chosen = rejected = the true answer; the rejected image is the
image with the lesion noised (rewards/noise.py). Heatmap ("tool"):
    attention  the SFT model's attention from the answer's class tokens over the image (rewards.attention), scaled to
               [0, 1]; confidence = the model's P(yes) / (P(yes) + P(no)) for "Is there an abnormality?" (where its
               greedy answer says yes or no): the analog of MedKLIP's softmax(disease score)[1] that the release uses
               as the weight
    oracle     the true lesion mask from runs/<p>/data/images; confidence 1 (the mask is certain)
Noise: "released" = replace the region blur(map) > t by N(0, 10) noise; "blend" = the paper's
x* = sqrt(xi) x.h + sqrt(1-xi) eps.h + x.(1-h) with xi = diffusion_xi_bar(noise_step). Threshold t of the released
rule: "mean" (default) = the mean of the blurred map, or "released" = mean - std, which is negative for any peaked
map (a small mask, a softmax attention map) and then noises the *whole* image (see noise.py): with it "local lesion
noise" silently becomes the global-noise ablation, so the default keeps the region local.

Weights: clinical.dpo_weights(scores, mode), separately for text and visual pairs (a panel score and a classifier
probability are on different scales).
    text pairs    weight_mode, default "raw" (clinical.MMEDPO_MODE): s itself, as the release trains (s = 0
                  switches a pair off). "literal" gives the constant 0.75 of the formula as printed (so it cannot
                  test the weights), "normalize" s' = clip(1 + sqrt(0.1) (s - mean) / std, 0.75, 1.25) over the
                  text pairs (centred on 1, every pair in play; stage 05's sensitivity row), "minmax" 0.75 + 0.5 s.
                  Stage 04's MMedPO arm recomputes these from `score` with its own knob (mmedpo_weight_mode).
    visual pairs  visual_weight_mode, default "minmax": 0.75 + 0.5 p for the tool's probability p. A probability is
                  already on an absolute scale; z-scoring it over the set ("normalize") would stretch confidences of
                  0.62 +- 0.01 (a weak tool) over the whole 0.75-1.25 range. "raw" is the release (p itself).
Non-finite or None scores become the mean (normalize) or 0 (the per-pair modes), so weights are never None/NaN;
`drop_zero_weight=True` removes pairs whose weight is 0.

Deterministic for a seed: sampling runs under a forked, seeded torch RNG; templates and noise use numpy generators
keyed by (seed, row).

Curation is here; the set's I/O (COLUMNS, features, to_dataset, save_atomic, load_preference, oracle_masks) is in
preference_io.py, re-exported from this module.
"""

from __future__ import annotations

import math
import re
import zlib
from pathlib import Path

import numpy as np
import torch

from repro.chat import encode, eval_mode, user_message
from repro.chat import first_user_text as question_of
from repro.data import schema, tasks
from repro.data.preference_io import (  # noqa: F401 - re-exported: callers use pref.COLUMNS, pref.load_preference
    COLUMNS,
    features,
    load_preference,
    oracle_masks,
    save_atomic,
    to_dataset,
)
from repro.rewards import clinical, noise
from repro.rewards.vqa import TERM_FACET, RuleJudge

TASKS = ("vqa", "report")
KINDS = ("text", "visual")
ABNORMAL_QUESTION = tasks.BANKS["c_abnormal"][0][0]  # "Is there an abnormality?" (a train wording)
NOISE_STEP = 500
_TERM = re.compile(r"(?<![\w-])(" + "|".join(re.escape(t) for t in sorted(TERM_FACET, key=len, reverse=True))
                   + r")(?![\w-])")


# ---------------------------------------------------------------- rows
def _rng(seed: int, *key) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32("|".join(map(str, key)).encode())])


def truth_of(row: dict) -> str:
    return row["messages"][-1]["content"]


def load_rows(data_dir, task: str, max_rows: int = 0) -> list[dict]:
    """Train rows of a task; with max_rows > 0 a subset spread over sources and classes (evaluation.load_rows)."""
    from repro import evaluation as ev

    return ev.load_rows(data_dir, task, "train", max_rows or None)


# ---------------------------------------------------------------- conflicts with the truth
def _facts(row: dict) -> dict:
    return {"finding": row["category"], "region": row["region"], "modality": row["modality"]}


def conflicts(row: dict, sample: str) -> bool:
    """Does `sample` state something other than the truth, in the terms of the row's task (module docstring)?"""
    from repro.metrics import open_recall, parse_yes_no

    if not isinstance(sample, str) or not sample.strip():
        return False
    truth = truth_of(row)
    if row.get("task") == "vqa" and row.get("answer_type") == "closed":
        said = parse_yes_no(sample)
        return said is not None and said != parse_yes_no(truth)
    if row.get("task") == "vqa":
        return bool(_TERM.search(sample.lower())) and open_recall(sample, truth) == 0.0
    named = RuleJudge().details(sample, _facts(row))["named"]
    want = {f: str(v).lower() for f, v in _facts(row).items()}
    return any(named[f] and set(named[f]) != {want[f]} for f in named)


def pick_rejected(row: dict, samples: list[str]) -> tuple[str | None, float | None]:
    """The conflicting sample with the highest clinical-relevance score (first on ties), or (None, None)."""
    best, best_score = None, None
    for s in samples:
        if conflicts(row, s) and s.strip().lower() != truth_of(row).strip().lower():
            score = clinical.consensus(s, truth_of(row)).mean
            if best_score is None or score > best_score:
                best, best_score = s.strip(), score
    return best, best_score


# ---------------------------------------------------------------- templated hallucinations
def _other(rng, pool, value) -> str:
    rest = sorted({p for p in pool if str(p).lower() != str(value).lower()})
    return rest[int(rng.integers(len(rest)))]


def _findings_pool(row: dict) -> list[str]:
    if row["source"] == tasks.BONE_MARROW:
        return list(schema.BONE_MARROW_CLASSES)
    own = schema.SOURCES[row["source"]]["categories"]
    # The same source's other findings are the most plausible confusion; single-finding sources borrow the MAU ones.
    return own + [schema.NORMAL] if len(own) > 1 else tasks.MAU_CATEGORIES + [schema.NORMAL]


def templated_hallucination(row: dict, seed: int = 0, pool: list[str] | None = None) -> str:
    """A wrong answer written from the truth and the task banks (module docstring); deterministic per (seed, row).
    Rows of real data sets (a source SynthMed does not know) take another answer of the same kind from `pool`."""
    rng = _rng(seed, "template", row.get("task"), row.get("id"), question_of(row))
    truth = truth_of(row)
    if row.get("source") not in schema.SOURCES:
        return _real_hallucination(truth, pool or [], rng)
    if row.get("task") == "vqa" and row.get("answer_type") == "closed":  # the same words, the other yes/no
        from repro.metrics import parse_yes_no

        said = parse_yes_no(truth)
        flip = "no" if said == "yes" else "yes"
        return re.sub(rf"\b{said}\b", flip, truth, count=1, flags=re.I) if said else flip
    if row.get("task") == "vqa":
        kind = row.get("question_kind") or "finding"
        pool = {"modality": tasks.MODALITIES, "region": tasks.MAU_REGIONS + ["bone marrow"]}.get(
            kind, _findings_pool(row))
        return _other(rng, pool, truth)
    return _report_hallucination(row, rng)


def _real_hallucination(truth: str, pool: list[str], rng) -> str:
    """Real data has no facts to rewrite (no category, box or finding bank): another row's answer of the same task
    and answer type (another report for IU-Xray, another open answer, another closed non-yes/no answer such as
    "left" for "right"); yes/no answers get the opposite (also when the pool has nothing else)."""
    from repro.metrics import is_yes_no

    flip = "no" if truth.strip().lower().startswith("yes") else "yes"
    if is_yes_no(truth):
        return flip
    rest = sorted({p for p in pool if p.strip().lower() != truth.strip().lower() and not is_yes_no(p)})
    return rest[int(rng.integers(len(rest)))] if rest else flip


def _report_hallucination(row: dict, rng) -> str:
    img = np.asarray(row["image"])
    h, w = img.shape[:2]
    fake = {"image": img, "modality": row["modality"], "region": row["region"], "extra": {}}
    boxes = row.get("bboxes") or []
    if row["abnormal"]:
        fake["category"] = _other(rng, [c for c in _findings_pool(row) if c != schema.NORMAL], row["category"])
        # Mirror the box through the image centre: another location, same size.
        x1, y1, x2, y2 = boxes[0] if boxes else (0, 0, w // 4, h // 4)
        fake["bboxes"] = [[w - x2, h - y2, w - x1, h - y1]]
    else:
        cats = schema.SOURCES[row["source"]]["categories"]
        fake["category"] = cats[int(rng.integers(len(cats)))]
        side = max(2, w // 6)
        x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        fake["bboxes"] = [[x, y, x + side, y + side]]
    fake["abnormal"] = True
    return tasks.report_text(fake, rng)


# ---------------------------------------------------------------- model calls (monkeypatchable in tests)
def sample_answers(model, processor, rows: list[dict], n: int, max_new_tokens: int, temperature: float, seed: int,
                   batch_size: int = 32, progress: bool = True, desc: str = "sampling") -> list[list[str]]:
    """`n` sampled answers per row (do_sample=True at `temperature`), under a forked torch RNG seeded with `seed`."""
    from repro import evaluation as ev

    if n <= 0 or not rows:
        return [[] for _ in rows]
    repeated = [r for r in rows for _ in range(n)]
    with torch.random.fork_rng(devices=[]):  # deterministic, and the caller's RNG stream is left alone
        torch.manual_seed(seed)
        flat = ev.generate(model, processor, repeated, max_new_tokens, batch_size=batch_size,
                           temperature=max(float(temperature), 1e-3), progress=progress, desc=desc)
    return [flat[i * n:(i + 1) * n] for i in range(len(rows))]


def abnormal_probability(model, processor, images: list, question: str = ABNORMAL_QUESTION,
                         batch_size: int = 32, max_new_tokens: int = 16) -> list[float]:
    """P(yes) / (P(yes) + P(no)) where the model's greedy answer to `question` decides, per image.

    The decision is the first generated "yes"/"no" token (with or without its leading space): a closed answer
    names what it sees first ("It shows cyst, so yes.", tasks.closed_target), so the first answer token is not the
    decision. An answer that never says yes or no falls back to the first token's two-way softmax."""
    tok = processor.tokenizer
    ids = {sp: [tok(f"{sp}{w}", add_special_tokens=False)["input_ids"] for w in ("yes", "no")] for sp in ("", " ")}
    # a spelling counts only when both words are single tokens (else its first piece, "Ġ" say, would match anything)
    pairs = [(y[0], n[0]) for y, n in ids.values() if len(y) == len(n) == 1] or [(ids[""][0][0], ids[""][1][0])]
    decides = {t: pair for pair in pairs for t in pair}
    out: list[float] = []
    text = processor.apply_chat_template([user_message(question, with_image=True)], add_generation_prompt=True)
    with eval_mode(model), torch.no_grad():
        for s in range(0, len(images), batch_size):
            chunk = images[s:s + batch_size]
            # left padding: the last position is the next token for every row
            enc = encode(model, processor, [text] * len(chunk), chunk, padding_side="left")
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                 top_k=None, pad_token_id=tok.pad_token_id, output_scores=True,
                                 return_dict_in_generate=True)
            new = gen.sequences[:, enc["input_ids"].shape[1]:]  # [batch, steps]; gen.scores: steps x [batch, vocab]
            for b in range(len(chunk)):
                step = next((t for t in range(new.shape[1]) if int(new[b, t]) in decides), None)
                yes, no = decides[int(new[b, step])] if step is not None else pairs[0]
                logits = gen.scores[step if step is not None else 0][b].float()
                out.append(float(torch.softmax(logits[[yes, no]], dim=-1)[0]))
    return out


FINDING_QUESTION = tasks.BANKS["o_finding"][0][0]  # "What abnormality is shown?" (a train wording)


def attention_heatmaps(model, processor, rows: list[dict], batch_size: int = 8) -> list[np.ndarray]:
    """The attention tool's heatmap per image: the model's attention from the true category's tokens over the image
    when it answers FINDING_QUESTION with that category, max-scaled to [0, 1] (the blend reads h as a weight).
    One canonical question per image, so the map does not depend on which question of the image came first."""
    from repro.rewards import attention

    probe = [{"image": r["image"], "category": r["category"], "question": FINDING_QUESTION} for r in rows]
    maps = attention.image_attention(model, processor, probe, [r["category"] for r in rows], batch_size=batch_size)
    out = []
    for m in maps:
        a = np.asarray(m.get("map", np.zeros((1, 1))), dtype=float)
        out.append(a / a.max() if a.size and a.max() > 0 else np.zeros_like(a))
    return out


# ---------------------------------------------------------------- lesion noising
def noised_image(image, heatmap, rng, method: str = "released", threshold="mean",
                 noise_step: int = NOISE_STEP) -> np.ndarray:
    """The rejected image x*: `heatmap` (any 2-D map) resized to the image and noised by the released rule or the
    paper's blend (module docstring). threshold: "mean", "released" (mean - std) or a number."""
    img = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if method == "blend":
        return noise.lesion_noise_blend(img, heatmap, noise.diffusion_xi_bar(noise_step), rng)
    if method != "released":
        raise ValueError(f"unknown noise method {method!r}; expected 'released' or 'blend'")
    if threshold == "mean":
        blurred = noise.gaussian_blur(noise.resize_bilinear(heatmap, img.shape[0], img.shape[1]))
        t = float(blurred.mean())
    elif threshold == "released":
        t = None
    else:
        t = float(threshold)
    return noise.lesion_noise_released(img, heatmap, rng, threshold=t)


# ---------------------------------------------------------------- weights
def weights_for(scores: list, mode: str) -> list[float]:
    """clinical.dpo_weights with None / non-finite scores handled: "normalize" treats them as the mean score, the
    per-pair modes as 0. Always finite floats."""
    clean = [float(s) if isinstance(s, (int, float)) and math.isfinite(s) else float("nan") for s in scores]
    if mode != "normalize":
        clean = [0.0 if math.isnan(s) else s for s in clean]
    return [float(w) for w in clinical.dpo_weights(clean, mode)]


# ---------------------------------------------------------------- build
def _pair(row, rejected, rejected_image, kind, score) -> dict:
    return {"prompt": question_of(row), "chosen": truth_of(row), "rejected": rejected, "images": [row["image"]],
            "rejected_images": [rejected_image], "weight": 0.0, "kind": kind, "id": row["id"],
            "source": row["source"], "category": row["category"], "score": float(score)}


def text_pairs(model, processor, rows: list[dict], task: str, *, n_samples: int, temperature: float, seed: int,
               batch_size: int, progress: bool) -> tuple[list[dict], dict]:
    """One text pair per row (sampled conflicting answer, else a templated one) and counts of each origin."""
    from repro import evaluation as ev

    samples = (sample_answers(model, processor, rows, n_samples, ev.MAX_NEW_TOKENS[task], temperature, seed,
                              batch_size, progress, desc=f"sampling {task} x{n_samples}")
               if model is not None else [[] for _ in rows])
    pairs, counts = [], {"sampled": 0, "templated": 0}
    pools: dict = {}  # real rows' fallback: the other answers of the same answer type
    for r in rows:
        pools.setdefault(r.get("answer_type"), []).append(truth_of(r))
    for row, ss in zip(rows, samples):
        rejected, score = pick_rejected(row, ss)
        if rejected is None:
            rejected = templated_hallucination(row, seed, pools.get(row.get("answer_type")))
            score = clinical.consensus(rejected, truth_of(row)).mean
            counts["templated"] += 1
        else:
            counts["sampled"] += 1
        pairs.append(_pair(row, rejected, row["image"], "text", score))
    return pairs, counts


def visual_pairs(model, processor, rows: list[dict], data_dir, *, heatmap: str, method: str, threshold,
                 noise_step: int, seed: int, batch_size: int) -> list[dict]:
    """One visual pair per row of an image with a lesion box (module docstring)."""
    from PIL import Image

    rows = [r for r in rows if r.get("abnormal") and r.get("bboxes")]
    if not rows:
        return []
    first = {}
    for r in rows:  # one heatmap, confidence and noised image per image, shared by its questions
        first.setdefault(r["id"], r)
    ids = list(first)
    if heatmap == "oracle":
        masks = oracle_masks(data_dir, set(ids))
        maps = [masks[i].astype(float) for i in ids]
        conf = [1.0] * len(ids)
    elif heatmap == "attention":
        if model is None:
            raise ValueError("heatmap='attention' needs the SFT model (loaded with attn_implementation='eager')")
        maps = attention_heatmaps(model, processor, [first[i] for i in ids], batch_size=max(1, batch_size // 4))
        conf = abnormal_probability(model, processor, [first[i]["image"] for i in ids], batch_size=batch_size)
    else:
        raise ValueError(f"unknown heatmap {heatmap!r}; expected 'attention' or 'oracle'")
    noised = {i: Image.fromarray(noised_image(first[i]["image"], m, _rng(seed, "noise", i), method, threshold,
                                              noise_step))
              for i, m in zip(ids, maps)}
    confidence = dict(zip(ids, conf))
    return [_pair(r, truth_of(r), noised[r["id"]], "visual", confidence[r["id"]]) for r in rows]


def build_preference(model, processor, data_dir, out_dir=None, *, seed: int = 0, task_names: tuple = TASKS,
                     max_rows_per_task: int = 0, n_samples: int = 4, temperature: float = 1.0,
                     kinds: tuple = KINDS, heatmap: str = "attention", noise_method: str = "released",
                     noise_threshold="mean", noise_step: int = NOISE_STEP, weight_mode: str = clinical.MMEDPO_MODE,
                     visual_weight_mode: str = "minmax", drop_zero_weight: bool = False, batch_size: int = 32,
                     progress: bool = True) -> dict:
    """Curate the MMedPO preference set from the train split and save it (module docstring).

    model/processor: the SFT model (eager attention when heatmap="attention"); model=None writes templated text
    pairs only and needs heatmap="oracle". Returns {"path", "dataset" (DatasetDict), "summary"}."""
    from datasets import DatasetDict

    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown pair kind(s) {sorted(unknown)}; expected a subset of {KINDS}")
    out_dir = Path(out_dir) if out_dir is not None else Path(data_dir) / "preference"
    text, visual, origin = [], [], {}
    for task in task_names:
        rows = load_rows(data_dir, task, max_rows_per_task)
        if "text" in kinds:
            pairs, origin[task] = text_pairs(model, processor, rows, task, n_samples=n_samples,
                                             temperature=temperature, seed=seed, batch_size=batch_size,
                                             progress=progress)
            text += pairs
        if "visual" in kinds:
            visual += visual_pairs(model, processor, rows, data_dir, heatmap=heatmap, method=noise_method,
                                   threshold=noise_threshold, noise_step=noise_step, seed=seed,
                                   batch_size=batch_size)
    for group, mode in ((text, weight_mode), (visual, visual_weight_mode)):
        for p, w in zip(group, weights_for([p["score"] for p in group], mode)):
            p["weight"] = w
    pairs = [p for p in text + visual if not (drop_zero_weight and p["weight"] == 0.0)]
    dd = DatasetDict({"train": to_dataset(pairs)})
    save_atomic(dd, out_dir)
    summary = {"pairs": len(pairs), "text": sum(p["kind"] == "text" for p in pairs),
               "visual": sum(p["kind"] == "visual" for p in pairs), "text_origin": origin,
               "weight_mode": weight_mode, "visual_weight_mode": visual_weight_mode, "heatmap": heatmap,
               "noise_method": noise_method, "noise_threshold": noise_threshold, "path": str(out_dir)}
    return {"path": out_dir, "dataset": dd, "summary": summary}


def noising_examples(model, processor, data_dir, rows: list[dict], seed: int = 0, noise_step: int = NOISE_STEP,
                     split: str = "train") -> list[dict]:
    """Figure rows (rewards.figures.noising) for each row's image, once with the attention tool's heatmap (when a
    model is given) and once with the oracle mask: the released rule with t = mean - std and t = mean, and the
    blend; each title gives the share of pixels changed."""
    masks = oracle_masks(data_dir, {r["id"] for r in rows}, split)
    att = attention_heatmaps(model, processor, rows) if model is not None else [None] * len(rows)
    out = []
    for r, a in zip(rows, att):
        img = np.asarray(r["image"].convert("RGB"))
        for tool, heat in (("attention", a), ("oracle mask", masks.get(r["id"]))):
            if heat is None:
                continue
            panels = {}
            for title, method, thr in (("released, t=mean-std", "released", "released"),
                                       ("released, t=mean", "released", "mean"), ("blend", "blend", "mean")):
                x = noised_image(img, heat.astype(float), _rng(seed, "noise", r["id"]), method, thr, noise_step)
                changed = float((x != img).any(axis=2).mean())
                panels[f"{title}\n{changed:.0%} of pixels changed"] = x
            out.append({"image": img, "bboxes": r.get("bboxes") or [], "heatmap": heat, "panels": panels,
                        "label": f"{r['source']}: {r['category']}\n{tool}"})
    return out

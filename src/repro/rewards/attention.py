"""UMed-LVLM vision-relevance reward (VRR): attention from the answer's abnormal-class tokens onto the lesion.

Paper (docs/methods.md §4(a)): r^att = sum_{i in N} sum_{j in Nbar} softmax_j(Q_i K_j^T / sqrt(d_k)), the softmax taken
over the image patches, N = abnormal-class tokens of the response, Nbar = image patches inside the abnormal region.

Definition used here, for one (image, prompt, completion) with true boxes:
  1. One teacher-forced forward pass over  prompt + completion  with eager attention and output_attentions=True.
     The prompt is the chat template of the user turn (image block + text) with the generation prompt; the completion
     is tokenized on its own with special tokens split, so a completion that spells "<image>" cannot add image tokens.
  2. A = mean over the chosen layers l in L and all heads h of the attention probabilities A^{l,h} (T x T).
     L = all decoder layers by default (`layers="all"`), or "last", or a list of layer indices.
  3. Anchor rows N: the completion tokens whose characters overlap an occurrence of the true category (column
     `category`, whole word, any case) -> anchor "category"; else those of any abnormal category word the completion
     names -> "named"; else every completion token -> "all" (fallback="all": the default of the analysis functions
     vrr_details / vrr_scores / attention_map, so a map exists for any answer) or none (fallback="zero": VRR = 0 for
     an answer that names no class - make_vrr_reward's default, the training reward, because the paper's sum over an
     empty set N is 0; with "all" an answer that names no abnormality would still be paid for looking at the lesion).
     An empty completion has no rows: VRR = 0.
  4. Image columns I: the contiguous block where input_ids == config.image_token_id, g_h x g_w tokens in row-major
     order (g = sqrt(|I|) for a square grid: 8 x 8 for 64 px images with 8 px patches; Qwen-VL: image_grid_thw
     divided by the merge size).  p_ij = A_ij / sum_{k in I} A_ik for i in N, j in I (the paper's softmax over patches).
  5. Box patches B: the patches that a true box (pixel [x1, y1, x2, y2], x2/y2 exclusive, image size from the image)
     covers by more than `min_cover` of the patch's area (default 0: any overlap). Several boxes: their union.
  6. VRR = (1/|N|) sum_{i in N} sum_{j in B} p_ij,  in [0, 1].  None for normal images (abnormal False or no true
     box), as ALR.  Chance level (uniform attention over the image) is |B| / |I|, reported as `chance`.

Why a mean over N where the paper sums: the sum grows with the number of class tokens, so repeating the class word
(or a tokenizer that splits it finer) would raise the reward; the mean is a share in [0, 1] like ALR, and
localization.aar_total divides it by the per-query maximum anyway.
Why average over heads and layers *before* renormalising over the image: the average is weighted by how much each
head looks at the image; renormalising each head first would let a head that puts 1e-6 of its mass on the image
vote as much as one that reads it.
Why all layers by default: the paper does not say which layer; the mean over layers is the conventional read-out
and uses every layer's look at the image (the `layers` knob selects "last" or given indices). It is not tuned to our
models: on the stage-02 SFT models both sit near chance on the true answers (smoke: all 0.084, last 0.082, chance
0.076; cpu: all 0.093, last 0.107, chance 0.090).
Assumption: the processor does not crop (SynthMed images are square; CLIP centre crops of non-square images would
shift the grid).

Public API:
    vrr_details(model, processor, rows, completions, prompts=None, **opts) -> list[dict]   (batched; "reward" key)
    vrr_scores(model, processor, rows, completions, prompts=None, **opts)  -> list[float | None]
    attention_map(model, processor, row, completion, prompt=None, layers="all") -> np.ndarray (g_h x g_w, sums to 1)
    patch_mask(bboxes, image_wh, grid_hw, min_cover=0.0) -> np.ndarray[bool] (g_h x g_w)
    make_vrr_reward(model, processor, **opts) -> TRL reward f(prompts, completions, **columns), with .explain
The model must be loaded with attn_implementation="eager" (sdpa silently returns no attention weights):
    model, processor = repro.models.load_vlm(path, attn_implementation="eager")
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from repro.chat import eval_mode, rgb, to_model_dtype
from repro.data import schema
from repro.rewards import column_at, finite_or_none, text_of

DEFAULT_LAYERS = "all"
MAX_COMPLETION_TOKENS = 256  # longest completion read; the tasks' targets are < 130 tokens
_ABNORMAL_WORDS = sorted({c.lower() for s in schema.SOURCES.values() for c in s["categories"]}, key=len, reverse=True)
_NAMED = re.compile(r"(?<![\w-])(" + "|".join(re.escape(c) for c in _ABNORMAL_WORDS) + r")(?![\w-])", re.I)


# ---------------------------------------------------------------- geometry
def patch_mask(bboxes, image_wh, grid_hw, min_cover: float = 0.0) -> np.ndarray:
    """Boolean g_h x g_w mask of the patches a true box covers by more than `min_cover` of the patch area.

    Patch (r, c) spans pixels [c W/g_w, (c+1) W/g_w) x [r H/g_h, (r+1) H/g_h). Malformed boxes are skipped."""
    (w, h), (gh, gw) = image_wh, grid_hw
    cover = np.zeros((gh, gw))
    xs, ys = np.arange(gw + 1) * w / gw, np.arange(gh + 1) * h / gh
    for x1, y1, x2, y2 in _true_boxes(bboxes):
        ox = np.clip(np.minimum(x2, xs[1:]) - np.maximum(x1, xs[:-1]), 0, None) / (w / gw)
        oy = np.clip(np.minimum(y2, ys[1:]) - np.maximum(y1, ys[:-1]), 0, None) / (h / gh)
        cover = np.maximum(cover, oy[:, None] * ox[None, :])
    return cover > min_cover


def _true_boxes(bboxes) -> list:
    """The well-formed boxes: 4 finite numbers with x2 > x1 and y2 > y1."""
    out = []
    for b in bboxes if isinstance(bboxes, (list, tuple)) else []:
        if (isinstance(b, (list, tuple)) and len(b) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b)
                and b[2] > b[0] and b[3] > b[1]):
            out.append(list(b))
    return out


def anchor_spans(text: str, category=None, fallback: str = "all") -> tuple[list[tuple[int, int]], str]:
    """Character spans of the anchor words and which rule found them ("category", "named", or the fallback: "all"
    = the whole text, "zero" = no anchor, so VRR = 0 for an answer that names no class)."""
    if isinstance(category, str) and category.strip() and category.lower() != schema.NORMAL:
        pat = re.compile(r"(?<![\w-])" + re.escape(category.strip()) + r"(?![\w-])", re.I)
        spans = [m.span() for m in pat.finditer(text)]
        if spans:
            return spans, "category"
    spans = [m.span() for m in _NAMED.finditer(text)]
    if spans:
        return spans, "named"
    return ([(0, len(text))], "all") if fallback == "all" else ([], "none")


# ---------------------------------------------------------------- prompts
def _with_image(content) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "image"}, {"type": "text", "text": content}]
    blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, (list, tuple)) else []
    return blocks if any(b.get("type") == "image" for b in blocks) else [{"type": "image"}, *blocks]


def prompt_messages(prompt=None, row: dict | None = None) -> list[dict]:
    """The chat of the prompt: a TRL chat list as given (the first user turn gets an image block if it has none), a
    str as one user turn, else the row's `prompt`, first user message or `question` (else an empty question)."""
    row = row or {}
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
        msgs, done = [], False
        for m in prompt:
            m = dict(m)
            if not done and m.get("role") == "user":
                m["content"], done = _with_image(m.get("content")), True
            msgs.append(m)
        return msgs if done else [{"role": "user", "content": _with_image("")}, *msgs]
    if not isinstance(prompt, str):
        prompt = row.get("prompt") if isinstance(row.get("prompt"), str) else None
    if prompt is None:
        msgs = row.get("messages")
        user = next((m for m in msgs if isinstance(m, dict) and m.get("role") == "user"), None) if isinstance(
            msgs, (list, tuple)) else None
        if user is not None:
            return prompt_messages([user], None)
        prompt = row.get("question") if isinstance(row.get("question"), str) else ""
    return [{"role": "user", "content": _with_image(prompt)}]


# ---------------------------------------------------------------- the forward pass
def check_eager(model) -> None:
    """Raise a clear error for a model whose attention implementation returns no weights (sdpa, flash)."""
    impl = _attn_impl(model)
    if impl not in (None, "eager"):
        raise ValueError(f"VRR needs attention weights, but the model uses attn_implementation={impl!r}; load it "
                         "with repro.models.load_vlm(path, attn_implementation='eager')")


def _completion_tokens(tokenizer, text: str, category, max_tokens: int, image_token_id, fallback: str) -> dict:
    spans, kind = anchor_spans(text, category, fallback)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets: anchor on all tokens
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        offsets, kind, spans = [(0, len(text))] * len(ids), "all", [(0, len(text))]
    keep = [k for k, t in enumerate(ids) if t != image_token_id][:max_tokens]  # never a second image block
    ids, offsets = [ids[k] for k in keep], [offsets[k] for k in keep]
    anchors = [k for k, (a, b) in enumerate(offsets) if any(a < e and s < b for s, e in spans)]
    if not anchors and ids and fallback == "all":  # the anchor words were cut off by max_tokens
        anchors, kind = list(range(len(ids))), "all"
    # Causal attention: tokens after the last anchor cannot change the anchors' rows, so they are not run.
    ids = ids[: anchors[-1] + 1] if anchors else []
    return {"ids": ids, "anchors": anchors, "anchor": kind if anchors else "none"}


def _grid(n_image: int, enc, i: int, processor) -> tuple[int, int] | None:
    thw = enc.get("image_grid_thw") if hasattr(enc, "get") else None
    if thw is not None and len(thw) > i:
        merge = int(getattr(getattr(processor, "image_processor", None), "merge_size", 1) or 1)
        gh, gw = int(thw[i][1]) // merge, int(thw[i][2]) // merge
        return (gh, gw) if gh * gw == n_image else None
    g = math.isqrt(n_image)
    return (g, g) if g * g == n_image and g > 0 else None


def _layer_indices(layers, n: int) -> list[int]:
    if layers == "all" or layers is None:
        return list(range(n))
    if layers == "last":
        return [n - 1]
    idx = [layers] if isinstance(layers, int) else list(layers)
    out = sorted({i % n for i in idx if isinstance(i, int) and -n <= i < n})
    if not out:
        raise ValueError(f"layers={layers!r} selects none of the model's {n} decoder layers")
    return out


def _attend_batch(model, processor, items: list[dict], layers, max_tokens: int, fallback: str) -> list[dict]:
    """One forward pass for a batch of {"messages", "image", "text", "category"}: per item the image-attention map."""
    tok = processor.tokenizer
    image_token_id = getattr(model.config, "image_token_id", None)
    texts = [processor.apply_chat_template(it["messages"], add_generation_prompt=True) for it in items]
    enc = processor(text=texts, images=[[rgb(it["image"])] for it in items], return_tensors="pt", padding=True)
    comps = [_completion_tokens(tok, it["text"], it.get("category"), max_tokens, image_token_id, fallback)
             for it in items]
    mask = enc["attention_mask"].bool()
    per_token = [k for k in enc if k in ("input_ids", "attention_mask") or k.endswith("token_type_ids")]
    seqs = {k: [] for k in per_token}
    for i, c in enumerate(comps):
        n_new = len(c["ids"])
        for k in per_token:
            prompt_part = enc[k][i][mask[i]]
            tail = {"input_ids": torch.tensor(c["ids"], dtype=prompt_part.dtype),
                    "attention_mask": torch.ones(n_new, dtype=prompt_part.dtype)}.get(
                k, torch.zeros(n_new, dtype=prompt_part.dtype))
            seqs[k].append(torch.cat([prompt_part, tail]))
    lengths = [len(s) for s in seqs["input_ids"]]
    width = max(lengths)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    # Right padding: every sequence keeps positions 0..n-1, exactly as when it is run alone (causal attention).
    batch = {k: torch.stack([torch.nn.functional.pad(s, (0, width - len(s)), value=pad_id if k == "input_ids" else 0)
                             for s in v]) for k, v in seqs.items()}
    for k in enc:
        if k not in batch:
            batch[k] = enc[k]
    batch = {k: v.to(model.device) for k, v in batch.items()}
    with eval_mode(model), torch.no_grad():
        out = model(**to_model_dtype(model, batch), output_attentions=True, use_cache=False)
    atts = getattr(out, "attentions", None)
    if not atts or atts[0] is None:
        raise ValueError("the forward pass returned no attention weights; load the model with "
                         "attn_implementation='eager'")
    sel = _layer_indices(layers, len(atts))
    results = []
    for i, c in enumerate(comps):
        ids = seqs["input_ids"][i]
        img = (ids == image_token_id).nonzero().flatten()
        grid = _grid(len(img), enc, i, processor)
        if grid is None:
            results.append({"error": f"{len(img)} image tokens do not form a known grid"})
            continue
        if not c["anchors"]:
            results.append({"map": np.zeros(grid), "anchor": "none", "anchor_tokens": [], "image_mass": 0.0,
                            "grid": grid})
            continue
        dev = atts[0].device
        rows = torch.tensor([lengths[i] - len(c["ids"]) + a for a in c["anchors"]], device=dev)
        img = img.to(dev)
        # Only the anchor rows and image columns are read: |N| x |I| per layer, never a stack of T x T maps.
        on_image = sum(atts[layer][i][:, rows][:, :, img].float().mean(dim=0) for layer in sel) / len(sel)
        on_image = on_image.cpu().double()  # |N| x |I|, averaged over heads and layers
        mass = on_image.sum(dim=1, keepdim=True)
        p = torch.where(mass > 0, on_image / mass.clamp_min(1e-300), torch.zeros_like(on_image))
        results.append({"map": p.mean(dim=0).numpy().reshape(grid), "anchor": c["anchor"],
                        "anchor_tokens": tok.convert_ids_to_tokens([c["ids"][k] for k in c["anchors"]]),
                        "image_mass": float(mass.mean()), "grid": grid})
    return results


def image_attention(model, processor, rows, completions, prompts=None, layers=DEFAULT_LAYERS, batch_size: int = 8,
                    max_completion_tokens: int = MAX_COMPLETION_TOKENS, fallback: str = "all") -> list[dict]:
    """Per row: {"map": g_h x g_w array (the anchors' attention over the image, sums to 1, or all 0), "anchor",
    "anchor_tokens", "image_mass" (share of the anchors' attention on the image before renormalising), "grid"};
    {"error": msg} for a row that could not be run. A batch that fails is retried row by row."""
    check_eager(model)
    items = []
    for i, row in enumerate(rows):
        row = row if isinstance(row, dict) else {}
        image = row.get("image")
        if image is None and isinstance(row.get("images"), (list, tuple)) and row["images"]:
            image = row["images"][0]
        items.append({"messages": prompt_messages(column_at(prompts, i), row), "image": image,
                      "text": text_of(column_at(completions, i, "")), "category": row.get("category")})
    out: list[dict] = []
    for s in range(0, len(items), max(1, int(batch_size))):
        chunk = items[s: s + max(1, int(batch_size))]
        try:
            out += _attend_batch(model, processor, chunk, layers, max_completion_tokens, fallback)
        except ValueError as e:
            if "attention" in str(e):  # a configuration error, not a bad completion: say so
                raise
            out += _one_by_one(model, processor, chunk, layers, max_completion_tokens, fallback)
        except Exception:  # noqa: BLE001 - totality: one odd row must not sink the batch
            out += _one_by_one(model, processor, chunk, layers, max_completion_tokens, fallback)
    return out


def _one_by_one(model, processor, items, layers, max_tokens, fallback) -> list[dict]:
    out = []
    for it in items:
        try:
            out += _attend_batch(model, processor, [it], layers, max_tokens, fallback)
        except Exception as e:  # noqa: BLE001
            out.append({"error": f"{type(e).__name__}: {e}"})
    return out


# ---------------------------------------------------------------- VRR
def _applies(row: dict) -> bool:
    return row.get("abnormal") is not False and bool(_true_boxes(row.get("bboxes")))


def vrr_details(model, processor, rows, completions, prompts=None, layers=DEFAULT_LAYERS, min_cover: float = 0.0,
                batch_size: int = 8, max_completion_tokens: int = MAX_COMPLETION_TOKENS,
                fallback: str = "all") -> list[dict]:
    """VRR of each (row, completion) with its explanation (module docstring). Rows are dicts with image, bboxes,
    abnormal, category and a prompt (argument `prompts`, else the row's prompt / messages / question).
    Keys: reward (float in [0, 1] or None), anchor, anchor_tokens, map, box_patches, chance, image_mass."""
    rows = [r if isinstance(r, dict) else {} for r in rows]
    todo = [i for i, r in enumerate(rows) if _applies(r)]
    out: list[dict] = [{"reward": None, "why": "normal image (no true box)"} for _ in rows]
    att = image_attention(model, processor, [rows[i] for i in todo], [column_at(completions, i, "") for i in todo],
                          [column_at(prompts, i) for i in todo], layers, batch_size, max_completion_tokens, fallback)
    for i, a in zip(todo, att):
        if "error" in a:
            out[i] = {"reward": None, "why": a["error"]}
            continue
        row = rows[i]
        wh = schema.image_wh(row.get("image"), row.get("image_size"))
        box = patch_mask(row.get("bboxes"), wh, a["grid"], min_cover)
        out[i] = {"reward": finite_or_none(float((a["map"] * box).sum()), 0.0, 1.0), "anchor": a["anchor"],
                  "anchor_tokens": a["anchor_tokens"], "map": a["map"], "box_patches": box,
                  "chance": float(box.mean()), "image_mass": a["image_mass"]}
    return out


def vrr_scores(model, processor, rows, completions, prompts=None, **opts) -> list[float | None]:
    """VRR per (row, completion): float in [0, 1], or None for normal images (see vrr_details)."""
    return [d["reward"] for d in vrr_details(model, processor, rows, completions, prompts, **opts)]


def attention_map(model, processor, row: dict, completion, prompt=None, layers=DEFAULT_LAYERS) -> np.ndarray:
    """The g_h x g_w map of the completion's anchor tokens' attention over the image patches (sums to 1; all zeros
    for an empty completion). Works for normal images too. Row-major like the image grid: map[r, c] is the patch in
    row r, column c. Raises ValueError when the row cannot be run (a figure should not show a blank silently)."""
    a = image_attention(model, processor, [row], [completion], [prompt], layers)[0]
    if "error" in a:
        raise ValueError(a["error"])
    return a["map"]


_COLUMNS = ("image", "images", "bboxes", "abnormal", "category", "image_size", "messages", "question")


def make_vrr_reward(model, processor, layers=DEFAULT_LAYERS, min_cover: float = 0.0, batch_size: int = 8,
                    max_completion_tokens: int = MAX_COMPLETION_TOKENS, fallback: str = "zero",
                    name: str = "vrr_reward"):
    """VRR as a TRL reward f(prompts, completions, **columns) -> [float in [0, 1] | None], batched; `.explain(
    completion, prompt=None, **row)` gives one row's vrr_details. fallback="zero" (default): an answer that names
    no abnormal class earns 0 (module docstring, step 3). Columns read: image (or images), bboxes, abnormal,
    category, image_size; the prompt comes from `prompts`, else the row's messages / question. Pass it to
    localization.make_aar_reward(vrr_fn=...) for the total AAR reward."""
    check_eager(model)
    if fallback not in ("all", "zero"):
        raise ValueError(f"fallback must be 'all' or 'zero', got {fallback!r}")
    opts = {"layers": layers, "min_cover": min_cover, "batch_size": batch_size,
            "max_completion_tokens": max_completion_tokens, "fallback": fallback}

    def reward(prompts=None, completions=None, **kwargs):
        comps = list(completions) if isinstance(completions, (list, tuple)) else []
        rows = [{k: column_at(kwargs.get(k), i) for k in _COLUMNS} for i in range(len(comps))]
        return vrr_scores(model, processor, rows, comps, prompts, **opts)

    def explain(completion, prompt=None, **row):
        return vrr_details(model, processor, [row], [completion], [prompt], **opts)[0]

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = __doc__
    reward.explain = explain
    reward.columns = _COLUMNS
    reward.range = (0.0, 1.0)
    return reward


def _attn_impl(model) -> str | None:
    cfg = getattr(model, "config", None)
    return getattr(getattr(cfg, "text_config", None) or cfg, "_attn_implementation", None)


class eager_attention:
    """Context: the model computes eager attention inside (VRR needs the weights), its own implementation after
    (the policy trains with sdpa). transformers' set_attn_implementation switches every sub-model."""

    def __init__(self, model):
        self.model, self.old = model, _attn_impl(model)

    def __enter__(self):
        if self.old not in (None, "eager"):
            self.model.set_attn_implementation("eager")
        return self.model

    def __exit__(self, *exc):
        if self.old not in (None, "eager"):
            self.model.set_attn_implementation(self.old)
        return False


def make_policy_vrr_reward(name: str = "vrr_reward", **opts):
    """VRR read from the attention of the model being trained (the paper's mechanism: the reward looks at where the
    *policy* attends while it writes the answer), not from a frozen copy. The trainer binds its policy before the
    first rollout (`reward.bind_policy(model, processor)`, repro.train.ppo); each call then runs one teacher-forced
    forward pass of the current weights with eager attention (`eager_attention`). opts: make_vrr_reward's."""
    state: dict = {}

    def bind_policy(model, processor):
        state.update(model=model, processor=processor)

    def _bound():
        if "model" not in state:
            raise RuntimeError(f"{name}: no policy bound; the trainer calls bind_policy(model, processor) first "
                               "(repro.train.ppo does)")
        return state["model"], state["processor"]

    def reward(prompts=None, completions=None, **kwargs):
        model, processor = _bound()
        with eager_attention(model):
            return make_vrr_reward(model, processor, name=name, **opts)(prompts=prompts, completions=completions,
                                                                        **kwargs)

    def explain(completion, prompt=None, **row):
        model, processor = _bound()
        with eager_attention(model):
            return make_vrr_reward(model, processor, name=name, **opts).explain(completion, prompt=prompt, **row)

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = make_policy_vrr_reward.__doc__
    reward.explain, reward.bind_policy = explain, bind_policy
    reward.columns, reward.range, reward.source = _COLUMNS, (0.0, 1.0), "policy"
    return reward


__all__ = ["DEFAULT_LAYERS", "anchor_spans", "attention_map", "check_eager", "eager_attention", "image_attention",
           "make_policy_vrr_reward", "make_vrr_reward", "patch_mask", "prompt_messages", "vrr_details", "vrr_scores"]

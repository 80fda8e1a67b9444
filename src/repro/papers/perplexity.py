"""Perplexity of reference answers under a model, teacher-forced: how Zhu et al. measure their initialisation study
(docs/methods.md §2(e), §6(b) 7).

    nll, n_tok = item_nll(model, processor, rows)   # per row: mean NLL per target token (nats), target token count
    summary(nll)                                     # {"nll": mean over rows, "perplexity": exp(nll), "n_items"}

A row is a data row ({"messages": [{"role", "content": str}, ...], "image": PIL}); its targets are its assistant
turns exactly as SFT trains on them: for an MCQ row the reference `<think>..</think><answer>..</answer>` text and
the end-of-turn token that closes it, given the image and the prompt.

Why TRL's own collator builds the batch: the scored tokens must be the ones repro.train.sft trains on (TRL's
SFTTrainer with assistant_only_loss: the same chat template, the same image-token expansion, the same assistant
mask of the {% generation %} block). Calling the collator SFTTrainer itself calls makes that identical by
construction, where a copy of the formatting could drift from it.

Per row, the NLL is the mean over that row's target tokens (so a long reasoning does not weigh more than a short one
in a paired comparison over items); the summary's perplexity is exp of the mean of those per-row means (the geometric
mean of the per-row perplexities), `token_nll` the token-weighted mean when the counts are given.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = -100  # the label of a position that is not a target (prompt, image, padding): TRL's and torch's value


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood of each row's target tokens, teacher-forced.

    logits [B, T, V]: position t's scores for the token at t + 1 (a causal LM's output on input_ids [B, T]).
    labels [B, T]: the input ids where a token is a target, IGNORE elsewhere.
    Returns (nll_sum [B] float32, n_targets [B] int64). Only target positions go through log_softmax (a [N, V] slice,
    N = number of targets in the batch), so a large vocabulary never needs a float32 copy of all B*T*V logits."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"token_nll: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on [B, T]")
    target = labels[:, 1:]                          # [B, T-1]: the token position t predicts
    keep = target != IGNORE                         # [B, T-1]
    picked = logits[:, :-1][keep].float()           # [N, V]
    nll = F.cross_entropy(picked, target[keep], reduction="none")  # [N] = -log_softmax(.)[target]
    row = keep.nonzero()[:, 0]                      # [N]: which row each target belongs to
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=nll.device).index_add_(0, row, nll)
    return sums, keep.sum(1)


def sft_collator(processor):
    """TRL's vision collator as repro.train.sft's SFTTrainer builds it (assistant_only_loss=True): labels are the
    input ids on the assistant tokens, IGNORE elsewhere.

    The template is the one SFT trains with: repro.chat.train_stop_token's (LLaVA-1.5's released template with the
    stop token put inside the generation block), applied to a shallow copy so the caller's processor keeps its own;
    and, as SFTTrainer does, TRL's training template for a template without {% generation %} markers."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from repro.chat import train_stop_token

    proc = copy.copy(processor)
    train_stop_token(proc)
    template = proc.chat_template
    if not has_generation_markers(template):
        template = get_training_chat_template(proc)
    return DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True,
                                                 chat_template=template)


@torch.no_grad()
def item_nll(model, processor, rows: Sequence[dict], batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (mean NLL per target token in nats [N] float64, number of target tokens [N] int64), in row order.

    Batched with right padding (the SFT collator's): padding is masked out of attention and labels, so the result
    does not depend on batch_size beyond float rounding. A row without target tokens gets NaN. The model runs in
    eval mode (no dropout) and gets its training flag back."""
    from repro.chat import eval_mode, to_model_dtype
    from repro.train.sft import to_sft_row

    collate = sft_collator(processor)
    means, counts = [], []
    with eval_mode(model):
        for i in range(0, len(rows), batch_size):
            batch = collate([to_sft_row(r) for r in rows[i:i + batch_size]])
            labels = batch.pop("labels")            # [B, T]
            batch = to_model_dtype(model, batch.to(model.device))
            logits = model(**batch).logits          # [B, T, V]
            sums, n = token_nll(logits, labels.to(logits.device))
            sums, n = sums.double().cpu().numpy(), n.cpu().numpy()
            means += [s / k if k else float("nan") for s, k in zip(sums, n, strict=True)]
            counts += n.tolist()
    return np.asarray(means, dtype=float), np.asarray(counts, dtype=np.int64)


def summary(nll: Sequence[float], n_tokens: Sequence[int] | None = None) -> dict:
    """{"nll": mean per-row NLL, "perplexity": exp(nll), "n_items"} over the rows with a value (NaN skipped), plus
    "token_nll" (mean over all target tokens) when the token counts are given. Empty: NaNs and n_items 0."""
    v = np.asarray(nll, dtype=float)
    ok = np.isfinite(v)
    mean = float(v[ok].mean()) if ok.any() else float("nan")
    out = {"nll": mean, "perplexity": math.exp(mean) if math.isfinite(mean) else float("nan"),
           "n_items": int(ok.sum())}
    if n_tokens is not None:
        n = np.asarray(n_tokens, dtype=float)[ok]
        out["token_nll"] = float((v[ok] * n).sum() / n.sum()) if n.sum() else float("nan")
    return out

"""Model-free rewards of the four papers, in TRL's reward-function signature (docs/design.md §7).

Every reward is a plain function

    f(prompts, completions, **columns) -> list[float | None]

`completions[i]` is a str or a chat list [{"role": "assistant", "content": str}, ...]; `columns` are dataset
columns as lists aligned with `completions` (answer=[...], turn_categories=[...], ...). Unknown keyword arguments
(trainer_state, log_extra, log_metric, completion_ids, ...) are accepted and ignored. Rewards are deterministic and
total: on any input they return a finite float in the documented range, or None where the paper says the reward
does not apply (TRL then skips that sample for that reward). `f.__name__` is what TRL logs.

Each reward also carries `f.explain(completion, **row) -> dict` (one row's columns as scalars) telling *why* the
completion scored what it did; `breakdown(f, completion, **row)` calls it for any reward.

Modules:
    rules         Dr-LLaVA rule reward (ours, the gated older variant, the released HEAD semantics)
    vqa           Zhu et al.: format, accuracy, semantic alignment (judge interface), ECR / CWR length rewards
    localization  UMed-LVLM: ALR (IoU), relevance judge proxy, per-query max-normalisation, AAR total
    clinical      MMedPO: clinical-relevance judge panel, consensus loop, weight normalisation
    noise         MMedPO: localized lesion noising (released replace rule, the paper's blend) and global noise
    attention     UMed-LVLM: VRR, attention mass of the class-name tokens on the lesion patches (model-based, torch;
                  imported on demand: `from repro.rewards import attention`)
    suite         every reward per task, scoring sampled completions into tables (stage 03)
    probes        reward-hacking probes and computed verdicts (stage 03)
    figures       stage-03 figures (distributions, correlations, noising, VRR maps, probes)
"""

from __future__ import annotations

import math
from collections.abc import Callable


def text_of(completion) -> str:
    """The text of one completion: a str as is; a chat list -> its assistant contents joined with "\\n".

    Items that are plain strings are taken as answers too (a list of turn answers). Anything else -> "".
    """
    if isinstance(completion, str):
        return completion
    return "\n".join(turns_of(completion))


def turns_of(completion) -> list[str]:
    """The answer turns of one completion: a chat list -> the assistant contents (messages without a role count
    as assistant), a list of str -> itself, a str -> [str]. Malformed items are skipped; never raises."""
    if isinstance(completion, str):
        return [completion]
    if not isinstance(completion, (list, tuple)):
        return []
    out = []
    for m in completion:
        if isinstance(m, str):
            out.append(m)
        elif isinstance(m, dict) and m.get("role", "assistant") == "assistant":
            content = m.get("content")
            if isinstance(content, str):
                out.append(content)
            elif isinstance(content, list):  # multimodal content blocks: keep the text parts
                out.extend(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    return out


def column_at(values, i: int, default=None):
    """values[i] when `values` is a sequence (list, tuple, HF Column, numpy array) long enough, else `default`
    (a missing or short column is not an error)."""
    if values is None or isinstance(values, (str, bytes, dict)):
        return default
    try:
        return values[i] if -len(values) <= i < len(values) else default
    except (TypeError, IndexError, KeyError):
        return default


def finite_or_none(x, lo: float, hi: float):
    """Guard on the way out: None stays None, non-finite -> None, finite values are clipped to [lo, hi]."""
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):
        return None
    return min(hi, max(lo, x))


def make_reward(name: str, explain: Callable[..., dict], columns: tuple[str, ...], lo: float, hi: float,
                doc: str | None = None, raw: bool = False):
    """Build a TRL reward named `name` from a per-row `explain(completion, **row) -> {"reward": ..., ...}`.

    `columns` are the dataset columns the reward reads; each is passed to `explain` as the row's scalar (or None
    when TRL did not pass the column). With raw=True `explain` gets the completion object itself (a list of turns
    for Dr-LLaVA), otherwise its text.
    """

    def reward(prompts=None, completions=None, **kwargs):
        comps = completions if isinstance(completions, (list, tuple)) else []
        out = []
        for i, c in enumerate(comps):
            row = {k: column_at(kwargs.get(k), i) for k in columns}
            out.append(finite_or_none(explain(c if raw else text_of(c), **row)["reward"], lo, hi))
        return out

    def explain_one(completion, **row):
        return explain(completion if raw else text_of(completion), **{k: row.get(k) for k in columns})

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = doc or explain.__doc__
    reward.explain = explain_one
    reward.columns = columns
    reward.range = (lo, hi)
    return reward


def breakdown(reward_fn, completion, **row) -> dict:
    """Why `completion` got its reward under `reward_fn`: the reward's own explanation dict."""
    return reward_fn.explain(completion, **row)


from repro.rewards import clinical, localization, noise, rules, vqa  # noqa: E402  (they import the helpers)

__all__ = ["breakdown", "clinical", "column_at", "finite_or_none", "localization", "make_reward", "noise", "rules",
           "text_of", "turns_of", "vqa"]

"""Train/val/test assignment and the generalization splits of UMed-LVLM (docs/methods.md §4(f)) as filters.

Everything here works on any list of dicts with "source", "category" and "modality" keys, i.e. on image
records and on task rows alike, so a generalization split can be cut before or after the task builders.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

PARTS = ("train", "test")


def assign_splits(records: list[dict], seed: int, fractions=(0.7, 0.15, 0.15)) -> dict[str, list[dict]]:
    """Stratified by (source, category) and deterministic for a seed; input order is kept inside each split.

    Split image *records* (before the task builders), so that all rows of one image land in the same split;
    the assignment depends on the ids, not on the input order.

    Every stratum is cut at round(n * f_train) and round(n * (f_train + f_val)), so a stratum of fewer than
    about 7 items may leave val or test without that stratum.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[(r["source"], r["category"])].append(i)
    rng = np.random.default_rng(seed)
    part_of: dict[int, str] = {}
    for key in sorted(groups):  # sorted: the random stream must not depend on dict insertion order
        # Sorting by id makes the assignment independent of the input order: an image keeps its split.
        members = sorted(groups[key], key=lambda i: (str(records[i].get("id", "")), i))
        idx = [members[j] for j in rng.permutation(len(members))]
        n = len(idx)
        cut1, cut2 = round(n * fr[0]), round(n * (fr[0] + fr[1]))
        for j, i in enumerate(idx):
            part_of[i] = "train" if j < cut1 else "val" if j < cut2 else "test"
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for i, r in enumerate(records):
        out[part_of[i]].append(r)
    return out


def _check(part: str) -> None:
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")


def heldout_categories(rows: list[dict], held: list[str], part: str) -> list[dict]:
    """Unseen categories: "train" drops the held "source:category" pairs, "test" keeps only them."""
    _check(part)
    pairs = set()
    for h in held:
        source, sep, category = h.partition(":")
        if not sep or not source or not category:
            raise ValueError(f"held entry must be 'source:category', got {h!r}")
        pairs.add((source, category))
    keep = part == "test"
    return [r for r in rows if ((r["source"], r["category"]) in pairs) == keep]


def leave_one_source_out(rows: list[dict], source: str, part: str) -> list[dict]:
    """"train" is every other source, "test" is `source` alone."""
    _check(part)
    return [r for r in rows if (r["source"] == source) == (part == "test")]


def single_modality(rows: list[dict], modality: str, part: str) -> list[dict]:
    """Cross-modal transfer: "train" keeps only `modality`, "test" keeps the other modalities."""
    _check(part)
    return [r for r in rows if (r["modality"] == modality) == (part == "train")]


def subsample(rows: list[dict], fraction: float, seed: int) -> list[dict]:
    """round(fraction * n) rows in input order; nested for a seed (a smaller fraction is a subset of a larger
    one) so that data-scale curves differ only by the added data."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    k = round(fraction * len(rows))
    chosen = np.sort(np.random.default_rng(seed).permutation(len(rows))[:k])
    return [rows[i] for i in chosen]

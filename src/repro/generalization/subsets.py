"""Which rows a generalization arm trains on and which it is tested on: one JSON-able *spec* per split, applied to
any list of task rows (dicts with source / category / modality / question_kind). The filters themselves are stage
01's (repro.data.splits); this module only names them, so a job's cache key can hold the spec and a worker can
rebuild exactly the same rows.

    spec = {"kind": "categories", "value": ["deeplesion:mass"], "part": "train"}   # every row but the held ones
    rows = select(rows, spec)

kinds: "all" (no filter), "categories" (held "source:category" pairs), "source" (leave one source out),
"modality" (train on one modality, test on the others), "fraction" (a nested random share of the train rows,
seeded), "question_kind" (MCQ: train without one kind of question, test on that kind only).
"""

from __future__ import annotations

from repro.data import splits

KINDS = ("all", "categories", "source", "modality", "fraction", "question_kind")


def _check(spec: dict) -> None:
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"subset spec {spec!r}: key 'kind' has value {kind!r}, expected one of {KINDS}")
    if kind != "all" and spec.get("part") not in splits.PARTS:
        raise ValueError(f"subset spec {spec!r}: key 'part' has value {spec.get('part')!r}, expected one of "
                         f"{splits.PARTS}")
    if kind == "fraction" and spec["part"] != "train":
        raise ValueError(f"subset spec {spec!r}: a data fraction applies to the train rows only (part 'train')")


def select(rows: list[dict], spec: dict) -> list[dict]:
    """The rows of `spec` (see the module docstring), in input order."""
    _check(spec)
    kind, part, value = spec["kind"], spec.get("part"), spec.get("value")
    if kind == "all":
        return list(rows)
    if kind == "categories":
        return splits.heldout_categories(rows, list(value), part)
    if kind == "source":
        return splits.leave_one_source_out(rows, value, part)
    if kind == "modality":
        return splits.single_modality(rows, value, part)
    if kind == "fraction":
        return splits.subsample(rows, float(value), int(spec.get("seed", 0)))
    # question_kind: the RL data never contains the held kind; its test is that kind alone
    return [r for r in rows if (r.get("question_kind") == value) == (part == "test")]


def pair(kind: str, value, seed: int = 0) -> tuple[dict, dict]:
    """(train spec, test spec) of one condition. A data fraction is tested on every test row."""
    train = {"kind": kind, "value": value, "part": "train", "seed": seed}
    test = {"kind": "all"} if kind in ("fraction", "all") else {"kind": kind, "value": value, "part": "test"}
    return train, test


def conditions(heldout: list[str], loso: list[str], modality: str, fractions: list[float], seed: int = 0
               ) -> dict[str, tuple[dict, dict]]:
    """UMed's conditions {name: (train spec, test spec)}: the unseen categories, each left-out source, the
    single-modality transfer and each data fraction (1.0 too: the same recipe as the smaller shares)."""
    out = {"unseen categories": pair("categories", list(heldout), seed)}
    out.update({f"without {s}": pair("source", s, seed) for s in loso})
    if modality:
        out[f"{modality} only"] = pair("modality", modality, seed)
    out.update({f"{round(100 * f)}% data": pair("fraction", float(f), seed) for f in fractions})
    return out


def check_fractions(fractions: list[float], source: str = "params") -> list[float]:
    """Sorted, unique, each in (0, 1]; a bad value is a one-line ValueError naming it."""
    bad = [f for f in fractions if not 0.0 < float(f) <= 1.0]
    if bad:
        raise ValueError(f"{source}: key 'ood_umed_fractions' has value(s) {bad} outside (0, 1]")
    return sorted({float(f) for f in fractions})

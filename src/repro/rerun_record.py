"""A committed rerun's verdicts beside the committed ones: what `python -m repro.verify --record` writes and stage
07's ledger reads.

A verdict that flips when the whole run is repeated on a perturbed float path (`--isa aten-default`: ATen's portable
kernels, so stage 02's start is retrained on other bits and every arm after it too) describes the run, not the
method: such a verdict is not a result. The record keeps, per claim, both verdicts and differences and the commit and
kernels of both runs, so the ledger can say which of its verdicts held, and can check that the record still compares
*these* committed results (a stale record is named, not used).

File: results/<profile>/verify_<isa>.json  (isa: a key of repro.verify.ISA_ENV, or "native")
Run as: python -m repro.verify --profile cpu --isa aten-default --threads committed --record
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from repro import ledger, paths, stats

PREFIX = "verify_"
ONE_SIDE = ("new claim (not committed)", "missing in rerun")  # verify.compare_claims: nothing to compare
# What a changed verdict does to the paper's claim, most serious first. `below_paper` and `opposite` both rule out a
# paper-sized effect (opposite: significantly the other way), so a change between them keeps the conclusion; every
# change still counts as one (the count), the kind says which changes a reader should worry about.
CHANGES = {"contradicted": "contradicted (reproduced on one run, a paper-sized effect ruled out on the other)",
           "learned once": "learned on one run only (not_trained on the other)",
           "decided once": "decided on one run only (inconclusive on the other)",
           "conclusion kept": "kept the conclusion (below_paper <-> opposite: a paper-sized effect ruled out on "
                              "both runs)"}
RULED_OUT = {"below_paper", "opposite"}


def _prov(record: dict | None) -> dict:
    return (record or {}).get("provenance") or {}


def sha(record: dict | None) -> str | None:
    return (_prov(record).get("git") or {}).get("sha")


def make(result: dict, committed: dict[str, dict | None], rerun: dict[str, dict | None], isa: str | None,
         env: dict, argv: list[str]) -> dict:
    """The record of a verify comparison (`result` = repro.verify.compare(committed, rerun)). SystemExit (one line)
    when a compared stage was not rerun (the scratch holds the committed file) or ran on uncommitted code."""
    stages = {}
    for stem, old in committed.items():
        new = rerun.get(stem)
        if old is None or new is None:
            raise SystemExit(f"verify: --record: stage {stem} has no {'committed' if old is None else 'rerun'} "
                             "results; nothing recorded")
        if _prov(new).get("finished_at") == _prov(old).get("finished_at"):
            raise SystemExit(f"verify: --record: stage {stem} in the scratch folder is the committed file (finished_at "
                             f"{_prov(old).get('finished_at')}), not a rerun; nothing recorded")
        if (_prov(new).get("git") or {}).get("dirty"):
            raise SystemExit(f"verify: --record: stage {stem}'s rerun ran on uncommitted code (provenance.git.dirty); "
                             "nothing recorded")
        hw_old, hw_new = _prov(old).get("hardware") or {}, _prov(new).get("hardware") or {}
        stages[stem] = {"committed_sha": sha(old), "rerun_sha": sha(new),
                        "committed_capability": hw_old.get("cpu_capability"),
                        "rerun_capability": hw_new.get("cpu_capability"), "rerun_cpu": hw_new.get("cpu_id"),
                        "rerun_threads": hw_new.get("torch_threads"),
                        "rerun_wall_time_s": _prov(new).get("wall_time_s")}
    rows = []
    for r in result["claims"].to_dict(orient="records"):
        rows.append({"stage": r["stage"], "paper": r["paper"], "claim": r["claim"],
                     **{k: ledger._num(r[k]) for k in ("committed", "ci_low", "ci_high", "rerun")},
                     "position": r["position"],
                     "verdict_committed": r["verdict committed"], "verdict_rerun": r["verdict rerun"],
                     "held": None if r["position"] in ONE_SIDE else not bool(r["verdict changed"])})
    judged = [r for r in rows if r["held"] is not None]
    held = sum(r["held"] for r in judged)
    return {"isa": isa or "native", "env": env, "command": "python -m repro.verify " + " ".join(argv),
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": stages, "claims": rows,
            "held": held, "compared": len(judged), "summary": f"verdicts held: {held} of {len(judged)}"}


def change_kind(old, new) -> str | None:
    """What changing verdict `old` into `new` does to the claim (a key of CHANGES), None when the class held.
    >>> change_kind("below_paper", "opposite"), change_kind("reproduced", "inconclusive")
    ('conclusion kept', 'decided once')"""
    a, b = stats.verdict_class(old), stats.verdict_class(new)
    if a == b:
        return None
    if "not_trained" in (a, b):
        return "learned once"
    if {a, b} <= RULED_OUT:
        return "conclusion kept"
    if "inconclusive" in (a, b) or "unknown" in (a, b):
        return "decided once"
    return "contradicted"  # reproduced against below_paper or opposite


def path(profile: str, isa: str) -> Path:
    return paths.RESULTS / profile / f"{PREFIX}{isa}.json"


def save(profile: str, record: dict) -> Path:
    f = path(profile, record["isa"])
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(record, indent=2) + "\n")
    return f


def load(results_dir: Path) -> tuple[list[dict], list[str]]:
    """(the verify records in results_dir, one-line notes on files that could not be read)."""
    out, notes = [], []
    for f in sorted(Path(results_dir).glob(f"{PREFIX}*.json")):
        try:
            rec = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            notes.append(f"{f}: not valid JSON ({e}); rerun python -m repro.verify ... --record")
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("claims"), list) or "isa" not in rec:
            notes.append(f"{f}: not a verify record (no 'isa' / 'claims' list); rerun python -m repro.verify ... "
                         "--record")
            continue
        rec["_file"] = str(f)
        out.append(rec)
    return out, notes


def annotate(led: pd.DataFrame, reruns: list[dict], records: dict[str, dict]) -> tuple[pd.DataFrame, list[str]]:
    """The ledger with `held` (True / False: did the claim keep its verdict's class on every fresh rerun; NaN: no
    rerun compared it), `rerun_verdict` ("aten-default: below_paper", the verdict of each rerun that changed it) and
    `change` (change_kind of the most serious change, "" where none).
    A rerun is fresh for a stage when it compared the committed results of that stage's commit; the notes name the
    stale ones (which are not used for that stage)."""
    led = led.copy()
    held = pd.Series(float("nan"), index=led.index, dtype=object)
    changed = pd.Series("", index=led.index, dtype=object)
    kind = pd.Series("", index=led.index, dtype=object)
    notes = []
    for rec in reruns:
        stale = sorted(s for s, v in (rec.get("stages") or {}).items()
                       if s in records and v.get("committed_sha") != sha(records[s]))
        if stale:
            notes.append(f"{rec.get('_file', rec['isa'])}: compares other committed results of {', '.join(stale)} "
                         f"than these (rerun: {rec.get('command', 'python -m repro.verify --record')})")
        by = {(c["stage"], c["paper"], c["claim"]): c for c in rec["claims"]}
        for i, row in led.iterrows():
            c = by.get((row["stage"], row["paper"], row["claim"]))
            if c is None or c.get("held") is None or row["stage"] in stale:
                continue
            if stats.verdict_class(c["verdict_committed"]) != stats.verdict_class(row["verdict"]):
                continue  # the record saw another committed verdict: stale for this row
            ok = bool(c["held"])
            held[i] = ok if isinstance(held[i], float) else (held[i] and ok)
            if not ok:
                changed[i] = "; ".join(x for x in (changed[i], f"{rec['isa']}: {c['verdict_rerun']}") if x)
                k = change_kind(row["verdict"], c["verdict_rerun"])  # held is by class: never None here
                kind[i] = min((x for x in (kind[i], k) if x), key=list(CHANGES).index)
    led["held"], led["rerun_verdict"], led["change"] = held, changed, kind
    return led, notes


def summary_line(led: pd.DataFrame, reruns: list[dict]) -> str:
    """"On the rerun (aten-default): 10 of 15 verdicts held (7 of 12 claims); changed, so not results: 04 umed
    'AAR beats SFT ...' (below_paper -> aten-default: opposite); ..." or a line saying no rerun is recorded."""
    flags = led["held"].map(ledger.held_flag) if "held" in led else pd.Series(dtype=object)
    if not flags.notna().any():
        return ("No rerun recorded for these results: python -m repro.verify --isa aten-default --threads committed "
                "--record (every stage again on another float path) says which verdicts hold.")
    known = led[flags.notna()].assign(held=flags[flags.notna()].astype(bool))
    kind = known["kind"].fillna("claim") if "kind" in known else pd.Series("claim", index=known.index)
    claims = known[kind == "claim"]
    names = ", ".join(sorted({r["isa"] for r in reruns}))
    line = (f"On the rerun ({names}): {int(known['held'].sum())} of {len(known)} verdicts held "
            f"({int(claims['held'].sum())} of {len(claims)} claims)")
    flipped = known[~known["held"].astype(bool)]
    if len(flipped) and "change" in flipped:
        n = flipped["change"].value_counts()
        parts = [f"{int(n[k])} {CHANGES[k]}" for k in CHANGES if k in n]
        line += "; the changes: " + ", ".join(parts if "contradicted" in n else ["none contradicted", *parts])
    if len(flipped):
        line += "; changed, so not results: " + "; ".join(
            f"{r['stage'][:2]} {r['paper']} {r['claim']!r} ({r['verdict']} -> {r['rerun_verdict']})"
            for _, r in flipped.iterrows())
    return line


def held_by_paper(led: pd.DataFrame) -> dict[str, dict]:
    """{paper: {"held", "compared", "reproduced_held", "reproduced", "changed": ["claim (v -> w; change kind)", ...],
    "kinds": {change kind: count}}} over the rows of kind "claim" that a recorded rerun compared ("reproduced": those
    reproduced here); {} when none."""
    if "held" not in led:
        return {}
    out = {}
    for _, r in ledger.claims_only(led).iterrows():
        h = ledger.held_flag(r["held"])
        if h is None:
            continue
        d = out.setdefault(r["paper"], {"held": 0, "compared": 0, "reproduced_held": 0, "reproduced": 0,
                                        "changed": [], "kinds": {}})
        rep = stats.verdict_class(r["verdict"]) == "reproduced"
        d["held"] += h
        d["compared"] += 1
        d["reproduced"] += rep
        d["reproduced_held"] += rep and h
        if not h:
            d["changed"].append(f"{r['claim']} ({r['verdict']} -> {r['rerun_verdict']}; {r['change']})")
            d["kinds"][r["change"]] = d["kinds"].get(r["change"], 0) + 1
    return out


def against_forecast(led: pd.DataFrame) -> str:
    """The recorded rerun against repro.replication's forecast, over the claims (kind "claim") both speak for:
    "the rerun changed 5 of the 12 claim verdicts it compared that the forecast predicts; the forecast expected 5.4
    of them"."""
    mine = ledger.claims_only(led)
    flags = mine["held"].map(ledger.held_flag) if "held" in mine else pd.Series(dtype=object)
    both = mine[flags.notna() & pd.to_numeric(mine.get("agreement"), errors="coerce").notna()]
    if not len(both):
        return "no claim both predicted and compared on a recorded rerun"
    changed = int((~both["held"].map(ledger.held_flag).astype(bool)).sum())
    expected = float((1 - both["agreement"].astype(float)).sum())
    return (f"the rerun changed {changed} of the {len(both)} claim verdicts it compared that the forecast predicts; "
            f"the forecast expected {expected:.1f} of them")

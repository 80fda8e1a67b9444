"""Rerun a profile (or named stages) in a scratch copy of the repository and compare with the committed results.

Run as: python -m repro.verify --profile cpu [--only 04 05] [--scratch DIR] [--compare-only]
        (`make verify PROFILE=cpu ONLY="04"`)

- The scratch copy is a `git clone` of this checkout's HEAD (a plain copy outside git) in runs/verify/<profile>/
  (ignored); the runner runs there with REPRO_ROOT and PYTHONPATH pointing at it, so the committed results/ and
  figures/ of this checkout are never written. Uncommitted changes are not in the clone: commit them first.
- Stages run with --force. Naming only later stages (--only 04) copies runs/<profile>/ (data, models of the
  earlier stages) into the scratch copy, so those stages read the same inputs as the committed run.
- Comparison per stage: every claim's rerun difference inside or outside the committed 95% CI, every verdict
  that changed, claims present on one side only; every other number of `metrics` same or changed.
- Prints the tables and writes <scratch>/verify.md. Exit status 0 unless the rerun itself fails.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from repro import ledger, paths

MARKER = ".repro-verify-scratch"  # only a folder carrying it is ever deleted by --scratch reuse
SKIP_STAGES = ("07_report",)  # reads results, computes nothing of its own
RUN_SKIP = ("notebooks", "pending", "cache")  # per-run bookkeeping of runs/<profile>/, never copied


# ----------------------------------------------------------------------------------------------- comparison
def flatten(obj, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON value as {"a.b[2].c": value} (bools are not numbers; None/NaN skipped)."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
    elif isinstance(obj, int | float) and not isinstance(obj, bool) and math.isfinite(obj):
        out[prefix] = float(obj)
    return out


def _claims(record: dict | None) -> dict[tuple[str, str], dict]:
    claims = ((record or {}).get("metrics") or {}).get("claims") or []
    return {(str(c.get("paper")), str(c.get("claim"))): c for c in claims if isinstance(c, dict)}


def compare_claims(stem: str, committed: dict, rerun: dict) -> list[dict]:
    """One row per claim of either side: committed difference and CI, rerun difference, whether it falls inside
    the committed CI, both verdicts and whether the verdict's class changed."""
    old, new = _claims(committed), _claims(rerun)
    rows = []
    for key in list(old) + [k for k in new if k not in old]:
        o, n = old.get(key), new.get(key)
        lo, hi = ledger.interval(o) if o else (None, None)
        d_old = ledger._num(o.get("difference")) if o else None
        d_new = ledger._num(n.get("difference")) if n else None
        if o is None:
            where = "new claim (not committed)"
        elif n is None:
            where = "missing in rerun"
        elif d_new is None:
            where = "rerun has no difference"
        elif lo is None:
            where = "no committed CI"
        else:
            where = "inside CI" if lo <= d_new <= hi else "OUTSIDE CI"
        v_old, v_new = (o or {}).get("verdict"), (n or {}).get("verdict")
        changed = o is not None and n is not None and ledger.verdict_class(v_old) != ledger.verdict_class(v_new)
        rows.append({"stage": stem, "paper": key[0], "claim": key[1], "committed": d_old, "ci_low": lo,
                     "ci_high": hi, "rerun": d_new, "position": where, "verdict committed": v_old or ledger.DASH,
                     "verdict rerun": v_new or ledger.DASH, "verdict changed": changed})
    return rows


def compare_numbers(stem: str, committed: dict, rerun: dict, rtol: float = 1e-6, atol: float = 1e-9) -> list[dict]:
    """Every numeric leaf of `metrics` outside `claims` (those have CIs, see compare_claims): same, changed (beyond
    rtol/atol), or present on one side only. Timings (keys with 'seconds' / 'per_s') are skipped: they always move."""
    def leaves(rec):
        m = dict((rec or {}).get("metrics") or {})
        m.pop("claims", None)
        return {k: v for k, v in flatten(m).items() if "seconds" not in k and "per_s" not in k}

    old, new = leaves(committed), leaves(rerun)
    rows = []
    for k in list(old) + [k for k in new if k not in old]:
        a, b = old.get(k), new.get(k)
        if a is None or b is None:
            status = "only committed" if b is None else "only rerun"
        else:
            status = "same" if abs(a - b) <= atol + rtol * max(abs(a), abs(b)) else "changed"
        rows.append({"stage": stem, "number": k, "committed": a, "rerun": b,
                     "abs diff": None if a is None or b is None else abs(a - b), "status": status})
    return rows


def compare(committed: dict[str, dict | None], rerun: dict[str, dict | None]) -> dict:
    """{"stages": DataFrame (stage, status, claims, outside CI, verdicts changed, numbers changed), "claims": ...,
    "numbers": ...} for every stage named in either mapping (a None/absent record is a missing stage)."""
    stage_rows, claim_rows, number_rows = [], [], []
    for stem in sorted(set(committed) | set(rerun)):
        c, r = committed.get(stem), rerun.get(stem)
        if c is None or r is None:
            which = "committed" if c is None else "rerun"
            stage_rows.append({"stage": stem, "status": f"no {which} results", "claims": 0, "outside CI": 0,
                               "verdicts changed": 0, "numbers changed": 0, "numbers compared": 0})
            continue
        cl, nu = compare_claims(stem, c, r), compare_numbers(stem, c, r)
        claim_rows += cl
        number_rows += nu
        stage_rows.append({"stage": stem, "status": "compared", "claims": len(cl),
                           "outside CI": sum(x["position"] == "OUTSIDE CI" for x in cl),
                           "verdicts changed": sum(x["verdict changed"] for x in cl),
                           "numbers changed": sum(x["status"] != "same" for x in nu), "numbers compared": len(nu)})
    cols_c = ["stage", "paper", "claim", "committed", "ci_low", "ci_high", "rerun", "position", "verdict committed",
              "verdict rerun", "verdict changed"]
    cols_n = ["stage", "number", "committed", "rerun", "abs diff", "status"]
    return {"stages": pd.DataFrame(stage_rows), "claims": pd.DataFrame(claim_rows, columns=cols_c),
            "numbers": pd.DataFrame(number_rows, columns=cols_n)}


def load_dir(results_dir: Path, stems) -> dict[str, dict | None]:
    """{stem: record or None (missing or unreadable)} of results_dir/<stem>.json."""
    out = {}
    for stem in stems:
        f = Path(results_dir) / f"{stem}.json"
        try:
            out[stem] = json.loads(f.read_text()) if f.exists() else None
        except json.JSONDecodeError:
            out[stem] = None
    return out


def render(result: dict, title: str, max_numbers: int = 200) -> str:
    """The comparison as Markdown: stage summary, claims (all), changed numbers (largest first, capped)."""
    def fmt(df):
        df = df.copy()
        if "verdict changed" in df.columns:
            df["verdict changed"] = ["YES" if v else "no" for v in df["verdict changed"]]
        for col in df.columns:
            if df[col].dtype.kind == "f" or col in ("committed", "rerun", "ci_low", "ci_high", "abs diff"):
                df[col] = [ledger.DASH if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"
                           for v in df[col]]
        return ledger.markdown(df)

    st, cl, nu = result["stages"], result["claims"], result["numbers"]
    out = [f"# {title}\n", "## Stages\n", fmt(st) if len(st) else "No stages compared.\n"]
    out.append("\n## Claims: the rerun's difference against the committed 95% CI\n")
    out.append(fmt(cl) if len(cl) else "No claims in the compared stages.\n")
    changed = nu[nu["status"] != "same"]
    if len(changed):
        changed = changed.sort_values("abs diff", ascending=False, na_position="first")
    out.append(f"\n## Other numbers: {len(changed)} of {len(nu)} changed (no CI recorded for these)\n")
    if len(changed):
        out.append(fmt(changed.head(max_numbers)))
        if len(changed) > max_numbers:
            out.append(f"\n… and {len(changed) - max_numbers} more.\n")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- rerun
def stages_to_run(root: Path, profile: str, only: list[str] | None) -> list[str]:
    """Stages with a notebook and a params file, filtered by `only` (numbers or stems); 07_report never runs."""
    avail = sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb")
                   if (root / "params" / profile / f"{p.stem}.yaml").exists() and p.stem not in SKIP_STAGES)
    if not only:
        return avail
    chosen = []
    for o in only:
        hits = [s for s in avail if s == o or s.split("_")[0] == o.zfill(2)]
        if not hits:
            raise SystemExit(f"verify: --only {o}: no stage with a params file in params/{profile}/ "
                             f"(have: {', '.join(avail)})")
        chosen += [h for h in hits if h not in chosen]
    return sorted(chosen)


def prepare_scratch(root: Path, scratch: Path, profile: str, stems: list[str], log=print) -> None:
    """A fresh copy of `root` in `scratch` (git clone of HEAD, or a plain copy without .git/runs/.venv), with the
    results of `stems` removed (a failed rerun must not compare the committed file with itself) and, when the
    first stage to run is not the first stage, runs/<profile>/ copied in (the inputs those stages read)."""
    if scratch.exists():
        if not (scratch / MARKER).exists():
            raise SystemExit(f"verify: {scratch} exists and is not a verify scratch folder (no {MARKER}); "
                             "pick another --scratch")
        shutil.rmtree(scratch)
    scratch.parent.mkdir(parents=True, exist_ok=True)
    if (root / ".git").exists():
        r = subprocess.run(["git", "clone", "--quiet", "--local", str(root), str(scratch)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise SystemExit(f"verify: git clone {root} -> {scratch} failed: {r.stderr.strip()}")
        from repro.results import git_state

        st = git_state(root)
        if st.get("dirty"):
            log(f"verify: note: uncommitted changes are not in the rerun (HEAD only): {', '.join(st['dirty_paths'])}")
    else:
        shutil.copytree(root, scratch, ignore=shutil.ignore_patterns(".git", "runs", ".venv", "__pycache__"))
    (scratch / MARKER).write_text("scratch copy made by python -m repro.verify; safe to delete\n")
    for stem in stems:
        (scratch / "results" / profile / f"{stem}.json").unlink(missing_ok=True)
    all_stages = stages_to_run(root, profile, None)
    if stems and all_stages and stems[0] != all_stages[0]:
        src = root / "runs" / profile
        if not src.exists():
            need = " ".join(s[:2] for s in all_stages[:all_stages.index(stems[0]) + 1])
            log(f"verify: warning: {stems[0]} reads what earlier stages left in runs/{profile}/, which does not exist "
                f"here; name them too (ONLY=\"{need}\")")
            return
        dst = scratch / "runs" / profile
        dst.mkdir(parents=True, exist_ok=True)
        for item in src.iterdir():
            if item.name not in RUN_SKIP:
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, dst / item.name)


def rerun(scratch: Path, profile: str, stems: list[str]) -> int:
    """The runner in the scratch copy (its own sources first on the path); returns its exit status."""
    env = {**os.environ, "REPRO_ROOT": str(scratch),
           "PYTHONPATH": os.pathsep.join([str(scratch / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, "-m", "repro", "run", "--profile", profile, "--only", *stems, "--force"]
    return subprocess.run(cmd, cwd=scratch, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m repro.verify", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--only", nargs="+", help="stage numbers or stems (default: every stage but 07)")
    ap.add_argument("--scratch", help="scratch folder (default: runs/verify/<profile>)")
    ap.add_argument("--compare-only", action="store_true", help="compare an existing scratch folder, rerun nothing")
    args = ap.parse_args(argv)
    if args.profile not in paths.PROFILES:
        print(f"error: unknown profile {args.profile!r}; expected one of {', '.join(paths.PROFILES)}", file=sys.stderr)
        return 2
    root = paths.ROOT
    scratch = Path(args.scratch).resolve() if args.scratch else root / "runs" / "verify" / args.profile
    stems = stages_to_run(root, args.profile, args.only)
    rc = 0
    if not args.compare_only:
        print(f"verify: rerunning {', '.join(stems)} (profile {args.profile}) in {scratch}", flush=True)
        prepare_scratch(root, scratch, args.profile, stems)
        rc = rerun(scratch, args.profile, stems)
    result = compare(load_dir(paths.RESULTS / args.profile, stems),
                     load_dir(scratch / "results" / args.profile, stems))
    text = render(result, f"verify: profile {args.profile}, committed results/{args.profile}/ vs rerun in {scratch}")
    out = scratch / "verify.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 60):
        print(result["stages"].to_string(index=False))
        if len(result["claims"]):
            print(result["claims"].drop(columns=["paper"]).to_string(index=False))
    print(f"verify: full comparison in {out}" + (f"; the rerun FAILED (exit status {rc})" if rc else ""))
    return rc


if __name__ == "__main__":
    sys.exit(main())

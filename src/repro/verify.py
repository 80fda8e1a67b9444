"""Rerun a profile (or named stages) in a scratch copy of the repository and compare with the committed results.

Run as: python -m repro.verify --profile cpu [--only 04 05] [--isa committed|avx2|avx512|default|aten-default]
        [--threads committed|N] [--scratch DIR] [--compare-only] [--record]
        (`make verify PROFILE=cpu ONLY="04" ISA=committed THREADS=committed`)

- The scratch copy is a `git clone` of this checkout's HEAD (a plain copy outside git) in runs/verify/<profile>/
  (ignored); the runner runs there with REPRO_ROOT and PYTHONPATH pointing at it, so the committed results/ and
  figures/ of this checkout are never written. Uncommitted changes are not in the clone: commit them first.
- Stages run with --force. Naming only later stages (--only 04) copies runs/<profile>/ (data, models of the
  earlier stages) into the scratch copy, so those stages read the same inputs as the committed run.
- Comparison per stage: every claim's rerun difference inside or outside the committed 95% CI, every verdict
  that changed, claims present on one side only; every other number of `metrics` same or changed.
- --isa: "another CPU" on this one. The rerun's torch CPU kernels are forced to one vector ISA (ATEN_CPU_CAPABILITY,
  with MKL and oneDNN capped to match, ISA_ENV); "committed" takes the ISA the committed results record
  (provenance.hardware.cpu_capability, e.g. AVX2 for results/cpu/). Checked before anything runs (this CPU must
  have it) and after (each rerun stage records the ISA it used). Scratch folder runs/verify/<profile>-<isa>, so a
  native rerun and a forced one sit side by side; the report says which verdicts held. "aten-default" is not another
  CPU but the cheap perturbation of this one (ATen's portable kernels only): a verdict that flips with it is not a
  result.
- --threads: the rerun's torch thread count (OMP_NUM_THREADS, MKL_NUM_THREADS); "committed" takes the count the
  committed results record. Large sums are split over threads, so the bits (and stage 02's start) can depend on it.
  `python -m repro.arithmetic` says first, in minutes, which pin (if any) gives this CPU the committed machine's bits.
- --record: the comparison goes to results/<profile>/verify_<isa>.json (repro.rerun_record), which stage 07 reads:
  each claim's ledger row says whether its verdict held on that rerun. Refused when the rerun failed, ran on other
  kernels than asked, or a compared stage was not rerun.
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

from repro import ledger, paths, replication, rerun_record

MARKER = ".repro-verify-scratch"  # only a folder carrying it is ever deleted by --scratch reuse
SKIP_STAGES = ("07_report",)  # reads results, computes nothing of its own
RUN_SKIP = ("notebooks", "pending", "cache")  # per-run bookkeeping of runs/<profile>/, never copied
# --isa: the environment that gives torch's CPU kernels one vector ISA. ATEN_CPU_CAPABILITY picks ATen's own kernels
# (elementwise ops, reductions, softmax, ...); MKL (matrix products) and oneDNN dispatch on their own CPU check, so
# they are capped to match. This reproduces another CPU's kernels, not the CPU: model-specific library paths may
# still differ, so it checks ISA sensitivity; it does not replace a run on that machine.
ISA_ENV = {
    "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512",
               "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    # Not another CPU but the cheap perturbation of this one: ATen's portable kernels (and the random draws that
    # go through them), MKL's and oneDNN's as they are; ~1.1x per training step. A verdict that flips with it is
    # not a result (the rerun's verdicts, with --record, enter stage 07's ledger).
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
}


def forced_capability(isa: str) -> str:
    """The capability torch reports under ISA_ENV[isa] (torch.backends.cpu.get_cpu_capability(), lower case)."""
    return ISA_ENV[isa]["ATEN_CPU_CAPABILITY"]


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


def hardware(record: dict | None) -> dict:
    """provenance.hardware of a stage's results ({} when absent)."""
    return (((record or {}).get("provenance") or {}).get("hardware") or {})


def capability(record: dict | None) -> str | None:
    """The vector ISA torch's CPU kernels used for a stage's results (provenance.hardware.cpu_capability)."""
    return hardware(record).get("cpu_capability")


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
                     "verdict rerun": v_new or ledger.DASH, "verdict changed": changed,
                     "a rerun agrees": _agreement(o, lo, hi)})
    return rows


def _agreement(claim: dict | None, lo, hi) -> float:
    """repro.replication.agreement of a committed claim: how likely a rerun keeps its verdict (NaN: not predicted)."""
    if claim is None:
        return float("nan")
    diffs, _ = ledger.paper_differences(claim)
    row = {**claim, "ci_low": lo, "ci_high": hi, "verdict": ledger.verdict_class(claim.get("verdict")),
           "paper_difference": sum(diffs) / len(diffs) if diffs else None}
    return replication.agreement(row)


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
                               "verdicts changed": 0, "numbers changed": 0, "numbers compared": 0,
                               "isa committed": capability(c), "isa rerun": capability(r)})
            continue
        cl, nu = compare_claims(stem, c, r), compare_numbers(stem, c, r)
        claim_rows += cl
        number_rows += nu
        stage_rows.append({"stage": stem, "status": "compared", "claims": len(cl),
                           "outside CI": sum(x["position"] == "OUTSIDE CI" for x in cl),
                           "verdicts changed": sum(x["verdict changed"] for x in cl),
                           "numbers changed": sum(x["status"] != "same" for x in nu), "numbers compared": len(nu),
                           "isa committed": capability(c), "isa rerun": capability(r)})
    cols_c = ["stage", "paper", "claim", "committed", "ci_low", "ci_high", "rerun", "position", "verdict committed",
              "verdict rerun", "verdict changed", "a rerun agrees"]
    cols_n = ["stage", "number", "committed", "rerun", "abs diff", "status"]
    return {"stages": pd.DataFrame(stage_rows), "claims": pd.DataFrame(claim_rows, columns=cols_c),
            "numbers": pd.DataFrame(number_rows, columns=cols_n)}


def verdicts_held(claims: pd.DataFrame) -> str:
    """One line: how many claims on both sides kept their verdict's class, and each that changed."""
    both = claims[~claims["position"].isin(["new claim (not committed)", "missing in rerun"])]
    changed = both[both["verdict changed"].astype(bool)]
    line = f"verdicts held: {len(both) - len(changed)} of {len(both)}"
    agree = pd.to_numeric(both.get("a rerun agrees", pd.Series(dtype=float)), errors="coerce").dropna()
    if len(agree):  # repro.replication: what a rerun with fresh training noise was expected to change
        line += f" (a rerun was expected to change {float((1 - agree).sum()):.1f} of the {len(agree)} it predicts)"
    if len(changed):
        line += "; changed: " + "; ".join(f"{r['stage']} {r['paper']} {r['claim']!r} ({r['verdict committed']} -> "
                                          f"{r['verdict rerun']})" for _, r in changed.iterrows())
    return line


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
    out.append(f"\n{verdicts_held(cl)}\n")
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


def resolve_isa(isa: str | None, committed: dict[str, dict | None]) -> str | None:
    """--isa -> a key of ISA_ENV, or None for the native kernels; "committed" = the ISA the committed results
    record. One-line SystemExit for a value not offered or results that record no single ISA."""
    if not isa or isa == "native":
        return None
    if isa == "committed":
        caps = sorted({c for c in map(capability, committed.values()) if c})
        if len(caps) != 1:
            found = f"several ({', '.join(caps)})" if caps else "none"
            raise SystemExit(f"verify: --isa committed: the committed results record {found} in "
                             "provenance.hardware.cpu_capability; name the ISA (--isa avx2, ...)")
        isa = caps[0]
    if isa.lower() not in ISA_ENV:
        raise SystemExit(f"verify: --isa {isa!r}: expected committed, native or one of {', '.join(ISA_ENV)}")
    return isa.lower()


def resolve_threads(threads: str | None, committed: dict[str, dict | None]) -> dict:
    """--threads -> the environment that gives the rerun's torch that many threads ({} = this machine's default);
    "committed" = the torch_threads the committed results record (large sums are split over threads, so the bits can
    depend on the count: docs/results.md). One-line SystemExit for a bad value or no single count."""
    if not threads or threads == "native":
        return {}
    if threads == "committed":
        found = sorted({t for r in committed.values() if (t := hardware(r).get("torch_threads"))})
        if len(found) != 1:
            what = f"several ({', '.join(map(str, found))})" if found else "none"
            raise SystemExit(f"verify: --threads committed: the committed results record {what} in "
                             "provenance.hardware.torch_threads; name a number (--threads 2)")
        threads = str(found[0])
    if not threads.isdigit() or int(threads) < 1:
        raise SystemExit(f"verify: --threads {threads!r}: expected committed, native or a positive integer")
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def probe_isa(env: dict) -> str:
    """The ISA torch's CPU kernels use under `env` (ATen reads ATEN_CPU_CAPABILITY once, at import: a fresh
    interpreter). A value this CPU lacks is ignored by torch, which keeps its best: caught by comparing."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    return r.stdout.strip() or f"nothing ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode})"


def rerun(scratch: Path, profile: str, stems: list[str], extra_env: dict | None = None) -> int:
    """The runner in the scratch copy (its own sources first on the path, `extra_env` on top, e.g. ISA_ENV);
    returns its exit status."""
    env = {**os.environ, **(extra_env or {}), "REPRO_ROOT": str(scratch),
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
    ap.add_argument("--isa", help="force the rerun's torch CPU kernels to one vector ISA: committed (the one the "
                                  f"committed results record), native (default), {', '.join(ISA_ENV)}")
    ap.add_argument("--threads", help="torch threads of the rerun: committed (the count the committed results "
                                      "record), native (default) or a number")
    ap.add_argument("--record", action="store_true", help="write the comparison to results/<profile>/verify_<isa>"
                                                          ".json, which stage 07's ledger reads (commit it)")
    args = ap.parse_args(argv)
    if args.profile not in paths.PROFILES:
        print(f"error: unknown profile {args.profile!r}; expected one of {', '.join(paths.PROFILES)}", file=sys.stderr)
        return 2
    root = paths.ROOT
    stems = stages_to_run(root, args.profile, args.only)
    committed = load_dir(paths.RESULTS / args.profile, stems)
    isa = resolve_isa(args.isa, committed)
    threads = resolve_threads(args.threads, committed)
    env = {**(ISA_ENV[isa] if isa else {}), **threads}
    folder = args.profile + (f"-{isa}" if isa else "")
    scratch = Path(args.scratch).resolve() if args.scratch else root / "runs" / "verify" / folder
    rc = 0
    if not args.compare_only:
        kernels = ""
        if isa:
            got = probe_isa(env)
            if got.lower() != forced_capability(isa):
                raise SystemExit(f"verify: --isa {isa}: torch uses {got} kernels with ATEN_CPU_CAPABILITY={isa} on "
                                 "this CPU (it lacks that ISA); pick a lower one")
            kernels = f", torch kernels forced to {got} ({' '.join(f'{k}={v}' for k, v in env.items())})"
        if threads:
            kernels += f", {threads['OMP_NUM_THREADS']} torch threads"
        print(f"verify: rerunning {', '.join(stems)} (profile {args.profile}) in {scratch}{kernels}", flush=True)
        prepare_scratch(root, scratch, args.profile, stems)
        rc = rerun(scratch, args.profile, stems, env)
    result = compare(committed, load_dir(scratch / "results" / args.profile, stems))
    forced = f", rerun kernels forced to {isa.upper()}" if isa else ""
    text = render(result, f"verify: profile {args.profile}, committed results/{args.profile}/ vs rerun in "
                          f"{scratch}{forced}")
    out = scratch / "verify.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 60):
        print(result["stages"].to_string(index=False))
        if len(result["claims"]):
            print(result["claims"].drop(columns=["paper"]).to_string(index=False))
            print(f"verify: {verdicts_held(result['claims'])}")
    ran = result["stages"]["isa rerun"].dropna() if isa and len(result["stages"]) else []
    wrong = sorted({r for r in ran if r.lower() != forced_capability(isa)})
    if wrong:  # a stage that ran on other kernels than asked: its numbers say nothing about the forced ISA
        print(f"verify: warning: rerun stages used {', '.join(wrong)} kernels, not the {isa.upper()} asked for")
    if args.record:
        if rc:
            raise SystemExit(f"verify: --record: the rerun failed (exit status {rc}); nothing recorded")
        if wrong:
            raise SystemExit(f"verify: --record: rerun stages used {', '.join(wrong)} kernels, not {isa.upper()}; "
                             "nothing recorded")
        rec = rerun_record.make(result, committed, load_dir(scratch / "results" / args.profile, stems), isa, env,
                                argv if argv is not None else sys.argv[1:])
        print(f"verify: recorded {rerun_record.save(args.profile, rec)} ({rec['summary']})")
    print(f"verify: full comparison in {out}" + (f"; the rerun FAILED (exit status {rc})" if rc else ""))
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""Run the suite's notebooks headless with papermill, with caching and readable progress.

Run as: python -m repro run --profile smoke [--only 01 02] [--force]

- Every selected stage's params file is validated *before* anything runs (a bad file changes nothing).
- Executed copies go to runs/<profile>/notebooks/<stem>.ipynb; the kernel's cwd is the repo root.
- A stage is skipped when its cache key (hash of its params file, its notebook and the keys of the stages
  before it) matches the one recorded at its last success and its results JSON exists; --force reruns it.
- On failure: exit status 1 and the notebook, the failing cell's first lines and the executed copy's path.
- Ctrl-C or SIGTERM ends every process of the run (kernel, arm workers, their children) within a few seconds and
  exits with 128 + the signal number; results are written whole or not at all, so the next run resumes from what
  finished (stage 04-06 arms are cached by their key).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import signal
import sys
import threading
import time
from pathlib import Path

from repro import config, paths

KERNEL = "python3"
_STEM_RE = re.compile(r"^(\d\d)_[a-z0-9_]+$")


def stages() -> list[str]:
    return sorted(p.stem for p in paths.NOTEBOOKS.glob("*.ipynb") if _STEM_RE.match(p.stem))


def select(only: list[str] | None, profile: str) -> list[str]:
    """Stages with a params file in this profile, filtered by --only (numbers '02' or stems '02_sft')."""
    available = [s for s in stages() if paths.params_file(profile, s).exists()]
    if not only:
        return available
    chosen = []
    for o in only:
        hits = [s for s in available if s == o or s.split("_")[0] == o.zfill(2)]
        if not hits:
            raise config.ConfigError(f"--only {o}: no stage with a params file in params/{profile}/ "
                                     f"(have: {', '.join(available)})")
        chosen += [h for h in hits if h not in chosen]
    return sorted(chosen)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def cache_keys(profile: str) -> dict[str, str]:
    """Key of every stage: its params and notebook, chained over all earlier stages (their artifacts feed it)."""
    keys, prev = {}, b""
    for s in stages():
        pf = paths.params_file(profile, s)
        if not pf.exists():
            continue
        keys[s] = _digest(prev, pf.read_bytes(), paths.notebook(s).read_bytes())
        prev = keys[s].encode()
    return keys


def _marker(profile: str, stem: str) -> Path:
    return paths.run_dir(profile) / "cache" / f"{stem}.json"


def is_cached(profile: str, stem: str, key: str) -> bool:
    m = _marker(profile, stem)
    if not (m.exists() and paths.results_file(profile, stem).exists()):
        return False
    try:
        return json.loads(m.read_text()).get("key") == key
    except json.JSONDecodeError:
        return False


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def _failure_message(stem: str, err: Exception, executed: Path) -> str:
    lines = [f"FAILED {stem}: notebooks/{stem}.ipynb"]
    src = getattr(err, "source", None)
    if src:
        cell = getattr(err, "cell_index", "?")
        lines.append(f"  failing cell #{cell}:")
        lines += ["    " + ln for ln in src.splitlines()[:6]]
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    lines.append(f"  error: {ename}: {evalue}" if ename else f"  error: {type(err).__name__}: {err}")
    lines.append(f"  executed copy: {executed}")
    return "\n".join(lines)


STOP_GRACE = 3.0  # seconds the run's processes get to exit on SIGTERM before SIGKILL


def end_processes(procs, grace: float = STOP_GRACE) -> list[int]:
    """SIGTERM to `procs` (psutil.Process), SIGKILL to what is left after `grace` s; returns the pids still alive."""
    import psutil  # installed with accelerate and peft (both require it); checks pids are not reused before signalling

    for sig in ("terminate", "kill"):
        for p in procs:
            try:
                getattr(p, sig)()
            except psutil.NoSuchProcess:
                pass
        _, procs = psutil.wait_procs(procs, timeout=grace)
    return [p.pid for p in procs]


class StopOnSignal:
    """While a run is inside it, Ctrl-C (SIGINT) and SIGTERM end every process the run started and then raise
    KeyboardInterrupt. Why here: the kernel runs in its own session (a terminal's Ctrl-C never reaches it) and an
    uncaught SIGTERM kills the runner alone, leaving the kernel and its arm workers running into runs/."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._ending = False
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False

    def _handle(self, signum, frame):
        import psutil

        if self._ending:  # a second Ctrl-C while the first one ends the processes: let it finish
            return
        first, self.signum = self.signum is None, signum
        if first:  # the processes are listed now: once the kernel is gone its workers are no one's children
            self._ending = True
            try:
                end_processes(psutil.Process().children(recursive=True))
            finally:
                self._ending = False
        raise KeyboardInterrupt

    def message(self, stem: str, profile: str) -> str:
        name = signal.Signals(self.signum).name
        return (f"INTERRUPTED {stem} ({name}): every process of the run has ended; what finished is kept in "
                f"runs/{profile}/ and the same command resumes from it")


def run(profile: str, only: list[str] | None = None, force: bool = False, log=print) -> int:
    """Run the selected stages; returns a process exit status."""
    if profile not in paths.PROFILES:
        log(f"error: unknown profile {profile!r}; expected one of {', '.join(paths.PROFILES)}")
        return 2
    try:
        todo = select(only, profile)
        params = {s: config.load_params(profile, s) for s in todo}  # validate everything before running anything
    except config.ConfigError as e:
        log(f"error: {e}")
        return 2
    if not todo:
        log(f"error: no stages with params in params/{profile}/")
        return 2
    with StopOnSignal() as stop:
        try:
            return _run_stages(profile, todo, params, force, log, stop)
        except KeyboardInterrupt:  # a signal between two stages
            if stop.signum is None:
                raise
            log(stop.message("the run", profile))
            return 128 + stop.signum


def _run_stages(profile: str, todo: list[str], params: dict, force: bool, log, stop: StopOnSignal) -> int:
    import papermill

    keys = cache_keys(profile)
    out_dir = paths.run_dir(profile) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log(f"repro: profile '{profile}', stages: {' -> '.join(todo)}")
    for i, stem in enumerate(todo):
        nxt = todo[i + 1] if i + 1 < len(todo) else "done"
        head = f"[{i + 1}/{len(todo)}] {stem}"
        if not force and is_cached(profile, stem, keys[stem]):
            log(f"{head}: cached (key {keys[stem]}), skipped; --force reruns it. next: {nxt}")
            continue
        log(f"{head}: running (elapsed {_fmt(time.time() - t0)}; next: {nxt})")
        # A stage that runs rewrites what later stages read (e.g. 01 replaces runs/<p>/data and with it 03's
        # preference set), so later stages stop counting as cached even when their own key is unchanged.
        for later in stages()[stages().index(stem) + 1:]:
            _marker(profile, later).unlink(missing_ok=True)
        executed = out_dir / f"{stem}.ipynb"
        ts = time.time()
        try:
            papermill.execute_notebook(
                str(paths.notebook(stem)), str(executed), parameters=params[stem], kernel_name=KERNEL,
                cwd=str(paths.ROOT), log_output=True, progress_bar=False, report_mode=False,
            )
        except BaseException as e:  # papermill raises PapermillExecutionError; anything else is just as fatal
            if stop.signum is not None:  # stopped: papermill reports the kernel's KeyboardInterrupt or death
                log(stop.message(stem, profile))
                return 128 + stop.signum
            if not isinstance(e, Exception):
                raise
            log(_failure_message(stem, e, executed))
            return 1
        m = _marker(profile, stem)
        m.parent.mkdir(parents=True, exist_ok=True)
        m.write_text(json.dumps({"key": keys[stem], "seconds": round(time.time() - ts, 1)}))
        log(f"{head}: done in {_fmt(time.time() - ts)}")
    log(f"repro: finished in {_fmt(time.time() - t0)}")
    log(f"  figures + tables: {paths.figures_dir(profile)}/")
    log(f"  results (JSON):   {paths.RESULTS / profile}/")
    log(f"  executed notebooks: {out_dir}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m repro", description="Reproducibility suite runner")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the notebooks of a profile with papermill")
    r.add_argument("--profile", default="cpu", help="smoke | cpu | gpu (default: cpu)")
    r.add_argument("--only", nargs="+", help="stage numbers or stems, e.g. --only 01 02")
    r.add_argument("--force", action="store_true", help="rerun stages even when cached")
    args = ap.parse_args(argv)
    # papermill logs each cell's output at INFO: that is the readable streamed log of a run.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("traitlets", "asyncio", "papermill.translators", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run(args.profile, args.only, args.force, log=lambda s: print(s, flush=True))

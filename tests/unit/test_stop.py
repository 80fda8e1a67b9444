"""Stopping a run ends every process of it: Ctrl-C (SIGINT to the foreground process group, as a terminal sends it)
to `python -m repro run` in the middle of a stage-04 arm ends the runner, its kernel, the arm worker pool and the
workers' own children within 10 s; no arm is left half written; the rerun resumes (finished arms are read back,
not rerun) and its results equal an uninterrupted run's.

The stage is a stand-in for the smoke stage 04, in a throwaway repo: the real notebook's arm pool
(common.run_jobs, 2 spawned workers) over six cheap arms that each sleep a few seconds with a child process of
their own (as a DataLoader or tokenizer pool would have), so the test needs no stages 01-03 and runs in ~1 min."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from repro import paths
from repro.papers import common
from tests.conftest import write_notebook

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARMS = 6  # on 2 workers: when the signal comes mid-arm, arms are still queued
SLEEP_ENV = "REPRO_TEST_ARM_SECONDS"  # read by the arm, not part of its key: the reference run skips the sleep


@dataclass
class StopCfg:
    """The stand-in arms' config (a dataclass, as every Job.cfg is: it enters the arm's key)."""

    scale: float = 0.5


def slow_arm(job):
    """A deterministic arm (its numbers depend on the seed only) that takes REPRO_TEST_ARM_SECONDS and holds a child
    process meanwhile. It leaves runs/<profile>/started/<arm>.<pid> so the test knows which arms began, in which
    worker, and which child pid to look for."""
    import numpy as np

    started = paths.run_dir(job.stage.profile) / "started"
    started.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    (started / f"{job.name}.{os.getpid()}").write_text(str(child.pid))
    try:
        time.sleep(float(os.environ.get(SLEEP_ENV, "3")))
    finally:
        child.kill()
        child.wait()
    score = np.random.default_rng(job.seed).random(3) * job.cfg.scale
    rows = pd.DataFrame({"task": "vqa", "source": "s", "variant": "", "item": ["i0", "i1", "i2"],
                         "cluster": ["c0", "c1", "c2"], "metric": "m", "score": score})
    return {"metrics": {"m": float(score.mean())}, "curve": [], "kl_end": 1.0, "reward_first": 0.0,
            "reward_last": 1.0, "trained": True, "why": ""}, rows


def jobs(profile: str = "smoke") -> list[common.Job]:
    stage = common.Stage(profile=profile)
    return [common.Job("stop", "arm", s, "tests.unit.test_stop:slow_arm", StopCfg(), stage) for s in range(ARMS)]


def summary(recs, rows) -> dict:
    """What a run computed, without its timings."""
    return {"records": [{k: v for k, v in r.items() if k != "seconds"} for r in recs],
            "rows": json.loads(rows.to_json(orient="records"))}


def run_and_read_back(workers: int) -> dict:
    """What notebook 04 does: run every arm (longest first, over `workers`), then read all of them back from their
    files (the sections and the results come from disk, whether an arm ran now or in an earlier, stopped run)."""
    common.run_jobs(jobs(), workers=workers, progress=False)
    return summary(*common.run_jobs(jobs(), only_cached=True))


BODY = [
    "import json\nfrom repro import paths\nfrom tests.unit import test_stop",
    "out = paths.results_file(profile, '04_rl')\nout.parent.mkdir(parents=True, exist_ok=True)\n"
    "out.write_text(json.dumps(test_stop.run_and_read_back(workers=2)))",
]


@pytest.fixture
def repo(tmp_repo):
    write_notebook(tmp_repo / "notebooks" / "04_rl.ipynb", 'profile = "smoke"\n', BODY)
    (tmp_repo / "params" / "smoke").mkdir(parents=True)
    (tmp_repo / "params" / "smoke" / "04_rl.yaml").write_text("profile: smoke\n")
    return tmp_repo


def _env(repo) -> dict:
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "REPRO_ROOT": str(repo), "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


RUNNER = ["-m", "repro", "run", "--profile", "smoke", "--only", "04", "--force"]
# the arm pool alone, as a notebook's kernel runs it
POOL = ["-c", "import sys\nfrom tests.unit import test_stop\ntry:\n    test_stop.run_and_read_back(workers=2)\n"
        "except KeyboardInterrupt:\n    sys.exit('KeyboardInterrupt: the pool stopped')"]


def _foreground_signals() -> None:
    """SIGINT as a terminal's foreground job has it. A test run started in the background of a non-interactive shell
    (`make test &`, some CI runners) inherits SIGINT *ignored*, and a Python started with it ignored raises no
    KeyboardInterrupt: the interrupt these tests send would then do nothing (seen once in a backgrounded make test)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _runner(repo, log: str, args=RUNNER) -> subprocess.Popen:
    """`python <args>` as a terminal (or jupyter_client, for a kernel) starts it: the leader of its own process
    group, with SIGINT at its default. Its output goes to a file, not a pipe: a process it leaves behind would hold a
    pipe open and hang the test."""
    with (repo / log).open("w") as out:
        return subprocess.Popen([sys.executable, *args], cwd="/", env=_env(repo), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_foreground_signals)


def _wait(run: subprocess.Popen, repo, log: str, timeout: float) -> str:
    run.wait(timeout=timeout)
    return (repo / log).read_text()


def _started(repo) -> dict[str, tuple[int, int]]:
    """{arm name: (worker pid, child pid)} of the arms that began."""
    d = repo / "runs" / "smoke" / "started"
    out = {}
    for f in d.glob("*.*") if d.exists() else []:
        text = f.read_text()
        if text:
            out[f.name.rsplit(".", 1)[0]] = (int(f.name.rsplit(".", 1)[1]), int(text))
    return out


def _finished(repo) -> list[str]:
    return sorted(p.parent.name.rsplit("-", 1)[0] for p in (repo / "runs" / "smoke").rglob("arm.json"))


def _alive(pids) -> list[int]:
    import psutil

    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _tree(pid: int) -> set[int]:
    import psutil

    try:
        return {pid} | {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _fresh(repo, seconds: float = 1.0) -> set[str]:
    """Arms that began less than `seconds` ago: each has at least 3 - `seconds` s of its sleep left."""
    d = repo / "runs" / "smoke" / "started"
    now = time.time()
    files = d.glob("*.*") if d.exists() else []
    return {f.name.rsplit(".", 1)[0] for f in files if now - f.stat().st_mtime < seconds}


def _stop_mid_arm(repo, sig: int, log: str, args=RUNNER, group: bool = True) -> tuple[subprocess.Popen, str]:
    """Start `python <args>`, send `sig` (to its process group, or to it alone) once an arm finished and another just
    began, and check that every process of the run (runner, kernel, workers, the arms' children) is gone 10 s later,
    that neither the arm stopped mid-way nor any arm queued behind it was run to its end, and that no file was left
    half written. Returns (the process, its output)."""
    run = _runner(repo, log, args)
    seen: set[int] = set()
    deadline = time.monotonic() + 240
    try:
        while not (_finished(repo) and _fresh(repo) - set(_finished(repo))):
            assert run.poll() is None, f"the run ended before the signal:\n{(repo / log).read_text()}"
            assert time.monotonic() < deadline, "no second round of arms within 240 s"
            seen |= _tree(run.pid)
            time.sleep(0.1)
        running = _fresh(repo) - set(_finished(repo))  # each has 2 s of its 3 left
        begun = set(_started(repo)) | set(_finished(repo))
        seen |= _tree(run.pid) | {p for pair in _started(repo).values() for p in pair}
        # Ctrl-C and JupyterLab's interrupt signal the process group; `kill <pid>` or the OOM killer one process
        if group:
            os.killpg(run.pid, sig)
        else:
            os.kill(run.pid, sig)
        out = _wait(run, repo, log, 30)
        end = time.monotonic() + 10
        while _alive(seen) and time.monotonic() < end:
            time.sleep(0.2)
        assert not _alive(seen), f"still running 10 s after the signal: {_alive(seen)}\n{out[-3000:]}"
    finally:
        for pid in _alive(seen | {run.pid}):
            os.kill(pid, signal.SIGKILL)
    assert running and not running & set(_finished(repo)), "an arm stopped mid-way must not be saved"
    assert set(_finished(repo)) <= begun, "an arm queued at the stop was run after it"
    arms = [p.parent for p in (repo / "runs" / "smoke").rglob("arm.json")]
    assert all((a / "rows.csv").exists() for a in arms)  # arm.json is written last: it marks an arm done
    assert not list((repo / "runs" / "smoke" / "models").rglob("*.tmp")), "a half-written file was left"
    return run, out


def test_sigint_mid_arm_ends_every_process_and_the_rerun_equals_an_uninterrupted_run(repo, tmp_path_factory,
                                                                                      monkeypatch):
    run, out = _stop_mid_arm(repo, signal.SIGINT, "run1.log")
    assert run.returncode == 130 and "INTERRUPTED 04_rl (SIGINT)" in out, out[-3000:]
    finished = _finished(repo)
    (repo / "runs" / "smoke" / "started").rename(repo / "runs" / "smoke" / "started-1")
    rerun = _runner(repo, "run2.log")
    out = _wait(rerun, repo, "run2.log", 300)
    assert rerun.returncode == 0, out[-3000:]
    assert set(_started(repo)).isdisjoint(finished), "a finished arm was run again"
    resumed = json.loads(paths.results_file("smoke", "04_rl").read_text())

    reference = tmp_path_factory.mktemp("uninterrupted")
    monkeypatch.setenv("REPRO_ROOT", str(reference))
    monkeypatch.setattr(paths, "RUNS", reference / "runs")
    monkeypatch.setenv(SLEEP_ENV, "0")
    assert resumed == run_and_read_back(workers=1)


def test_sigterm_to_the_runner_alone_ends_every_process(repo):
    """SIGTERM (`kill <pid>`, a scheduler's stop) reaches the runner only; before, it died at once and left the
    kernel's arm workers running the queued arms into runs/."""
    run, out = _stop_mid_arm(repo, signal.SIGTERM, "run.log", group=False)
    assert run.returncode == 143 and "INTERRUPTED 04_rl (SIGTERM)" in out, out[-3000:]


def test_a_notebooks_interrupt_ends_the_pool_and_a_killed_kernel_takes_its_workers_along(repo):
    """In JupyterLab nothing of the runner is there: the kernel's own run_jobs ends its workers on the interrupt
    (SIGINT to the kernel's process group; before, every worker got it too, abandoned its arm and ran the queued
    ones, and the kernel waited for them), and workers whose kernel was killed alone (OOM killer) end themselves."""
    run, out = _stop_mid_arm(repo, signal.SIGINT, "pool.log", POOL)
    assert run.returncode == 1 and "KeyboardInterrupt: the pool stopped" in out, out[-3000:]
    (repo / "runs" / "smoke" / "started").rename(repo / "runs" / "smoke" / "started-1")
    _stop_mid_arm(repo, signal.SIGKILL, "pool2.log", POOL, group=False)  # the arms left, their parent killed

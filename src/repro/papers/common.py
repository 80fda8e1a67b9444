"""What the four papers' stage-04 runs share: the stage knobs, flat params -> typed configs, arm jobs run in
parallel worker processes (one thread each, one result file per arm) and the "trained" rule. Evaluation with
per-row scores and the starting points are in repro.papers.measure.

An *arm* is one trained model (paper, method, seed) or one evaluated start (seed None). Each arm is a picklable
`Job`; `run_jobs(jobs, workers)` runs them serially or in `workers` spawned processes and returns one record per
job, in job order (never in completion order), so results do not depend on scheduling. A record:
    {"paper", "method", "seed", "metrics": {flat name: float}, "curve": [{step, reward, kl, length}],
     "seconds", "kl_end", "reward_first", "reward_last", "trained", "why"}
and its per-row scores (DataFrame[paper, method, seed, task, source, variant, item, cluster, metric, score]) are
written beside it (`arm.json`, `rows.csv`) under runs/<profile>/models/rl/<paper>/<arm>/, so a failed run keeps
every finished arm and a rerun with the same knobs reuses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from repro import paths, results
from repro.config import ConfigError

PAPERS = ("umed", "zhu", "mmedpo", "drllava")
ROW_COLUMNS = ["paper", "method", "seed", "task", "source", "variant", "item", "cluster", "metric", "score"]


# ----------------------------------------------------------------------------------------------- configs
@dataclass
class Stage:
    """Knobs every paper's run reads (params keys without a paper prefix)."""

    profile: str = "smoke"
    seed: int = 0                 # data subsampling; training repeats over `seeds`
    seeds: list = field(default_factory=lambda: [0])
    workers: int = 0              # parallel arm processes; 0 = one per CPU core (1 when a GPU is present)
    eval_batch_size: int = 32
    eval_split: str = "test"      # "val" while choosing knobs (issue 11: never tune toward a paper on test)
    # training seeds whose arms start from their own stage-02 SFT (models/sft-s<seed>, 02's `start_seeds`) instead of
    # the shared models/sft: the start is one draw of SFT's noise, and with a start per seed its spread enters every
    # claim's seed spread (issue 26). [] = every seed starts from models/sft.
    start_seeds: list = field(default_factory=list)

    def __post_init__(self):
        if self.eval_split not in ("val", "test"):
            raise ConfigError(f"04_rl: key 'eval_split' has value {self.eval_split!r}, expected 'val' (while "
                              "choosing knobs) or 'test'")

    def n_workers(self) -> int:
        if self.workers > 0:
            return self.workers
        import torch

        return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


def _tname(value) -> str:
    return "list" if isinstance(value, list | tuple) else type(value).__name__


def declared(cls, prefix: str = "") -> dict[str, tuple[str, object]]:
    """{params key: (type name, default)} of a config dataclass; keys are `prefix + field name`."""
    out = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[prefix + f.name] = (_tname(default), default)
    return out


def from_params(cls, params, prefix: str = "", source: str = "params"):
    """The config dataclass `cls` from flat params (a dict or a namespace): the keys `prefix + field`, each
    type-checked; a key with the prefix that names no field is a one-line ConfigError naming it."""
    from repro.config import _type_ok

    values = dict(vars(params)) if not isinstance(params, dict) else dict(params)
    spec = declared(cls, prefix)
    if prefix:
        for key, value in values.items():
            if key.startswith(prefix) and key not in spec:
                raise ConfigError(f"{source}: unknown key '{key}' (value {value!r}); {cls.__name__} has: "
                                  f"{', '.join(sorted(spec))}")
    kwargs = {}
    for key, (tname, _) in spec.items():
        if key in values:
            if not _type_ok(values[key], tname):
                raise ConfigError(f"{source}: key '{key}' has value {values[key]!r} of type "
                                  f"{type(values[key]).__name__}, expected {tname}")
            kwargs[key[len(prefix):]] = values[key]
    return cls(**kwargs)


def supported_kwargs(fn, **kw) -> dict:
    """The keyword arguments `fn` accepts. A knob it does not know yet (a trainer branch not merged) is dropped
    with a warning naming it, never silently."""
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return kw
    dropped = sorted(set(kw) - set(params))
    if dropped:
        warnings.warn(f"{fn.__module__}.{fn.__qualname__} does not accept {dropped}; these knobs are ignored",
                      stacklevel=2)
    return {k: v for k, v in kw.items() if k in params}


def ppo_config(**kw):
    """PPOConfig from knobs; fields the installed PPOConfig lacks are dropped with a warning (see above)."""
    from repro.train import ppo

    names = {f.name for f in dataclasses.fields(ppo.PPOConfig)}
    dropped = sorted(set(kw) - names)
    if dropped:
        warnings.warn(f"PPOConfig has no field(s) {dropped}; these knobs are ignored", stacklevel=2)
    return ppo.PPOConfig(**{k: v for k, v in kw.items() if k in names})


def protocol_extra(knob: str, value: str, params_key: str | None = None) -> dict:
    """Job.extra for a real-protocol knob (repro.data.protocols.KNOBS): {"data": [knob, value]} for a data folder,
    {"external_test": value} for the extra test set; {} at the default (the first choice: SynthMed / none), so the
    default's jobs keep their cache keys. A value not offered is a one-line ConfigError naming the params key."""
    from repro.data import protocols

    choices = list(protocols.KNOBS[knob])
    if value not in choices:
        raise ConfigError(f"04_rl: key '{params_key or knob}' has value {value!r}, expected one of {choices}")
    if value == choices[0]:
        return {}
    return {"external_test": value} if knob == "external_test" else {"data": [knob, value]}


# ----------------------------------------------------------------------------------------------- locations
def data_dir(stage: Stage) -> Path:
    return paths.data_dir(stage.profile)


def start_name(stage: Stage, name: str, seed: int | None = None) -> str:
    """The stage-02 checkpoint folder a training seed starts from: "sft-s<seed>" for the SFT of a seed in
    stage.start_seeds, else `name` ("base" is always shared)."""
    return f"{name}-s{seed}" if name == "sft" and seed is not None and seed in stage.start_seeds else name


def model_dir(stage: Stage, name: str, seed: int | None = None) -> Path:
    """The stage-02 checkpoints: name "base" or "sft"; `seed` picks a training seed's own SFT (`start_name`)."""
    folder = start_name(stage, name, seed)
    p = paths.models_dir(stage.profile) / folder / "final"
    if not (p / "config.json").exists():
        what = f"the start of seed {seed} ({folder}; 02's start_seeds must list {seed})" if folder != name else name
        raise FileNotFoundError(f"{what} model {p} not found: run stage 02 first "
                                f"(python -m repro run --profile {stage.profile} --only 02)")
    return p


def sft_seeds(stage: Stage) -> list:
    """The seeds of the SFT start's evaluation jobs: [None] (one deterministic evaluation that pairs with every
    seed) when every seed shares models/sft, else every training seed (each start evaluated, paired with its
    seed's arms)."""
    return list(stage.seeds) if stage.start_seeds else [None]


def sft_eval_jobs(paper: str, cfg, stage: Stage, extra: dict) -> list[Job]:
    """The SFT start's test evaluation (repro.papers.measure.eval_arm; extra: model, tasks, limit, ...), one job per
    `sft_seeds`."""
    return [Job(paper, "SFT", s, "repro.papers.measure:eval_arm", cfg, stage, dict(extra)) for s in sft_seeds(stage)]


def out_root(stage: Stage) -> Path:
    return paths.models_dir(stage.profile) / "rl"


# ----------------------------------------------------------------------------------------------- jobs
@dataclass
class Job:
    """One arm: `fn` ("module:function") is called with the job in a worker and returns (record, rows)."""

    paper: str
    method: str
    seed: int | None
    fn: str
    cfg: object
    stage: Stage
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        safe = self.method.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "-")
        return safe if self.seed is None else f"{safe}-s{self.seed}"

    @property
    def folder(self) -> Path:
        """<paper>/<name>-<key prefix>: a knob change (a sweep) gets its own folder instead of replacing the run
        of the other knobs, and two configs of one method in one run_jobs call never collide."""
        return out_root(self.stage) / self.paper / f"{self.name}-{self.key()[:8]}"

    def key(self) -> str:
        """Hash of everything that decides the arm's result, including the stage-02 weights it starts from.
        Computed once per job object (it stats the two model files; `folder` asks for it on every access): the
        weights an arm starts from do not change while its job is alive."""
        if "_key" not in self.__dict__:
            self.__dict__["_key"] = self._compute_key()
        return self.__dict__["_key"]

    def _compute_key(self) -> str:
        stamp = {}
        for name in ("base", "sft"):  # a seed without its own start stamps models/sft: its key is as before
            f = paths.models_dir(self.stage.profile) / start_name(self.stage, name, self.seed) / "final" / \
                "model.safetensors"
            stamp[name] = f.stat().st_mtime_ns if f.exists() else None
        cfg = None
        if not self.fn.startswith("repro.papers.measure:"):  # measuring a start reads job.extra only
            cfg = dataclasses.asdict(self.cfg)
            # knobs added later enter the key only when set away from their default, so old arms stay cached
            for k, d in getattr(self.cfg, "KEY_IF_SET", {}).items():
                if cfg.get(k) == d:
                    cfg.pop(k)
            for k in getattr(self.cfg, "NOT_IN_KEY", ()):  # knobs that add jobs but change no arm's result
                cfg.pop(k, None)
        blob = json.dumps({"paper": self.paper, "method": self.method, "seed": self.seed, "fn": self.fn,
                           "cfg": cfg,
                           "eval_batch_size": self.stage.eval_batch_size, "eval_split": self.stage.eval_split,
                           "extra": self.extra, "init": stamp}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def step0_file(job: Job) -> Path:
    """The probe's step-0 table shared by the seeds of `job`'s arm (probe.Recorder's `shared`): keyed by the job's
    key without its seed, i.e. by its start weights, config and extra (what decides step 0 besides the seed). A
    seed with its own start (Stage.start_seeds) has its own step 0."""
    own = start_name(job.stage, "sft", job.seed) != "sft"
    seedless = job if own else dataclasses.replace(job, seed=None)
    return out_root(job.stage) / job.paper / "probe0" / f"{seedless.name}-{seedless.key()[:12]}.csv"


def resolve(spec: str):
    """The function named by "module:function" (the hooks stage 05's ablation arms pass in Job.extra)."""
    module, fn = spec.split(":")
    return getattr(importlib.import_module(module), fn)


def _load_cached(job: Job):
    f, rows_f = job.folder / "arm.json", job.folder / "rows.csv"
    if not (f.exists() and rows_f.exists()):
        return None
    rec = json.loads(f.read_text())
    if rec.get("key") != job.key():
        return None
    return _with_probe_file(job, rec, pd.read_csv(rows_f, dtype={"item": str, "cluster": str, "variant": str,
                                                                 "source": str}))


def run_job(job: Job):
    """Run one arm in this process with one torch thread (so serial and parallel runs compute the same floats);
    the result is cached in the arm's folder by its key."""
    import torch

    cached = _load_cached(job)
    if cached is not None:
        return cached
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module, fn = job.fn.split(":")
        t0 = time.time()
        rec, rows = getattr(importlib.import_module(module), fn)(job)
        rec = {"paper": job.paper, "method": job.method, "seed": job.seed, "seconds": round(time.time() - t0, 1),
               **rec, "key": job.key()}
    finally:
        torch.set_num_threads(threads)
    rows = rows.assign(paper=job.paper, method=job.method, seed=job.seed)[ROW_COLUMNS]
    # Each file appears whole (temp file + rename) and arm.json, which marks the arm done, comes last: a run stopped
    # mid-write leaves the arm absent, never half there, and the rerun runs it again.
    results._atomic_write(job.folder / "rows.csv", rows.to_csv(index=False))
    results._atomic_write(job.folder / "arm.json", json.dumps(results.clean(rec), indent=1))
    return _with_probe_file(job, rec, rows)


def _with_probe_file(job: Job, rec: dict, rows):
    """The record with `probe_file`, the arm's per-item probe table (claims.method_learned pools them over seeds),
    when the arm has one. Not saved in arm.json: the folder moves with the checkout."""
    f = job.folder / "probe.csv"
    return ({**rec, "probe_file": str(f)} if f.exists() else rec), rows


def _one_thread():
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def _worker_start(parent: int):
    """Initializer of an arm worker: one thread; its own process group, so that the pool ends the worker and what it
    started (tokenizer or DataLoader processes) with one signal; and a watchdog that ends that group once `parent`
    is gone (a kernel killed by its runner or by JupyterLab would otherwise leave it running the queued arms)."""
    _one_thread()
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)
        threading.Thread(target=_end_with_parent, args=(parent,), daemon=True, name="end-with-parent").start()


def _end_with_parent(parent: int, every: float = 0.5):
    while os.getppid() == parent:
        time.sleep(every)
    os.killpg(0, signal.SIGKILL)


STOP_GRACE = 3.0  # seconds a stopped worker gets to exit on SIGTERM before SIGKILL


def _signal_group(proc, sig) -> None:
    """`sig` to the worker's process group (itself and its children); to the worker alone before it made one."""
    if not hasattr(os, "killpg"):
        proc.terminate() if sig == signal.SIGTERM else proc.kill()
        return
    for send in (os.killpg, os.kill):
        try:
            return send(proc.pid, sig)
        except ProcessLookupError:
            continue


def _stop_pool(ex) -> None:
    """End the pool's workers and their children now and drop the arms not started. Leaving the `with` block instead
    waits for every arm already queued: a Ctrl-C or a notebook's interrupt would not stop anything."""
    procs = list((getattr(ex, "_processes", None) or {}).values())  # read before shutdown() clears it
    for p in procs:
        _signal_group(p, signal.SIGTERM)
    ex.shutdown(wait=False, cancel_futures=True)
    end = time.monotonic() + STOP_GRACE
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    for p in procs:  # what ignored SIGTERM; a process group outlives its leader
        _signal_group(p, signal.SIGKILL)


# Rough seconds of one job on one cpu thread (the cpu profile's measured run, 2026-12-07), by its function; only the
# ORDER of submission uses them: the longest go first, so the workers finish together instead of one idling while
# the other runs a long arm it picked up last (longest-processing-time-first scheduling).
SECONDS = {"repro.papers.drllava:arm": 520, "repro.generalization.bases:base_arm": 400,  # vision + base training
           "repro.papers.zhu:arm": 390, "repro.papers.umed:arm": 240,
           "repro.generalization.arms:umed_arm": 140, "repro.generalization.arms:zhu_arm": 130,
           "repro.papers.mmedpo:arm": 75, "repro.generalization.arms:dpo_arm": 90,
           "repro.generalization.arms:sft_arm": 90, "repro.papers.measure:start_arm": 30}
CONTINUED_SECONDS = {"drllava": 120, "zhu": 85, "umed": 40, "mmedpo": 30}  # continued SFT: its training + evaluation
CONTROL_SECONDS = 70  # a 12-step control arm (repro.papers.controls)
CONVERSATION_EVAL_SECONDS = 120  # a Dr-LLaVA evaluation: 2,100 five-turn conversations


def est_seconds(job: Job) -> float:
    if job.extra.get("control") in ("null", "positive"):
        return CONTROL_SECONDS
    if job.fn == "repro.papers.continued:arm":
        return CONTINUED_SECONDS.get(job.paper, 60)
    if job.fn in SECONDS:
        return SECONDS[job.fn]
    return CONVERSATION_EVAL_SECONDS if "conv" in job.extra.get("tasks", ()) else 30


def run_jobs(jobs: list[Job], workers: int = 1, only_cached: bool = False,
             progress: bool = True) -> tuple[list[dict], pd.DataFrame]:
    """Run the jobs (serially for workers <= 1, else in spawned processes) -> (records in job order, all rows).
    Arms already on disk are read in this process (no worker is started for them); the others are submitted
    longest first (`est_seconds`). Every job runs to its end even when another fails; the first failure is raised
    afterwards. only_cached: load the arms already on disk, run nothing (the claims ledger of a partial session)."""
    cached = [_load_cached(j) for j in jobs]
    todo = [i for i, c in enumerate(cached) if c is None]
    if only_cached:
        done = [c for c in cached if c is not None]
    elif workers <= 1 or len(todo) <= 1:
        done = [c if c is not None else run_job(j) for j, c in zip(jobs, cached, strict=True)]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        from tqdm.auto import tqdm

        order = sorted(todo, key=lambda i: -est_seconds(jobs[i]))  # stable: equal estimates keep job order
        n = min(workers, len(todo))
        with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"), initializer=_worker_start,
                                 initargs=(os.getpid(),)) as ex:
            try:
                futures = {i: ex.submit(run_job, jobs[i]) for i in order}
                for _ in tqdm(as_completed(futures.values()), total=len(order), desc=f"arms on {n} workers",
                              disable=not progress):
                    pass
            except BaseException:  # KeyboardInterrupt: Ctrl-C, a notebook's interrupt, the runner stopping
                _stop_pool(ex)
                raise
            errors = [futures[i].exception() for i in order]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        done = [c if c is not None else futures[i].result() for i, c in enumerate(cached)]
    recs = [r for r, _ in done]
    rows = pd.concat([r for _, r in done], ignore_index=True) if done else pd.DataFrame(columns=ROW_COLUMNS)
    return recs, rows


# ----------------------------------------------------------------------------------------------- the trained rule
def arm_status(curve: pd.DataFrame, kl_end: float | None, min_kl: float) -> tuple[bool, str]:
    """(trained, why). An arm is "not trained" when its rewards had zero variance (every group's rewards equal,
    e.g. a start that never writes the rewarded format: the group advantage is 0 and nothing is learned) or when
    its policy did not move (end KL to the reference below `min_kl`)."""
    if curve is None or len(curve) == 0:
        return False, "no training step was logged"
    if "reward_std" in curve and curve["reward_std"].notna().any() and (curve["reward_std"].fillna(0) <= 1e-9).all():
        return False, "zero reward variance in every group (the group advantage is 0: nothing to learn)"
    r = pd.to_numeric(curve.get("reward"), errors="coerce").dropna() if "reward" in curve else pd.Series([], float)
    if len(r) > 1 and float(r.max() - r.min()) <= 1e-9 and "reward_std" not in curve:
        return False, f"the training reward never changed ({float(r.iloc[0]):.3g} at every step)"
    if kl_end is None or not math.isfinite(kl_end):
        return False, "no KL to the reference was logged"
    if kl_end < min_kl:
        return False, f"end KL {kl_end:.3g} < {min_kl:g}: the policy did not move"
    return True, ""


def summarize_curve(curve: pd.DataFrame, min_kl: float, last: int = 3) -> dict:
    """kl_end (mean KL of the last `last` logged steps), reward_first / reward_last (mean of the first / last
    `last` steps; fewer when the run is short, so the two windows never overlap) and the trained rule; curve
    columns: step, reward, kl[, reward_std]."""
    def avg(col, part):
        if col not in curve or not len(curve):
            return None
        v = pd.to_numeric(part[col], errors="coerce").dropna()
        return float(v.mean()) if len(v) else None

    w = max(1, min(last, len(curve) // 2))  # first and last windows never overlap (a 2-step run: 1 step each)
    head, tail = curve.head(w), curve.tail(w)
    kl_end = avg("kl", tail)
    trained, why = arm_status(curve, kl_end, min_kl)
    return {"kl_end": kl_end, "reward_first": avg("reward", head), "reward_last": avg("reward", tail),
            "trained": trained, "why": why}


def ppo_curve(history: list[dict]) -> pd.DataFrame:
    """Our PPO's log -> step, reward, kl (nats per sequence), length (tokens)."""
    return pd.DataFrame([{"step": h.get("step", i + 1), "reward": h.get("reward"), "kl": h.get("kl"),
                          "length": h.get("response_length")} for i, h in enumerate(history)],
                        columns=["step", "reward", "kl", "length"])


"""Stage results: `results/<profile>/<stem>.json` (metrics + provenance), tables (CSV + Markdown), and the
paper's numbers beside ours.

Figures and tables are first written to `runs/<profile>/pending/<stem>/` and moved into `figures/<profile>/`
only by `save()`, the last call of a notebook: a stage that fails half-way leaves the previous figures,
tables and results untouched.

Provenance (in every results JSON): the commit, a dirty flag over code and params only (DIRTY_SCOPE) with the
dirty paths, package versions, params, wall time, and the hardware (CPU model, logical cores, torch threads, GPU).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path

from repro import paths

_PACKAGES = ("torch", "torchvision", "transformers", "trl", "peft", "datasets", "numpy", "papermill")
_STARTED = time.time()  # import time of the kernel: the wall time of a notebook run


def pending_dir(profile: str, stem: str) -> Path:
    d = paths.run_dir(profile) / "pending" / stem
    d.mkdir(parents=True, exist_ok=True)
    return d


# Paths whose changes can change a result: code and params. Figures and results are what a stage rewrites, so
# counting them (as before) made every committed result read "dirty".
DIRTY_SCOPE = ("src", "notebooks", "params", "pyproject.toml", "Makefile", "tools")


def _porcelain_paths(out: str) -> list[str]:
    """Paths of `git status --porcelain -z` output ("XY path\0"; a rename/copy adds "source\0" after it)."""
    paths_, parts, k = [], out.split("\0"), 0
    while k < len(parts):
        entry = parts[k]
        k += 1
        if len(entry) < 4:
            continue
        paths_.append(entry[3:])
        if entry[0] in "RC":
            k += 1  # skip the rename's source path
    return sorted(paths_)


def git_state(root: Path | None = None) -> dict:
    """{"sha", "dirty", "dirty_paths", "dirty_scope"}: the commit, and whether code or params differ from it
    (modified, staged or untracked files under DIRTY_SCOPE; figures/ and results/ do not count). All None/[]
    outside a git repository."""
    cwd = root or paths.ROOT

    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)

    none = {"sha": None, "dirty": None, "dirty_paths": [], "dirty_scope": list(DIRTY_SCOPE)}
    try:
        sha = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "-z", "--untracked-files=all", "--", *DIRTY_SCOPE)
    except (OSError, subprocess.SubprocessError):
        return none
    if sha.returncode != 0 or status.returncode != 0:
        return none
    dirty = _porcelain_paths(status.stdout)
    return {"sha": sha.stdout.strip(), "dirty": bool(dirty), "dirty_paths": dirty, "dirty_scope": list(DIRTY_SCOPE)}


def _cpuinfo(cpuinfo: Path) -> dict[str, str]:
    """The first value of every key of /proc/cpuinfo (the first processor's, or a later block's key such as the
    "Model" some ARM boards write at the end); {} when it cannot be read."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if value.strip():
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux: /proc/cpuinfo "model name"; elsewhere platform's processor or machine)."""
    fields = _cpuinfo(cpuinfo)
    name = next((fields[k] for k in ("model name", "Model", "cpu model") if k in fields), None)
    return name or platform.processor() or platform.machine() or "unknown"


def cpu_id(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's vendor, family, model and stepping ("AuthenticAMD family 25 model 1 stepping 1"; Linux x86 only,
    else None). Why beside the model name: cloud CPUs report a bare "AMD EPYC", which names Zen 3 (AVX2) and Zen 4
    (AVX-512) alike, and the two trained the cpu profile's models to visibly different results."""
    f = _cpuinfo(cpuinfo)
    if "cpu family" not in f or "model" not in f:
        return None
    return (f"{f.get('vendor_id', '?')} family {f['cpu family']} model {f['model']}"
            + (f" stepping {f['stepping']}" if "stepping" in f else ""))


def hardware() -> dict:
    """Where a result was computed: CPU model and id (`cpu_id`), the vector ISA torch's CPU kernels use
    (cpu_capability: "AVX2", "AVX512", ...; kernels differ per ISA, so float results, and trained models, differ
    between machines with one seed), logical cores, torch's intra-op threads (the count changes float sums, hence
    losses, in the last digits) and the thread env vars; the GPU's name and count under CUDA."""
    info = {"cpu": cpu_model(), "cpu_id": cpu_id(), "cpu_capability": None, "logical_cores": os.cpu_count(),
            "torch_threads": None, "gpu": None, "gpu_count": 0,
            "env_threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        if torch.cuda.is_available():
            info["gpu"], info["gpu_count"] = torch.cuda.get_device_name(0), torch.cuda.device_count()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name(0)}"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return f"cpu:{cpu_model()} x{os.cpu_count()}"


def provenance(cfg, started: float | None = None) -> dict:
    versions = {}
    for p in _PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    params = {k: v for k, v in vars(cfg).items() if k != "stem"}
    return {
        "git": git_state(),
        "packages": versions,
        "python": platform.python_version(),
        "seed": params.get("seed"),
        "params": params,
        "wall_time_s": round(time.time() - (started or _STARTED), 2),
        "device": device_name(),
        "hardware": hardware(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def clean(x):
    """JSON-safe: numpy scalars -> Python, NaN/inf -> None (JSON has neither)."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, str | bytes):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _atomic_write(path: Path, text: str) -> None:
    """`text` to `path`, whole or not at all: a temp file of this process's own (two workers may write one file, e.g.
    an arm's shared probe step 0) renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _plain_index(df) -> bool:
    """An unnamed 0..n-1 index carries no information: tables leave it out."""
    import pandas as pd

    return isinstance(df.index, pd.RangeIndex) and df.index.name is None


def to_markdown(df, floatfmt: str = ".3f") -> str:
    """Minimal Markdown table (pandas' to_markdown needs tabulate, which we do not pin); an unnamed 0..n-1 index
    is left out, any other index is the first column."""
    plain = _plain_index(df)
    names = [n for n in df.index.names if n] if hasattr(df.index, "names") else []
    cols = [str(c) for c in ([] if plain else [" / ".join(names)]) + list(df.columns)]

    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):  # records in a cell (a claim's learning)
            return "; ".join(", ".join(f"{k} {fmt(x)}" for k, x in d.items()) for d in v)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        label = " · ".join(str(i) for i in idx) if isinstance(idx, tuple) else fmt(idx)  # MultiIndex rows
        lines.append("| " + " | ".join(([] if plain else [label]) + [fmt(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"


def save_table(df, cfg, name: str) -> Path:
    """Stage a table as CSV + Markdown; it lands in figures/<profile>/ when save() runs."""
    d = pending_dir(cfg.profile, cfg.stem)
    df.to_csv(d / f"{cfg.stem}_{name}.csv", index=not _plain_index(df))
    (d / f"{cfg.stem}_{name}.md").write_text(to_markdown(df))
    return paths.figures_dir(cfg.profile) / f"{cfg.stem}_{name}.csv"


def save_csv(df, cfg, name: str) -> Path:
    """Stage a data table as CSV only (long per-step logs, whose Markdown nobody reads); lands like save_table's."""
    d = pending_dir(cfg.profile, cfg.stem)
    df.to_csv(d / f"{cfg.stem}_{name}.csv", index=False)
    return paths.figures_dir(cfg.profile) / f"{cfg.stem}_{name}.csv"


def save(cfg, metrics: dict, started: float | None = None, **extra) -> Path:
    """Write results/<profile>/<stem>.json and publish the staged figures and tables. Returns the JSON path."""
    out = paths.results_file(cfg.profile, cfg.stem)
    record = {"stage": cfg.stem, "profile": cfg.profile, "metrics": clean(metrics), **clean(extra),
              "provenance": clean(provenance(cfg, started))}
    text = json.dumps(record, indent=2, sort_keys=False, allow_nan=False) + "\n"
    fig_dir = paths.figures_dir(cfg.profile)
    fig_dir.mkdir(parents=True, exist_ok=True)
    pend = pending_dir(cfg.profile, cfg.stem)
    for f in sorted(pend.iterdir()):
        os.replace(f, fig_dir / f.name)
    shutil.rmtree(pend, ignore_errors=True)
    _atomic_write(out, text)
    return out


def load(profile: str, stem: str) -> dict:
    f = paths.results_file(profile, stem)
    if not f.exists():
        raise FileNotFoundError(f"{f}: no results yet for stage {stem} (run: python -m repro run --profile "
                                f"{profile} --only {stem[:2]})")
    return json.loads(f.read_text())


def paper_numbers(paper: str | None = None) -> dict:
    """The papers' reported numbers with their sources (src/repro/paper_numbers.json)."""
    data = json.loads((Path(__file__).parent / "paper_numbers.json").read_text())
    return data[paper] if paper else data


def paper_table(paper: str, table: str):
    """A paper's table as a DataFrame, labelled as the paper's (never mix these into our columns)."""
    import pandas as pd

    t = paper_numbers(paper)["tables"][table]
    df = pd.DataFrame(t["rows"], index=t["index"], columns=t["columns"])
    df.index.name = f"paper: {t['index_name']}" if t.get("index_name") else "paper"
    return df

"""Stage results: `results/<profile>/<stem>.json` (metrics + provenance), tables (CSV + Markdown), and the
paper's numbers beside ours.

Figures and tables are first written to `runs/<profile>/pending/<stem>/` and moved into `figures/<profile>/`
only by `save()`, the last call of a notebook: a stage that fails half-way leaves the previous figures,
tables and results untouched.
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


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=paths.ROOT, capture_output=True, text=True, timeout=10)

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}
    if sha.returncode != 0:
        return {"sha": None, "dirty": None}
    return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name(0)}"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return f"cpu:{platform.processor() or platform.machine()} x{os.cpu_count()}"


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
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _clean(x):
    """JSON-safe: numpy scalars -> Python, NaN/inf -> None (JSON has neither)."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, str | bytes):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def to_markdown(df, floatfmt: str = ".3f") -> str:
    """Minimal Markdown table (pandas' to_markdown needs tabulate, which we do not pin)."""
    names = [n for n in df.index.names if n] if hasattr(df.index, "names") else []
    cols = [str(c) for c in ([" / ".join(names)] + list(df.columns))]

    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        label = " · ".join(str(i) for i in idx) if isinstance(idx, tuple) else fmt(idx)  # MultiIndex rows
        lines.append("| " + " | ".join([label] + [fmt(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"


def save_table(df, cfg, name: str) -> Path:
    """Stage a table as CSV + Markdown; it lands in figures/<profile>/ when save() runs."""
    d = pending_dir(cfg.profile, cfg.stem)
    df.to_csv(d / f"{cfg.stem}_{name}.csv")
    (d / f"{cfg.stem}_{name}.md").write_text(to_markdown(df))
    return paths.figures_dir(cfg.profile) / f"{cfg.stem}_{name}.csv"


def save(cfg, metrics: dict, started: float | None = None, **extra) -> Path:
    """Write results/<profile>/<stem>.json and publish the staged figures and tables. Returns the JSON path."""
    out = paths.results_file(cfg.profile, cfg.stem)
    record = {"stage": cfg.stem, "profile": cfg.profile, "metrics": _clean(metrics), **_clean(extra),
              "provenance": _clean(provenance(cfg, started))}
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

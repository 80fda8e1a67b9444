"""A throwaway JupyterLab for the browser tests: a copy of the suite's notebooks and params under its own repo root
(REPRO_ROOT), a token, a free port and lab settings that keep every cell in the page.

The root lives under runs/browser/root (ignored by git) and is kept between test runs: the smoke stages that the
widgets need are then cached by the runner (their key hashes params + notebook), so a rerun skips them."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# Lab user settings (JUPYTERLAB_SETTINGS_DIR): no windowing, so cells far below the fold are in the DOM and can be
# found by their text; no news or update toasts over the notebook (the machine may have no network).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def prepare_root(repo: Path, root: Path) -> Path:
    """Fresh copies of notebooks/ and params/ under `root`; runs/ (data, models, run cache) is kept."""
    for sub in ("notebooks", "params"):
        shutil.rmtree(root / sub, ignore_errors=True)
        shutil.copytree(repo / sub, root / sub, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # jupytext in Lab refuses an .ipynb more than a second newer than its paired .py (tools/sync_notebooks.py)
    for nb in (root / "notebooks").glob("*.ipynb"):
        src = nb.with_suffix(".py")
        if src.exists() and nb.stat().st_mtime_ns > src.stat().st_mtime_ns:
            os.utime(src, ns=(src.stat().st_atime_ns, nb.stat().st_mtime_ns))
    return root


def run_stages(root: Path, *stages: str, timeout: int = 900) -> float:
    """`python -m repro run --profile smoke --only <stages>` against `root`; returns the seconds it took."""
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "repro", "run", "--profile", "smoke", "--only", *stages],
                       capture_output=True, text=True, cwd="/", timeout=timeout, env={**os.environ,
                                                                                     "REPRO_ROOT": str(root)})
    assert r.returncode == 0, f"smoke run of {stages} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
    return time.time() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """`jupyter lab` on 127.0.0.1 serving root/notebooks; kernels inherit REPRO_ROOT=root. Use as a context manager."""

    def __init__(self, root: Path, log: Path, start_timeout: float = 120):
        self.root, self.log_path, self.start_timeout = root, log, start_timeout
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.proc = None

    def url(self, path: str = "lab", query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path}?{query}{'&' if query else ''}token={self.token}"

    def notebook_url(self, stem: str) -> str:
        """The notebook alone in a fresh workspace of its own (?reset: no tabs restored from an earlier test)."""
        return self.url(f"lab/workspaces/{stem}/tree/{stem}.ipynb", "reset")

    def shutdown_kernels(self) -> None:
        """Closing a browser page leaves its kernel running; free its memory before the next notebook."""
        auth = {"Authorization": f"token {self.token}"}
        with urllib.request.urlopen(urllib.request.Request(self.url("api/kernels"), headers=auth), timeout=10) as r:
            kernels = json.load(r)
        for k in kernels:
            req = urllib.request.Request(self.url(f"api/kernels/{k['id']}"), headers=auth, method="DELETE")
            urllib.request.urlopen(req, timeout=30).close()

    def __enter__(self) -> Lab:
        settings = self.root / "lab-settings"
        for name, value in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(value))
        env = {**os.environ, "REPRO_ROOT": str(self.root), "JUPYTERLAB_SETTINGS_DIR": str(settings),
               "JUPYTERLAB_WORKSPACES_DIR": str(self.root / "lab-workspaces"),
               "JUPYTER_RUNTIME_DIR": str(self.root / "lab-runtime")}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.root / 'notebooks'}", "--LabApp.news_url=None",
             *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI containers run as root
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.root)
        deadline = time.time() + self.start_timeout
        while True:
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.__exit__()
                tail = self.log_path.read_text()[-3000:]
                raise RuntimeError(f"jupyter lab did not start; log {self.log_path}:\n{tail}")
            time.sleep(0.5)

    def __exit__(self, *_):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # jupyter_server shuts its kernels down on SIGTERM
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

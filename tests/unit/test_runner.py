"""The papermill runner end to end on a throwaway repo: run, cache, --force, failure report, bad params."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import write_notebook

BODY = [
    "import repro.config, repro.results\ncfg = repro.config.from_namespace(globals(), '01_demo')",
    "import pandas as pd\nrepro.results.save_table(pd.DataFrame({'a': [1.0]}), cfg, 'tab')",
    "if fail:\n    raise RuntimeError('boom in cell')\nrepro.results.save(cfg, {'x': x, 'seed': seed})",
]


def _cli(repo, *args):
    env = {**os.environ, "REPRO_ROOT": str(repo)}
    return subprocess.run([sys.executable, "-m", "repro", "run", *args], capture_output=True, text=True,
                          env=env, cwd="/", timeout=300)


@pytest.fixture
def repo(tmp_repo):
    write_notebook(tmp_repo / "notebooks" / "01_demo.ipynb", 'profile = "smoke"\nseed = 0\nx = 1\nfail = False\n',
                   BODY)
    (tmp_repo / "params" / "smoke").mkdir(parents=True)
    (tmp_repo / "params" / "smoke" / "01_demo.yaml").write_text("# demo\nprofile: smoke\nseed: 1\nx: 7\n")
    return tmp_repo


def test_run_cache_force_and_failure(repo):
    r = _cli(repo, "--profile", "smoke")  # caller's cwd is "/": it must not matter
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((repo / "results" / "smoke" / "01_demo.json").read_text())
    assert res["metrics"] == {"x": 7, "seed": 1}
    assert res["provenance"]["params"]["x"] == 7 and res["provenance"]["seed"] == 1
    assert (repo / "figures" / "smoke" / "01_demo_tab.md").exists()
    assert (repo / "runs" / "smoke" / "notebooks" / "01_demo.ipynb").exists()
    assert "figures + tables" in r.stdout

    r = _cli(repo, "--profile", "smoke", "--only", "01")
    assert r.returncode == 0 and "cached" in r.stdout, r.stdout
    r = _cli(repo, "--profile", "smoke", "--force")
    assert r.returncode == 0 and "running" in r.stdout and "cached" not in r.stdout

    # a failing cell: exit != 0, the notebook, the cell's first lines, the executed copy; old results kept
    (repo / "params" / "smoke" / "01_demo.yaml").write_text("seed: 1\nx: 8\nfail: true\n")
    r = _cli(repo, "--profile", "smoke")
    assert r.returncode == 1
    assert "FAILED 01_demo" in r.stdout and "if fail:" in r.stdout and "boom in cell" in r.stdout
    assert "runs/smoke/notebooks/01_demo.ipynb" in r.stdout
    assert json.loads((repo / "results" / "smoke" / "01_demo.json").read_text())["metrics"]["x"] == 7


def test_bad_params_change_nothing(repo):
    assert _cli(repo, "--profile", "smoke").returncode == 0
    before = (repo / "results" / "smoke" / "01_demo.json").read_text()
    (repo / "params" / "smoke" / "01_demo.yaml").write_text("seed: 1\nx: seven\n")
    r = _cli(repo, "--profile", "smoke", "--force")
    assert r.returncode != 0
    assert "params/smoke/01_demo.yaml" in r.stdout and "'x'" in r.stdout and "seven" in r.stdout
    assert (repo / "results" / "smoke" / "01_demo.json").read_text() == before
    assert _cli(repo, "--profile", "laptop").returncode != 0


def test_forcing_a_stage_invalidates_later_stages(repo):
    write_notebook(repo / "notebooks" / "02_demo.ipynb", 'profile = "smoke"\nseed = 0\n',
                   ["import repro.config, repro.results\ncfg = repro.config.from_namespace(globals(), '02_demo')",
                    "repro.results.save(cfg, {'ok': 1})"])
    (repo / "params" / "smoke" / "02_demo.yaml").write_text("profile: smoke\nseed: 0\n")
    assert _cli(repo, "--profile", "smoke").returncode == 0
    r = _cli(repo, "--profile", "smoke")
    assert r.stdout.count("cached") == 2, r.stdout
    # 01 rewrites what 02 reads: after `--only 01 --force`, 02 must run again even though its key is unchanged
    assert _cli(repo, "--profile", "smoke", "--only", "01", "--force").returncode == 0
    r = _cli(repo, "--profile", "smoke")
    assert "[1/2] 01_demo: cached" in r.stdout and "[2/2] 02_demo: running" in r.stdout, r.stdout


def test_run_key_follows_the_init_weights_not_just_their_path(tmp_path):
    """A finished run is reused only while its starting model is the same: rewriting the weights at the same path
    (02 retraining the SFT model that 04 starts from) must retrain; rewriting them identically, or touching the
    logs beside them, must not (an interrupted stage still resumes)."""
    from repro.train import runs

    init = tmp_path / "init"
    init.mkdir()
    (init / "model.safetensors").write_bytes(b"weights v1")
    (init / "train_info.json").write_text('{"seconds": 1}')
    out = tmp_path / "run"
    key = {"init": str(init), "lr": 1e-3}
    assert runs.prepare(out, key) is None
    (out / "final").mkdir()
    runs.finish(out, {"final_dir": str(out / "final")})
    assert runs.prepare(out, key)["cached"] is True
    (init / "model.safetensors").write_bytes(b"weights v1")  # same bytes, new mtime
    (init / "train_info.json").write_text('{"seconds": 2}')
    assert runs.prepare(out, key)["cached"] is True
    (init / "model.safetensors").write_bytes(b"weights v2")
    assert runs.prepare(out, key) is None and not (out / "final").exists()

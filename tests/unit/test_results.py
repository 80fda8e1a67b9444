"""repro.results provenance: the hardware a result was computed on, and a dirty flag over code and params only."""

from __future__ import annotations

import os
import subprocess
from types import SimpleNamespace

import pytest

from repro import results

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]


def _git(repo, *args):
    subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True)


@pytest.fixture
def git_repo(tmp_repo):
    for f in ("src/repro/a.py", "params/cpu/04_rl.yaml", "figures/cpu/fig.png", "results/cpu/04_rl.json",
              "Makefile", "README.md"):
        (tmp_repo / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_repo / f).write_text("x\n")
    _git(tmp_repo, "init", "-q")
    _git(tmp_repo, "add", "-A")
    _git(tmp_repo, "commit", "-qm", "init")
    return tmp_repo


def test_dirty_counts_code_and_params_only(git_repo):
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=git_repo, capture_output=True, text=True).stdout.strip()
    g = results.git_state()
    assert g == {"sha": sha, "dirty": False, "dirty_paths": [], "dirty_scope": list(results.DIRTY_SCOPE)}
    # what a stage rewrites (figures, results) and docs do not make the code dirty
    (git_repo / "figures/cpu/fig.png").write_text("new\n")
    (git_repo / "results/cpu/04_rl.json").write_text("{}\n")
    (git_repo / "figures/cpu/new.png").write_text("new\n")
    (git_repo / "README.md").write_text("edited\n")
    assert results.git_state()["dirty"] is False
    # a modified module, an untracked params file in a new folder, a staged Makefile change: all three count
    (git_repo / "src/repro/a.py").write_text("y\n")
    (git_repo / "params/smoke").mkdir()
    (git_repo / "params/smoke/04_rl.yaml").write_text("seed: 1\n")
    (git_repo / "Makefile").write_text("all:\n")
    _git(git_repo, "add", "Makefile")
    g = results.git_state()
    assert g["sha"] == sha and g["dirty"] is True
    assert g["dirty_paths"] == ["Makefile", "params/smoke/04_rl.yaml", "src/repro/a.py"]
    # a rename reports the new path once
    _git(git_repo, "mv", "src/repro/a.py", "src/repro/b.py")
    assert "src/repro/b.py" in results.git_state()["dirty_paths"]


def test_git_state_outside_a_repo(tmp_repo, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_repo.parent))  # never find a repo above the tmp dir
    assert results.git_state() == {"sha": None, "dirty": None, "dirty_paths": [],
                                   "dirty_scope": list(results.DIRTY_SCOPE)}


def test_porcelain_parsing():
    out = " M src/x.py\0?? params/a b.yaml\0R  src/new.py\0src/old.py\0"
    assert results._porcelain_paths(out) == ["params/a b.yaml", "src/new.py", "src/x.py"]
    assert results._porcelain_paths("") == []


def test_cpu_model_from_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n"
                 "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n")
    assert results.cpu_model(f) == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert results.cpu_model(tmp_path / "missing")  # falls back to platform, never empty


def test_cpu_id_reads_the_first_processor_block(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                 "model name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n"
                 "cpu family\t: 25\nmodel\t\t: 17\n")
    assert results.cpu_id(f) == "AuthenticAMD family 25 model 1 stepping 1"  # "model name" is not "model"
    f.write_text("processor\t: 0\nmodel name\t: ARMv8\n")
    assert results.cpu_id(f) is None and results.cpu_id(tmp_path / "missing") is None


def test_hardware_and_provenance(tmp_repo, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_repo.parent))
    import torch

    hw = results.hardware()
    assert hw["cpu"] and hw["logical_cores"] == os.cpu_count() and hw["torch_threads"] == torch.get_num_threads()
    if torch.cuda.is_available():
        assert hw["gpu"] == torch.cuda.get_device_name(0) and hw["gpu_count"] >= 1
    else:
        assert hw["gpu"] is None and hw["gpu_count"] == 0
    assert set(hw["env_threads"]) == {"OMP_NUM_THREADS", "MKL_NUM_THREADS"}
    assert hw["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", ...
    prov = results.provenance(SimpleNamespace(stem="04_rl", profile="smoke", seed=3))
    assert prov["hardware"] == hw and prov["seed"] == 3 and prov["git"]["dirty"] is None  # tmp_repo: not a repo

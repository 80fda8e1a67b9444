"""tools/pool_runs.py: two whole runs pooled, each run's start paired with its own seeds."""

from __future__ import annotations

import gzip
import importlib.util
import json

import pandas as pd
import pytest

from repro import paths
from repro.papers import claims

_spec = importlib.util.spec_from_file_location("pool_runs", paths.ROOT / "tools" / "pool_runs.py")
pr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pr)

CLAIM = claims.Claim("zhu", "GRPO beats SFT on accuracy", "SFT+grpo", "SFT", "accuracy")
ITEMS = [f"mcq:img{i:03d}:0" for i in range(40)]


def run(start_score: int, arm_score: int, seeds=(0, 1, 2)) -> dict:
    """One paper's run: a start scored once (seed None) and an arm per seed, every item the same score."""
    rows = [{"paper": "zhu", "method": "SFT", "seed": None, "item": i, "cluster": i.split(":")[1],
             "metric": "accuracy", "score": start_score, "variant": None, "source": "x"} for i in ITEMS]
    rows += [{"paper": "zhu", "method": "SFT+grpo", "seed": s, "item": i, "cluster": i.split(":")[1],
              "metric": "accuracy", "score": arm_score, "variant": None, "source": "x"} for s in seeds for i in ITEMS]
    records = [{"paper": "zhu", "method": "SFT", "seed": None, "trained": True, "why": ""}]
    records += [{"paper": "zhu", "method": "SFT+grpo", "seed": s, "trained": True, "why": ""} for s in seeds]
    return {"zhu": {"records": records, "rows": pd.DataFrame(rows)}}


def test_each_run_keeps_its_own_start():
    pooled = pr.pool([run(0, 1), run(1, 1)])["zhu"]
    rows = pooled["rows"]
    assert sorted(set(rows["seed"])) == [0, 1, 2, 100, 101, 102]
    start = rows[rows["method"] == "SFT"]
    assert start.groupby("seed")["score"].first().to_dict() == {0: 0, 1: 0, 2: 0, 100: 1, 101: 1, 102: 1}
    assert {r["seed"] for r in pooled["records"]} == {None, 0, 1, 2, 100, 101, 102}
    # run 0's arm beats its start by 1, run 1's by 0: pooled, the difference is their mean, each seed its own
    got = claims.judge({"zhu": pooled}, [CLAIM], n_boot=200)[0]
    assert got["difference"] == pytest.approx(0.5)
    assert got["per_seed"] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    # one run alone: the start shared by its seeds (seed None), as the stage judges it
    alone = claims.judge(run(0, 1), [CLAIM], n_boot=200)[0]
    assert alone["difference"] == pytest.approx(1.0) and alone["per_seed"] == [1.0, 1.0, 1.0]


def test_load_run_names_what_it_cannot_read(tmp_path):
    with pytest.raises(SystemExit, match=r"cannot read 04_rl's results"):
        pr.load_run(tmp_path, "04_rl", "cpu")
    d = tmp_path / "results" / "cpu"
    d.mkdir(parents=True)
    (d / "04_rl.json").write_text(json.dumps({"metrics": {}}))
    with gzip.open(d / "04_rl_scores.csv.gz", "wt") as fh:
        fh.write("paper,method,seed,item,cluster,metric,score\n")
    with pytest.raises(SystemExit, match="no metrics.runs"):
        pr.load_run(tmp_path, "04_rl", "cpu")
    gone = {"paper": "zhu", "method": "SFT+grpo", "seed": 0, "probe_file": str(tmp_path / "nowhere" / "probe.csv")}
    (d / "04_rl.json").write_text(json.dumps({"metrics": {"runs": {"zhu": [gone]}}}))
    with pytest.raises(SystemExit, match=r"zhu's probe table .*nowhere/probe.csv is not on this machine"):
        pr.load_run(tmp_path, "04_rl", "cpu")


def write_run(root, start_score: int, sha: str) -> None:
    d = root / "results" / "cpu"
    d.mkdir(parents=True)
    r = run(start_score, 1)["zhu"]
    rec = {"metrics": {"runs": {"zhu": r["records"]}, "claims": [{"paper": "zhu", "claim": CLAIM.claim,
                                                                  "verdict": f"verdict {sha}"}]},
           "provenance": {"git": {"sha": sha}, "hardware": {"cpu_capability": "AVX2"}}}
    (d / "04_rl.json").write_text(json.dumps(rec))
    with gzip.open(d / "04_rl_scores.csv.gz", "wt") as fh:
        r["rows"].to_csv(fh, index=False)


def test_main_writes_the_pooled_table_with_each_runs_commit(tmp_path, capsys):
    write_run(tmp_path / "a", 0, "aaa")
    write_run(tmp_path / "b", 1, "bbb")
    out = tmp_path / "pooled.json"
    assert pr.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert [r["sha"] for r in got["runs"]] == ["aaa", "bbb"]
    row = next(c for c in got["claims"] if c["claim"] == CLAIM.claim)
    assert row["difference"] == pytest.approx(0.5) and (row["run 0"], row["run 1"]) == ("verdict aaa", "verdict bbb")
    assert CLAIM.claim in capsys.readouterr().out

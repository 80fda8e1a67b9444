"""The learned rule of a METHOD (claims.method_learned / claims.trained): its seeds' probe tables pooled, so one flat
seed does not void a method whose reward rose across seeds, and one rising seed does not carry a flat method."""

from __future__ import annotations

import numpy as np
import pandas as pd

from repro.papers import claims

N = 60


def _probe(path, rise: float, seed: int):
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 1, N)
    end = start + rise + rng.normal(0, 0.05, N)
    t = pd.DataFrame({"step": [0] * N + [10] * N, "item": [f"i{i}" for i in range(N)] * 2,
                      "cluster": [f"c{i}" for i in range(N)] * 2, "reward": np.r_[start, end],
                      "target_pass1": 0.5, "target_greedy": 0.5})
    t.to_csv(path, index=False)
    return str(path)


def _rec(method, seed, probe_file=None, moved=True, learned=False):
    return {"method": method, "seed": seed, "moved": moved, "trained": moved and learned,
            "why": "" if moved and learned else "did not learn", "probe_file": probe_file}


def test_one_flat_seed_does_not_void_a_method_whose_reward_rose_over_seeds(tmp_path):
    recs = [_rec("SFT", None), _rec("RL", 0, _probe(tmp_path / "a.csv", 0.0, 0)),
            _rec("RL", 1, _probe(tmp_path / "b.csv", 0.3, 1), learned=True),
            _rec("RL", 2, _probe(tmp_path / "c.csv", 0.3, 2), learned=True)]
    run = {"records": recs}
    rule = claims.method_learned(run, "RL")
    assert rule["learned"] and rule["seeds"] == [0, 1, 2] and 0.15 < rule["difference"] < 0.25
    assert claims.trained(run, "RL", "SFT") == (True, "")


def test_one_rising_seed_does_not_carry_a_flat_method(tmp_path):
    recs = [_rec("RL", 0, _probe(tmp_path / "a.csv", 0.02, 0), learned=True),
            _rec("RL", 1, _probe(tmp_path / "b.csv", -0.1, 1)), _rec("RL", 2, _probe(tmp_path / "c.csv", -0.1, 2))]
    ok, why = claims.trained({"records": recs}, "RL")
    assert not ok and "did not learn over seeds [0, 1, 2]" in why


def test_a_seed_that_did_not_move_voids_the_method_and_without_probes_each_seed_decides(tmp_path):
    recs = [_rec("RL", 0, _probe(tmp_path / "a.csv", 0.3, 0), learned=True),
            _rec("RL", 1, _probe(tmp_path / "b.csv", 0.3, 1), moved=False)]
    ok, why = claims.trained({"records": recs}, "RL")
    assert not ok and "RL seed 1" in why
    plain = [_rec("SFT (continued)", 0, learned=True), _rec("SFT (continued)", 1, learned=False)]
    assert claims.method_learned({"records": plain}, "SFT (continued)") is None
    assert not claims.trained({"records": plain}, "SFT (continued)")[0]


def test_an_arm_read_back_from_disk_names_its_probe_table(tmp_repo):
    # claims pool the seeds' probe tables through the records' probe_file: a record read from the cache (run_jobs
    # reads finished arms itself, not through run_job) must carry it too, or every method falls back to per seed
    import json

    from repro.papers import common, umed

    job = umed.jobs(umed.UMedConfig(), common.Stage(profile="smoke", seeds=[0]))[1]
    job.folder.mkdir(parents=True)
    (job.folder / "arm.json").write_text(json.dumps({"method": job.method, "seed": 0, "key": job.key()}))
    pd.DataFrame(columns=common.ROW_COLUMNS).to_csv(job.folder / "rows.csv", index=False)
    assert "probe_file" not in common.run_jobs([job], only_cached=True, progress=False)[0][0]
    _probe(job.folder / "probe.csv", 0.3, 0)
    recs, _ = common.run_jobs([job], only_cached=True, progress=False)
    assert recs[0]["probe_file"] == str(job.folder / "probe.csv")


def test_a_claim_carries_its_methods_rules_and_starts_have_none(tmp_path):
    # repro.replication predicts from these whether a rerun learns: one entry per method with probe tables
    recs = [_rec("SFT", None), _rec("RL", 0, _probe(tmp_path / "a.csv", 0.3, 0), learned=True),
            _rec("RL", 1, _probe(tmp_path / "b.csv", 0.3, 1), learned=True)]
    got = claims.learning({"records": recs}, "RL", "SFT")
    assert [r["method"] for r in got] == ["RL"] and got[0]["learned"]
    assert got[0]["ci_low"] < got[0]["difference"] < got[0]["ci_high"]
    assert got[0]["difference"] == claims.method_learned({"records": recs}, "RL")["difference"]
    assert claims.learning({"records": recs}, "RL", "RL") == got  # one arm at two steps: one rule

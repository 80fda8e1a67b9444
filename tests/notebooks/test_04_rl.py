"""Papermill smoke run of notebook 04 through the runner: every trainer runs, every table and the claims exist."""

from __future__ import annotations

import json
import math

import pytest

from repro import paths
from tests.conftest import run_stages

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result():
    run_stages("--profile", "smoke", "--only", "01", "02", "03")  # cached when earlier tests ran them
    run_stages("--profile", "smoke", "--only", "04", "--force")
    return json.loads(paths.results_file("smoke", "04_rl").read_text())


def test_04_rl_smoke(result):
    runs = result["metrics"]["runs"]
    assert set(runs) == {"umed", "zhu", "mmedpo", "drllava"}
    methods = {p: {r["method"] for r in recs} for p, recs in runs.items()}
    assert methods["umed"] == {"SFT", "SFT+PPO", "SFT+AAR"}
    assert methods["mmedpo"] == {"SFT", "DPO", "MMedPO"}
    assert {"base", "SFT", "SFT+grpo", "base+dr_grpo", "SFT+cwr", "SFT+ecr", "SFT+grpo_semantic"} <= methods["zhu"]
    assert methods["drllava"] == {"SFT", "SFT+PPO (rule reward)"}
    bands = {"mau_avg": (0, 1), "accuracy": (0, 1), "similarity": (0, 1), "closed_acc": (0, 1),
             "open_recall": (0, 1), "rouge_l": (0, 1), "conversation_acc": (0, 1), "diagnosis_acc": (0, 1)}
    for recs in runs.values():
        for r in recs:
            for k, v in r["metrics"].items():
                assert v is None or math.isfinite(v) or math.isnan(v), (r["method"], k)
                if k in bands and v == v:
                    assert bands[k][0] <= v <= bands[k][1], (r["method"], k, v)
    claims = result["metrics"]["claims"]
    assert len(claims) >= 10 and all(c["verdict"] for c in claims)
    for name in ("umed_table2.md", "zhu_main.md", "mmedpo_main.md", "drllava_main.md", "claims.md", "curves.png"):
        assert (paths.figures_dir("smoke") / f"04_rl_{name}").exists(), name

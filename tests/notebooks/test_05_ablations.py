"""Papermill smoke run of notebook 05 through the runner: every configured ablation has its row in its paper's
table beside the paper's rows, the full methods come from stage 04's arms (not retrained), every claim carries the
fields the ledger reads, the IoU-threshold curve and the forest plots exist."""

from __future__ import annotations

import json

import pytest

from repro import config, paths
from repro.papers import ablations as ab
from tests.conftest import CLAIM_FIELDS, VERDICTS, run_stages

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def result():
    run_stages("--profile", "smoke", "--only", "01", "02", "03", "04")  # cached when earlier tests ran them
    rl = paths.models_dir("smoke") / "rl"
    arms04 = {p: {f.parent.name: f.stat().st_mtime_ns for f in (rl / p).glob("*/arm.json")}
              for p in ("umed", "mmedpo", "zhu", "drllava")}
    run_stages("--profile", "smoke", "--only", "05", "--force")
    return json.loads(paths.results_file("smoke", "05_ablations").read_text()), arms04


def test_05_tables_have_every_row(result):
    res, _ = result
    m = res["metrics"]
    acfg = ab.AblationConfig.from_params(config.load_params("smoke", "05_ablations"))
    full = {"umed": ["SFT", "SFT+PPO (= w/o AAR)", "SFT+AAR (full)"], "mmedpo": ["SFT", "DPO", "MMedPO"],
            "zhu": ["base", "SFT", "SFT+grpo"], "drllava": ["SFT", ab.drllava.METHOD]}
    for paper, rows in full.items():
        ours = [r["method"].replace(" (not trained)", "") for r in m["tables"][paper] if r["who"].startswith("ours")]
        want = rows + [ab.label(paper, a) for a in getattr(acfg, paper)]
        assert set(want) <= set(ours), (paper, want, ours)
    paper_rows = {r["method"] for r in m["tables"]["umed"] if "Table 6" in r["who"]}
    assert {"w/o VRR", "w/o ALR", "w/o AAR", "UMed-LVLM"} <= paper_rows
    assert any(r["who"].startswith("paper MMedPO (ablations") for r in m["tables"]["mmedpo"])


def test_05_claims_have_every_field(result):
    res, _ = result
    m = res["metrics"]
    assert m["claims"] and all(CLAIM_FIELDS <= set(c) for c in m["claims"])
    assert all(CLAIM_FIELDS <= set(c) for c in m["exploratory"])
    assert {c["verdict"] for c in m["claims"] + m["exploratory"]} <= VERDICTS
    assert {c["paper"] for c in m["claims"]} == {"umed", "mmedpo", "zhu", "drllava"}
    assert any(c["paper_value"] is not None for c in m["claims"])  # the paper's difference beside ours


def test_05_reuses_04s_full_method_arms(result):
    res, arms04 = result
    for paper, recs in res["metrics"]["runs"].items():
        for r in recs:
            if "(" not in r["method"] or r["method"] == ab.drllava.METHOD:  # a full method or start of stage 04
                name = r["method"].replace(" ", "_").replace("(", "").replace(")", "").replace("+", "-")
                name = name if r["seed"] is None else f"{name}-s{r['seed']}"
                name = f"{name}-{r['key'][:8]}"  # arm folders are keyed by config (common.Job.folder)
                f = paths.models_dir("smoke") / "rl" / paper / name / "arm.json"
                assert arms04[paper].get(name) == f.stat().st_mtime_ns, (paper, name)  # not rewritten by 05


def test_05_figures(result):
    res, _ = result
    assert res["metrics"]["iou_curve"]
    for name in ("forest_umed.png", "forest_mmedpo.png", "forest_zhu.png", "forest_drllava.png", "iou_curve.png",
                 "umed_table6.md", "claims.md"):
        assert (paths.figures_dir("smoke") / f"05_ablations_{name}").exists(), name

"""The planned MDE (repro.papers.plan): variance components backed out of the validation sweep, known answers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from repro import stats
from repro.papers import plan, sweep

Z = stats._z(0.05, 0.8)


def sweep_rows(changes, ci, step=12, lr=3e-5, batch=8, paper="drllava"):
    rows = [{"paper": paper, "lr": lr, "batch_size": batch, "step": step, "seed": s, "probe_gain": 0.5,
             "reward": 1.0, "reward_start": 0.5, "val_metric": 0.5 + c, "val_metric_start": 0.5, "val_pass1": 0.5,
             "val_ci_low": ci[0], "val_ci_high": ci[1], "seconds": 1.0} for s, c in enumerate(changes)]
    # a row of another setting must not enter the plan
    rows.append({**rows[0], "lr": 1e-4, "val_ci_low": -1.0, "val_ci_high": 1.0})
    return pd.DataFrame(rows, columns=sweep.COLUMNS)


def test_components_known_answer():
    # SE = 0.392 / (2 * 1.96) = 0.1; seeds 0.1 and 0.2: seed_sd = 0.0707, S = 2;
    # item_sd^2 = (0.01 - 0.005 / 2) * 50 = 0.375
    c = plan.components(sweep_rows([0.1, 0.2], (-0.046, 0.346)), {"lr": 3e-5, "batch_size": 8, "steps": 12}, 50)
    assert c["seed_sd"] == pytest.approx(math.sqrt(0.005))
    se = 0.392 / (2 * plan.Z95)
    assert c["item_sd"] == pytest.approx(math.sqrt((se**2 - 0.005 / 2) * 50))
    assert c["n_seeds"] == 2 and c["val_change"] == pytest.approx(0.15)
    assert plan.components(sweep_rows([0.1], (0, 1)), {"none": "x"}, 50) is None


def test_planned_between_arms_is_sqrt2_wider_and_only_for_the_target_metric():
    p = {"zhu": {"item_sd": 0.4, "seed_sd": 0.03, "n_val": 64, "n_seeds": 2, "val_change": 0.05}}
    vs_start = plan.planned(p, "zhu", "accuracy", "SFT+grpo - SFT", 500, 3)
    assert vs_start == pytest.approx(Z * math.sqrt(0.16 / 500 + 0.0009 / 3))
    between = plan.planned(p, "zhu", "accuracy", "SFT+dr_grpo - SFT+grpo", 500, 3)
    assert between == pytest.approx(vs_start * math.sqrt(2))
    assert plan.planned(p, "zhu", "similarity", "SFT+grpo_semantic - SFT+grpo", 500, 3) is None
    assert plan.planned(p, "mmedpo", "closed_correct", "DPO - SFT", 200, 3) is None
    assert plan.planned(None, "zhu", "accuracy", "SFT+grpo - SFT", 500, 3) is None
    # more seeds, more images: never a larger planned MDE
    assert plan.planned(p, "zhu", "accuracy", "SFT+grpo - SFT", 500, 5) < vs_start
    assert plan.planned(p, "zhu", "accuracy", "SFT+grpo - SFT", 800, 3) < vs_start


def test_plans_read_the_sweep_record_and_its_probe_size():
    rows = sweep_rows([0.1, 0.2], (-0.046, 0.346))
    record = {"rows": rows.to_dict(orient="records"),
              "choice": {"drllava": {"lr": 3e-5, "batch_size": 8, "steps": 12}},
              "runs": [{"papers": ["drllava"], "grid": {"probe_rows": 30}},
                       {"papers": ["drllava"], "grid": {"probe_rows": 50}}, {"papers": ["zhu"], "grid": {}}]}
    got = plan.plans(record)
    assert set(got) == {"drllava"} and got["drllava"]["n_val"] == 50
    t = plan.table(got, {"drllava": 200}, 3)
    assert t.loc[0, "mde_between_arms"] == pytest.approx(t.loc[0, "mde_vs_start"] * math.sqrt(2))


def test_a_sweep_run_at_the_params_probe_size_takes_the_default():
    # a sweep run without --probe-rows records None: the params' probe size (or the whole validation set) stands in;
    # without it the paper has no plan
    rows = sweep_rows([0.1, 0.2], (-0.046, 0.346))
    record = {"rows": rows.to_dict(orient="records"),
              "choice": {"drllava": {"lr": 3e-5, "batch_size": 8, "steps": 12}},
              "runs": [{"papers": ["drllava"], "grid": {"probe_rows": None}}]}
    assert plan.plans(record) == {}
    got = plan.plans(record, {"drllava": 100})
    assert got["drllava"]["n_val"] == 100
    at_50 = plan.plans({**record, "runs": [{"papers": ["drllava"], "grid": {"probe_rows": 50}}]})
    assert got["drllava"]["item_sd"] > at_50["drllava"]["item_sd"]  # the same CI over more items: a larger item sd


def test_a_test_limit_of_0_counts_the_test_images(tmp_path, monkeypatch):
    """drllava_eval_limit 0 means every test conversation: the plan counts the images of the standard order in the
    data folder (a limit n means n // 7 images: seven variants per image)."""
    from repro.papers import probe

    rows = [{"id": f"img{i}", "variant": v} for i in range(5) for v in ("standard", "shuffled")]
    monkeypatch.setattr(probe, "val_rows", lambda folder, task, limit=0, variant=None, split="val", where=None: [
        r for r in rows if variant is None or r["variant"] == variant] if split == "test" else [])
    sizes = plan.test_images({"zhu_eval_limit": 300, "umed_eval_limit": 0, "drllava_eval_limit": 0}, tmp_path)
    assert sizes == {"zhu": 300, "umed": 5, "drllava": 5, "mmedpo": 5}  # distinct images, not rows
    assert plan.test_images({"drllava_eval_limit": 700})["drllava"] == 100


def test_every_swept_paper_has_a_planned_metric():
    """The plan reads each swept paper's target metric: a paper added to the sweep without one broke stage 04."""
    assert set(sweep.SWEEPABLE) <= set(plan.TARGET) and set(plan.TARGET) <= set(plan.WHOLE_PROBE)

"""Papermill smoke run of notebook 03 through the runner: reward tables, probe verdicts, figures, preference set."""

from __future__ import annotations

import json
import math

import pytest

from repro import paths
from tests.conftest import run_stages

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result():
    # 01 and 02 are cached when their tests already ran them with the same params; 03 always reruns.
    run_stages("--profile", "smoke", "--only", "01", "02")
    run_stages("--profile", "smoke", "--only", "03", "--force")
    return json.loads(paths.results_file("smoke", "03_rewards").read_text())


def test_03_rewards_smoke(result):
    m = result["metrics"]
    assert m["samples"] > 50
    for name, v in m["reward_means"].items():
        assert v is None or math.isfinite(v), name
    assert 0.0 <= m["vrr"]["mean"] <= 1.0 and 0.0 < m["vrr"]["chance"] < 1.0 and m["vrr"]["n"] > 0
    # facts of the rule rewards, whatever the model: the length rewards pay for filler, the format and accuracy
    # rewards do not pay for tag spam, ALR does not pay for a whole-image box
    p = m["probes"]
    assert p["ecr_reward_cap32/length farming"] == "pays more"
    assert p["format_reward/tag spam"] == "resists" and p["accuracy_reward/tag spam"] == "resists"
    assert p["alr_reward/whole-image box"] == "resists"
    assert "length farming: PAYS MORE" in m["hacking_statement"]
    pref = m["preference"]
    assert pref["text"] > 0 and pref["visual"] > 0 and pref["pairs"] == pref["text"] + pref["visual"]
    # text weights are the release's raw scores in [0, 1], visual ones 0.75 + 0.5 p (preference.py's weight modes)
    assert 0.0 <= pref["weight_min"] <= pref["weight_mean"] <= pref["weight_max"] <= 1.25
    assert (paths.data_dir("smoke") / "preference" / "dataset_dict.json").exists()
    for name in ("reward_distributions.png", "reward_correlations.png", "hacking_probes.png", "lesion_noising.png",
                 "vrr_attention.png", "reward_examples.md", "reward_summary.csv", "hacking_probes.md",
                 "preference_set.md"):
        assert (paths.figures_dir("smoke") / f"03_rewards_{name}").exists(), name
    print(f"03 smoke: {result['provenance']['wall_time_s']:.0f} s wall")  # budget 90 s: measured, not asserted
    executed = json.loads((paths.run_dir("smoke") / "notebooks" / "03_rewards.ipynb").read_text())
    assert not any("ipywidgets" in json.dumps(c.get("outputs", [])) for c in executed["cells"])

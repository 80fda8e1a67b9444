"""Statistics and claims of stage 04 (repro.experiments, repro.rl_report): known answers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from repro import experiments as X
from repro import rl_report


def rec(method, seed, **metrics):
    return {"method": method, "seed": seed, "metrics": metrics, "curve": None, "seconds": 0.0}


def test_ci95_known_answer():
    # mean 2, sd 1, n 3: half-width = t(0.975, 2) * 1 / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    m, h = X.ci95([1.0, 2.0, 3.0])
    assert m == pytest.approx(2.0) and h == pytest.approx(2.484138, abs=1e-5)
    assert math.isnan(X.ci95([5.0])[1]) and X.ci95([5.0])[0] == 5.0
    assert math.isnan(X.ci95([])[0])
    assert X.ci95([1.0, None, float("nan"), 3.0])[0] == pytest.approx(2.0)


def test_table_formats_mean_and_ci_in_method_order():
    recs = [rec("SFT", None, acc=0.5), rec("GRPO", 0, acc=0.6), rec("GRPO", 1, acc=0.7), rec("GRPO", 2, acc=0.8)]
    t = X.table(recs, ["acc"])
    assert list(t.index) == ["SFT", "GRPO"]
    assert t.loc["SFT", "acc"] == "0.500"
    assert t.loc["GRPO", "acc"] == "0.700 ± 0.248"


def test_difference_and_verdicts():
    base = [rec("SFT", None, acc=0.5)]
    up = base + [rec("M", s, acc=v) for s, v in enumerate([0.70, 0.72, 0.71])]
    d = X.difference(up, "M", "SFT", "acc")
    assert d["diff"] == pytest.approx(0.21) and d["n"] == 3
    assert X.verdict(d) == "reproduced"
    assert X.verdict(d, expect="lower") == "opposite"
    noisy = base + [rec("M", s, acc=v) for s, v in enumerate([0.3, 0.7, 0.5])]
    assert X.verdict(X.difference(noisy, "M", "SFT", "acc")).startswith("inconclusive")
    one = base + [rec("M", 0, acc=0.9)]
    assert X.verdict(X.difference(one, "M", "SFT", "acc")) == "inconclusive (one seed)"
    # paired by seed when both sides have per-seed values
    paired = [rec("A", s, acc=v) for s, v in enumerate([0.5, 0.6, 0.7])] + \
             [rec("B", s, acc=v + 0.1) for s, v in enumerate([0.5, 0.6, 0.7])]
    d = X.difference(paired, "B", "A", "acc")
    assert d["diff"] == pytest.approx(0.1) and d["ci"] == pytest.approx(0.0, abs=1e-9)


def test_claims_only_for_runs_present():
    runs = {"mmedpo": [rec("SFT", None, closed_acc=0.5, open_recall=0.2),
                       rec("DPO", 0, closed_acc=0.55, open_recall=0.2), rec("DPO", 1, closed_acc=0.56, open_recall=0.2),
                       rec("MMedPO", 0, closed_acc=0.5, open_recall=0.3),
                       rec("MMedPO", 1, closed_acc=0.5, open_recall=0.31)]}
    c = rl_report.claims(runs)
    assert set(c.index.get_level_values("paper")) == {"mmedpo"}
    assert c.loc[("mmedpo", "MMedPO beats DPO on open VQA"), "difference"] == pytest.approx(0.105)
    closed = c.loc[("mmedpo", "MMedPO beats DPO on closed VQA"), "verdict"]
    assert closed in ("opposite", "inconclusive (CI contains 0)")


def test_curves_long_skips_missing_curves():
    r = rec("PPO", 0)
    r["curve"] = pd.DataFrame({"step": [1, 2], "reward": [0.1, 0.2], "kl": [None, 0.01], "length": [5, 6]})
    long = X.curves_long([r, rec("SFT", None)])
    assert set(long["quantity"]) == {"reward", "kl", "length"} and len(long) == 5
    assert (long["method"] == "PPO").all()


def test_table_percent_scales_mean_and_ci():
    recs = [rec("M", s, acc=v, n=v) for s, v in enumerate([0.6, 0.7, 0.8])]
    t = X.table(recs, ["acc", "n"], digits=1, percent=("acc",))
    assert t.loc["M", "acc"] == "70.0 ± 24.8" and t.loc["M", "n"] == "0.7 ± 0.2"

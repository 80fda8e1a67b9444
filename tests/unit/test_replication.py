"""repro.replication: the chance that a rerun gives the same verdict, with hand-computed answers, its agreement
with stats.verdict's rules (simulated reruns), and what it refuses to predict."""

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro import replication as R
from repro import stats

PHI = statistics.NormalDist().cdf
Z = statistics.NormalDist().inv_cdf(0.975)


def row(d, se, verdict, *, p=0.5, p_holm=None, paper=None, kind="claim", why="", stage="04_rl"):
    return {"stage": stage, "kind": kind, "difference": d, "ci_low": d - Z * se, "ci_high": d + Z * se,
            "p_value": p, "p_holm": p if p_holm is None else p_holm, "verdict": verdict, "paper_difference": paper,
            "why": why}


def test_known_answers_without_paper_effect():
    # u ~ N(0, 1), CI half-width 1.96: only |u| > 1.96 is significant
    p = R.verdict_probs(0.0, 1.0, 1.0)
    assert p["reproduced"] == pytest.approx(1 - PHI(Z)) and p["opposite"] == pytest.approx(1 - PHI(Z))
    assert p["inconclusive"] == pytest.approx(2 * PHI(Z) - 1) and p["below_paper"] == 0


def test_known_answers_with_paper_effect():
    # paper effect 3 (se 1): below_paper where u + 1.96 < 3, i.e. -1.96 <= u < 1.04
    p = R.verdict_probs(0.0, 1.0, 1.0, paper_effect=3.0)
    assert p["below_paper"] == pytest.approx(PHI(3 - Z) - PHI(-Z))
    assert p["inconclusive"] == pytest.approx(PHI(Z) - PHI(3 - Z))
    # a paper effect far away: every non-significant rerun rules it out
    assert R.verdict_probs(0.0, 1.0, 1.0, paper_effect=50.0)["below_paper"] == pytest.approx(2 * PHI(Z) - 1)
    # a paper effect against the expected direction rules nothing out (stats.verdict)
    assert R.verdict_probs(0.0, 1.0, 1.0, paper_effect=-3.0)["below_paper"] == 0


def test_direction_and_holm():
    # "lower": a difference of -3 is 3 in the paper's direction
    assert R.verdict_probs(-3.0, 1.0, 1.0, expect="lower")["reproduced"] == pytest.approx(PHI(3 - Z))
    # Holm factor 2: significance needs |u| > z_{1 - 0.05 / 4} = 2.2414
    c = statistics.NormalDist().inv_cdf(1 - 0.0125)
    assert R.verdict_probs(0.0, 1.0, 1.0, holm_factor=2.0)["reproduced"] == pytest.approx(1 - PHI(c))
    with pytest.raises(ValueError, match="expect"):
        R.verdict_probs(0.0, 1.0, 1.0, expect="up")


def test_agreement_at_a_boundary_is_one_half_and_far_from_it_near_one():
    se = 0.02
    edge = row(Z * se, se, "reproduced", p=0.049)  # its CI ends exactly at 0
    assert R.agreement(edge) == pytest.approx(0.5)
    far = row(10 * se, se, "reproduced", p=1e-9)
    assert R.agreement(far) > 0.999
    # the rerun's spread is sqrt(2) se: 1 se inside the boundary agrees Phi(1 / sqrt 2)
    inside = row(0.0, se, "inconclusive")
    assert R.agreement(inside) == pytest.approx(2 * PHI(Z / math.sqrt(2)) - 1)


def test_not_predicted():
    assert math.isnan(R.agreement(row(0.1, 0.02, "not_trained")))
    assert math.isnan(R.agreement({**row(0.0, 0.0, "inconclusive")}))  # zero-width CI: nothing to predict from
    assert math.isnan(R.agreement({"difference": None, "ci_low": None, "ci_high": None, "verdict": "inconclusive"}))
    assert math.isnan(R.scale_for(row(0.1, 0.02, "not_trained")))
    assert math.isnan(R.agreement(row(0.1, 0.02, "not trained")))  # older results' spelling
    old_style = row(0.0, 0.02, "inconclusive (CI contains 0)")
    assert R.agreement(old_style) == pytest.approx(R.agreement(row(0.0, 0.02, "inconclusive")))


def test_expect_is_read_off_the_row():
    assert R.expect_of({"expect": "lower"}) == "lower"
    assert R.expect_of({"difference": -0.1, "why": "-0.100 [...] in the paper's direction, p_holm 0.01"}) == "lower"
    assert R.expect_of({"difference": -0.1, "why": "-0.100 [...] against the paper's direction"}) == "higher"
    assert R.expect_of({"difference": 0.01, "paper_difference": -0.05}) == "lower"
    assert R.expect_of({"difference": 0.01}) == "higher"


def test_matches_stats_verdict_on_simulated_reruns():
    """Draw reruns from the model, judge each with stats.verdict on its own CI and Holm p: the shares match."""
    rng = np.random.default_rng(0)
    se, m, paper = 0.02, 2.0, 0.05
    for mean in (-0.05, 0.0, 0.03, 0.06):
        predicted = R.verdict_probs(mean, math.sqrt(2) * se, se, paper_effect=paper, holm_factor=m)
        u = rng.normal(mean, math.sqrt(2) * se, 20000)
        p = np.minimum(1, m * 2 * (1 - np.vectorize(PHI)(np.abs(u) / se)))
        got = pd.Series([stats.verdict({"ci_low": x - Z * se, "ci_high": x + Z * se, "p_holm": q},
                                       paper_effect=paper) for x, q in zip(u, p)]).value_counts(normalize=True)
        for v, share in predicted.items():
            assert got.get(v, 0.0) == pytest.approx(share, abs=0.015), (mean, v)


@settings(max_examples=200, deadline=None)
@given(st.floats(-1, 1), st.floats(1e-3, 0.5), st.floats(1e-3, 0.5), st.one_of(st.none(), st.floats(-0.5, 0.5)),
       st.floats(1, 10), st.sampled_from(["higher", "lower"]))
def test_probabilities_are_a_distribution(mean, spread, se, paper, m, expect):
    p = R.verdict_probs(mean, spread, se, paper_effect=paper, holm_factor=m, expect=expect)
    assert set(p) == set(R.PREDICTED)
    assert all(-1e-12 <= x <= 1 + 1e-12 for x in p.values())
    assert sum(p.values()) == pytest.approx(1.0)


def test_more_evidence_settles_a_clear_effect_and_expected_changes_add_up():
    clear = row(0.05, 0.02, "reproduced", p=0.01)
    assert R.two_run_agreement(clear, 1) < R.two_run_agreement(clear, 8) < R.two_run_agreement(clear, 32)
    assert R.scale_for(clear) == next(f for f in R.SCALES if R.two_run_agreement(clear, f) >= R.TARGET)
    ledger = pd.DataFrame([clear, row(0.0, 0.02, "inconclusive"), row(0.1, 0.02, "not_trained"),
                           row(0.0, 0.02, "inconclusive", kind="check")])
    out = R.expected_changes(ledger)
    assert (out["claims"], out["predicted"]) == (3, 2)  # the check is not a claim; not_trained is not predicted
    assert out["expected"] == pytest.approx((1 - R.agreement(clear)) + (1 - R.agreement(ledger.iloc[1].to_dict())))
    table = R.planning_table(ledger)
    assert list(table.index) == ["04_rl", "all"] and list(table.columns) == [f"x{f}" for f in R.SCALES]
    annotated = R.annotate(ledger)
    assert annotated["agreement"].notna().sum() == 3 and len(annotated) == len(ledger)


def test_se_parts_by_hand():
    """Two seeds x three single-item images: differences [[1, 0, 0], [1, 1, 0]] (treat - base).
    Images: seed-averaged sums (1, 0.5, 0), mean 0.5 -> SE_c^2 = 3/2 * (0.25 + 0 + 0.25) / 9 = 1/12.
    Seeds: means (1/3, 2/3), var (ddof 1) 1/18, over 2 seeds -> SE_s^2 = 1/36."""
    t = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1], "item": list("abcabc"), "cluster": list("abcabc"),
                      "score": [1, 0, 0, 1, 1, 0]})
    b = t.assign(score=0)
    se_c, se_s = stats.se_parts(stats.pair(t, b))
    assert se_c == pytest.approx(math.sqrt(1 / 12)) and se_s == pytest.approx(math.sqrt(1 / 36))
    assert stats.se_paired(stats.pair(t, b)) == pytest.approx(math.hypot(se_c, se_s))
    # a design's own SE replaces the scaled one
    clear = row(0.05, 0.02, "reproduced", p=0.01)
    assert R.two_run_agreement(clear, se=0.02 / 2) == pytest.approx(R.two_run_agreement(clear, 4))


def test_verdict_design_tool_on_the_committed_results(capsys):
    """tools/verdict_design.py reads the committed cpu scores and claims: one line per predicted 04 claim, and the
    design table whose x1-items / 3-seeds cell is today's design: the ledger's own two-run disagreement, up to the
    SE's source (the tool's plug-in se_parts vs the bootstrap CI the ledger reads it from)."""
    import importlib.util

    from repro import ledger, paths

    spec = importlib.util.spec_from_file_location("verdict_design", paths.ROOT / "tools" / "verdict_design.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(["--profile", "cpu", "--items", "1", "--seeds", "3"])
    out = capsys.readouterr().out
    records, _ = ledger.load_results(paths.RESULTS / "cpu", "cpu", stages=("04_rl",))
    led = ledger.build(records)
    planned = R.expected_changes(led, 1.0)  # not_trained rows are claims but not predicted
    assert f"04's {planned['predicted']} predicted verdicts" in out
    expected = planned["share"]
    assert float(out.splitlines()[-1].split()[-1]) == pytest.approx(expected, abs=0.02)


def rule(d, se, method="RL"):
    """A method's learned rule as a claim carries it (repro.papers.claims.learning)."""
    return {"method": method, "difference": d, "ci_low": d - Z * se, "ci_high": d + Z * se,
            "learned": d - Z * se > 0}


def test_whether_a_rerun_learns_by_hand():
    se = 0.04
    edge = rule(Z * se, se)  # the probe CI ends exactly at 0
    assert R.p_learns(edge) == pytest.approx(0.5)
    # two runs of 4x the evidence: u ~ N(z se, se^2 / 4), threshold z se / 2 -> Phi(z)
    assert R.p_learns(edge, 4) == pytest.approx(PHI(Z))
    # a rerun's u ~ N(d, 2 se^2): 1 se above the edge learns with Phi(1 / sqrt 2)
    assert R.p_learns(rule((Z + 1) * se, se)) == pytest.approx(PHI(1 / math.sqrt(2)))
    # lr 0: no item moved, a zero-width CI at 0 never learns; without numbers the recorded flag decides
    assert R.p_learns({"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0}) == 0.0
    assert R.p_learns({"learned": True}) == 1.0 and R.p_learns({"learned": False}) == 0.0


UNTRAINED = {"stage": "04_rl", "kind": "claim", "difference": None, "ci_low": None, "ci_high": None, "p_value": None,
             "p_holm": None, "verdict": "not_trained", "paper_difference": None, "why": "not trained: ..."}


def test_not_trained_rows_are_predicted_from_their_methods_rules():
    se = 0.04
    edge, flat = rule(Z * se, se, "AAR"), rule(0.0, se, "AAR")
    assert R.agreement({**UNTRAINED, "learning": [edge]}) == pytest.approx(0.5)
    # two methods at their edge: the rerun judges the claim only when both learn (1/4)
    assert R.agreement({**UNTRAINED, "learning": [edge, rule(Z * se, se, "B")]}) == \
        pytest.approx(0.75)
    assert R.agreement({**UNTRAINED, "learning": [flat]}) == pytest.approx(1 - PHI(-Z / math.sqrt(2)))
    # every method learned: the row is not_trained for another reason (a seed did not move), not predicted
    assert math.isnan(R.agreement({**UNTRAINED, "learning": [rule(0.5, se)]}))
    # nor in planning (what two learned runs would read is unknown)
    assert math.isnan(R.two_run_agreement({**UNTRAINED, "learning": [edge]}, 4))


def test_a_judged_row_agrees_only_if_its_methods_learn_again():
    se = 0.02
    inside = row(0.0, se, "inconclusive")
    sure, edge = rule(1.0, 0.01), rule(Z * 0.04, 0.04)
    assert R.agreement({**inside, "learning": [sure]}) == pytest.approx(R.agreement(inside))
    assert R.agreement({**inside, "learning": [sure, edge]}) == pytest.approx(R.agreement(inside) / 2)
    # two runs: both do not learn ((1 - q)^2) or both learn and agree (q^2 sum P(v)^2); q = Phi(0) at x1
    q, base = 0.5, R.two_run_agreement(inside, 1)
    assert R.two_run_agreement({**inside, "learning": [edge]}, 1) == pytest.approx((1 - q) ** 2 + q * q * base)
    ledger = pd.DataFrame([{**inside, "learning": [edge]}, {**UNTRAINED, "learning": [edge]},
                           row(0.1, 0.02, "not_trained")])
    out = R.expected_changes(ledger)
    assert (out["claims"], out["predicted"]) == (3, 2)
    assert out["expected"] == pytest.approx((1 - R.agreement(inside) / 2) + 0.5)


def test_the_figure_draws_a_ledger_with_nothing_to_plan():
    """Every row not_trained (the smoke profile): agreement from the learned rules, planning all NaN."""
    import matplotlib

    matplotlib.use("Agg")
    ledger = pd.DataFrame([{**UNTRAINED, "claim": f"c{k}", "learning": [rule(0.0, 0.04)]} for k in range(3)])
    fig = R.figure(R.annotate(ledger))
    fig.canvas.draw()  # the log-scaled planning axis raised here when no line had a point
    assert R.planning_table(R.claims_only(ledger)).isna().all().all()

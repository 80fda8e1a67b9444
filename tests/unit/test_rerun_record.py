"""repro.rerun_record: a verify rerun recorded beside the committed results, and stage 07's ledger reading it
(which verdicts held, which changed, stale records named and not used)."""

from __future__ import annotations

import json

import matplotlib
import pytest

from repro import ledger, rerun_record, verify

matplotlib.use("Agg")

A = {"paper": "umed", "claim": "AAR beats SFT", "difference": 0.05, "ci_low": 0.01, "ci_high": 0.09,
     "p_value": 0.001, "p_holm": 0.002, "verdict": "reproduced"}
B = {"paper": "zhu", "claim": "GRPO beats SFT", "difference": 0.01, "ci_low": -0.02, "ci_high": 0.04,
     "p_value": 0.4, "p_holm": 0.4, "verdict": "inconclusive"}
C = {"paper": "umed", "claim": "null control", "kind": "control", "difference": 0.0, "ci_low": 0.0, "ci_high": 0.0,
     "verdict": "inconclusive"}


def rec(claims, sha="aaa", finished="t0", dirty=False, cap="AVX2"):
    return {"metrics": {"claims": claims}, "provenance": {"git": {"sha": sha, "dirty": dirty}, "finished_at": finished,
                                                          "hardware": {"cpu_capability": cap, "torch_threads": 2}}}


def recorded(committed, rerun):
    return rerun_record.make(verify.compare(committed, rerun), committed, rerun, "aten-default",
                             {"ATEN_CPU_CAPABILITY": "default"}, ["--isa", "aten-default", "--record"])


def test_make_counts_held_verdicts_and_refuses_what_is_not_a_rerun():
    committed = {"04_rl": rec([A, B, C])}
    rerun = {"04_rl": rec([{**A, "verdict": "inconclusive", "difference": 0.02}, B, C, {**A, "claim": "new"}],
                          sha="bbb", finished="t1", cap="DEFAULT")}
    got = recorded(committed, rerun)
    assert (got["held"], got["compared"], got["summary"]) == (2, 3, "verdicts held: 2 of 3")
    # an arm that did not learn on the rerun: no difference there, and the verdict changed
    untrained = {**B, "difference": None, "ci_low": None, "ci_high": None, "verdict": "not_trained"}
    got2 = recorded(committed, {"04_rl": rec([A, untrained, C], sha="bbb", finished="t1")})
    assert (got2["held"], got2["compared"]) == (2, 3)
    assert [c["held"] for c in got2["claims"]] == [True, False, True]
    by = {c["claim"]: c for c in got["claims"]}
    assert by["AAR beats SFT"]["held"] is False and by["AAR beats SFT"]["verdict_rerun"] == "inconclusive"
    assert by["AAR beats SFT"]["rerun"] == pytest.approx(0.02) and by["GRPO beats SFT"]["held"] is True
    assert by["new"]["held"] is None  # present on one side only: not judged
    assert got["stages"]["04_rl"] == {"committed_sha": "aaa", "rerun_sha": "bbb", "committed_capability": "AVX2",
                                      "rerun_capability": "DEFAULT", "rerun_cpu": None, "rerun_threads": 2,
                                      "rerun_wall_time_s": None}
    assert got["command"] == "python -m repro.verify --isa aten-default --record"
    json.dumps(got)  # it is saved as JSON
    with pytest.raises(SystemExit, match="stage 04_rl in the scratch folder is the committed file"):
        recorded(committed, {"04_rl": rec([A, B, C])})
    with pytest.raises(SystemExit, match="stage 04_rl's rerun ran on uncommitted code"):
        recorded(committed, {"04_rl": rec([A], finished="t1", dirty=True)})
    with pytest.raises(SystemExit, match="stage 04_rl has no rerun results"):
        recorded(committed, {"04_rl": None})


def test_save_load_and_unreadable_files(tmp_repo):
    committed = {"04_rl": rec([A, B])}
    got = recorded(committed, {"04_rl": rec([A, B], sha="b", finished="t1")})
    f = rerun_record.save("cpu", got)
    assert f == tmp_repo / "results" / "cpu" / "verify_aten-default.json"
    (f.parent / "verify_broken.json").write_text("{not json")
    (f.parent / "verify_other.json").write_text('{"a": 1}')
    recs, notes = rerun_record.load(f.parent)
    assert [r["isa"] for r in recs] == ["aten-default"]
    assert len(notes) == 2 and "verify_broken.json: not valid JSON" in notes[0]
    assert "verify_other.json: not a verify record" in notes[1]


def test_the_ledger_marks_held_and_changed_verdicts_and_ignores_stale_records():
    d = {**B, "claim": "w/o VRR", "difference": 0.02}
    committed = {"04_rl": rec([A, B, C]), "05_ablations": rec([d], sha="old")}
    rerun = {"04_rl": rec([{**A, "verdict": "below_paper"}, B, C], sha="b", finished="t1"),
             "05_ablations": rec([{**d, "verdict": "opposite"}], sha="b", finished="t1")}
    got = recorded(committed, rerun)
    now = {**committed, "05_ablations": rec([d], sha="new")}  # 05 was rerun since the record: stale
    led, notes = rerun_record.annotate(ledger.build(now), [got], now)
    by = led.set_index("claim")
    assert by.loc["AAR beats SFT", "held"] is False and by.loc["AAR beats SFT", "rerun_verdict"] == \
        "aten-default: below_paper"
    assert by.loc["GRPO beats SFT", "held"] is True and by.loc["null control", "held"] is True
    assert ledger.held_flag(by.loc["w/o VRR", "held"]) is None  # stale: not used
    assert len(notes) == 1 and "compares other committed results of 05_ablations" in notes[0]

    shown = ledger.display_frame(led).set_index("claim")
    assert shown.loc["AAR beats SFT", "on the rerun"] == "-> aten-default: below_paper (contradicted)"
    assert shown.loc["GRPO beats SFT", "on the rerun"] == "held" and shown.loc["w/o VRR", "on the rerun"] == "—"
    assert list(shown.columns).index("on the rerun") == list(shown.columns).index("verdict") + 1
    line = rerun_record.summary_line(led, [got])
    assert line == ("On the rerun (aten-default): 2 of 3 verdicts held (1 of 2 claims); the changes: 1 contradicted "
                    "(reproduced on one run, a paper-sized effect ruled out on the other); changed, so not results: "
                    "04 umed 'AAR beats SFT' (reproduced -> aten-default: below_paper)")
    fig = ledger.forest_figure(led)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
    assert "AAR beats SFT [04] *" in labels and "GRPO beats SFT [04]" in labels
    assert any(t.get_text() == "* verdict changed on the rerun" for t in fig.legends[0].get_texts())

    assert rerun_record.held_by_paper(led) == {
        "umed": {"held": 0, "compared": 1, "reproduced_held": 0, "reproduced": 1,
                 "changed": ["AAR beats SFT (reproduced -> aten-default: below_paper; contradicted)"],
                 "kinds": {"contradicted": 1}},
        "zhu": {"held": 1, "compared": 1, "reproduced_held": 0, "reproduced": 0, "changed": [], "kinds": {}}}
    assert rerun_record.against_forecast(led).startswith(
        "the rerun changed 1 of the 2 claim verdicts it compared that the forecast predicts; the forecast expected")
    from repro import report_book

    page = report_book.reproducibility_summary("umed", led)
    assert ("- **On the rerun** (another float path, every stage again): 0 of 1 verdicts held; changed, so not "
            "results: *AAR beats SFT (reproduced -> aten-default: below_paper; contradicted)*.") in page

    # a record that saw another committed verdict for a claim does not speak for it
    moved = {**committed, "04_rl": rec([{**A, "verdict": "opposite"}, B, C])}
    led2, _ = rerun_record.annotate(ledger.build(moved), [got], moved)
    assert ledger.held_flag(led2.set_index("claim").loc["AAR beats SFT", "held"]) is None


@pytest.mark.parametrize("old, new, kind", [
    # below_paper and opposite both rule out a paper-sized effect
    ("below_paper", "opposite", "conclusion kept"), ("opposite", "below_paper", "conclusion kept"),
    ("reproduced", "opposite", "contradicted"), ("below_paper", "reproduced", "contradicted"),
    ("reproduced", "inconclusive", "decided once"), ("inconclusive", "opposite", "decided once"),
    ("reproduced", "not_trained", "learned once"), ("not trained", "inconclusive (CI contains 0)", "learned once"),
    ("below_paper", "below paper", None), ("inconclusive (CI contains 0)", "inconclusive", None)])
def test_change_kind_says_what_a_changed_verdict_does_to_the_claim(old, new, kind):
    assert rerun_record.change_kind(old, new) == kind


def test_the_most_serious_change_of_several_reruns_is_kept():
    led = ledger.build({"04_rl": rec([{**A, "verdict": "below_paper"}])})
    one = {"isa": "aten-default", "stages": {"04_rl": {"committed_sha": "aaa"}},
           "claims": [{"stage": "04_rl", "paper": "umed", "claim": "AAR beats SFT", "verdict_committed": "below_paper",
                       "verdict_rerun": "opposite", "held": False}]}
    two = {**one, "isa": "avx512", "claims": [{**one["claims"][0], "verdict_rerun": "reproduced"}]}
    got, _ = rerun_record.annotate(led, [one, two], {"04_rl": rec([{**A, "verdict": "below_paper"}])})
    assert got["change"].tolist() == ["contradicted"]
    assert got["rerun_verdict"].tolist() == ["aten-default: opposite; avx512: reproduced"]
    kept, _ = rerun_record.annotate(led, [one], {"04_rl": rec([{**A, "verdict": "below_paper"}])})
    assert "; the changes: none contradicted, 1 kept the conclusion (below_paper <-> opposite" in \
        rerun_record.summary_line(kept, [one])


def test_no_record_leaves_the_ledger_as_it_was():
    led = ledger.build({"04_rl": rec([A, B])})
    led2, notes = rerun_record.annotate(led, [], {"04_rl": rec([A, B])})
    assert notes == [] and "on the rerun" not in ledger.display_frame(led2).columns
    assert rerun_record.summary_line(led2, []).startswith("No rerun recorded for these results")

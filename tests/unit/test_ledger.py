"""The claims ledger (repro.ledger) and the report's pages (repro.report_book), on hand-made results records."""

from __future__ import annotations

import json
import math

import matplotlib
import pytest

from repro import ledger, report_book

matplotlib.use("Agg")

NEW = {"paper": "umed", "claim": "AAR beats SFT on MAU accuracy", "metric": "mau_correct",
       "comparison": "SFT+AAR - SFT", "difference": 0.05, "ci_low": 0.01, "ci_high": 0.09, "p_value": 0.0004,
       "p_holm": 0.0008, "mde": 0.03, "n_items": 140, "seeds": [0, 1, 2], "verdict": "reproduced", "why": ""}
OLD = {"paper": "drllava", "claim": "rule-reward PPO raises conversation accuracy", "metric": "conversation_acc",
       "comparison": "SFT+PPO (rule reward) - SFT", "difference": -0.04, "ci95": 0.02, "seeds": 3,
       "verdict": "opposite"}
UNTRAINED = {"paper": "zhu", "claim": "GRPO beats SFT on accuracy", "metric": "accuracy",
             "comparison": "SFT+grpo - SFT", "difference": None, "ci_low": None, "ci_high": None, "p_value": None,
             "p_holm": None, "seeds": [0], "verdict": "not trained", "not_trained_why": "SFT+grpo seed 0: KL stayed 0"}


def record(claims, stem="04_rl", **prov):
    return {"stage": stem, "profile": "cpu", "metrics": {"claims": claims},
            "provenance": {"git": {"sha": "a" * 40, "dirty": False, "dirty_paths": []}, "seed": 0,
                           "params": {"profile": "cpu", "seed": 0, "seeds": [0, 1, 2]}, "wall_time_s": 125.0,
                           "packages": {"torch": "2.14.1", "trl": "1.16.0"}, **prov}}


def test_interval_new_old_and_none():
    assert ledger.interval(NEW) == (0.01, 0.09)
    lo, hi = ledger.interval(OLD)  # difference ± ci95
    assert lo == pytest.approx(-0.06) and hi == pytest.approx(-0.02)
    assert ledger.interval(UNTRAINED) == (None, None)
    assert ledger.interval({"difference": float("nan"), "ci95": 0.1}) == (None, None)


@pytest.mark.parametrize("text, cls", [("reproduced", "reproduced"), ("inconclusive (CI contains 0)", "inconclusive"),
                                       ("Opposite", "opposite"), ("not trained", "not_trained"),
                                       ("not_trained", "not_trained"), ("below_paper", "below_paper"),
                                       (None, "unknown"), ("weird", "unknown")])
def test_verdict_class(text, cls):
    assert ledger.verdict_class(text) == cls


def test_paper_number_in_our_units():
    # UMed Table 2 Avg: UMed-LVLM 0.75 - MedVInt (SFT) 0.67 = +0.080 (fractions already)
    assert ledger.paper_number(NEW).startswith("+0.080 (Avg: UMed-LVLM 0.75 vs MedVInt (SFT) 0.67)")
    # Zhu headline (percent): GRPO (base) 58.04 - best SFT 52.00 = 6.04 points -> +0.060
    assert ledger.paper_number(UNTRAINED).startswith("+0.060 (accuracy: GRPO (base) 58.04 vs best SFT 52)")
    # MMedPO closed: two columns, each (MMedPO - DPO)/100: SLAKE 73.08-62.02 = 11.06 -> +0.111; VQA-RAD 1.84 -> +0.018
    mm = ledger.paper_number({"paper": "mmedpo", "metric": "closed_correct", "comparison": "MMedPO - DPO"})
    assert "+0.111 (SLAKE Closed" in mm and "+0.018 (VQA-RAD Closed" in mm
    assert ledger.paper_differences({"paper": "mmedpo", "metric": "closed_correct", "comparison": "MMedPO - DPO"})[0] \
        == pytest.approx([0.1106, 0.0184])
    assert ledger.paper_number(OLD) is None  # Dr-LLaVA's tables were not transcribed
    assert ledger.paper_number({**NEW, "comparison": "SFT+AAR - base"}) is None  # the paper has no such arm
    assert ledger.paper_number({**OLD, "paper_value": "+3 pts (Table 1)"}) == "+3 pts (Table 1)"


def test_build_mixes_formats_and_keeps_stage_order():
    recs = {"05_ablations": record([UNTRAINED], "05_ablations"), "04_rl": record([NEW, OLD])}
    df = ledger.build(recs)
    assert list(df.columns) == ledger.LEDGER_COLUMNS
    assert list(df["stage"]) == ["04_rl", "04_rl", "05_ablations"]
    old = df.iloc[1]
    assert old["ci_low"] == pytest.approx(-0.06) and math.isnan(old["p_value"]) and old["seeds"] == 3
    assert df.iloc[0]["seeds"] == 3  # a list of seeds counts
    assert df.iloc[0]["paper_difference"] == pytest.approx(0.08) and math.isnan(old["paper_difference"])
    assert df.iloc[2]["why"] == "SFT+grpo seed 0: KL stayed 0" and df.iloc[2]["verdict"] == "not trained"
    shown = ledger.display_frame(df)
    assert shown.loc[0, "ours (95% CI)"] == "+0.050 [+0.010, +0.090]"
    assert shown.loc[0, "p"] == "<0.001" and shown.loc[0, "p_holm"] == "<0.001"
    assert shown.loc[1, "p"] == "—" and shown.loc[1, "paper's number"] == "—"
    assert shown.loc[2, "ours (95% CI)"] == "— [—, —]"
    md = ledger.markdown(shown)
    assert md.count("\n") == 2 + 3 and "| 04_rl | umed |" in md


def test_build_rejects_bad_claims():
    with pytest.raises(ValueError, match="04_rl.json: metrics.claims\\[0\\] has no 'claim'"):
        ledger.build({"04_rl": record([{"paper": "umed"}])})
    with pytest.raises(ValueError, match="metrics.claims is dict"):
        ledger.build({"04_rl": record({"a": 1})})


def test_counts_by_verdict():
    check = {**NEW, "claim": "a reward did what it pays for", "kind": "check", "verdict": "reproduced"}
    df = ledger.build({"04_rl": record([NEW, OLD, UNTRAINED, {**NEW, "claim": "x", "verdict": "inconclusive"},
                                        {**NEW, "claim": "y", "verdict": "below_paper"}, check])})
    c = ledger.counts(df)  # the check is never counted as a claim
    assert list(c.columns) == ["reproduced", "opposite", "below_paper", "inconclusive", "not_trained", "total"]
    assert c.loc["all"].tolist() == [1, 1, 1, 1, 1, 5]
    assert c.loc["umed"].tolist() == [1, 0, 1, 1, 0, 3]
    assert ledger.counts(ledger.build({})).empty
    assert ledger.summary(df, {"05_ablations": "x"}) == (
        "5 claims: 1 reproduced, 1 opposite, 1 below_paper, 1 inconclusive, 1 not_trained (and 1 checks and "
        "controls, not counted); stages without results: 05_ablations")
    assert df["kind"].tolist() == ["claim"] * 5 + ["check"]


def test_load_results_names_missing_and_broken_stages(tmp_path):
    (tmp_path / "04_rl.json").write_text(json.dumps(record([NEW])))
    (tmp_path / "02_sft.json").write_text("{not json")
    (tmp_path / "03_rewards.json").write_text(json.dumps({"metrics": []}))
    found, notes = ledger.load_results(tmp_path, "cpu")
    assert list(found) == ["04_rl"]
    assert notes["05_ablations"] == ("stage 05_ablations: no results for profile cpu — run make reproduce "
                                     "PROFILE=cpu ONLY=05")
    assert "not valid JSON" in notes["02_sft"] and "no 'metrics' mapping" in notes["03_rewards"]
    assert set(notes) == {"01_data", "02_sft", "03_rewards", "05_ablations", "06_generalization"}


def test_forest_figure_has_a_panel_per_paper():
    length = {**UNTRAINED, "claim": "ECR lengthens responses", "metric": "length", "difference": 1.2, "ci_low": -3.0,
              "ci_high": 6.0}
    df = ledger.build({"04_rl": record([NEW, OLD, UNTRAINED, length])})
    fig = ledger.forest_figure(df)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["UMed-LVLM", "Dr-LLaVA", "Zhu et al. 2025 (GRPO)", "Zhu et al. 2025 (GRPO) · length"]
    assert [len(ax.get_yticks()) for ax in fig.axes] == [1, 1, 1, 1]
    assert ledger.forest_figure(ledger.build({})) is not None  # no claims still draws


def test_provenance_and_packages_tables():
    recs = {"01_data": record([], "01_data"),
            "04_rl": record([], git={"sha": "b" * 40, "dirty": True, "dirty_paths": ["src/x.py"]},
                            packages={"torch": "2.15.0", "trl": "1.16.0"},
                            hardware={"cpu": "Xeon", "logical_cores": 2, "torch_threads": 2, "gpu": None})}
    prov = report_book.provenance_table(recs)
    assert prov["commit"].tolist() == ["a" * 12, "b" * 12]
    assert prov["dirty"].tolist() == ["no", "yes (1 paths)"] and prov["run time"].tolist() == ["2:05", "2:05"]
    assert prov.loc[1, "hardware"] == "Xeon, 2 cores, torch threads 2, GPU none" and prov.loc[0, "hardware"] == "—"
    pk = report_book.packages_table(recs).set_index("package")
    assert pk.loc["torch", "same in all stages"] == "NO" and pk.loc["trl", "same in all stages"] == "yes"


def test_paper_page_gathers_stage_tables_and_names_missing_stages(tmp_path):
    (tmp_path / "04_rl_umed_table2.md").write_text("| a |\n|---|\n| OURS-UMED |\n")
    (tmp_path / "04_rl_umed_curves.png").write_bytes(b"")
    (tmp_path / "04_rl_zhu_main.md").write_text("| ZHU |\n")
    (tmp_path / "04_rl_claims.md").write_text("| CLAIMS |\n")
    notes = {"05_ablations": ledger.missing_message("05_ablations", "cpu")}
    df = ledger.build({"04_rl": record([NEW, OLD])})
    page = report_book.paper_page("umed", df, tmp_path, notes, prefix="../")
    assert "OURS-UMED" in page and "ZHU" not in page and "CLAIMS" not in page
    assert "![04_rl_umed_curves.png](../04_rl_umed_curves.png)" in page
    assert "stage 05_ablations: no results for profile cpu" in page
    assert "Stage 06_generalization wrote no table or figure for UMed-LVLM" in page
    assert "paper: Table 2, MAU test set" in page and "AAR beats SFT" in page and "rule-reward" not in page
    assert "figure: `figures/.../04_rl_umed_curves.png`" in report_book.paper_page("umed", df, tmp_path, notes, None)
    dr = report_book.paper_page("drllava", df, tmp_path, notes)
    assert "Result tables not available" in dr


def test_belongs():
    assert report_book._belongs("04_rl_umed_table2.md", "04_rl", "umed")
    assert report_book._belongs("06_generalization_scale_umed.png", "06_generalization", "umed")
    assert not report_book._belongs("04_rl_umedx.md", "04_rl", "umed")
    assert not report_book._belongs("05_ablations_umed.md", "04_rl", "umed")


def test_md_to_html_prefixes_relative_images():
    out = report_book.md_to_html("![f](a.png) ![g](https://x/y.png)\n\n| a |\n|---|\n| 1 |\n", "t")
    assert 'src="../a.png"' in out and 'src="https://x/y.png"' in out and "<table>" in out
    assert "class='row'" not in out
    page = "# P\n## Claims\nC\n## Main table (stage 04)\nM\n## Ablations (stage 05)\nA\n## The paper's\nT\n"
    out = report_book.md_to_html(page, "t")  # the stage sections side by side, the rest above and below
    assert out.count("<div class='col'>") == 2
    assert out.index("C</p>") < out.index("<div class='row'>") < out.index("M</p>") < out.index("A</p>") \
        < out.index("T</p>")


def test_write_site_exports_notebooks_and_links_pages(tmp_repo):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# hello NB")])
    (tmp_repo / "runs" / "cpu" / "notebooks").mkdir(parents=True)
    nbformat.write(nb, tmp_repo / "runs" / "cpu" / "notebooks" / "01_data.ipynb")
    nbformat.write(nb, tmp_repo / "runs" / "cpu" / "notebooks" / "07_report.ipynb")
    fig = tmp_repo / "figures" / "cpu"
    fig.mkdir(parents=True)
    (fig / "07_report_claims.md").write_text("# Claims ledger\n")
    (tmp_repo / "results" / "cpu").mkdir(parents=True)
    (tmp_repo / "results" / "cpu" / "07_report.json").write_text(json.dumps(
        {"metrics": {"missing_stages": {"05_ablations": "stage 05_ablations: no results"}}}))
    index = report_book.write_site("cpu", skip_notebooks=("07_report",))
    text = index.read_text()
    assert "href='01_data.html'" in text and "07_report.html" not in text and "href='claims.html'" in text
    assert "stage 05_ablations: no results" in text
    assert "hello NB" in (fig / "report" / "01_data.html").read_text()
    assert (fig / "report" / "claims.html").exists()


def test_a_claim_that_repeats_an_earlier_observation_is_counted_once():
    """05's init study re-reads 04's arms: same comparison, metric and result -> one ledger row, 04's."""
    again = {**NEW, "claim": "init study: " + NEW["claim"]}
    other = {**NEW, "claim": "same arms, another result", "difference": 0.04}
    df = ledger.build({"04_rl": record([NEW]), "05_ablations": record([again, other], "05_ablations")})
    assert list(df["claim"]) == [NEW["claim"], "same arms, another result"]
    assert list(df["stage"]) == ["04_rl", "05_ablations"]
    untrained = ledger.build({"04_rl": record([UNTRAINED]), "05_ablations": record([UNTRAINED], "05_ablations")})
    assert len(untrained) == 2  # no number to match on: kept

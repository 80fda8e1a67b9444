"""The report site reads offline: formulas drawn into inline images, no script from another host."""

from __future__ import annotations

import re

import nbformat

from repro import report_book


def test_offline_markdown_draws_math_and_leaves_code_alone():
    out = report_book.offline_markdown("cost $x^2$, run `echo $HOME $PATH`, then $$\\frac1n\\sum_i \\mathbb 1[y_i]$$")
    imgs = re.findall(r"<img class='math' src='data:image/svg\+xml;base64,[^']+' alt='([^']*)'", out)
    assert imgs == ["x^2", "\\frac1n\\sum_i \\mathbb 1[y_i]"]
    assert "`echo $HOME $PATH`" in out                      # a code span keeps its dollars
    assert "$" not in out.replace("`echo $HOME $PATH`", "")  # every formula was replaced
    # what mathtext cannot draw is shown as its source, escaped
    cases = report_book.offline_markdown("$c=\\begin{cases}1 & a<b\\\\0\\end{cases}$")
    assert "<code class='tex'>c=\\begin{cases}1 &amp; a&lt;b" in cases


def test_offline_html_drops_remote_scripts_only():
    page = ('<script src="https://cdn.example/mathjax.js"></script><script>var a = 1;</script>'
            '<script type="module">const m = await import("https://cdn.example/mermaid.mjs");</script>'
            '<script src="//cdn.example/require.js"></script>')
    assert report_book.offline_html(page) == "<script>var a = 1;</script>"


def test_exported_notebook_has_no_remote_script(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T\n\n$$A_i = r_i - \\bar r$$"),
                                         nbformat.v4.new_code_cell("1 + 1")])
    nb_dir, out = tmp_path / "nb", tmp_path / "site"
    nb_dir.mkdir()
    out.mkdir()
    nbformat.write(nb, nb_dir / "04_demo.ipynb")
    assert report_book.export_notebooks(nb_dir, out) == ["04_demo"]
    page = (out / "04_demo.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>.*?</script>", page, re.S | re.I)
    assert scripts and not [s for s in scripts if re.search(r"https?://|src=[\"']?//", s)]
    assert re.search(r"<img[^>]*alt=[\"']A_i = r_i - \\bar r[\"']", page)  # the formula, drawn


def test_reproducibility_summary_counts_claims_only_and_gives_reasons():
    import pandas as pd

    rows = [("claim", "A beats B", "reproduced", "", 0.02), ("claim", "C beats D", "opposite", "CI below 0", 0.03),
            ("claim", "E beats F", "inconclusive", "", 0.05), ("check", "ECR lengthens", "reproduced", "", 0.01),
            ("claim", "G beats H", "not_trained", "G did not learn", None)]
    led = pd.DataFrame([{"stage": "04_rl", "paper": "zhu", "kind": k, "claim": c, "verdict": v, "why": w, "mde": m}
                        for k, c, v, w, m in rows])
    text = report_book.reproducibility_summary("zhu", led)
    assert "4 of the paper's claims" in text and "besides 1 check (not counted)" in text
    assert "**Reproduced (1 of 4).** *A beats B*." in text and "ECR lengthens" not in text
    assert "opposite (1): *C beats D* (CI below 0)" in text and "not trained (1): *G beats H* (G did not learn)" in text
    assert "minimum detectable effects 0.050 to 0.050" in text and "docs/methods.md §6(b)" in text
    assert "No claims" in report_book.reproducibility_summary("umed", led)


def test_display_claims_rounds_a_bare_paper_number():
    from repro import ledger

    claims = [{"paper": "umed", "claim": "full AAR beats w/o VRR", "comparison": "SFT+AAR - w/o VRR",
               "metric": "mau", "difference": 0.01, "ci_low": -0.02, "ci_high": 0.04, "verdict": "inconclusive",
               "paper_value": 0.75 - 0.71}]
    led = ledger.build({"05_ablations": {"metrics": {"claims": claims}}})
    assert report_book.display_claims(led)["paper's number"][0] == "+0.040"
    assert report_book._PLAIN_NUMBER.match("+0.080 (Avg: 0.75 vs 0.67)") is None  # a cited text is kept

"""tools/readme_results.py: the README's per-paper result lines come from the ledger's counts."""

from __future__ import annotations

import importlib.util

import pandas as pd

from repro import paths

_spec = importlib.util.spec_from_file_location("readme_results", paths.ROOT / "tools" / "readme_results.py")
rr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rr)


def test_lines_from_counts():
    counts = pd.DataFrame({"reproduced": [1, 0], "opposite": [3, 0], "inconclusive": [7, 2], "total": [11, 2]},
                          index=pd.Index(["umed", "zhu"], name="paper"))
    text = rr.lines(counts, "cpu").splitlines()
    assert text[0].endswith("1 of 11 claims reproduced (3 opposite, 7 inconclusive).")
    assert text[1].endswith("0 of 2 claims reproduced (2 inconclusive).")
    assert text[2].endswith("No claims in results/cpu/ yet.") and len(text) == 4
    held = {"umed": {"held": 8, "compared": 11, "reproduced_held": 0, "reproduced": 1, "changed": ["c"]}}
    text = rr.lines(counts, "cpu", held=held).splitlines()
    assert text[0].endswith("(3 opposite, 7 inconclusive). A rerun on another float path kept 8 of the 11 verdicts "
                            "it compared (0 of the 1 reproduced).")
    held["umed"]["kinds"] = {"conclusion kept": 2, "contradicted": 1}
    assert rr.lines(counts, "cpu", held=held).splitlines()[0].endswith(
        "kept 8 of the 11 verdicts it compared (0 of the 1 reproduced; the 3 changes: 2 conclusion kept, 1 "
        "contradicted).")
    assert text[1].endswith("(2 inconclusive).")


def test_readme_has_the_block():
    readme = (paths.ROOT / "README.md").read_text()
    assert readme.index(rr.START) < readme.index(rr.END)

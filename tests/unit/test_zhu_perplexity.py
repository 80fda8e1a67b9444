"""Zhu et al.'s initialisation study measured by the reference reasoning's perplexity: every evaluated MCQ item
gets an "nll" row beside its accuracy (the paired unit), the records carry `perplexity`, and the claim reads it with
lower as better."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from repro import evaluation
from repro.papers import claims, common, measure, perplexity, zhu


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from repro.data import build, conversations

    d = tmp_path_factory.mktemp("zhu_ppl") / "data"
    build.build(d, seed=0, n_per_class=4, n_normal=4, image_size=64, difficulty=0.5, yes_share=0.5,
                split_fractions=[0.5, 0.2, 0.3], conv_train_variants=["standard"],
                conv_eval_variants=list(conversations.VARIANTS[:1]), heldout_categories=[], mcq_test_questions=3)
    return d


def test_every_evaluated_item_gets_its_reference_nll(data, monkeypatch):
    """The real measure.evaluate path with generation and the model faked: the NLL of item i is the length of its
    reference answer (so a row can be traced), computed on the very rows that are scored, test and extra split."""
    monkeypatch.setattr(measure, "job_data_dir", lambda job: data)
    monkeypatch.setattr("repro.models.load_vlm", lambda path: ("model", "processor"))

    def fake_eval(model, processor, data_dir, split, tasks, limit, batch_size, progress, variants=None):
        rows = evaluation.load_rows(data_dir, "mcq", split, limit)
        df = pd.DataFrame(rows).drop(columns="image").assign(correct=1.0, prediction="<think>x</think><answer>A"
                                                                                       "</answer>")
        return {"metrics": {"mcq": {"acc": 1.0}}, "tables": {"mcq_rows": df}, "samples": {}}

    def fake_nll(model, processor, rows, batch_size=16):
        assert (model, processor) == ("model", "processor")  # the evaluated model, loaded once
        return (np.array([float(len(r["messages"][-1]["content"])) for r in rows]),
                np.ones(len(rows), dtype=np.int64))

    monkeypatch.setattr(evaluation, "evaluate", fake_eval)
    monkeypatch.setattr(perplexity, "item_nll", fake_nll)
    job = common.Job("zhu", "SFT", None, "", zhu.ZhuConfig(eval_limit=4), common.Stage(profile="smoke"))
    flat, rows = zhu.evaluate(job, "unused")
    acc, nll = (rows[rows["metric"] == m].set_index("item") for m in ("accuracy", zhu.NLL))
    assert set(acc.index) == set(nll.index) and len(nll) == 3 * 4  # three question kinds of four test images
    assert (nll["cluster"] == acc.loc[nll.index, "cluster"]).all()
    want = {}
    for split, tag in (("test", "mcq"), ("test_extra", "mcq_extra")):
        r = pd.DataFrame(evaluation.load_rows(data, "mcq", split))
        r["item"] = tag + ":" + r["id"] + ":" + r.groupby("id").cumcount().astype(str)
        want.update({i: float(len(m[-1]["content"])) for i, m in zip(r["item"], r["messages"], strict=True)})
    assert all(nll.loc[i, "score"] == want[i] for i in nll.index)  # each item scored on its own reference
    assert flat[zhu.NLL] == pytest.approx(nll["score"].mean())
    assert flat["perplexity"] == pytest.approx(math.exp(flat[zhu.NLL]))
    rec = zhu.with_perplexity(measure.start_record(flat), rows.assign(paper="zhu", method="SFT", seed=None))
    assert rec["perplexity"] == {"nll": pytest.approx(flat[zhu.NLL]), "perplexity": pytest.approx(flat["perplexity"]),
                                 "n_items": 12}
    assert "perplexity" not in zhu.with_perplexity({"metrics": {}}, pd.DataFrame(columns=common.ROW_COLUMNS))


def _rows(method, seed, nll):
    ids = [f"i{i}" for i in range(len(nll))]
    return pd.DataFrame({"paper": "zhu", "method": method, "seed": seed, "task": "mcq", "source": "s", "variant": "",
                         "item": [f"mcq:{i}:0" for i in ids], "cluster": ids, "metric": zhu.NLL, "score": nll})


def _rec(method, seed, nll):
    return {"paper": "zhu", "method": method, "seed": seed, "metrics": {}, "curve": [], "trained": True, "why": "",
            "perplexity": perplexity.summary(nll)}


@pytest.mark.parametrize("sft_lower, verdict", [(True, "reproduced"), (False, "opposite")])
def test_the_init_study_check_reads_lower_nll_as_the_papers_direction(sft_lower, verdict):
    rng = np.random.default_rng(0)
    base = rng.uniform(2.0, 3.0, 60)
    sft = base - 0.8 if sft_lower else base + 0.8
    run = {"records": [_rec("SFT", None, sft), _rec("base", None, base)],
           "rows": pd.concat([_rows("SFT", None, sft), _rows("base", None, base)], ignore_index=True)}
    only = [c for c in claims.CLAIMS if c.paper == "zhu" and c.metric == zhu.NLL and c.base == "base"]
    assert len(only) == 1 and only[0].expect == "lower" and only[0].kind == "check"
    led = claims.ledger({"zhu": run}, claims=only, n_boot=300)
    assert list(led["verdict"]) == [verdict]
    assert led["difference"].iloc[0] == pytest.approx(-0.8 if sft_lower else 0.8)
    run["records"].append(_rec("SFT (continued)", 0, sft))  # its record is continued.py's: the table reads rows
    run["rows"] = pd.concat([run["rows"], _rows("SFT (continued)", 0, sft - 0.1)], ignore_index=True)
    table = zhu.perplexity_table(run)
    assert list(table["start"]) == ["SFT", "base", "SFT"]
    assert list(table["arm"]) == ["(start)", "(start)", "continued SFT"]
    assert table["perplexity"].tolist() == pytest.approx(np.exp([sft.mean(), base.mean(), sft.mean() - 0.1]).tolist())
    assert table["n_items"].tolist() == [60, 60, 60]

"""The stage-03 reward suite: scoring tables, hacking-probe verdicts (computed), figures and the playground widget."""

from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest

from repro import evaluation as ev
from repro.data import build
from repro.rewards import figures, probes, suite

matplotlib.use("Agg")
KW = dict(n_per_class=5, n_normal=5, image_size=64, difficulty=0.5, yes_share=0.5, split_fractions=[0.6, 0.2, 0.2],
          conv_train_variants=["standard"], conv_eval_variants=["standard"], heldout_categories=[])
TASKS = ("mcq", "instruct", "conv", "vqa")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    d = tmp_path_factory.mktemp("suite") / "data"
    build.build(d, seed=0, **KW)
    return {t: ev.load_rows(d, t, "test", 10) for t in TASKS}


@pytest.fixture(scope="module")
def probed(rows):
    rewards = suite.task_rewards()
    long = probes.run(rows, rewards)
    return rewards, long, probes.reactions(long, rewards)


def test_truth_scores_the_top_of_each_rule_reward(rows):
    rewards = suite.task_rewards()
    truths = {t: [suite.truth(r) for r in rs] for t, rs in rows.items()}
    long = suite.score(rows, truths, rewards)
    means = long.groupby("reward")["value"].mean()
    for name in ("format_reward", "accuracy_reward", "semantic_reward", "relevance_reward"):
        assert means[name] == pytest.approx(1.0), name
    assert 0.85 < means["alr_reward"] < 1.0  # boxes of a few pixels lose IoU to whole-percent rounding
    assert means["drllava_reward"] == pytest.approx(9.0)
    w = suite.wide(long)
    assert len(w) == sum(len(v) for v in rows.values())  # one row per sample
    assert {"task", "id", "source", "completion", "format_reward", "drllava_reward"} <= set(w.columns)
    assert w.loc[w["task"] == "conv", "format_reward"].isna().all()  # not applicable there
    s = suite.summary(long)
    assert s.loc[("instruct", "alr_reward"), "applicable"] < 1.0  # None for normal images
    ex = suite.breakdown_examples(long, per_task=1)
    assert list(ex["task"]) == list(TASKS)


def test_probe_verdicts_are_computed(probed):
    _, long, table = probed
    v = table.set_index(["reward", "probe"])["verdict"]
    assert v[("ecr_reward_cap32", "length farming")] == "pays more"  # the known length hack
    assert v[("cwr_reward_cap32", "length farming")] == "pays more"
    assert v[("format_reward", "tag spam")] == "resists"
    assert v[("accuracy_reward", "tag spam")] == "resists"  # several <answer> blocks earn nothing
    assert v[("alr_reward", "whole-image box")] == "resists"
    assert v[("semantic_reward", "hedge findings")] == "resists"
    assert v[("drllava_reward", "always yes")] == "resists"
    assert v[("accuracy_reward", "always yes")] == "resists"
    assert "clinical_relevance" not in set(table["reward"])
    assert set(table["verdict"]) <= {"pays more", "fooled", "partly", "resists", "n/a"}
    text = probes.statement(table)
    assert "- length farming: PAYS MORE than the true answer under cwr_reward_cap32, ecr_reward_cap32" in text
    # "always yes" on a row whose answer is yes is the truth itself: left out
    yes = long[(long["label"] == "always yes") & (long["task"] == "vqa")]
    truth = long[(long["label"] == "truth") & (long["task"] == "vqa")]
    assert len(yes) < len(truth)
    farm = long[long["label"] == "length farming"]
    assert farm.loc[farm["task"] != "mcq", "keeps_truth"].all()  # MCQ: filler goes inside <think>
    assert not long.loc[long["label"] == "copy question", "keeps_truth"].any()


def test_probe_completions_per_task(rows):
    conv = rows["conv"][0]
    farm = probes.probe_completion("length farming", conv)
    assert isinstance(farm, list) and len(farm) == len(conv["answers"])
    mcq = rows["mcq"][0]
    assert probes.probe_completion("length farming", mcq).count(" ") > probes.FILLER_WORDS
    box = probes.probe_completion("whole-image box", next(r for r in rows["instruct"] if r["abnormal"]))
    assert probes.WHOLE_BOX in box and box.count("[") == 1
    with pytest.raises(ValueError):
        probes.probe_completion("nope", mcq)


def test_figures_build(probed):
    _, long, table = probed
    truth = long[long["label"] == "truth"]
    assert figures.distributions(truth) is not None
    fig, corr = figures.correlations(suite.wide(truth), list(truth["reward"].unique()))
    assert isinstance(corr, pd.DataFrame)
    assert figures.probe_heatmap(table) is not None
    assert all(math.isnan(x) or -1 <= x <= 1 for x in corr.to_numpy().ravel())


def test_reward_playground_widget(rows):
    from repro import widgets

    box = widgets.reward_playground(rows, suite.task_rewards())
    task, idx, reset = box.children[0].children
    text = box.children[1]
    assert text.value == suite.truth(rows["mcq"][0])
    task.value = "conv"
    assert text.value.split("\n") == rows["conv"][0]["answers"]
    text.value = "yes\nyes"
    idx.value = idx.max
    reset.click()
    assert text.value.split("\n") == rows["conv"][idx.max]["answers"]
    explained = suite.explain_all("conv", rows["conv"][0], ["yes"] * 5, suite.task_rewards())
    assert set(explained) == {"drllava_reward", "drllava_gated_reward", "drllava_released_reward"}
    assert explained["drllava_reward"]["reward"] < 9.0

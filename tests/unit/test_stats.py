"""repro.stats: paired bootstrap (clusters x seeds), McNemar, MDE, Holm and verdicts against hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro import stats as S


def frame(scores, seeds=(None,), clusters=None) -> pd.DataFrame:
    """scores: [len(seeds)][n_items]; item k is 'i{k}', in cluster clusters[k] (default: its own image)."""
    rows = []
    for s, row in zip(seeds, scores):
        for k, v in enumerate(row):
            rows.append({"seed": s, "item": f"i{k}", "cluster": (clusters or [f"img{k}" for k in range(len(row))])[k],
                         "score": float(v)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- bootstrap
def test_identical_cluster_differences_give_a_point_interval():
    # every image has difference +0.5 (two items per image, one +1 and one 0): no resample can move the mean
    clusters = ["a", "a", "b", "b", "c", "c"]
    treat = frame([[1, 1, 1, 1, 1, 1]] * 3, seeds=(0, 1, 2), clusters=clusters)
    base = frame([[0, 1, 0, 1, 0, 1]] * 3, seeds=(0, 1, 2), clusters=clusters)
    r = S.compare(treat, base, n_boot=4000, rng_seed=1)
    assert r["difference"] == pytest.approx(0.5)
    assert r["ci_low"] == pytest.approx(0.5) and r["ci_high"] == pytest.approx(0.5)
    assert r["test"] == S.TEST_BOOT and r["n_items"] == 6 and r["n_clusters"] == 3 and r["seeds"] == 3
    assert r["p_value"] == pytest.approx(1 / 4001)  # no centred resample reaches |0.5|: (1 + 0) / (1 + B)


def test_three_cluster_exact_enumeration():
    # one seed, three images with differences 0, 0, 1 (one item each). Resamples are the multisets of 3 images,
    # P(count of the +1 image = k) = Binom(3, 1/3): k=0: 8/27 (mean 0), k=1: 12/27 (1/3), k=2: 6/27 (2/3),
    # k=3: 1/27 (1). Estimate 1/3; centred |theta* - 1/3| >= 1/3 for k in {0, 2, 3}: p = 15/27.
    # 2.5% quantile: 0 (8/27 >= 0.025); 97.5% quantile: the smallest value with CDF >= 0.975 -> 1 (26/27 < 0.975).
    treat, base = frame([[0.3, 0.3, 0.8]]), frame([[0.3, 0.3, -0.2]])
    vals, wts = S.bootstrap(S.pair(treat, base), n_boot=0)
    assert len(vals) == 10 and wts.sum() == pytest.approx(1.0)
    dist = {}
    for v, w in zip(vals, wts):
        dist[round(v, 9)] = dist.get(round(v, 9), 0) + w
    assert dist == pytest.approx({0.0: 8 / 27, round(1 / 3, 9): 12 / 27, round(2 / 3, 9): 6 / 27, 1.0: 1 / 27})
    r = S.compare(treat, base, n_boot=0, binary=False)
    assert r["difference"] == pytest.approx(1 / 3)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((0.0, 1.0))
    assert r["p_value"] == pytest.approx(15 / 27)
    # Monte Carlo converges to the enumerated distribution
    mc = S.compare(treat, base, n_boot=20000, rng_seed=3, binary=False)
    assert mc["p_value"] == pytest.approx(15 / 27, abs=0.015)
    assert (mc["ci_low"], mc["ci_high"]) == (0.0, pytest.approx(1.0))


def test_exact_enumeration_over_seeds_and_clusters():
    # two seeds x two images, one item each. d = [[1, 0], [1, 2]]; cluster sums T = d; estimate 1.
    # seeds multisets: (2,0) 1/4, (1,1) 1/2, (0,2) 1/4; clusters the same. stat = v T w / (2 * sum w).
    treat, base = frame([[1, 0], [1, 2]], seeds=(0, 1)), frame([[0, 0], [0, 0]], seeds=(0, 1))
    vals, wts = S.bootstrap(S.pair(treat, base), n_boot=0)
    t = np.array([[1.0, 0.0], [1.0, 2.0]])
    want: dict = {}
    for v, pv in [((2, 0), .25), ((1, 1), .5), ((0, 2), .25)]:
        for w, pw in [((2, 0), .25), ((1, 1), .5), ((0, 2), .25)]:
            x = round(float(np.array(v) @ t @ np.array(w)) / (2 * sum(w)), 9)
            want[x] = want.get(x, 0) + pv * pw
    got: dict = {}
    for v, w in zip(vals, wts):
        got[round(v, 9)] = got.get(round(v, 9), 0) + w
    assert got == pytest.approx(want)
    # the hand values: e.g. both draws seed 1 and image 2 -> 2; both seed 0 and image 2 -> 0
    assert got[2.0] == pytest.approx(1 / 16) and got[0.0] == pytest.approx(1 / 16)


def test_constant_per_seed_difference_on_one_item_is_not_reproduced():
    # 3 seeds, 5 items; treat beats base by +1 on item 0 in every seed. The old t-interval over seeds had zero width.
    base = frame([[0, 1, 0, 1, 0]] * 3, seeds=(0, 1, 2))
    treat = frame([[1, 1, 0, 1, 0]] * 3, seeds=(0, 1, 2))
    assert S.ci95([0.2, 0.2, 0.2])[1] == pytest.approx(0.0, abs=1e-12)  # the old interval: zero width, "certain"
    r = S.compare(treat, base, n_boot=2000)
    assert r["difference"] == pytest.approx(0.2)
    assert r["test"] == S.TEST_BOOT  # three seeds: not McNemar
    assert r["ci_low"] <= 0.0 < r["ci_high"]
    # hand: the +1 image is drawn k ~ Binom(5, 1/5) times; |k/5 - 0.2| >= 0.2 unless k = 1: p = 1 - 0.8^4 = 0.5904
    assert r["p_value"] == pytest.approx(1 - 0.8**4, abs=0.03)
    assert S.compare(treat, base, n_boot=0)["p_value"] == pytest.approx(1 - 0.8**4)
    assert S.claims_frame([{"paper": "x", "claim": "c", **r}])["verdict"][0] == "inconclusive"


def test_mcnemar_hand_count():
    assert S.mcnemar_exact(8, 2) == pytest.approx(0.109375)  # 2 * (1 + 10 + 45) / 1024
    assert S.mcnemar_exact(2, 8) == pytest.approx(0.109375)
    assert S.mcnemar_exact(0, 0) == 1.0 and S.mcnemar_exact(3, 3) == 1.0
    # through compare: one deterministic arm each, 8 items right only under treat, 2 only under base, 5 concordant
    t = [1] * 8 + [0] * 2 + [1] * 3 + [0] * 2
    b = [0] * 8 + [1] * 2 + [1] * 3 + [0] * 2
    r = S.compare(frame([t]), frame([b]))
    assert r["test"] == S.TEST_MCNEMAR and r["p_value"] == pytest.approx(0.109375)
    assert r["difference"] == pytest.approx(6 / 15)
    assert S.compare(frame([t]), frame([b]), binary=False)["test"] == S.TEST_BOOT
    with pytest.raises(ValueError, match="0 or 1"):
        S.compare(frame([[0.5] * 15]), frame([b]), binary=True)
    # the same items, three per image: correlated, so the clustered bootstrap decides, not McNemar
    three = [f"img{k // 3}" for k in range(15)]
    r3 = S.compare(frame([t], clusters=three), frame([b], clusters=three))
    assert r3["test"] == S.TEST_BOOT and r3["difference"] == pytest.approx(6 / 15) and r3["n_clusters"] == 5


def test_pairing_by_keys_not_position():
    rng = np.random.default_rng(0)
    clusters = [f"img{k // 3}" for k in range(30)]
    treat = frame(rng.integers(0, 2, (3, 30)), seeds=(0, 1, 2), clusters=clusters)
    base = frame(rng.integers(0, 2, (3, 30)), seeds=(0, 1, 2), clusters=clusters)
    r = S.compare(treat, base)
    shuffled = S.compare(treat.sample(frac=1, random_state=1), base.sample(frac=1, random_state=2))
    assert shuffled == r
    # seed 0 of treat must meet seed 0 of base: swapping base's seed labels changes the answer
    relabel = base.assign(seed=base["seed"].map({0: 1, 1: 0, 2: 2}))
    assert S.compare(treat, relabel)["difference"] == pytest.approx(r["difference"])  # the mean cannot tell ...
    assert S.pair(treat, relabel).d.tolist() != S.pair(treat, base).d.tolist()  # ... but the pairs differ


def test_deterministic_base_pairs_with_every_seed():
    base = frame([[0, 1, 0, 1]])  # seed None
    treat = frame([[1, 1, 0, 1], [1, 1, 1, 1]], seeds=(4, 7))
    p = S.pair(treat, base)
    assert p.seeds == [4, 7] and p.d.tolist() == [[1, 0, 0, 0], [1, 0, 1, 0]]
    r = S.compare(treat, base)
    assert r["seeds"] == 2 and r["seed_ids"] == [4, 7] and r["difference"] == pytest.approx(3 / 8)


def test_determinism_and_seed_dependence():
    rng = np.random.default_rng(5)
    treat = frame(rng.random((2, 40)), seeds=(0, 1))
    base = frame(rng.random((2, 40)), seeds=(0, 1))
    a, b = S.compare(treat, base, rng_seed=11), S.compare(treat, base, rng_seed=11)
    assert a == b
    assert S.compare(treat, base, rng_seed=12)["ci_low"] != a["ci_low"]


def test_bad_inputs_one_line_errors():
    t = frame([[1, 0]], seeds=(0,))
    with pytest.raises(ValueError, match=r"seeds \[0\] != base seeds \[1\]"):
        S.compare(t, frame([[1, 0]], seeds=(1,)))
    with pytest.raises(ValueError, match="different items"):
        S.compare(t, frame([[1, 0, 1]], seeds=(0,)))
    with pytest.raises(ValueError, match="lacks columns"):
        S.compare(t.drop(columns="cluster"), t)
    with pytest.raises(ValueError, match="duplicate"):
        S.compare(pd.concat([t, t]), t)
    with pytest.raises(ValueError, match="cluster"):
        S.compare(t, t.assign(cluster="other"))
    with pytest.raises(ValueError, match="non-finite"):
        S.compare(t.assign(score=[1.0, float("nan")]), t)
    with pytest.raises(ValueError, match="exact enumeration"):
        S.compare(frame([np.zeros(30)]), frame([np.zeros(30)]), n_boot=0)


# ----------------------------------------------------------------------------------------------- power
def test_mde_known_answer_and_scaling():
    # one seed, 4 single-item clusters, d = [1, 0, 0, -1]: dbar 0; SE^2 = 4/3 * 2 / 16 = 1/6 = var(d, ddof=1) / 4
    t, b = frame([[1, 0, 0, 0]]), frame([[0, 0, 0, 1]])
    z = 1.959963984540054 + 0.8416212335729143
    assert S.mde(t, b) == pytest.approx(z * math.sqrt(1 / 6))
    # a seed part: two seeds with item-means 0.25 and 0.75 -> var_s = 0.125, / 2 seeds
    t2, b2 = frame([[1, 0, 0, 0], [1, 1, 1, 0]], seeds=(0, 1)), frame([[0, 0, 0, 0]] * 2, seeds=(0, 1))
    dbar_items = np.array([1, 0.5, 0.5, 0])  # seed-averaged d per item (one item per cluster)
    se_c2 = 4 / 3 * float(((dbar_items - 0.5) ** 2).sum()) / 16
    assert S.mde(t2, b2) == pytest.approx(z * math.sqrt(se_c2 + 0.125 / 2))
    # 1/sqrt(n): the same design repeated k times (as new images) -> MDE ~ 1/sqrt(k) (C/(C-1) aside)
    rng = np.random.default_rng(0)
    tt, bb = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    m1 = S.mde(frame([tt]), frame([bb]))
    m4 = S.mde(frame([np.tile(tt, 4)]), frame([np.tile(bb, 4)]))
    assert m4 == pytest.approx(m1 / 2, rel=0.02)


def test_mde_planned_and_n_for_mde():
    z = 1.959963984540054 + 0.8416212335729143
    assert S.mde_planned(0.5, 100) == pytest.approx(z * 0.05)
    assert S.mde_planned(0.5, 400) == pytest.approx(S.mde_planned(0.5, 100) / 2)
    assert S.mde_planned(0.5, 100, seed_sd=0.03, n_seeds=3) == pytest.approx(z * math.sqrt(0.0025 + 0.0003))
    n = S.n_for_mde(0.5, 0.05)
    assert S.mde_planned(0.5, n) <= 0.05 < S.mde_planned(0.5, n - 1)
    assert n == math.ceil((z * 0.5 / 0.05) ** 2)  # 785
    with pytest.raises(ValueError, match="add seeds"):
        S.n_for_mde(0.5, 0.05, seed_sd=0.1, n_seeds=1)
    # binary planning: 10% / 5% discordant shares -> sd = sqrt(0.15 - 0.0025)
    assert S.paired_binary_sd(0.10, 0.05) == pytest.approx(math.sqrt(0.1475))


# ----------------------------------------------------------------------------------------------- claims
def test_holm_hand_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # capped/monotone: 0.4*2=0.8, max(0.8, 0.5)
    assert S.holm([0.6, 0.7]) == [1.0, 1.0]
    out = S.holm([0.01, float("nan"), 0.02, None])
    assert out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02) and math.isnan(out[1]) and math.isnan(out[3])
    assert S.holm([]) == []


def test_verdicts():
    base = {"ci_low": 0.01, "ci_high": 0.09, "p_holm": 0.01}
    assert S.verdict(base) == "reproduced"
    assert S.verdict(base, expect="lower") == "opposite"
    assert S.verdict({**base, "p_holm": 0.2}) == "inconclusive"
    assert S.verdict({"ci_low": -0.09, "ci_high": -0.01, "p_holm": 0.01}) == "opposite"
    assert S.verdict({"ci_low": -0.09, "ci_high": -0.01, "p_holm": 0.01}, expect="lower") == "reproduced"
    assert S.verdict({"ci_low": -0.01, "ci_high": 0.09, "p_holm": 0.01}) == "inconclusive"
    assert S.verdict(base, trained=False) == "not_trained"
    assert S.verdict({**base, "p_holm": None}) == "inconclusive"
    assert S.verdict({"ci_low": 0.01, "ci_high": 0.09, "p_value": 0.01}, p_key="p_value") == "reproduced"
    with pytest.raises(KeyError, match="p_holm"):
        S.verdict({"ci_low": 0.01, "ci_high": 0.09, "p_value": 0.01})
    with pytest.raises(ValueError, match="expect"):
        S.verdict(base, expect="up")


@pytest.mark.parametrize("ci, p, effect, expect, want", [
    ((-0.02, 0.03), 0.4, 0.06, "higher", "below_paper"),    # the CI's top (0.03) rules out the paper's +0.06
    ((-0.02, 0.08), 0.4, 0.06, "higher", "inconclusive"),   # holds both 0 and +0.06
    ((-0.02, 0.06), 0.4, 0.06, "higher", "inconclusive"),   # the top reaches the paper's effect: not ruled out
    ((-0.03, 0.02), 0.4, -0.05, "lower", "below_paper"),    # paper: lower by 0.05; our lowest -0.03 is above it
    ((-0.06, 0.02), 0.4, -0.05, "lower", "inconclusive"),
    ((0.01, 0.03), 0.01, 0.06, "higher", "reproduced"),     # significant in the paper's direction, smaller effect
    ((0.01, 0.03), 0.2, 0.06, "higher", "below_paper"),     # excludes 0 but not after Holm, below the paper's
    ((-0.05, -0.01), 0.01, 0.06, "higher", "opposite"),
    ((-0.02, 0.03), 0.4, None, "higher", "inconclusive"),   # the paper reports no number: nothing ruled out
    ((-0.02, 0.03), 0.4, -0.06, "higher", "inconclusive"),  # paper's number against its own claim: no ruling
    ((-0.02, 0.03), 0.4, float("nan"), "higher", "inconclusive"),
])
def test_verdict_below_paper(ci, p, effect, expect, want):
    assert S.verdict({"ci_low": ci[0], "ci_high": ci[1], "p_holm": p}, expect, paper_effect=effect) == want


def test_observed_mde_is_monotone_in_disagreement():
    """One discordant item of 200 must not look better powered than none (the plug-in alone gave 0.014 < 0.024);
    up to half the items discordant, every extra discordant item keeps or raises the MDE (flips both ways)."""
    n, z = 200, S._z(0.05, 0.8)
    base = np.zeros(n)
    got = []
    for k in range(0, n // 2 + 1, 1):
        treat = base.copy()
        treat[:k] = [1.0 if j % 2 == 0 else 0.0 for j in range(k)]
        b = base.copy()
        b[:k] = [0.0 if j % 2 == 0 else 1.0 for j in range(k)]
        got.append(S.observed_mde(S.pair(frame([treat]), frame([b]))))
    assert got[0] == pytest.approx(z * math.sqrt(3) / n)
    assert all(y >= x - 1e-12 for x, y in zip(got, got[1:]))
    assert got[-1] > got[0]
    one = np.zeros(n)
    one[0] = 1.0
    r = S.compare(frame([one]), frame([base]), n_boot=200)
    assert r["mde"] == pytest.approx(z * math.sqrt(3) / n)  # the floor, not the plug-in's z / n


def test_compare_lists_per_seed_differences():
    t = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "item": list("abab" + "ab"), "cluster": list("abab" + "ab"),
                      "score": [1, 1, 1, 0, 0, 0]})
    b = t.assign(score=[0, 0, 0, 0, 0, 0])
    r = S.compare(t, b, n_boot=100)
    assert r["per_seed"] == pytest.approx([1.0, 0.5, 0.0]) and r["seeds"] == 3


def test_claims_frame_holm_within_paper():
    claims = [
        {"paper": "a", "claim": "a1", "metric": "acc", "comparison": "X - Y", "difference": 0.05, "ci_low": 0.01,
         "ci_high": 0.09, "p_value": 0.02, "mde": 0.04, "n_items": 500, "seeds": 3},
        {"paper": "a", "claim": "a2", "difference": 0.05, "ci_low": 0.01, "ci_high": 0.09, "p_value": 0.03},
        {"paper": "b", "claim": "b1", "difference": 0.05, "ci_low": 0.01, "ci_high": 0.09, "p_value": 0.03,
         "why": "alone in its family"},
        {"paper": "b", "claim": "b2", "difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 0.001,
         "trained": False},
        {"paper": "a", "claim": "a3", "difference": -0.05, "ci_low": -0.09, "ci_high": -0.01, "p_value": 0.001,
         "expect": "higher"},
    ]
    df = S.claims_frame(claims)
    assert list(df.columns[:len(S.CLAIM_COLUMNS)]) == S.CLAIM_COLUMNS
    assert {"expect", "trained", "why"} <= set(df.columns)
    got = df.set_index("claim")
    # paper a: 0.001, 0.02, 0.03 -> 0.003, 0.04, 0.04; paper b: only b1 tested -> 0.03
    assert got.loc[["a3", "a1", "a2", "b1"], "p_holm"].tolist() == pytest.approx([0.003, 0.04, 0.04, 0.03])
    assert math.isnan(got.loc["b2", "p_holm"])
    assert got["verdict"].to_dict() == {"a1": "reproduced", "a2": "reproduced", "b1": "reproduced",
                                        "b2": "not_trained", "a3": "opposite"}
    assert df["claim"].tolist() == ["a1", "a2", "b1", "b2", "a3"]  # input order kept
    with pytest.raises(ValueError, match="lacks fields"):
        S.claims_frame([{"paper": "a", "claim": "x"}])


def test_claims_frame_kinds_are_their_own_holm_family_and_paper_effect_gives_below_paper():
    row = {"paper": "a", "difference": 0.005, "ci_low": -0.01, "ci_high": 0.02, "p_value": 0.3}
    claims = [{**row, "claim": "c1", "p_value": 0.01, "ci_low": 0.001},
              {**row, "claim": "c2", "paper_effect": 0.06},
              {**row, "claim": "k1", "kind": "check", "p_value": 0.04, "ci_low": 0.001},
              {**row, "claim": "n1", "kind": "control"}]
    got = S.claims_frame(claims).set_index("claim")
    # claims a: 0.01, 0.3 -> 0.02, 0.3; the check alone in its family keeps 0.04 (not 3 x 0.04)
    assert got.loc[["c1", "c2", "k1", "n1"], "p_holm"].tolist() == pytest.approx([0.02, 0.3, 0.04, 0.3])
    assert got["verdict"].to_dict() == {"c1": "reproduced", "c2": "below_paper", "k1": "reproduced",
                                        "n1": "inconclusive"}
    assert got["kind"].tolist() == ["claim", "claim", "check", "control"]
    with pytest.raises(ValueError, match="kind 'side'"):
        S.claims_frame([{**row, "claim": "x", "kind": "side"}])


def test_ci95_t_interval_over_seeds():
    m, h = S.ci95([1.0, 2.0, 3.0])
    assert m == pytest.approx(2.0) and h == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))


# ----------------------------------------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.data())
def test_property_ci_contains_estimate(n_seeds, n_items, data):
    d = data.draw(st.lists(st.lists(st.integers(-3, 3), min_size=n_items, max_size=n_items), min_size=n_seeds,
                           max_size=n_seeds))
    seeds = tuple(range(n_seeds))
    clusters = [f"c{data.draw(st.integers(0, 2))}" for _ in range(n_items)]
    r = S.compare(frame(d, seeds=seeds, clusters=clusters), frame(np.zeros((n_seeds, n_items)), seeds=seeds,
                                                                   clusters=clusters), n_boot=0, binary=False)
    assert r["ci_low"] - 1e-9 <= r["difference"] <= r["ci_high"] + 1e-9
    assert 0.0 <= r["p_value"] <= 1.0 + 1e-12
    if np.any(d):
        assert r["mde"] >= 0
    else:  # no item differs (all scores 0, inside [0, 1]): the rule-of-three bound over the clusters
        assert r["mde"] == pytest.approx(S._z(0.05, 0.8) * math.sqrt(3) / len(set(clusters)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1), st.just(float("nan"))), max_size=12))
def test_property_holm(ps):
    adj = S.holm(ps)
    for p, a in zip(ps, adj):
        assert math.isnan(a) if math.isnan(p) else p <= a + 1e-15 <= 1.0 + 1e-15
    finite = [(p, a) for p, a in zip(ps, adj) if not math.isnan(p)]
    for p1, a1 in finite:  # monotone: a smaller raw p never gets a larger adjusted p
        assert all(a1 <= a2 + 1e-15 for p2, a2 in finite if p1 <= p2)


def test_a_claim_whose_arms_both_sit_at_the_floor_becomes_a_check():
    """Stage 06's held-out abnormal images: both arms score 0 on nearly every item, so a difference (even a
    'significant' one from a few items) says nothing about the method: kind check, with the reason."""
    n = 100
    treat = np.zeros(n)
    treat[:3] = 1.0  # 97 % of items: both 0
    r = S.compare(frame([treat]), frame([np.zeros(n)]), n_boot=200)
    assert r["floor"] == pytest.approx(0.97) and r["ceiling"] == 0.0
    row = {"paper": "a", "claim": "x", **r}
    got = S.claims_frame([row, {**row, "claim": "ctl", "kind": "control"}]).set_index("claim")
    assert got.loc["x", "kind"] == "check" and got.loc["x", "pinned"].startswith("floor: both arms score 0 on 97%")
    assert got.loc["ctl", "kind"] == "control"  # a control keeps its kind
    half = np.zeros(n)
    half[:10] = 1.0  # 90 % at the floor: still a claim
    r2 = S.compare(frame([half]), frame([np.zeros(n)]), n_boot=200)
    assert S.claims_frame([{"paper": "a", "claim": "y", **r2}]).loc[0, "kind"] == "claim"
    assert S.compare(frame([np.linspace(0, 1, 5)]), frame([np.zeros(5)]), n_boot=50)["floor"] is None

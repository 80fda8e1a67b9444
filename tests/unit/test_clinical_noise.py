"""MMedPO: clinical-relevance panel, consensus loop, weight normalisation, lesion noising."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.rewards import clinical as cl
from repro.rewards import noise

TRUTH = "CT image of the liver. There is a small cyst in the upper left part of the image."
RELEVANT = "CT image of the liver. There is a large mass in the lower right part of the image."
OFF_TOPIC = "Everything looks fine to me, thank you."


# ---------------------------------------------------------------- panel and consensus
def test_judges_use_the_released_grid_and_order_relevance():
    for judge in cl.DEFAULT_PANEL:
        for rej in (RELEVANT, OFF_TOPIC, TRUTH, ""):
            s = judge(rej, TRUTH)
            assert s in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
        assert judge(TRUTH, TRUTH) == 0.0 and judge("", TRUTH) == 0.0  # no dispreference
        assert judge(RELEVANT, TRUTH) >= judge(OFF_TOPIC, TRUTH)


def test_consensus_loop_known_values():
    c = cl.consensus(RELEVANT, TRUTH)
    assert c.judges[0] == "lenient" and 1 <= len(c.scores) <= cl.MAX_ROUNDS
    # overlap = 3/11 content words (ct, liver, part); terms: truth {ct, liver, cyst}, rejected {ct, liver, mass}.
    # lenient 0.4 + 0.6 * 0.27 -> 0.6; strict 0.27 -> 0.2 (two steps away: re-scores); keyword 2/3 -> 0.6 (re-scores
    # against 0.2); lenient again 0.6 == 0.6: consensus in round 4. Mean 2.0 / 4.
    assert c.scores == [0.6, 0.2, 0.6, 0.6] and c.agreed and c.mean == pytest.approx(0.5)
    off = cl.consensus(OFF_TOPIC, TRUTH)
    assert off.scores == [0.4, 0.0, 0.0] and off.agreed and off.mean == pytest.approx(0.4 / 3)

    class Stubborn:  # never agrees: alternates 0 and 1, so the loop stops at 5 rounds
        name = "stubborn"

        def __init__(self):
            self.k = 0

        def __call__(self, rejected, truth, previous=None):
            self.k += 1
            return float(self.k % 2)

    s = cl.consensus(RELEVANT, TRUTH, panel=(Stubborn(),))
    assert s.scores == [1.0, 0.0, 1.0, 0.0, 1.0] and not s.agreed and s.mean == 0.6


@settings(max_examples=2_000, deadline=None)
@given(st.text(max_size=150), st.text(max_size=150))
def test_clinical_relevance_total(rejected, truth):
    v = cl.clinical_relevance(None, [rejected], answer=[truth], trainer_state=None)[0]
    assert v is None or (math.isfinite(v) and 0.0 <= v <= 1.0)
    assert (v is None) == (not truth.strip())


# ---------------------------------------------------------------- normalisation
def test_literal_normalisation_is_constant():
    assert [cl.normalize_literal(s) for s in (0, 0.2, 0.5, 0.9, 1.0)] == [0.75] * 5
    assert cl.normalize_literal(2.0) == 1.25 and cl.normalize_literal(1.1) == pytest.approx(0.75)


def test_dataset_normalisation():
    w = cl.normalize([0.2, 0.8, 0.8, 1.0])  # mean 0.7, std 0.3
    z = np.array([-5, 1, 1, 3]) / 3
    assert w == pytest.approx(list(np.clip(1 + math.sqrt(0.1) * z, 0.75, 1.25)))
    assert w[0] == 0.75 and 1.0 < w[1] < 1.25 and w[3] == 1.25
    assert cl.normalize([0.4, 0.4]) == [1.0, 1.0] and cl.normalize([]) == []
    assert cl.normalize([float("nan"), 0.0, 1.0])[0] == 1.0


def test_minmax_raw_and_modes():
    assert cl.normalize_minmax(0.0) == 0.75 and cl.normalize_minmax(1.0) == 1.25
    assert cl.normalize_minmax(0.6) == pytest.approx(1.05) and cl.normalize_minmax(7) == 1.25
    assert cl.dpo_weights([0.0, 0.5, 1.0], "raw") == [0.0, 0.5, 1.0]  # released: s = 0 switches a pair off
    assert cl.dpo_weights([0.0, 1.0], "literal") == [0.75, 0.75]
    assert cl.dpo_weights([0.0, 1.0], "minmax") == [0.75, 1.25]
    with pytest.raises(ValueError):
        cl.dpo_weights([0.5], "other")


# ---------------------------------------------------------------- noise
def _image(seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_released_noise_changes_only_the_region_and_is_seeded():
    img = _image()
    heat = np.zeros((8, 8))
    heat[:, :6] = 1.0  # 75 % of the image: mean - std > 0, so the region is local
    out, region = noise.lesion_noise_released(img, heat, rng=3, return_region=True)
    assert 0 < region.mean() < 1
    assert np.array_equal(out[~region], img[~region])
    assert (out[region] != img[region]).any(axis=-1).mean() > 0.9
    assert np.isin(out[region], [0, 255]).mean() > 0.7  # N(0, 10) in normalised units saturates
    assert np.array_equal(out, noise.lesion_noise_released(img, heat, rng=3))
    assert not np.array_equal(out, noise.lesion_noise_released(img, heat, rng=4))
    assert np.array_equal(noise.lesion_noise_released(img, heat, rng=np.random.default_rng(3)), out)


def test_released_threshold_pitfall_small_mask_noises_everything():
    mask = np.zeros((32, 32))
    mask[10:16, 10:16] = 1  # 3.5 % of the image: mean - std < 0 <= blurred map
    assert noise.lesion_region(mask, (32, 32)).all()
    region = noise.lesion_region(mask, (32, 32), threshold=0.5)  # an explicit threshold keeps it local
    assert region[12, 12] and not region[0, 0]
    out = noise.lesion_noise_released(_image(), mask, rng=0, threshold=0.5)
    assert np.array_equal(out[~region], _image()[~region])


def test_blend_formula():
    img = _image(1)
    mask = np.zeros((32, 32))
    mask[8:24, 8:24] = 1
    assert np.array_equal(noise.lesion_noise_blend(img, mask, xi_bar=1.0, rng=0), img)  # xi = 1: unchanged
    out = noise.lesion_noise_blend(img, mask, xi_bar=0.0, rng=0)
    assert np.array_equal(out[mask == 0], img[mask == 0])  # h = 0 outside: unchanged
    eps = np.random.default_rng(0).standard_normal(img.shape)
    want = np.clip(np.rint((eps + 1) * 127.5), 0, 255)
    assert np.array_equal(out[mask == 1], want[mask == 1])  # xi = 0: pure noise on the lesion
    half = noise.lesion_noise_blend(img, mask * 3.0, xi_bar=0.5, rng=5)  # maps above 1 are scaled to [0, 1]
    assert np.array_equal(half, noise.lesion_noise_blend(img, mask, xi_bar=0.5, rng=5))
    small = noise.lesion_noise_blend(img, np.kron(mask[::4, ::4], np.ones((1, 1))), xi_bar=0.5, rng=5)
    assert small.shape == img.shape  # heatmaps of another size are resized


def test_global_noise_and_schedule():
    img = _image(2)
    g = noise.global_noise(img, rng=1)
    assert g.shape == img.shape and (g != img).any(axis=-1).mean() > 0.9
    assert np.array_equal(g, noise.global_noise(img, rng=1))
    assert np.array_equal(noise.global_noise(img, rng=1, method="blend", xi_bar=1.0), img)
    xi = [noise.diffusion_xi_bar(k) for k in (0, 250, 500, 999)]
    assert 1 > xi[0] > xi[1] > xi[2] > xi[3] > 0
    with pytest.raises(ValueError):
        noise.global_noise(img, method="x")


def test_resize_and_blur():
    a = np.arange(16.0).reshape(4, 4)
    assert np.allclose(noise.resize_bilinear(a, 4, 4), a)
    big = noise.resize_bilinear(a, 8, 8)
    assert big.shape == (8, 8) and big.min() >= a.min() and big.max() <= a.max()
    flat = noise.gaussian_blur(np.full((20, 20), 2.0))
    assert np.allclose(flat, 2.0)  # the kernel sums to 1
    assert noise.gaussian_kernel().sum() == pytest.approx(1.0)


# ---------------------------------------------------------------- weight modes (issue 27 item 3)
def test_weight_modes_on_hand_scores():
    s = [0.0, 0.2, 0.8, 1.0]  # mean 0.5, population std sqrt(0.17) = 0.412
    assert cl.dpo_weights(s, "raw") == [0.0, 0.2, 0.8, 1.0]  # the release: s = 0 switches the pair off
    assert cl.dpo_weights(s) == cl.dpo_weights(s, cl.MMEDPO_MODE) == cl.dpo_weights(s, "raw")  # the arm's default
    assert cl.dpo_weights(s, "literal") == [0.75] * 4  # the printed rule: constant
    z = (np.array(s) - 0.5) / math.sqrt(0.17)
    assert cl.dpo_weights(s, "normalize") == pytest.approx(list(np.clip(1 + math.sqrt(0.1) * z, 0.75, 1.25)))
    assert np.mean(cl.dpo_weights([0.4, 0.6], "normalize")) == pytest.approx(1.0)  # centred on 1 when unclipped


def test_derivation_shows_the_printed_rule_is_constant():
    d = cl.derivation([0.0, 0.2, 0.5, 1.0])
    assert list(d["z = (s - mu)/sigma"]) == pytest.approx([-1 / math.sqrt(0.1), -0.8 / math.sqrt(0.1),
                                                           -0.5 / math.sqrt(0.1), 0.0])
    assert (d["z = (s - mu)/sigma"] <= 0).all() and list(d["literal"]) == [0.75] * 4
    assert list(d["raw"]) == [0.0, 0.2, 0.5, 1.0] and set(cl.WEIGHT_MODES) <= set(d.columns)


_score = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none(), st.integers(-5, 5))


@settings(max_examples=500, deadline=None)
@given(st.lists(_score, max_size=30), st.sampled_from(cl.WEIGHT_MODES))
def test_weights_are_finite_and_in_range_per_mode(scores, mode):
    from repro.data.preference import weights_for

    w = weights_for(scores, mode)
    assert len(w) == len(scores) and all(isinstance(x, float) and math.isfinite(x) for x in w)
    lo, hi = (0.0, 1.0) if mode == "raw" else (0.75, 1.25)
    assert all(lo <= x <= hi for x in w)
    if mode == "literal":
        finite01 = [i for i, s in enumerate(scores) if isinstance(s, (int, float)) and 0 <= s <= 1]
        assert all(w[i] == 0.75 for i in finite01)  # constant on [0, 1], whatever the batch

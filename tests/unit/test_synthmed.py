"""SynthMed: schema conformance, determinism, lesion geometry, decision-tree facts, difficulty and class signal."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.data import synthmed
from repro.data.schema import NORMAL, RECORD_KEYS, SOURCES

ALL_CLASSES = [(s, c) for s in SOURCES for c in [NORMAL] + SOURCES[s]["categories"]]


def tight_box(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def check_record(r, size):
    assert tuple(r) == RECORD_KEYS or set(r) == set(RECORD_KEYS)
    spec = SOURCES[r["source"]]
    assert r["modality"] == spec["modality"] and r["region"] in spec["regions"]
    assert r["category"] == NORMAL or r["category"] in spec["categories"]
    img, mask = r["image"], r["mask"]
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (size, size, 3)
    assert isinstance(mask, np.ndarray) and mask.dtype == np.uint8 and mask.shape == (size, size)
    assert set(np.unique(mask)) <= {0, 1}
    assert isinstance(r["abnormal"], bool) and isinstance(r["extra"], dict) and isinstance(r["id"], str)
    if r["modality"] in ("CT", "X-ray"):
        assert (img[..., 0] == img[..., 1]).all() and (img[..., 0] == img[..., 2]).all()
    for box in r["bboxes"]:
        assert len(box) == 4 and all(type(v) is int for v in box)
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= size and 0 <= y1 < y2 <= size
    if r["source"] == "bone_marrow":
        assert r["bboxes"] == [] and not mask.any()
        assert r["abnormal"] == (r["category"] in ("AML", "MM"))
    elif r["category"] == NORMAL:
        assert r["bboxes"] == [] and not mask.any() and not r["abnormal"]
    else:
        assert r["abnormal"] and len(r["bboxes"]) == 1
        assert r["bboxes"][0] == tight_box(mask)  # one lesion: its box is the mask's tight box


@pytest.fixture(scope="module")
def records():
    return synthmed.generate(0, synthmed.default_counts(6), image_size=64, difficulty=0.5)


def test_default_counts_covers_every_source_and_class():
    counts = synthmed.default_counts(3, n_normal=5)
    assert set(counts) == set(SOURCES)
    for s, per in counts.items():
        assert per == {NORMAL: 5, **{c: 3 for c in SOURCES[s]["categories"]}}
    assert list(synthmed.default_counts(1, sources=["kvasir"])) == ["kvasir"]


def test_every_record_follows_the_schema(records):
    assert len(records) == 6 * len(ALL_CLASSES)
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        check_record(r, 64)
    seen = {(r["source"], r["category"]) for r in records}
    assert seen == set(ALL_CLASSES)
    regions = {r["region"] for r in records if r["source"] == "deeplesion"}
    assert regions == set(SOURCES["deeplesion"]["regions"])


def test_extra_keys(records):
    for r in records:
        if r["source"] == "bone_marrow":
            assert set(r["extra"]) == {"quality", "blast_frac", "plasma_frac", "n_nucleated", "diagnosis"}
        else:
            assert {"size", "location", "site"} <= set(r["extra"])
            assert (r["extra"]["size"] == "") == (r["category"] == NORMAL)
        if r["source"] in ("nih_cxr", "tbx11k"):
            assert (r["extra"]["ctr"] > 0.5) == (r["category"] == "cardiomegaly")


def test_same_seed_same_data_different_seed_different_data():
    counts = synthmed.default_counts(2)
    a = synthmed.fingerprint(synthmed.generate(7, counts))
    assert a == synthmed.fingerprint(synthmed.generate(7, counts))
    assert a != synthmed.fingerprint(synthmed.generate(8, counts))


def test_class_streams_are_independent_of_other_counts():
    small = synthmed.generate(3, {"deeplesion": {"nodule": 1, "cyst": 3}, "kvasir": {NORMAL: 2}})
    big = synthmed.generate(3, {"kvasir": {NORMAL: 5}, "deeplesion": {"cyst": 3, "nodule": 9}})
    cysts = [r for r in small if r["category"] == "cyst"]
    assert synthmed.fingerprint(cysts) == synthmed.fingerprint([r for r in big if r["category"] == "cyst"])


def test_bone_marrow_decision_tree_facts(records):
    for r in (r for r in records if r["source"] == "bone_marrow"):
        e = r["extra"]
        assert e["diagnosis"] == r["category"]
        if r["category"] in ("blood", "clot"):
            assert e["quality"] == r["category"]
            continue
        assert e["quality"] == "adequate" and e["n_nucleated"] >= 10
        if r["category"] == "AML":
            assert e["blast_frac"] > 0.25
        elif r["category"] == "MM":
            assert e["blast_frac"] < 0.15 and e["plasma_frac"] > 0.15
        else:
            assert e["blast_frac"] < 0.15 and e["plasma_frac"] < 0.1
    blood = [r["extra"]["n_nucleated"] for r in records if r["category"] == "blood"]
    adequate = [r["extra"]["n_nucleated"] for r in records if r["extra"].get("quality") == "adequate"]
    assert max(blood) < min(adequate)


def _lesion_contrast(difficulty):
    recs = synthmed.generate(5, {"nih_cxr": {"nodule": 12}}, difficulty=difficulty)
    out = []
    for r in recs:
        g = r["image"][..., 0].astype(float)
        x1, y1, x2, y2 = r["bboxes"][0]
        ring = np.zeros_like(r["mask"], bool)
        ring[max(0, y1 - 3) : y2 + 3, max(0, x1 - 3) : x2 + 3] = True
        ring &= r["mask"] == 0
        out.append(g[r["mask"] == 1].mean() - g[ring].mean())
    return np.mean(out)


def test_difficulty_lowers_contrast_and_adds_noise():
    assert _lesion_contrast(0.0) > _lesion_contrast(1.0) + 15

    def air_noise(d):  # outside the body the only variation is the sensor noise
        imgs = [r["image"][:4, :4, 0] for r in synthmed.generate(5, {"deeplesion": {NORMAL: 8}}, difficulty=d)]
        return np.std(np.stack(imgs).astype(float))

    assert air_noise(1.0) > 2 * air_noise(0.0)


def _signature(source, category, n=16):
    """Mean over images of (lesion area fraction, lesion-minus-surround grey contrast)."""
    area, contrast = [], []
    for r in synthmed.generate(11, {source: {category: n}}):
        g, m = r["image"].astype(float).mean(-1), r["mask"].astype(bool)
        x1, y1, x2, y2 = r["bboxes"][0]
        ring = np.zeros_like(m)
        ring[max(0, y1 - 3) : y2 + 3, max(0, x1 - 3) : x2 + 3] = True
        ring &= ~m
        area.append(m.mean())
        contrast.append(g[m].mean() - g[ring].mean())
    return np.mean(area), np.mean(contrast)


def test_lesion_categories_differ_in_size_and_intensity():
    """The category is in the pixels: bright small nodule, dark cyst, large mass, very bright stone, ..."""
    nod, cyst, mass = (_signature("deeplesion", c) for c in ("nodule", "cyst", "mass"))
    assert nod[1] > 20 and cyst[1] < nod[1] - 20
    assert mass[0] > 2 * nod[0] and cyst[0] > nod[0]
    assert _signature("kidney_stone", "kidney stone")[1] > 30
    cxr_nod, eff, cardio = (_signature("nih_cxr", c) for c in ("nodule", "effusion", "cardiomegaly"))
    assert cxr_nod[1] > 15 and eff[1] > 15
    assert eff[0] > 4 * cxr_nod[0] and cardio[0] > 4 * cxr_nod[0]
    assert _signature("tbx11k", "tuberculosis")[1] > 10
    assert _signature("kvasir", "polyp")[1] > 10


def test_bone_marrow_classes_differ_in_cell_colours():
    def colour_fractions(category):
        imgs = np.stack([r["image"] for r in synthmed.generate(11, {"bone_marrow": {category: 16}})]).astype(float)
        r, g, b = imgs[..., 0], imgs[..., 1], imgs[..., 2]
        return {
            "violet": ((b > r + 10) & (r > 80) & (g < 140)).mean(),  # blast nuclei/cytoplasm: purple-violet
            "blue": ((b > r + 60) & (g < 150)).mean(),  # plasma-cell cytoplasm: deep blue
            "red": ((r > g + 80) & (r > b + 60)).mean(),  # RBCs
            "dark": (imgs.mean(-1) < 80).mean(),  # clot particles
        }

    f = {c: colour_fractions(c) for c in ("normal", "AML", "MM", "blood", "clot")}
    assert f["AML"]["violet"] > 2 * f["normal"]["violet"]
    assert f["MM"]["blue"] > 2 * f["normal"]["blue"]
    assert f["blood"]["red"] > 1.5 * f["normal"]["red"]
    assert f["clot"]["dark"] > 3 * max(f[c]["dark"] for c in ("normal", "AML", "blood"))


def test_cardiomegaly_box_is_wider_than_a_nodule_box(records):
    def width(cat):
        return np.mean(
            [
                r["bboxes"][0][2] - r["bboxes"][0][0]
                for r in records
                if r["category"] == cat and r["source"] == "nih_cxr"
            ]
        )

    assert width("cardiomegaly") > 2 * width("nodule")


def test_bad_names_raise():
    with pytest.raises(ValueError):
        synthmed.generate(0, {"nope": {NORMAL: 1}})
    with pytest.raises(ValueError):
        synthmed.generate(0, {"kvasir": {"cyst": 1}})
    with pytest.raises(ValueError):
        synthmed.render("kvasir", "polyp", np.random.default_rng(0), region="lung")


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(16, 96),
    difficulty=st.floats(0, 1),
    cls=st.sampled_from(ALL_CLASSES),
)
def test_any_seed_size_and_difficulty_give_valid_records(seed, size, difficulty, cls):
    source, category = cls
    recs = synthmed.generate(seed, {source: {category: 2}}, image_size=size, difficulty=difficulty)
    for r in recs:
        check_record(r, size)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), cls=st.sampled_from(ALL_CLASSES), index=st.integers(0, 50))
def test_render_is_a_pure_function_of_its_rng(seed, cls, index):
    a = synthmed.render(*cls, np.random.default_rng([seed, index]), 32)
    b = synthmed.render(*cls, np.random.default_rng([seed, index]), 32)
    assert synthmed.fingerprint([{**a, "id": "x"}]) == synthmed.fingerprint([{**b, "id": "x"}])


def test_gallery_draws_every_source(records):
    from repro.data import viz

    fig = viz.gallery(records, per_cell=2)
    labelled = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labelled == [SOURCES[s]["paper_name"] for s in SOURCES]
    assert sum(len(ax.patches) for ax in fig.axes) > 0  # bboxes drawn
    matplotlib.pyplot.close(fig)


def test_min_lesion_px_floors_the_smallest_lesions_and_leaves_the_rest():
    """The data knob only lifts lesions below the floor: at 8 px every stone/nodule box is >= 7 px across, masses
    keep their size, and the default floor reproduces the default images exactly."""
    counts = {"kidney_stone": {"kidney stone": 8}, "nih_cxr": {"nodule": 8}, "deeplesion": {"nodule": 8, "mass": 4}}

    def sides(recs, cat):
        return [max(b[2] - b[0], b[3] - b[1]) for r in recs if r["category"] == cat for b in r["bboxes"]]

    small = synthmed.generate(3, counts, difficulty=0.35)
    big = synthmed.generate(3, counts, difficulty=0.35, min_lesion_px=8)
    assert min(sides(small, "kidney stone")) < 6 and min(sides(small, "nodule")) < 6  # the problem the knob fixes
    assert min(sides(big, "kidney stone")) >= 7 and min(sides(big, "nodule")) >= 7
    assert sides(big, "mass") == sides(small, "mass")
    same = synthmed.generate(3, counts, difficulty=0.35, min_lesion_px=synthmed.MIN_LESION_PX)
    assert synthmed.fingerprint(same) == synthmed.fingerprint(small)

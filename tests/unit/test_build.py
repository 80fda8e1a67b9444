"""Stage-01 pipeline: determinism, per-task schema, decision-tree consistency, nothing lost on failure."""

from __future__ import annotations

import json

import pytest

from repro.data import build, conversations, schema

KW = dict(n_per_class=5, n_normal=5, image_size=64, difficulty=0.5, yes_share=0.5, split_fractions=[0.6, 0.2, 0.2],
          conv_train_variants=["standard", "shuffled"], conv_eval_variants=list(conversations.VARIANTS),
          heldout_categories=["deeplesion:mass"])
TASK_COLUMNS = {
    "vqa": {"question", "answer", "answer_type"},
    "mcq": {"question", "options", "answer", "answer_text"},
    "instruct": {"answer", "bbox_text"},
    "conv": {"turn_categories", "turn_labels", "variant", "diagnosis"},
    "report": {"answer"},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("data") / "data"
    return d, build.build(d, seed=0, **KW)


def test_same_seed_same_fingerprint_and_different_seed_differs(built, tmp_path):
    _, m0 = built
    again = build.build(tmp_path / "a", seed=0, **KW)
    other = build.build(tmp_path / "b", seed=1, **KW)
    assert again["fingerprint"] == m0["fingerprint"]
    assert again["records_fingerprint"] == m0["records_fingerprint"]
    assert other["fingerprint"] != m0["fingerprint"]


def test_every_task_has_its_schema(built):
    d, m = built
    assert json.loads((d / "manifest.json").read_text())["fingerprint"] == m["fingerprint"]
    for task, cols in TASK_COLUMNS.items():
        dd = build.load_task(d, task)
        assert set(dd) == {"train", "val", "test"}
        for ds in dd.values():
            need = cols | {"image", "task", "messages"} | set(schema.META_COLUMNS)
            assert need <= set(ds.column_names), (task, need - set(ds.column_names))
            r = ds[0]
            assert r["task"] == task and r["image"].size == (64, 64)
            assert r["messages"][0]["role"] == "user" and r["messages"][-1]["role"] == "assistant"
            assert r["source"] in schema.SOURCES


def test_every_generated_conversation_follows_the_decision_tree(built):
    d, _ = built
    dd = build.load_task(d, "conv")
    n = 0
    for split, ds in dd.items():
        for row in ds:
            assert conversations.check_conversation(row) == [], (split, row["conv_id"])
            n += 1
    assert set(dd["test"]["variant"]) == set(conversations.VARIANTS)
    assert n > 0


def test_image_records_keep_masks_that_match_their_boxes(built):
    import numpy as np

    d, m = built
    images = build.load_task(d, "images")
    assert sum(len(ds) for ds in images.values()) == m["n_images"]
    for r in images["train"]:
        mask = np.asarray(r["mask"])
        assert mask.shape == (64, 64) and bool(mask.any()) == bool(r["bboxes"])
        if r["bboxes"]:
            ys, xs = np.nonzero(mask)
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == r["bboxes"][0]


def test_extra_mcq_test_questions_go_to_their_own_split(built, tmp_path):
    d, m = built
    more = build.build(tmp_path / "more", seed=0, **KW, mcq_test_questions=3)
    one, three = build.load_task(d, "mcq"), build.load_task(tmp_path / "more", "mcq")
    assert set(three) == {"train", "val", "test", build.EXTRA_MCQ_SPLIT}
    for split in ("train", "val", "test"):  # every split the other stages read is unchanged
        assert more["tasks"]["mcq"]["fingerprints"][split] == m["tasks"]["mcq"]["fingerprints"][split]
    extra = three[build.EXTRA_MCQ_SPLIT]
    assert len(extra) == 2 * len(one["test"]) and set(extra["id"]) == set(one["test"]["id"])
    kinds = {}
    for r in list(one["test"]) + list(extra):
        kinds.setdefault(r["id"], set()).add(r["question_kind"])
    assert all(k == {"finding", "region", "modality"} for k in kinds.values())


def test_splits_do_not_share_images(built):
    d, _ = built
    ids = {s: set(ds["id"]) for s, ds in build.load_task(d, "vqa").items()}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["val"])


def test_failed_build_keeps_previous_data(built, tmp_path, monkeypatch):
    d = tmp_path / "data"
    first = build.build(d, seed=0, **KW)

    def boom(*a, **k):
        raise RuntimeError("builder crashed")

    monkeypatch.setattr(build.tasks, "build_reports", boom)
    with pytest.raises(RuntimeError):
        build.build(d, seed=5, **KW)
    assert build.load_manifest(d)["fingerprint"] == first["fingerprint"]
    assert len(build.load_task(d, "report")["train"]) > 0


def test_too_few_images_for_the_splits_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="n_per_class=3"):
        build.build(tmp_path / "x", seed=0, **{**KW, "n_per_class": 3, "n_normal": 3})
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.tmp").exists()


def test_missing_stage_01_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run stage 01 first"):
        build.load_task(tmp_path, "vqa")


def test_real_sources_errors_name_the_folder(tmp_path):
    from repro.data import real

    with pytest.raises(real.DataError, match="no_such_dir"):
        build.load_real({"vqa_rad_dir": str(tmp_path / "no_such_dir")}, 64)
    (tmp_path / "pmc").mkdir()
    with pytest.raises(real.DataError, match="PMC-VQA csv"):
        build.load_real({"pmc_vqa_dir": str(tmp_path / "pmc")}, 64)
    assert build.load_real({"vqa_rad_dir": "", "slake_dir": ""}, 64) == {}


def test_real_vqa_rad_folder_through_load_real(tmp_path):
    import json as _json

    from PIL import Image

    d = tmp_path / "vqa_rad"
    (d / "images").mkdir(parents=True)
    Image.new("RGB", (32, 32), (10, 20, 30)).save(d / "images" / "synpic1.jpg")
    items = [{"qid": 1, "image_name": "synpic1.jpg", "question": "Is there a mass?", "answer": "no",
              "answer_type": "CLOSED", "phrase_type": "test_freeform", "image_organ": "CHEST"},
             {"qid": 2, "image_name": "synpic1.jpg", "question": "Is this a CT?", "answer": "yes",
              "answer_type": "CLOSED", "phrase_type": "freeform", "image_organ": "CHEST"}]
    (d / "VQA_RAD Dataset Public.json").write_text(_json.dumps(items))
    rows = build.load_real({"vqa_rad_dir": str(d)}, 64)["vqa_rad"]
    assert len(rows) == 1 and rows[0]["answer"] == "no" and rows[0]["image"].shape == (64, 64, 3)


def test_data_browser_widget_builds_and_redraws(built):
    from repro import widgets

    d, _ = built
    box = widgets.data_browser(d)
    task, split, idx = box.children[0].children
    task.value = "conv"
    split.value = "test"
    idx.value = idx.max
    assert idx.max == len(build.load_task(d, "conv")["test"]) - 1


def test_sealed_test_split_redraws_only_the_test_images(built, tmp_path):
    """test_seed redraws the test slots from their own seed: train and val rows are unchanged (every knob choice read
    only those), every test task's rows change, the ids stay, and a redrawn image is the one generate(test_seed)
    draws for that slot."""
    import numpy as np
    from datasets import load_from_disk

    from repro.data import synthmed

    d0, m0 = built
    d1 = tmp_path / "sealed"
    m1 = build.build(d1, seed=0, test_seed=7, **KW)
    assert m1["test_seed"] == 7 and m0["test_seed"] == 0
    for task, info in m0["tasks"].items():
        fp0, fp1 = info["fingerprints"], m1["tasks"][task]["fingerprints"]
        assert fp1["train"] == fp0["train"] and fp1["val"] == fp0["val"], task
        assert fp1["test"] != fp0["test"], task
    old, new = load_from_disk(str(d0 / "images"))["test"], load_from_disk(str(d1 / "images"))["test"]
    assert old["id"] == new["id"] and old["category"] == new["category"]
    rec = new[0]
    src, cat, i = rec["source"], rec["category"], int(rec["id"].rsplit("-", 1)[1])
    want = synthmed.generate(7, {src: {cat: i + 1}}, image_size=KW["image_size"], difficulty=KW["difficulty"])[i]
    assert np.array_equal(np.asarray(rec["image"]), np.asarray(want["image"]))
    assert build.build(tmp_path / "same", seed=0, test_seed=0, **KW)["fingerprint"] == m0["fingerprint"]

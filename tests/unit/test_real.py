"""Real-data loaders on tiny fixtures written into tmp_path in each dataset's public format."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from repro.data import real, schema


def write_image(path, size=(20, 16), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), 128, np.uint8)).convert(mode).save(path)


def check_rows(rows, task):
    for r in rows:
        assert r["task"] == task and r["image"].dtype == np.uint8 and r["image"].ndim == 3
        assert r["image"].shape[2] == 3
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        for col in schema.META_COLUMNS:
            assert col in r
        assert r["bboxes"] == []
        assert r["category"] == "unknown" or r["source"].endswith("mnist")


# ----------------------------------------------------------------------------------------------- VQA-RAD
def vqa_rad(tmp_path, items=None):
    write_image(tmp_path / "images" / "synpic1.jpg")
    items = items if items is not None else [
        {"qid": 1, "image_name": "synpic1.jpg", "question": "Is there a mass?", "answer": "Yes",
         "answer_type": "CLOSED", "phrase_type": "freeform", "image_organ": "CHEST"},
        {"qid": 2, "image_name": "synpic1.jpg", "question": "What organ?", "answer": "lung",
         "answer_type": "OPEN ", "phrase_type": "test_freeform", "image_organ": "CHEST"},
    ]
    path = tmp_path / "VQA_RAD Dataset Public.json"
    path.write_text(json.dumps(items))
    return path, tmp_path / "images"


def test_vqa_rad(tmp_path):
    path, images = vqa_rad(tmp_path)
    rows = real.load_vqa_rad(path, images, size=8)
    check_rows(rows, "vqa")
    assert [r["answer"] for r in rows] == ["yes", "lung"] and [r["answer_type"] for r in rows] == ["closed", "open"]
    assert rows[0]["image"].shape == (8, 8, 3) and rows[0]["region"] == "chest" and rows[0]["source"] == "vqa_rad"
    assert rows[0]["abnormal"] is None and rows[0]["id"] == "vqa_rad-1"
    assert len(real.load_vqa_rad(path, images, split="test")) == 1
    assert real.load_vqa_rad(path, images, split="train")[0]["messages"][0]["content"] == "Is there a mass?"


@pytest.mark.parametrize("items, pattern", [
    ([{"image_name": "synpic1.jpg", "answer": "x", "answer_type": "OPEN", "phrase_type": "freeform"}],
     r"row 0 lacks key 'question'"),
    ([{"image_name": "nope.jpg", "question": "q", "answer": "x", "answer_type": "OPEN", "phrase_type": "f"}],
     r"nope\.jpg: image file not found .*row 0"),
    ([{"image_name": "synpic1.jpg", "question": "q", "answer": "x", "answer_type": "MAYBE", "phrase_type": "f"}],
     r"row 0 has answer_type"),
    ({"not": "a list"}, r"expected a JSON list"),
])
def test_vqa_rad_errors(tmp_path, items, pattern):
    path, images = vqa_rad(tmp_path, items)
    with pytest.raises(real.DataError, match=pattern) as e:
        real.load_vqa_rad(path, images)
    assert "\n" not in str(e.value) and ("Public.json" in str(e.value) or "nope.jpg" in str(e.value))


def test_vqa_rad_missing_and_bad_json(tmp_path):
    with pytest.raises(real.DataError, match=r"missing\.json: file not found"):
        real.load_vqa_rad(tmp_path / "missing.json", tmp_path)
    path, images = vqa_rad(tmp_path)
    path.write_text("[{not json")
    with pytest.raises(real.DataError, match=r"Public\.json: bad JSON"):
        real.load_vqa_rad(path, images)
    with pytest.raises(real.DataError, match=r"nowhere: folder not found"):
        real.load_vqa_rad(path, tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------------- SLAKE
def slake(tmp_path, items=None):
    write_image(tmp_path / "imgs" / "xmlab1" / "source.jpg", mode="RGB")
    items = items if items is not None else [
        {"qid": 7, "img_name": "xmlab1/source.jpg", "question": "Which modality?", "answer": "X-Ray",
         "answer_type": "OPEN", "q_lang": "en", "modality": "X-Ray", "location": "Lung", "content_type": "Modality"},
        {"qid": 8, "img_name": "xmlab1/source.jpg", "question": "这是什么?", "answer": "肺",
         "answer_type": "OPEN", "q_lang": "zh", "modality": "X-Ray", "location": "Lung", "content_type": "Organ"},
        {"qid": 9, "img_name": "xmlab1/source.jpg", "question": "Is it normal?", "answer": "No",
         "answer_type": "CLOSED", "q_lang": "en", "modality": "CT", "location": "Abdomen", "content_type": "Abn"},
    ]
    (tmp_path / "test.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return tmp_path


def test_slake(tmp_path):
    rows = real.load_slake(slake(tmp_path), split="test")
    check_rows(rows, "vqa")
    assert [r["id"] for r in rows] == ["slake-7", "slake-9"]  # English only
    assert rows[0]["modality"] == "X-ray" and rows[0]["region"] == "lung" and rows[1]["answer"] == "no"
    assert rows[0]["image"].shape == (16, 20, 3)


def test_slake_errors(tmp_path):
    with pytest.raises(real.DataError, match=r"train\.json: file not found"):
        real.load_slake(slake(tmp_path), split="train")
    with pytest.raises(ValueError):
        real.load_slake(tmp_path, split="dev")
    slake(tmp_path, [{"img_name": "xmlab1/source.jpg", "question": "q", "answer": "a", "answer_type": "OPEN"}])
    with pytest.raises(real.DataError, match=r"test\.json: row 0 lacks key 'q_lang'"):
        real.load_slake(tmp_path, split="test")


# ----------------------------------------------------------------------------------------------- PMC-VQA
PMC_HEADER = ["index", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C", "Choice D",
              "Answer", "split"]


def pmc(tmp_path, rows, header=PMC_HEADER):
    write_image(tmp_path / "figures" / "PMC1_fig1.jpg")
    path = tmp_path / "train.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path, tmp_path / "figures"


def test_pmc_vqa(tmp_path):
    path, figs = pmc(tmp_path, [
        [0, "PMC1_fig1.jpg", "cap", "What is shown?", "A:CT scan ", "B:MRI", "C:X-ray", "D:PET", "B", "train"],
        [1, "PMC1_fig1.jpg", "cap", "Which organ?", "A: liver", "B: lung", "C: brain", "D: heart", "C:brain", "t"],
        [2, "PMC1_fig1.jpg", "cap", "Which side?", "left", "right", "both", "none", "right", "t"],
    ])
    rows = real.load_pmc_vqa(path, figs, size=(12, 10))
    check_rows(rows, "mcq")
    assert [r["answer"] for r in rows] == ["B", "C", "B"]
    assert rows[0]["options"] == ["CT scan", "MRI", "X-ray", "PET"] and rows[1]["answer_text"] == "brain"
    assert rows[0]["image"].shape == (10, 12, 3)
    assert re.fullmatch(r"<think>.+</think><answer>B</answer>", rows[0]["messages"][1]["content"])
    assert "B. MRI" in rows[0]["messages"][0]["content"]
    assert len(real.load_pmc_vqa(path, figs, limit=2)) == 2


def test_pmc_vqa_errors(tmp_path):
    path, figs = pmc(tmp_path, [[0, "PMC1_fig1.jpg", "c", "q", "a", "b", "c", "d", "E: other", "t"]])
    with pytest.raises(real.DataError, match=r"train\.csv: row 0 has Answer"):
        real.load_pmc_vqa(path, figs)
    path, figs = pmc(tmp_path, [[0, "PMC1_fig1.jpg", "q", "a", "b", "c", "d", "A"]],
                     header=[h for h in PMC_HEADER if h not in ("Caption", "Choice D")])
    with pytest.raises(real.DataError, match=r"train\.csv: missing column 'Choice D'"):
        real.load_pmc_vqa(path, figs)
    path, figs = pmc(tmp_path, [[0, "absent.jpg", "c", "q", "a", "b", "c", "d", "A", "t"]])
    with pytest.raises(real.DataError, match=r"absent\.jpg: image file not found .*train\.csv row 0"):
        real.load_pmc_vqa(path, figs)


# ----------------------------------------------------------------------------------------------- MedMNIST
def medmnist(tmp_path, name="pneumoniamnist", **over):
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 255, (5, 28, 28), dtype=np.uint8) for s in ("train", "val", "test")}
    arrays |= {f"{s}_labels": np.array([[0], [1], [1], [0], [1]]) for s in ("train", "val", "test")}
    arrays.update(over)
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def test_medmnist_records_and_rows(tmp_path):
    path = medmnist(tmp_path)
    recs = real.load_medmnist(path, split="test", as_rows=False, size=16)
    assert [r["category"] for r in recs] == ["normal", "pneumonia", "pneumonia", "normal", "pneumonia"]
    assert all(set(r) == set(schema.RECORD_KEYS) for r in recs)
    assert recs[0]["image"].shape == (16, 16, 3) and recs[1]["abnormal"] is True and recs[0]["abnormal"] is False
    assert recs[0]["modality"] == "X-ray" and recs[0]["source"] == "pneumoniamnist"
    rows = real.load_medmnist(path, split="train", limit=3)
    check_rows(rows, "vqa")
    assert [r["answer"] for r in rows] == ["no", "yes", "yes"] and rows[0]["answer_type"] == "closed"
    assert "pneumonia" in rows[0]["question"]
    other = medmnist(tmp_path, name="organamnist", test_labels=np.array([[0], [2], [1], [0], [2]]))
    rows = real.load_medmnist(other, class_names=["bladder", "liver", "lung"])
    assert [r["answer"] for r in rows][:2] == ["bladder", "lung"] and rows[0]["answer_type"] == "open"
    assert rows[0]["abnormal"] is None and rows[0]["modality"] == "unknown"


def test_medmnist_errors(tmp_path):
    path = medmnist(tmp_path)
    with pytest.raises(real.DataError, match=r"pneumoniamnist\.npz: missing key 'dev_images'"):
        real.load_medmnist(path, split="dev")
    bad = medmnist(tmp_path, name="chestmnist", test_labels=np.zeros((5, 14), int))
    with pytest.raises(real.DataError, match=r"chestmnist\.npz: key 'test_labels' is multi-label"):
        real.load_medmnist(bad)
    bad = medmnist(tmp_path, name="pneumoniamnist_x", test_labels=np.array([[0], [3], [1], [0], [1]]))
    with pytest.raises(real.DataError, match=r"pneumoniamnist_x\.npz: key 'test_labels' has labels outside"):
        real.load_medmnist(bad)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(real.DataError, match=r"junk\.npz: cannot read npz"):
        real.load_medmnist(tmp_path / "junk.npz")
    with pytest.raises(real.DataError, match=r"gone\.npz: file not found"):
        real.load_medmnist(tmp_path / "gone.npz")


def test_corrupt_image(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(real.DataError, match=r"bad\.png: cannot read image"):
        real.load_image(tmp_path / "bad.png")

"""repro.data.protocols: the knob -> data folder mapping (known answers, one-line errors) and the real-protocol
folders stage 01 writes from real data in release layouts."""

from __future__ import annotations

import json

import pytest

from repro.data import protocols
from tests.unit.test_real_layouts import iu_xray, vqa_rad_release


def test_knobs_map_to_folders(tmp_path):
    (tmp_path / "real_pmc_vqa").mkdir()
    assert protocols.data_dir_for(tmp_path, "zhu_data", "synthmed") == tmp_path
    assert protocols.data_dir_for(tmp_path, "zhu_data", "pmc_vqa") == tmp_path / "real_pmc_vqa"
    assert protocols.data_dir_for(tmp_path, "external_test", "none") is None
    with pytest.raises(FileNotFoundError, match=r"set vqa_rad_dir, slake_dir, iu_xray_dir|set iu_xray_dir") as e:
        protocols.data_dir_for(tmp_path, "mmedpo_data", "real")
    assert "\n" not in str(e.value) and "real_mmedpo" in str(e.value)
    with pytest.raises(FileNotFoundError, match="medmnist_path"):
        protocols.data_dir_for(tmp_path, "external_test", "medmnist")
    with pytest.raises(ValueError, match=r"zhu_data: value 'pmc' is not one of \['pmc_vqa', 'synthmed'\]"):
        protocols.data_dir_for(tmp_path, "zhu_data", "pmc")
    with pytest.raises(ValueError, match="unknown data knob"):
        protocols.data_dir_for(tmp_path, "umed_data", "synthmed")


def test_real_task_folders_from_release_layouts(tmp_path):
    from datasets import load_from_disk

    vqa = vqa_rad_release(tmp_path / "vqa_rad")  # one test question ("Left", closed), one train ("no")
    iu = iu_xray(tmp_path / "iu")
    ann = json.loads((iu / "annotation.json").read_text())
    ann["train"] = [dict(ann["test"][0], id="CXR2", report="Mild cardiomegaly.")]
    (iu / "annotation.json").write_text(json.dumps(ann))
    manifest = protocols.save_real_tasks(tmp_path / "data", {"vqa_rad_dir": str(vqa), "iu_xray_dir": str(iu)}, 16)
    assert manifest["real_mmedpo/vqa"]["rows"] == {"train": 1, "test": 1}
    assert manifest["real_mmedpo/report"]["sources"] == {"train": {"iu_xray": 1}, "test": {"iu_xray": 1}}
    dd = load_from_disk(str(tmp_path / "data" / "real_mmedpo" / "vqa"))
    assert dd["test"][0]["answer"] == "Left" and dd["test"][0]["image"].size == (16, 16)
    assert not (tmp_path / "data" / "real_pmc_vqa").exists()
    ann["train"] = []
    (iu / "annotation.json").write_text(json.dumps(ann))
    with pytest.raises(ValueError, match="real_mmedpo/report: split 'train' has no rows"):
        protocols.save_real_tasks(tmp_path / "data2", {"iu_xray_dir": str(iu)}, 16)


def test_a_pmc_vqa_test_csv_that_is_wrong_is_named_not_swallowed(tmp_path):
    """Issue 29: a test.csv without its answer columns was reported as "no PMC-VQA csv found for split
    'test_clean'" (test.csv's error swallowed on the way to the fallback split)."""
    from repro.data import real
    from tests.unit.test_real_layouts import pmc_csv, png, write

    write(tmp_path / "images" / "PMC1_F1.jpg", png())
    pmc_csv(tmp_path / "test.csv", ["Figure_path", "Question", "Choice A", "Choice B", "Choice C", "Choice D"],
            [["PMC1_F1.jpg", "Which scan?", "A:CT", "B:MRI", "C:PET", "D:US"]])
    with pytest.raises(real.DataError, match=r"test.csv: missing column 'Answer_label' or 'Answer' \(has ") as e:
        protocols._split_rows("pmc_vqa", str(tmp_path), "test", 16, None)
    assert "\n" not in str(e.value) and "test_clean" not in str(e.value)
    (tmp_path / "test.csv").unlink()  # absent, not wrong: test_clean.csv stands in; both absent names both
    with pytest.raises(real.NotFound, match=r"split 'test'; looked for test.csv or test_2.csv.*; and .*split "
                                            r"'test_clean'; looked for test_clean.csv") as e:
        protocols._split_rows("pmc_vqa", str(tmp_path), "test", 16, None)
    assert "\n" not in str(e.value)
    pmc_csv(tmp_path / "test_clean.csv", ["Figure_path", "Question", "Choice A", "Choice B", "Choice C", "Choice D",
                                          "Answer"], [["PMC1_F1.jpg", "Which scan?", "A:CT", "B:MRI", "C:PET",
                                                       "D:US", "C"]])
    assert [r["answer_text"] for r in protocols._split_rows("pmc_vqa", str(tmp_path), "test", 16, None)] == ["PET"]

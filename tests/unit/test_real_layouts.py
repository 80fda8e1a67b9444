"""real_layouts.load_dir on each public layout, written in tmp_path as the releases and hub exports ship them:
layout detection, splits, and one-line errors (corrupt image, missing column, nothing found) naming the file."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from repro.data import real, real_hub
from repro.data.real_layouts import VQA_RAD_JSON, load_dir


def png(value=128, size=(12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def one_line_error(exc_info, *names):
    msg = str(exc_info.value)
    assert "\n" not in msg and all(n in msg for n in names), msg


VQA_ITEMS = [
    {"qid": 1, "image_name": "synpic1.jpg", "question": "Which side is the lesion on?", "answer": "Left",
     "answer_type": "CLOSED", "phrase_type": "test_freeform", "image_organ": "HEAD"},
    {"qid": 2, "image_name": "synpic1.jpg", "question": "Is there a mass?", "answer": "No",
     "answer_type": "CLOSED", "phrase_type": "freeform", "image_organ": "HEAD"},
]


# ----------------------------------------------------------------------------------------------- VQA-RAD release
def vqa_rad_release(root, items=VQA_ITEMS, image=None):
    write(root / "VQA_RAD Image Folder" / "synpic1.jpg", image if image is not None else png())
    (root / VQA_RAD_JSON).write_text(json.dumps(items))
    return root


def test_vqa_rad_release_layout(tmp_path):
    d = vqa_rad_release(tmp_path / "vqa_rad")
    rows = load_dir("vqa_rad", d, split="test", size=16)
    assert [(r["answer"], r["answer_type"], r["region"]) for r in rows] == [("Left", "closed", "head")]
    assert rows[0]["image"].shape == (16, 16, 3) and rows[0]["source"] == "vqa_rad"
    assert [r["answer"] for r in load_dir("vqa_rad", d, split="train")] == ["no"]
    assert len(load_dir("vqa_rad", tmp_path, split=None)) == 2  # found in the sub-folder named vqa_rad/
    nested = vqa_rad_release(tmp_path / "outer" / "VQA_RAD")
    assert len(load_dir("vqa_rad", nested.parent, split=None)) == 2


def test_vqa_rad_release_errors(tmp_path):
    d = vqa_rad_release(tmp_path / "a", image=b"not a jpeg")
    with pytest.raises(real.DataError, match="cannot read image") as e:
        load_dir("vqa_rad", d)
    one_line_error(e, "synpic1.jpg", VQA_RAD_JSON)
    items = [{k: v for k, v in VQA_ITEMS[0].items() if k != "answer"}]
    d = vqa_rad_release(tmp_path / "b", items=items)
    with pytest.raises(real.DataError, match="row 0 lacks key 'answer'") as e:
        load_dir("vqa_rad", d)
    one_line_error(e, VQA_RAD_JSON)
    d = tmp_path / "c"
    (d / "VQA_RAD Image Folder").mkdir(parents=True)
    (d / VQA_RAD_JSON).write_text(json.dumps(VQA_ITEMS))
    (d / "VQA_RAD Image Folder").rmdir()
    with pytest.raises(real.DataError, match="no image folder") as e:
        load_dir("vqa_rad", d)
    one_line_error(e, "VQA_RAD Image Folder/", "images/")


def test_nothing_found_says_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    for name, expect in [("vqa_rad", [VQA_RAD_JSON, "parquet", "save_to_disk"]), ("slake", ["test.json", "imgs/"]),
                         ("pmc_vqa", ["PMC-VQA csv", "test.csv", "images/"]), ("iu_xray", ["annotation.json"]),
                         ("medmnist", ["*.npz"])]:
        with pytest.raises(real.DataError) as e:
            load_dir(name, tmp_path / "empty")
        one_line_error(e, "empty", *expect)
    with pytest.raises(real.DataError, match="folder not found"):
        load_dir("slake", tmp_path / "absent")
    with pytest.raises(ValueError, match="unknown data set"):
        load_dir("mimic", tmp_path)


# ----------------------------------------------------------------------------------------------- hub exports
def hub_parquet(root, split="test", image=None, columns=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"image": [{"bytes": image if image is not None else png(), "path": "img0.png"},
                      {"bytes": png(200), "path": "img1.png"}],
            "question": ["Which organ is shown?", "Is this a CT?"], "answer": ["Brain", "yes"]}
    for k in set(cols) - set(columns or cols):
        del cols[k]
    path = root / "data" / f"{split}-00000-of-00001-abc123.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)
    return path


def test_vqa_rad_hub_parquet(tmp_path):
    hub_parquet(tmp_path, "train")
    hub_parquet(tmp_path, "test")
    rows = load_dir("vqa_rad", tmp_path, split="test", size=8)
    assert [(r["answer"], r["answer_type"]) for r in rows] == [("Brain", "open"), ("yes", "closed")]
    assert rows[0]["image"].shape == (8, 8, 3) and rows[1]["image"][0, 0, 0] == 200
    assert rows[0]["id"] == "vqa_rad-test-0" and rows[0]["region"] == "unknown"
    assert len(load_dir("vqa_rad", tmp_path, split=None)) == 4
    with pytest.raises(real.DataError, match=r"no val split among test-00000-of-00001-abc123.parquet \(test\)"):
        real_hub.load_vqa_export(tmp_path, "vqa_rad", "val")


def test_hub_parquet_errors(tmp_path):
    path = hub_parquet(tmp_path / "a", image=b"\x89PNG broken")
    with pytest.raises(real.DataError, match=r"row 0: cannot decode image") as e:
        load_dir("vqa_rad", tmp_path / "a")
    one_line_error(e, path.name)
    path = hub_parquet(tmp_path / "b", columns=["image", "question"])
    with pytest.raises(real.DataError, match=r"missing column 'answer'") as e:
        load_dir("slake", tmp_path / "b")
    one_line_error(e, path.name)
    write(tmp_path / "c" / "test.parquet", b"PAR1 not really")
    with pytest.raises(real.DataError, match="cannot read parquet") as e:
        load_dir("vqa_rad", tmp_path / "c")
    one_line_error(e, "test.parquet")


def save_to_disk(root, columns=("image", "question", "answer", "answer_type", "q_lang")):
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets import Image as ImageFeature

    data = {"image": [Image.open(io.BytesIO(png(v))) for v in (10, 20, 30)],
            "question": ["Where is the liver?", "Is the lung healthy?", "肝在哪里?"],
            "answer": ["Left", "Yes", "左"], "answer_type": ["CLOSED", "CLOSED", "OPEN"], "q_lang": ["en", "en", "zh"]}
    feats = {"image": ImageFeature(), **{k: Value("string") for k in data if k != "image"}}
    keep = {k: v for k, v in data.items() if k in columns}
    ds = Dataset.from_dict(keep, features=Features({k: feats[k] for k in keep}))
    DatasetDict({"train": ds, "test": ds}).save_to_disk(str(root))
    return root


def test_slake_hub_save_to_disk(tmp_path):
    d = save_to_disk(tmp_path / "slake")
    rows = load_dir("slake", d, split="test")
    assert [(r["answer"], r["answer_type"]) for r in rows] == [("Left", "closed"), ("yes", "closed")]  # en only
    assert rows[0]["image"][0, 0, 0] == 10 and rows[0]["source"] == "slake"
    d = save_to_disk(tmp_path / "bad", columns=("image", "answer"))
    with pytest.raises(real.DataError, match="missing column 'question'") as e:
        load_dir("slake", d)
    one_line_error(e, "bad/test")


# ----------------------------------------------------------------------------------------------- SLAKE release
SLAKE_ITEM = {"qid": 5, "img_name": "xmlab1/source.jpg", "question": "Which organ is abnormal?", "answer": "Liver",
              "answer_type": "OPEN", "q_lang": "en", "modality": "CT", "location": "Abdomen"}


def test_slake_release_and_hub_copy(tmp_path):
    root = tmp_path / "slake" / "Slake1.0"
    write(root / "imgs" / "xmlab1" / "source.jpg", png())
    for f in ("train.json", "validate.json", "test.json"):
        (root / f).write_text(json.dumps([SLAKE_ITEM]))
    rows = load_dir("slake", tmp_path / "slake", split="val")
    assert rows[0]["answer"] == "Liver" and rows[0]["modality"] == "CT" and rows[0]["region"] == "abdomen"
    hub = tmp_path / "hub"  # BoKelvin/SLAKE names it validation.json and ships imgs.zip
    (hub).mkdir()
    (hub / "validation.json").write_text(json.dumps([SLAKE_ITEM]))
    write(hub / "imgs.zip", b"zip")
    with pytest.raises(real.DataError, match=r"no imgs/ folder \(unzip imgs.zip there\)") as e:
        load_dir("slake", hub, split="val")
    one_line_error(e, "hub")
    write(hub / "imgs" / "xmlab1" / "source.jpg", png())
    assert load_dir("slake", hub, split="validation")[0]["id"] == "slake-5"


# ----------------------------------------------------------------------------------------------- PMC-VQA
def pmc_csv(path, header, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_pmc_vqa_release(tmp_path):
    write(tmp_path / "images" / "PMC1_F1.jpg", png())
    train_header = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D",
                    "Answer_label"]
    pmc_csv(tmp_path / "train.csv", train_header,
            [["PMC1_F1.jpg", "What uptake?", "Focal uptake", "A:Diffuse uptake ", "B:Focal uptake", "C:None",
              "D:Cannot tell", "B"]])
    clean_header = ["index", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C", "Choice D",
                    "Answer", "split"]
    pmc_csv(tmp_path / "test_clean.csv", clean_header,
            [[0, "PMC1_F1.jpg", "cap", "Which scan?", "A:CT", "B:MRI", "C:PET", "D:US", "C", "test"]])
    train = load_dir("pmc_vqa", tmp_path, split="train")
    assert train[0]["answer"] == "B" and train[0]["options"][0] == "Diffuse uptake" and train[0]["task"] == "mcq"
    assert load_dir("pmc_vqa", tmp_path, split="test_clean")[0]["answer_text"] == "PET"
    with pytest.raises(real.DataError, match="PMC-VQA csv found for split 'test'") as e:
        load_dir("pmc_vqa", tmp_path, split="test")
    one_line_error(e, "test.csv", "images/")
    pmc_csv(tmp_path / "test.csv", clean_header[:5] + clean_header[6:], [[0, "PMC1_F1.jpg", "c", "q", "a", "b", "c",
                                                                         "A", "t"]])
    with pytest.raises(real.DataError, match="missing column 'Choice B'") as e:
        load_dir("pmc_vqa", tmp_path, split="test")
    one_line_error(e, "test.csv")
    write(tmp_path / "images" / "PMC1_F1.jpg", b"corrupt")
    with pytest.raises(real.DataError, match="cannot read image") as e:
        load_dir("pmc_vqa", tmp_path, split="train")
    one_line_error(e, "PMC1_F1.jpg", "train.csv row 0")


def test_pmc_vqa_needs_its_image_folder(tmp_path):
    pmc_csv(tmp_path / "test.csv", ["Figure_path"], [["x.jpg"]])
    with pytest.raises(real.DataError, match="no image folder") as e:
        load_dir("pmc_vqa", tmp_path, split="test")
    one_line_error(e, "test.csv", "'images/'")


# ----------------------------------------------------------------------------------------------- IU-Xray
def iu_xray(root, report="The heart is normal.  No effusion.", image=None):
    write(root / "images" / "CXR1_1_IM-0001" / "0.png", image if image is not None else png(50))
    write(root / "images" / "CXR1_1_IM-0001" / "1.png", png(90))
    item = {"id": "CXR1_1_IM-0001", "report": report, "split": "test",
            "image_path": ["CXR1_1_IM-0001/0.png", "CXR1_1_IM-0001/1.png"]}
    if report is None:
        del item["report"]
    ann = {"train": [], "val": [], "test": [item]}
    (root / "annotation.json").write_text(json.dumps(ann))
    return root


def test_iu_xray(tmp_path):
    iu_xray(tmp_path / "data" / "iu_xray")
    rows = load_dir("iu_xray", tmp_path / "data", split="test", size=16)
    r = rows[0]
    assert r["task"] == "report" and r["answer"] == "The heart is normal. No effusion." and r["region"] == "chest"
    assert r["messages"][1]["content"] == r["answer"] and r["image"][0, 0, 0] == 50 and r["image"].shape == (16, 16, 3)
    assert real.load_iu_xray(tmp_path / "data/iu_xray/annotation.json", tmp_path / "data/iu_xray/images",
                             view=1)[0]["image"][0, 0, 0] == 90
    assert load_dir("iu_xray", tmp_path / "data", split="train") == []


def test_iu_xray_errors(tmp_path):
    d = iu_xray(tmp_path / "a", image=b"junk")
    with pytest.raises(real.DataError, match="cannot read image") as e:
        load_dir("iu_xray", d)
    one_line_error(e, "0.png", "annotation.json test[0]")
    d = iu_xray(tmp_path / "b", report=None)
    with pytest.raises(real.DataError, match=r"test\[0\] lacks key 'report'") as e:
        load_dir("iu_xray", d)
    one_line_error(e, "annotation.json")
    (d / "annotation.json").write_text(json.dumps({"train": []}))
    with pytest.raises(real.DataError, match="with a list under key 'test'"):
        load_dir("iu_xray", d)


# ----------------------------------------------------------------------------------------------- MedMNIST
def test_medmnist_file_or_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("pneumoniamnist", "breastmnist_224"):
        np.savez(tmp_path / f"{name}.npz", test_images=rng.integers(0, 255, (3, 28, 28), dtype=np.uint8),
                 test_labels=np.array([[0], [1], [1]]))
    rows = load_dir("medmnist", tmp_path, size=16)
    assert [r["source"] for r in rows] == ["breastmnist"] * 3 + ["pneumoniamnist"] * 3
    assert len(load_dir("medmnist", tmp_path / "pneumoniamnist.npz")) == 3
    with pytest.raises(real.DataError, match="missing key 'val_images'") as e:
        load_dir("medmnist", tmp_path / "pneumoniamnist.npz", split="val")
    one_line_error(e, "pneumoniamnist.npz")


# ----------------------------------------------------------------------------------------------- sets never mix
def slake_parquet(path):
    """A SLAKE hub export's test split (SLAKE's own columns q_lang and location)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": [{"bytes": png(200), "path": "x.png"}], "question": ["Where is the liver?"],
                             "answer": ["Left"], "q_lang": ["en"], "location": ["Abdomen"]}), path)
    return path


def test_a_named_subfolder_wins_over_another_sets_export_beside_it(tmp_path):
    """Issue 29: data/ holding VQA_RAD/ and a SLAKE parquet export loaded the SLAKE rows labelled as VQA-RAD."""
    vqa_rad_release(tmp_path / "VQA_RAD")
    slake_parquet(tmp_path / "slake_export" / "data" / "test-00000-of-00001.parquet")  # another export's folder
    slake_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")  # an export loose in the folder itself
    for split in ("test", None):
        rows = load_dir("vqa_rad", tmp_path, split=split)
        assert {r["question"] for r in rows} <= {q["question"] for q in VQA_ITEMS} and rows, split


def test_two_layouts_of_a_set_in_one_folder_is_a_one_line_error_naming_both(tmp_path):
    d = vqa_rad_release(tmp_path / "both")
    export = hub_parquet(d)
    with pytest.raises(real.DataError, match="two VQA-RAD layouts") as e:
        load_dir("vqa_rad", d)
    one_line_error(e, str(d / VQA_RAD_JSON), str(export))
    top = vqa_rad_release(tmp_path / "nested")  # the release in the folder and again in its VQA_RAD/
    vqa_rad_release(top / "VQA_RAD")
    with pytest.raises(real.DataError, match="two VQA-RAD layouts") as e:
        load_dir("vqa_rad", top)
    one_line_error(e, str(top / VQA_RAD_JSON), str(top / "VQA_RAD" / VQA_RAD_JSON))
    write(tmp_path / "pmc" / "test.csv", b"Figure_path\n")
    write(tmp_path / "pmc" / "PMC-VQA" / "test.csv", b"Figure_path\n")
    with pytest.raises(real.DataError, match="two PMC-VQA layouts") as e:
        load_dir("pmc_vqa", tmp_path / "pmc")
    one_line_error(e, str(tmp_path / "pmc" / "test.csv"), str(tmp_path / "pmc" / "PMC-VQA" / "test.csv"))


def test_another_sets_export_is_named_never_loaded(tmp_path):
    f = slake_parquet(tmp_path / "slake" / "data" / "test-00000-of-00001.parquet")
    with pytest.raises(real.DataError, match="has SLAKE's columns q_lang, location, so it is not VQA-RAD") as e:
        load_dir("vqa_rad", tmp_path / "slake")
    one_line_error(e, str(f))
    assert [r["answer"] for r in load_dir("slake", tmp_path / "slake")] == ["Left"]


def test_errors_list_every_missing_column_of_the_file(tmp_path):
    path = hub_parquet(tmp_path / "a", columns=["image"])
    with pytest.raises(real.DataError, match=r"missing columns 'question', 'answer' \(has image\)") as e:
        load_dir("vqa_rad", tmp_path / "a")
    one_line_error(e, str(path))
    write(tmp_path / "pmc" / "images" / "PMC1_F1.jpg", png())
    pmc_csv(tmp_path / "pmc" / "test.csv", ["Figure_path", "Question", "Choice A", "Choice C"], [["x", "q", "a", "c"]])
    with pytest.raises(real.DataError, match=r"missing columns 'Choice B', 'Choice D', 'Answer_label' or 'Answer' "
                                             r"\(has Figure_path, Question, Choice A, Choice C\)") as e:
        load_dir("pmc_vqa", tmp_path / "pmc")
    one_line_error(e, str(tmp_path / "pmc" / "test.csv"))


# ----------------------------------------------------------------------------------------------- relative paths
def test_relative_folders_are_read_from_the_repository_root_from_any_working_directory(tmp_repo, monkeypatch):
    """Issue 29: a relative *_dir passed validation (read from the root) but failed to load from a JupyterLab
    kernel, whose working directory is notebooks/."""
    from repro import config
    from repro.data import build, protocols
    from tests.conftest import write_notebook

    vqa_rad_release(tmp_repo / "data" / "vqa_rad")
    np.savez(tmp_repo / "data" / "pneumoniamnist.npz", test_images=np.zeros((2, 28, 28), np.uint8),
             test_labels=np.array([[0], [1]]))
    write_notebook(tmp_repo / "notebooks" / "01_demo.ipynb", 'profile = "smoke"\nvqa_rad_dir = ""\n'
                   'medmnist_path = ""\n', ["pass"])
    params = {"vqa_rad_dir": "data/vqa_rad", "medmnist_path": "data/pneumoniamnist.npz"}
    for cwd in (tmp_repo / "notebooks", tmp_repo.parent):
        monkeypatch.chdir(cwd)
        config.validate(params, "01_demo", "params/smoke/01_demo.yaml")
        assert [r["answer"] for r in load_dir("vqa_rad", "data/vqa_rad")] == ["Left"]
        loaded = build.load_real({"vqa_rad_dir": "data/vqa_rad", "medmnist_path": "data/pneumoniamnist.npz"}, 8)
        assert {k: len(v) for k, v in loaded.items()} == {"vqa_rad": 1, "medmnist": 2}
        tasks = protocols.real_task_rows({"vqa_rad_dir": "data/vqa_rad"}, 8)
        assert len(tasks["real_mmedpo"]["vqa"]["train"]) == 1
    with pytest.raises(config.ConfigError, match="names a path that does not exist: 'data/slake'") as e:
        config.validate({"vqa_rad_dir": "data/slake"}, "01_demo", "params/smoke/01_demo.yaml")
    assert str(tmp_repo / "data" / "slake") in str(e.value) and "repository root" in str(e.value)
    with pytest.raises(real.NotFound, match="read from the repository root") as e:
        load_dir("vqa_rad", "data/slake")
    one_line_error(e, str(tmp_repo / "data" / "slake"))


def test_model_refs_are_local_folders_under_the_root_or_hub_ids(tmp_repo, monkeypatch):
    from repro import paths

    (tmp_repo / "runs" / "ckpt").mkdir(parents=True)
    monkeypatch.chdir(tmp_repo.parent)
    assert paths.model_ref("runs/ckpt") == str(tmp_repo / "runs" / "ckpt")
    assert paths.model_ref("Qwen/Qwen2.5-VL-3B-Instruct") == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert paths.param_path("/abs/x") == paths.param_path("/abs/x").resolve()

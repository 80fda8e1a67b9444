"""Stage 06's held-out-free bases (issue 27, item 4): the row filter leaves no held-out image or label, and a base
job (run on a fixture data set with the trainers stubbed) records training image ids that never meet the held-out
ids, so `base_saw_heldout` reads False; with the filter skipped the same check reads True (the test can fail)."""

from __future__ import annotations

import json

import pytest

from repro.generalization import bases, subsets
from repro.papers import common

ROWS = [{"id": f"{s}-{c}-{i}", "source": s, "category": c, "modality": m}
        for i, (s, c, m) in enumerate([("deeplesion", "mass", "CT"), ("deeplesion", "normal", "CT"),
                                       ("kidney_stone", "stone", "CT"), ("kidney_stone", "normal", "CT"),
                                       ("nih_cxr", "effusion", "X-ray"), ("nih_cxr", "nodule", "X-ray"),
                                       ("tbx11k", "tuberculosis", "X-ray"), ("tbx11k", "normal", "X-ray"),
                                       ("kvasir", "polyp", "endoscopy"), ("kvasir", "normal", "endoscopy")] * 2)]
CONDS = subsets.conditions(["nih_cxr:effusion"], ["tbx11k", "deeplesion"], "CT", [0.5, 1.0])


def _held_pairs(rows, conds, names):
    """(source, category, modality) triples of every held-out row of the named conditions."""
    out = set()
    for c in names:
        spec = bases.heldout_spec(*conds[c])
        out |= {(r["source"], r["category"], r["modality"]) for r in subsets.select(rows, spec)} if spec else set()
    return out


def test_each_condition_gets_a_base_whose_filter_drops_its_heldout_rows():
    of = bases.base_of(CONDS)
    assert of["CT only"] == "CT only" and {of[c] for c in CONDS if c != "CT only"} == {bases.SHARED}
    assert of["100% data"] == bases.SHARED  # the 100 % point is trained here, from the same base
    for base, exclude in bases.exclusions(CONDS).items():
        kept = [ROWS[i] for i in bases.keep_indices([dict(r) for r in ROWS], exclude)]
        served = [c for c in CONDS if of[c] == base]
        assert kept, base
        assert not {(r["source"], r["category"], r["modality"]) for r in kept} & _held_pairs(ROWS, CONDS, served)
    shared = [ROWS[i] for i in bases.keep_indices([dict(r) for r in ROWS], bases.exclusions(CONDS)[bases.SHARED])]
    assert {r["source"] for r in shared} == {"kidney_stone", "nih_cxr", "kvasir"}
    assert ("nih_cxr", "effusion") not in {(r["source"], r["category"]) for r in shared}
    ct = [ROWS[i] for i in bases.keep_indices([dict(r) for r in ROWS], bases.exclusions(CONDS)["CT only"])]
    assert {r["modality"] for r in ct} == {"CT"}


def test_skipping_the_filter_is_caught():
    everything = bases.keep_indices([dict(r) for r in ROWS], [])
    assert len(everything) == len(ROWS)
    assert {(ROWS[i]["source"], ROWS[i]["category"], ROWS[i]["modality"]) for i in everything} & \
        _held_pairs(ROWS, CONDS, list(CONDS))


@pytest.fixture()
def fixture_data(tmp_path, monkeypatch):
    """A two-task SynthMed look-alike on disk (train / val / test images of ROWS' sources) and the model folders
    bases.base_arm reads, redirected into tmp_path."""
    from datasets import Dataset, DatasetDict
    from PIL import Image

    data = tmp_path / "data"
    img = Image.new("RGB", (8, 8))

    def split(tag):
        return Dataset.from_list([{**r, "id": f"{tag}-{r['id']}", "image": img,
                                   "messages": [{"role": "user", "content": "q"},
                                                {"role": "assistant", "content": "a"}]} for r in ROWS])

    for task in ("images", "vqa"):
        DatasetDict({s: split(s) for s in ("train", "val", "test")}).save_to_disk(str(data / task))
    (tmp_path / "models" / "init").mkdir(parents=True)
    (tmp_path / "models" / "init" / "config.json").write_text("{}")
    monkeypatch.setattr(common, "data_dir", lambda stage: data)
    monkeypatch.setattr(common, "out_root", lambda stage: tmp_path / "rl")
    monkeypatch.setattr(bases.paths, "models_dir", lambda profile: tmp_path / "models")
    return data


def _run_base(exclude, monkeypatch):
    """bases.base_arm with vision.pretrain and sft.train stubbed (they would train for minutes): what they were
    given is returned beside the job, so the test sees which images reached each trainer."""
    from repro.train import sft, vision

    seen = {}

    def pretrain(init, out, data, *, train_indices=None, **kw):
        seen["vision"] = train_indices
        return {"final_dir": str(out), "seconds": 0.0}

    def train(init, out, ds, **kw):
        seen["sft_rows"] = len(ds)
        return {"final_dir": str(out / "final"), "log_history": [], "seconds": 0.0}

    monkeypatch.setattr(vision, "pretrain", pretrain)
    monkeypatch.setattr(sft, "train", train)
    recipe = bases.Recipe(vision_steps=2, base_tasks=["vqa"], base_steps=2, batch_size=2)
    job = common.Job("ood_umed_base", "base [x]", None, "repro.generalization.bases:base_arm", recipe,
                     common.Stage(profile="smoke"), {"exclude": exclude})
    rec, _ = bases.base_arm(job)
    return job, rec, seen


@pytest.mark.parametrize("skip_filter", [False, True])
def test_base_job_records_no_heldout_image(fixture_data, monkeypatch, skip_filter):
    exclude = bases.exclusions(CONDS)[bases.SHARED]
    job, rec, seen = _run_base([] if skip_filter else exclude, monkeypatch)
    ids = bases.read_ids(rec["folder"])
    assert ids == set(json.loads((job.folder / "train_ids.json").read_text()))
    assert all(i.startswith("train-") for i in ids)  # never a val or test image
    served = [c for c, b in bases.base_of(CONDS).items() if b == bases.SHARED]
    held = set().union(*(bases.heldout_ids(fixture_data, *CONDS[c]) for c in served))
    assert any(h.startswith("train-tbx11k") for h in held)  # held-out labels reach into the train split
    saw = bases.saw_heldout([ids], held)
    assert saw is skip_filter  # False with the filter; the same check flags the unfiltered base
    assert (len(seen["vision"]) < len(ROWS)) is not skip_filter and seen["sft_rows"] > 0


def test_saw_heldout_needs_every_record():
    assert bases.saw_heldout([{"a"}, None], {"b"}) is None
    assert bases.saw_heldout([{"a"}, {"b"}], {"b"}) is True
    assert bases.saw_heldout([{"a"}], {"b"}) is False


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_the_bases_recipe_is_stage_02s(profile):
    from repro import config

    p02 = config.load_params(profile, "02_sft", check_paths=False)
    r = bases.recipe02(profile)
    assert {k: getattr(r, k) for k in bases.RECIPE_KEYS if k in p02} == {k: p02[k] for k in bases.RECIPE_KEYS
                                                                           if k in p02}


# ----------------------------------------------------------------------------------------------- Zhu's kind-free base
KINDS = ("finding", "modality", "region")


@pytest.fixture()
def kind_data(tmp_path, monkeypatch):
    """A VQA task whose rows carry question_kind (the kind also written into the question, so the test can read it
    back from the SFT rows the trainer got) and a report task without the column; stage 02's vision folder."""
    from datasets import Dataset, DatasetDict
    from PIL import Image

    data, img = tmp_path / "data", Image.new("RGB", (8, 8))

    def rows(tag, task):
        out = []
        for i, r in enumerate(ROWS):
            kind = KINDS[i % 3]
            q = f"which {kind}?" if task == "vqa" else "Describe the findings."
            out.append({**r, "id": f"{tag}-{r['id']}", "image": img, "messages": [
                {"role": "user", "content": q}, {"role": "assistant", "content": "CT image."}],
                **({"question_kind": kind} if task == "vqa" else {})})
        return Dataset.from_list(out)

    for task in ("vqa", "report"):
        DatasetDict({s: rows(s, task) for s in ("train", "val", "test")}).save_to_disk(str(data / task))
    for d in ("init", "vision"):
        (tmp_path / "models" / d).mkdir(parents=True)
        (tmp_path / "models" / d / "config.json").write_text("{}")
    monkeypatch.setattr(common, "data_dir", lambda stage: data)
    monkeypatch.setattr(common, "out_root", lambda stage: tmp_path / "rl")
    monkeypatch.setattr(bases.paths, "models_dir", lambda profile: tmp_path / "models")
    return tmp_path


def _run_kindfree(monkeypatch, skip_filter: bool, job=None):
    """bases.kindfree_arm with sft.train stubbed: returns its record, the start it was given and the questions of
    every SFT row it was given (2 epochs of the mixture, so every kept row is drawn)."""
    from repro.train import sft

    seen = {}

    def train(init, out, ds, **kw):
        seen["init"] = init
        seen["questions"] = [m["content"][-1]["text"] for row in ds["messages"] for m in row if m["role"] == "user"]
        return {"final_dir": str(out / "final"), "log_history": [], "seconds": 0.0}

    monkeypatch.setattr(sft, "train", train)
    if skip_filter:
        keep_all = bases.kind_filter
        monkeypatch.setattr(bases, "kind_filter", lambda kind, kinds=None: keep_all(None, kinds))
    recipe = bases.Recipe(vision_steps=2, base_tasks=["report", "vqa"], base_steps=2 * len(ROWS), batch_size=2)
    job = job or common.Job("ood_zhu_base", "kind-free base [modality]", None,
                            "repro.generalization.bases:kindfree_arm", recipe, common.Stage(profile="smoke"),
                            {"heldout_kind": "modality"})
    rec, _ = bases.kindfree_arm(job)
    return job, rec, seen


@pytest.mark.parametrize("skip_filter", [False, True])
def test_kindfree_base_never_trains_on_the_heldout_kind(kind_data, monkeypatch, skip_filter):
    job, rec, seen = _run_kindfree(monkeypatch, skip_filter)
    assert seen["init"] == str(kind_data / "models" / "vision")  # 02's vision tower, not a model that saw questions
    asked = {q for q in seen["questions"] if q.startswith("which ")}
    assert ("which modality?" in asked) is skip_filter  # the rows the trainer got, read back from their text
    assert {"which finding?", "which region?"} <= asked and "Describe the findings." in seen["questions"]
    kinds = bases.read_kinds(rec["folder"])
    assert kinds == rec["kinds"] and kinds["report"] == {"": len(ROWS)}  # reports ask no kind: all kept
    assert bases.saw_kind(job.folder, "modality") is skip_filter  # False with the filter; True when it is skipped
    assert bases.saw_kind(job.folder, "finding") is True


def test_saw_kind_needs_a_record(tmp_path):
    assert bases.saw_kind(tmp_path, "modality") is None and bases.saw_kind("", "modality") is None


def test_zhu_kindfree_jobs_and_heldout(kind_data, monkeypatch):
    """ZhuStudy's default start is the kind-free base: one base job for every seed (keyed by recipe + kind), the
    GRPO arms start from its folder, and zhu_heldout reads its recorded kinds (None before it ran, then False)."""
    from repro.generalization import ZhuStudy, studies
    from repro.papers.zhu import ZhuConfig

    monkeypatch.setattr(bases, "recipe02", lambda profile: bases.Recipe(base_tasks=["report", "vqa"], base_steps=4,
                                                                          batch_size=2, vision_steps=2))
    stage = common.Stage(profile="smoke", seeds=[0, 1])
    study = ZhuStudy()
    assert study.init == bases.KINDFREE
    (job,) = studies.zhu_base_jobs(study, stage)
    assert job.seed is None and job.extra["heldout_kind"] == "modality"
    assert studies.zhu_jobs(study, ZhuConfig(), stage) == []  # no arm before its base exists
    assert studies.zhu_heldout(study, stage) is None
    _, rec, _ = _run_kindfree(monkeypatch, False, job)
    assert rec["folder"] == str(job.folder)
    assert studies.zhu_heldout(study, stage) is False
    jobs = studies.zhu_jobs(study, ZhuConfig(), stage, rec["final_dir"])
    assert [j.method for j in jobs] == ["kind-free base", "kind-free base+grpo", "kind-free base+grpo"]
    assert {j.extra.get("init", j.extra.get("model")) for j in jobs} == {rec["final_dir"]}
    assert studies.zhu_labels(ZhuStudy(init="sft")) == ("SFT", "SFT+grpo")
    other = studies.zhu_base_jobs(ZhuStudy(heldout_kind="region"), stage)[0]
    assert other.folder != job.folder  # another held-out kind, another base

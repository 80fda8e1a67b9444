"""Stage 04's real-protocol knobs (zhu_data, mmedpo_data, umed/drllava_external_test): which data dir each job
reads (repro.data.protocols.data_dir_for), that the defaults keep today's cache keys, and PPO's pinned sampling."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from repro.config import ConfigError
from repro.papers import common, drllava, measure, mmedpo, umed, zhu
from repro.train import ppo, rollouts


def _without(cls, names):
    """The config class as it was before the knobs `names` existed (same fields otherwise, same defaults)."""
    keep = [(f.name, f.type, dataclasses.field(default_factory=f.default_factory)
             if f.default_factory is not dataclasses.MISSING else dataclasses.field(default=f.default))
            for f in dataclasses.fields(cls) if f.name not in names]
    return dataclasses.make_dataclass("Old" + cls.__name__, keep)


@pytest.mark.parametrize("mod,cls,knob", [(zhu, zhu.ZhuConfig, "data"), (mmedpo, mmedpo.MMedPOConfig, "data"),
                                          (umed, umed.UMedConfig, "external_test"),
                                          (drllava, drllava.DrLLaVAConfig, "external_test")])
def test_defaults_keep_the_run_keys_and_a_set_knob_changes_them(mod, cls, knob):
    """A knob added later keeps the old arms' keys at the value that ran before it existed (KEY_IF_SET; UMed's
    vrr_source / aar_scale changed the default method, so their old values are set here), and a knob that only adds
    arms (NOT_IN_KEY) never enters a key; a set protocol knob changes every key."""
    stage = common.Stage(profile="no-such-profile")
    before = dict(getattr(cls, "KEY_IF_SET", {}))
    new = mod.jobs(cls(**before), stage)
    gone = {knob, *before, *getattr(cls, "NOT_IN_KEY", ())}
    old = [dataclasses.replace(j, cfg=_without(cls, gone)()) for j in new]
    assert [j.key() for j in new] == [j.key() for j in old]  # the old values add nothing to any key
    assert all("data" not in j.extra and "external_test" not in j.extra for j in new)
    other = {"data": "pmc_vqa" if mod is zhu else "real", "external_test": "medmnist"}[knob]
    changed = mod.jobs(cls(**{**before, knob: other}), stage)
    assert all(a.key() != b.key() for a, b in zip(new, changed))
    with_arms = mod.jobs(cls(**before, continued_sft=True), stage)  # adds its arms, changes no other key
    assert [j.key() for j in with_arms[:len(new)]] == [j.key() for j in new] and len(with_arms) > len(new)


def test_set_knobs_name_their_folders_in_every_job():
    stage = common.Stage(profile="no-such-profile")
    zj = zhu.jobs(zhu.ZhuConfig(data="pmc_vqa", inits=["sft"], variants=["grpo"]), stage)
    assert [j.extra["data"] for j in zj] == [["zhu_data", "pmc_vqa"]] * 2
    st = zhu.start_job(zhu.ZhuConfig(data="pmc_vqa"), stage)
    assert st.extra["data"] == ["zhu_data", "pmc_vqa"] and st.extra["split"] == "train"  # PMC-VQA has no val
    assert "split" not in zhu.start_job(zhu.ZhuConfig(), stage).extra
    mj = mmedpo.jobs(mmedpo.MMedPOConfig(data="real"), stage)
    assert all(j.extra["data"] == ["mmedpo_data", "real"] for j in mj)
    uj = umed.jobs(umed.UMedConfig(external_test="medmnist"), stage)
    assert all(j.extra["external_test"] == "medmnist" for j in uj)


def test_a_value_not_offered_is_a_one_line_error_naming_the_key():
    with pytest.raises(ConfigError, match="'umed_external_test' has value 'mnist'"):
        umed.jobs(umed.UMedConfig(external_test="mnist"), common.Stage())
    with pytest.raises(ConfigError, match="'zhu_data' has value 'pmc'"):
        zhu.jobs(zhu.ZhuConfig(data="pmc"), common.Stage())


def test_job_data_dir_goes_through_data_dir_for(tmp_path, monkeypatch):
    monkeypatch.setattr(measure, "data_dir", lambda stage: tmp_path)
    stage = common.Stage()
    job = zhu.jobs(zhu.ZhuConfig(data="pmc_vqa"), stage)[-1]
    with pytest.raises(FileNotFoundError, match="pmc_vqa_dir"):  # stage 01 wrote no PMC-VQA folder
        measure.job_data_dir(job)
    (tmp_path / "real_pmc_vqa").mkdir()
    assert measure.job_data_dir(job) == tmp_path / "real_pmc_vqa"
    assert measure.job_data_dir(zhu.jobs(zhu.ZhuConfig(), stage)[-1]) == tmp_path


def test_zhu_arm_trains_on_the_protocol_folder(tmp_path, monkeypatch):
    from repro.train import grpo

    (tmp_path / "real_pmc_vqa").mkdir()
    monkeypatch.setattr(measure, "data_dir", lambda stage: tmp_path)
    seen = []

    def fake_dataset(d, split, **kw):
        seen.append((d, split))
        raise RuntimeError("stop")

    monkeypatch.setattr(grpo, "grpo_dataset", fake_dataset)
    with pytest.raises(RuntimeError, match="stop"):
        zhu.arm(zhu.jobs(zhu.ZhuConfig(data="pmc_vqa"), common.Stage())[-1])
    assert seen == [(tmp_path / "real_pmc_vqa", "train")]


def test_external_test_is_a_prefixed_extra_column(tmp_path, monkeypatch):
    import pandas as pd

    (tmp_path / "real_medmnist").mkdir()
    monkeypatch.setattr(measure, "data_dir", lambda stage: tmp_path)
    calls = []

    def fake_eval(model_dir, stage, tasks, limit, split=None, extra=None, data=None):
        calls.append((tasks, split, data))
        return {"closed_acc": 0.5, "open_recall": float("nan")}, pd.DataFrame(
            {"task": ["vqa"], "source": ["pneumoniamnist"], "variant": [""], "item": ["1"], "cluster": ["1"],
             "metric": ["closed_correct"], "score": [1.0]})

    monkeypatch.setattr(measure, "evaluate", fake_eval)
    job = umed.jobs(umed.UMedConfig(external_test="medmnist"), common.Stage())[-1]
    flat, rows = measure.external("m", job, 3)
    assert flat == {"medmnist_closed_acc": 0.5} and list(rows["metric"]) == ["medmnist_closed_correct"]
    assert calls == [(["vqa"], "test", tmp_path / "real_medmnist")]
    assert measure.external("m", umed.jobs(umed.UMedConfig(), common.Stage())[-1], 3)[0] == {}


def test_sampling_pins_repetition_penalty_top_k_and_top_p():
    seen = {}

    class Model:
        config = SimpleNamespace()
        generation_config = SimpleNamespace(eos_token_id=2, repetition_penalty=1.05)
        device = "cpu"

        def generate(self, input_ids, attention_mask, **kw):
            seen.update(kw)
            return torch.cat([input_ids, torch.tensor([[5, 2]] * len(input_ids))], dim=1)

    tok = SimpleNamespace(pad_token_id=0, eos_token_id=2, decode=lambda ids, skip_special_tokens: "x")
    s = rollouts.Sample(query=0, ids=[1, 3], action=[0, 0], token_extra={}, image={})
    rollouts.generate_into(Model(), SimpleNamespace(tokenizer=tok), [s], ppo.PPOConfig(max_new_tokens=2))
    assert seen["repetition_penalty"] == 1.0 and seen["top_k"] == 0 and seen["top_p"] == 1.0
    assert s.answer_ids == [[5, 2]] and s.ended == [True]


def test_tables_show_the_external_column_only_when_measured():
    from repro import report

    recs = [{"method": "SFT", "seed": None, "trained": True, "metrics": {"question_acc": 0.5,
                                                                         "medmnist_closed_acc": 0.25}}]
    assert report.drllava_rl_table({"records": recs}).loc["SFT", "medmnist_closed_acc"] == "0.250"
    assert "medmnist_closed_acc" not in report.drllava_rl_table({"records": [
        {**recs[0], "metrics": {"question_acc": 0.5}}]}).columns

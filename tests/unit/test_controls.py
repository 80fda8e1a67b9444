"""The pipeline's controls (repro.papers.controls): the planted reward's known answers, the control arms' jobs, and
the claims machinery on control rows (the null control judged although it did not learn)."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.papers import claims, common, controls, umed


@pytest.mark.parametrize("text, want", [
    ("Detection: no abnormality. Localization: none. Recognition: normal.", 1.0),
    ("Detection: abnormal. Localization: [1, 2, 30, 40]. Recognition: cyst in the liver, CT.", 0.0),
    ("I cannot tell.", 0.0),
    ("", 0.0),
])
def test_planted_reward_pays_calling_the_image_normal_only(text, want):
    assert controls.planted_reward()(completions=[text]) == [want]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_planted_reward_is_total_and_binary(text):
    assert controls.planted_reward()(completions=[text])[0] in (0.0, 1.0)


def test_control_jobs_and_their_knobs(tmp_repo):
    stage = common.Stage(profile="smoke", seeds=[0, 1])
    cfg = umed.UMedConfig(lr=3e-5, controls=True)
    jobs = umed.jobs(cfg, stage)
    ctl = [j for j in jobs if j.extra.get("control")]
    assert sorted((j.method, j.seed) for j in ctl) == sorted(
        (m, s) for s in (0, 1) for m in (controls.NULL, controls.POSITIVE))
    assert all(j.cfg.lr == 0.0 for j in ctl if j.method == controls.NULL)
    assert all(j.cfg.lr == 3e-5 and j.extra["rewards"] == "repro.papers.controls:planted_rewards"
               for j in ctl if j.method == controls.POSITIVE)
    # the knob adds jobs, it changes no other arm's cache key (so turning it on retrains nothing else)
    plain = {(j.method, j.seed): j.key() for j in umed.jobs(umed.UMedConfig(lr=3e-5), stage)}
    assert all(plain[(j.method, j.seed)] == j.key() for j in jobs if not j.extra.get("control"))
    assert len(umed.jobs(umed.UMedConfig(lr=3e-5), stage)) == len(jobs) - 4
    # control_steps shortens the controls only: their steps (and keys) change, no other arm's key does
    short = umed.jobs(umed.UMedConfig(lr=3e-5, steps=48, controls=True, control_steps=12), stage)
    full = {(j.method, j.seed): j for j in umed.jobs(umed.UMedConfig(lr=3e-5, steps=48, controls=True), stage)}
    for j in short:
        same = full[(j.method, j.seed)]
        if j.extra.get("control") in ("null", "positive"):
            assert (j.cfg.steps, same.cfg.steps) == (12, 48) and j.key() != same.key()
        else:
            assert j.cfg.steps == 48 and j.key() == same.key()
    # control_probe_rows sizes the controls' probe only, and a control probed on 100 rows keeps the key it had
    # when every arm's probe had 100 rows (its cached arm is read back)
    wide = {(j.method, j.seed): j for j in umed.jobs(umed.UMedConfig(probe_rows=0, controls=True,
                                                                      control_probe_rows=100), stage)}
    narrow = {(j.method, j.seed): j for j in umed.jobs(umed.UMedConfig(probe_rows=100, controls=True), stage)}
    for k, j in wide.items():
        if j.extra.get("control"):
            assert j.cfg.probe_rows == 100 and j.key() == narrow[k].key()
        elif j.method == "SFT+AAR":
            assert j.cfg.probe_rows == 0 and j.key() != narrow[k].key()
    follow = [j for j in umed.jobs(umed.UMedConfig(probe_rows=7, controls=True), stage) if j.extra.get("control")]
    assert {j.cfg.probe_rows for j in follow} == {7}  # -1 (the default): the controls follow probe_rows


def _rows(method, seed, metric, scores, sources="kvasir"):
    n = len(scores)
    return pd.DataFrame({"paper": "umed", "method": method, "seed": seed, "task": "instruct", "source": sources,
                         "variant": "", "item": [f"instruct:i{i}" for i in range(n)],
                         "cluster": [f"i{i}" for i in range(n)], "metric": metric, "score": scores})


def _rec(method, seed, trained=True, why=""):
    return {"paper": "umed", "method": method, "seed": seed, "metrics": {}, "curve": [], "trained": trained,
            "why": why, "kl_end": 0.0, "reward_first": 0.0, "reward_last": 0.0}


def test_null_control_is_judged_although_it_did_not_learn_and_the_positive_one_reproduces():
    n = 60
    mau = [float(i % 3 == 0) for i in range(n)]
    normal_start = [float(i % 4 == 0) for i in range(n)]
    rows = pd.concat([
        _rows("SFT", None, "mau_correct", mau), _rows("SFT", None, "called_normal", normal_start),
        *[_rows(controls.NULL, s, "mau_correct", mau) for s in (0, 1, 2)],  # identical answers: lr 0
        *[_rows(controls.POSITIVE, s, "called_normal", [1.0] * n) for s in (0, 1, 2)],
    ])
    records = [_rec("SFT", None)] + [_rec(controls.NULL, s, trained=False, why="did not learn") for s in (0, 1, 2)]
    records += [_rec(controls.POSITIVE, s) for s in (0, 1, 2)]
    frame = claims.ledger({"umed": {"records": records, "rows": rows}},
                          claims=[c for c in claims.CLAIMS if c.kind == "control"], n_boot=500)
    got = frame.set_index("claim")["verdict"]
    null = next(c for c in got.index if c.startswith("null"))
    pos = next(c for c in got.index if c.startswith("positive"))
    assert got[null] == "inconclusive" and got[pos] == "reproduced"
    assert set(frame["kind"]) == {"control"}
    assert frame.set_index("claim").loc[null, "difference"] == 0

"""repro.arithmetic: bit fingerprints of the suite's kernels, and how a machine's are read against a record."""

import json

import numpy as np
import pytest
import torch

from repro import arithmetic as ar


def test_inputs_are_exact_integer_draws():
    # 24-bit integers / 2^23 - 1 is exact in float32: the inputs cannot depend on the CPU
    got = ar.uniform(np.random.default_rng(0), 5)
    ints = np.random.default_rng(0).integers(0, 1 << 24, size=5, dtype=np.int64)
    assert got.dtype == torch.float32
    assert got.numpy().tolist() == [i / 2**23 - 1.0 for i in ints]
    assert (got >= -1).all() and (got < 1).all()
    assert ar.uniform(np.random.default_rng(0), 2, 3, scale=0.5).shape == (2, 3)


def test_digest_sees_one_ulp_and_the_shape():
    x = ar.uniform(np.random.default_rng(1), 64)
    y = x.clone()
    y[17] = torch.nextafter(y[17], torch.tensor(2.0))
    assert ar.digest(x) == ar.digest(x.clone()) and len(ar.digest(x)) == 12
    assert ar.digest(x) != ar.digest(y)
    assert ar.digest(x) != ar.digest(x.reshape(8, 8))  # same bytes, other shape
    assert ar.digest(x, y) != ar.digest(y, x)


def test_op_checks_are_deterministic_and_name_each_kernel_family():
    a, b = ar.op_checks(), ar.op_checks()
    assert a == b
    assert {"randn", "multinomial", "matmul", "sdpa", "softmax", "rms_norm", "conv2d", "adamw"} <= set(a)
    assert ar.op_checks(seed=1)["matmul"] != a["matmul"]


def test_verdict_known_answers():
    there = {"native": {"a": "1", "b": "2"}, "isa-avx2": {"a": "1", "b": "2"}, "portable": {"a": "7", "b": "8"}}
    # native equal everywhere: reproduces as is
    v = ar.verdict(ar.compare({"native": {"a": "1", "b": "2"}, "portable": {"a": "7", "b": "9"}}, there))
    assert v.startswith("this CPU computes the committed machine's bits as is")
    # native differs in one check, a pin gives the record's native bits on every check
    v = ar.verdict(ar.compare({"native": {"a": "1", "b": "3"}, "isa-avx2": {"a": "1", "b": "2"}}, there))
    assert v.startswith("pin 'isa-avx2'")
    # nothing reproduces; `portable` equals its own record there (a pin that is the same on both machines)
    v = ar.verdict(ar.compare({"native": {"a": "5", "b": "3"}, "portable": {"a": "7", "b": "8"}}, there))
    assert v.startswith("no environment here reproduces") and "['portable']" in v
    rows = ar.compare({"native": {"a": "1", "b": "3"}}, there)
    assert [(r["check"], r["as_native_there"]) for r in rows] == [("a", True), ("b", False)]


def test_committed_cpu_id_reads_the_start_s_provenance(tmp_path, monkeypatch):
    from repro import paths

    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "02_sft.json").write_text(json.dumps(
        {"provenance": {"hardware": {"cpu_id": "GenuineIntel family 6 model 143 stepping 8"}}}))
    monkeypatch.setattr(paths, "RESULTS", tmp_path)
    assert ar.committed_cpu_id() == "GenuineIntel family 6 model 143 stepping 8"
    assert ar.committed_cpu_id("smoke") is None


def test_the_committed_record_names_the_committed_machine():
    # results/arithmetic.json must hold a record of the CPU that trained the committed cpu start, else the tool
    # has nothing to compare another machine with
    records = json.loads(ar.RECORDS.read_text())["records"]
    ids = [r["machine"]["cpu_id"] for r in records]
    assert ar.committed_cpu_id() in ids
    native = next(r for r in records if r["machine"]["cpu_id"] == ar.committed_cpu_id())["envs"]["native"]
    assert set(native) == set(ar.op_checks()) | {"vlm_train@1t", "vlm_train@2t", "vlm_greedy"}


@pytest.mark.slow
def test_model_checks_are_deterministic():
    a = ar.model_checks(steps=1)
    assert a == ar.model_checks(steps=1)
    assert set(a) == {"vlm_train@1t", "vlm_train@2t", "vlm_greedy"}
    assert ar.model_checks(steps=2)["vlm_train@1t"] != a["vlm_train@1t"]

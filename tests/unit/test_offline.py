"""Offline by default: `import repro` and the smoke/cpu config never reach for the network; a hub id is one clear
error; the gpu profile goes online only with allow_hub: true."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from repro import config, hub, models
from tests.conftest import write_notebook

PARAMS = 'profile = "smoke"\nseed = 0\nmodel_name_or_path = ""\n'


@pytest.fixture
def hub_state(monkeypatch):
    """Restore the variables and the libraries' module-level copies that hub.set_offline changes."""
    import datasets.config
    import huggingface_hub.constants

    for var in hub.OFFLINE_VARS:
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", datasets.config.HF_HUB_OFFLINE)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", datasets.config.HF_DATASETS_OFFLINE)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test loudly (and is recorded)."""
    attempts = []

    def refuse(self, address, *a, **k):
        attempts.append(address)
        raise RuntimeError(f"network attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture
def nb(tmp_repo):
    write_notebook(tmp_repo / "notebooks" / "02_demo.ipynb", PARAMS, ["pass"])
    for p in ("smoke", "gpu"):
        (tmp_repo / "params" / p).mkdir(parents=True)
    return tmp_repo


def test_import_repro_sets_the_hub_offline():
    env = {k: v for k, v in os.environ.items() if k not in hub.OFFLINE_VARS}
    code = ("import huggingface_hub.constants as c, repro, os, datasets.config as d; "
            "print(c.HF_HUB_OFFLINE, d.HF_DATASETS_OFFLINE, [os.environ[v] for v in repro.hub.OFFLINE_VARS])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split("\n")[0] == "True True ['1', '1', '1']", out.stderr[-2000:]


def tiny_causal_lm(path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def test_smoke_profile_loads_paths_and_refuses_hub_ids_without_the_network(nb, hub_state, no_network, tmp_path):
    from transformers import AutoModelForCausalLM

    hub.set_offline(False)  # as if the user's shell had the hub online: the smoke config must turn it off
    cfg = config.from_namespace({"profile": "smoke", "seed": 0}, "02_demo")
    assert cfg.profile == "smoke" and hub.is_offline() and os.environ["HF_HUB_OFFLINE"] == "1"
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    path = tiny_causal_lm(tmp_path / "tiny")
    assert AutoModelForCausalLM.from_pretrained(hub.check_model_ref(path)).config.hidden_size == 16
    with pytest.raises(hub.HubOfflineError, match="hub is offline") as e:
        models.load_vlm("someorg/some-vlm", device="cpu")
    assert "'someorg/some-vlm'" in str(e.value) and "allow_hub" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(OSError):  # transformers itself, offline, without our check: no connection either
        AutoModelForCausalLM.from_pretrained("someorg/some-model")
    assert no_network == []


def test_gpu_profile_needs_allow_hub_for_hub_ids(nb, hub_state):
    (nb / "params" / "gpu" / "02_demo.yaml").write_text("model_name_or_path: Qwen/Qwen2.5-VL-3B-Instruct\n")
    with pytest.raises(config.ConfigError, match=r"does not exist: .*needs allow_hub: true") as e:
        config.load_params("gpu", "02_demo")
    assert "02_demo.yaml" in str(e.value) and "model_name_or_path" in str(e.value)
    (nb / "params" / "gpu" / "02_demo.yaml").write_text("model_name_or_path: Qwen/Qwen2.5-VL-3B-Instruct\n"
                                                       "allow_hub: true\n")
    params = config.load_params("gpu", "02_demo")
    assert params["allow_hub"] is True
    cfg = config.from_namespace(params, "02_demo")
    assert cfg.allow_hub is True and not hub.is_offline() and os.environ["TRANSFORMERS_OFFLINE"] == "0"
    assert hub.check_model_ref("Qwen/Qwen2.5-VL-3B-Instruct") == "Qwen/Qwen2.5-VL-3B-Instruct"  # online: passes
    config.from_namespace({"profile": "gpu", "seed": 0}, "02_demo")  # without the opt-in: offline again
    assert hub.is_offline()


def test_allow_hub_is_refused_outside_the_gpu_profile(nb, hub_state):
    (nb / "params" / "smoke" / "02_demo.yaml").write_text("allow_hub: true\n")
    with pytest.raises(config.ConfigError, match="only the gpu profile may use the hub"):
        config.load_params("smoke", "02_demo")
    (nb / "params" / "smoke" / "02_demo.yaml").write_text("allow_hub: 1\n")
    with pytest.raises(config.ConfigError, match="allow_hub.*expected bool"):
        config.load_params("smoke", "02_demo")


def test_hub_id_recognition():
    assert hub.looks_like_hub_id("Qwen/Qwen2.5-VL-3B-Instruct") and hub.looks_like_hub_id("gpt2")
    assert not hub.looks_like_hub_id("/models/Qwen") and not hub.looks_like_hub_id("runs/smoke/sft/final")
    assert not hub.looks_like_hub_id("./local") and not hub.looks_like_hub_id("~/m")

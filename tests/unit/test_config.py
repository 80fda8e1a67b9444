"""Params validation: every params file against its notebook, and the error messages of bad files."""

from __future__ import annotations

import pytest

from repro import config, paths, runner
from tests.conftest import write_notebook

PARAMS = 'profile = "smoke"\nseed = 0\nlr = 0.1\nname = "x"\nflags = [1, 2]\nuse_gpu = False\ndata_dir = ""\n'


@pytest.mark.parametrize("profile", paths.PROFILES)
def test_every_params_file_validates_against_its_notebook(profile):
    files = sorted((paths.PARAMS / profile).glob("*.yaml"))
    assert files, f"no params files in params/{profile}"
    for f in files:
        assert paths.notebook(f.stem).exists(), f"{f} has no notebook"
        # gpu files may name real-data paths that do not exist on this machine; gpu-dryrun's exist after
        # `python -m repro.dryrun` (make dryrun) only
        params = config.load_params(profile, f.stem, check_paths=profile not in ("gpu", "gpu-dryrun"))
        assert params["profile"] == profile
        assert "seed" in params, f"{f}: every stage takes a seed"


def test_every_notebook_has_params_in_every_profile():
    for stem in runner.stages():
        for profile in paths.PROFILES:
            assert paths.params_file(profile, stem).exists(), f"missing params/{profile}/{stem}.yaml"


@pytest.fixture
def nb(tmp_repo):
    write_notebook(tmp_repo / "notebooks" / "01_demo.ipynb", PARAMS, ["pass"])
    (tmp_repo / "params" / "smoke").mkdir(parents=True)
    return tmp_repo


def _write(repo, text):
    (repo / "params" / "smoke" / "01_demo.yaml").write_text(text)


def test_valid_file_loads(nb):
    _write(nb, "seed: 3\nlr: 1\nflags: [3]\n")  # an int is a valid float
    assert config.load_params("smoke", "01_demo") == {"seed": 3, "lr": 1, "flags": [3], "profile": "smoke"}


@pytest.mark.parametrize("text, words", [
    ("sede: 1\n", ["params/smoke/01_demo.yaml", "sede", "1"]),
    ("seed: one\n", ["params/smoke/01_demo.yaml", "seed", "'one'", "int"]),
    ("seed: true\n", ["seed", "True", "int"]),
    ("use_gpu: 1\n", ["use_gpu", "bool"]),
    ("data_dir: does/not/exist\n", ["data_dir", "does/not/exist", "does not exist"]),
    ("profile: cpu\n", ["profile", "'cpu'"]),
    ("seed: {a: 1}\n", ["seed", "nested"]),
    ("seed: [1,\n", ["not valid YAML"]),
])
def test_bad_file_message_names_file_key_value(nb, text, words):
    _write(nb, text)
    with pytest.raises(config.ConfigError) as e:
        config.load_params("smoke", "01_demo")
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_from_namespace_checks_types(nb):
    cfg = config.from_namespace({"profile": "smoke", "seed": 1, "lr": 0.5, "other": 1}, "01_demo")
    assert cfg.seed == 1 and cfg.stem == "01_demo" and not hasattr(cfg, "other")
    with pytest.raises(config.ConfigError, match="lr"):
        config.from_namespace({"profile": "smoke", "lr": "fast"}, "01_demo")
    with pytest.raises(config.ConfigError, match="profile"):
        config.from_namespace({"profile": "laptop"}, "01_demo")


def test_markdown_tables_label_ours_and_paper_rows():
    import pandas as pd

    from repro.report import side_by_side
    from repro.results import to_markdown

    ours = pd.DataFrame({"acc": [0.5]}, index=pd.Index(["SFT"], name="model"))
    md = to_markdown(side_by_side(ours, ours * 2, "paper X"))
    assert "| ours (this repo) · SFT | 0.500 |" in md and "| paper X · SFT | 1.000 |" in md


def test_markdown_tables_leave_out_a_plain_row_number_index():
    import pandas as pd

    from repro.results import to_markdown

    md = to_markdown(pd.DataFrame({"condition": ["a", "b"], "acc": [0.5, 0.25]}))
    assert md.splitlines()[0] == "| condition | acc |" and md.splitlines()[2] == "| a | 0.500 |"
    named = to_markdown(pd.DataFrame({"acc": [0.5]}, index=pd.Index([3], name="step")))
    assert named.splitlines()[0] == "| step | acc |" and named.splitlines()[2] == "| 3 | 0.500 |"
    # records in a cell (a claim's `learning`) read as fields, numbers formatted like the rest
    cell = to_markdown(pd.DataFrame({"learning": [[{"method": "RL", "difference": 0.0741}, {"method": "B"}]]}))
    assert cell.splitlines()[2] == "| method RL, difference 0.074; method B |"


def test_schema_knobs_listed_as_none_take_the_params_file_then_the_default(tmp_repo):
    """04-06 list the knobs their exercises name as None in the parameters cell: unset, a knob takes the profile's
    params file (as a headless run, so JupyterLab trains the same arms), set by the reader it wins; its type is the
    config dataclass's."""
    from repro import papers

    write_notebook(tmp_repo / "notebooks" / "04_rl.ipynb", 'profile = "smoke"\numed_k = None\n', ["pass"])
    (tmp_repo / "params" / "smoke").mkdir(parents=True)
    (tmp_repo / "params" / "smoke" / "04_rl.yaml").write_text("profile: smoke\nseed: 0\numed_k: 3\numed_steps: 5\n")
    default = papers.declared()["umed_lr"][1]
    cfg = config.from_namespace({"profile": "smoke", "umed_k": None}, "04_rl")
    assert (cfg.umed_k, cfg.umed_steps, cfg.umed_lr) == (3, 5, default)
    cfg = config.from_namespace({"profile": "smoke", "umed_k": 2}, "04_rl")
    assert (cfg.umed_k, cfg.umed_steps) == (2, 5)
    assert config.declared_parameters("04_rl")["umed_k"][0] == "int"
    with pytest.raises(config.ConfigError, match="umed_k"):
        config.from_namespace({"profile": "smoke", "umed_k": "two"}, "04_rl")
    # a value other than None in the cell would be a second default: refused
    write_notebook(tmp_repo / "notebooks" / "04_rl.ipynb", 'profile = "smoke"\numed_k = 7\n', ["pass"])
    with pytest.raises(config.ConfigError, match="redefines"):
        config.declared_parameters("04_rl")

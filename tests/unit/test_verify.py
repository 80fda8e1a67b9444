"""`make verify` (repro.verify): the comparison on fixture results, the scratch copy, and one real rerun of a tiny
notebook in a throwaway git repo (committed results must stay untouched)."""

from __future__ import annotations

import copy
import json
import subprocess

import pytest

from repro import verify
from tests.conftest import write_notebook

CLAIM = {"paper": "umed", "claim": "AAR beats SFT", "difference": 0.05, "ci_low": 0.01, "ci_high": 0.09,
         "p_value": 0.001, "p_holm": 0.002, "verdict": "reproduced"}
OLD_STYLE = {"paper": "zhu", "claim": "GRPO beats SFT", "difference": 0.03, "ci95": 0.02,
             "verdict": "inconclusive (CI contains 0)"}


def rec(claims, **metrics):
    return {"metrics": {"claims": claims, **metrics}, "provenance": {"wall_time_s": 1.0}}


def test_flatten_known_answer():
    got = verify.flatten({"a": {"b": 1, "c": [2.5, {"d": 3}]}, "e": True, "f": None, "g": float("nan"), "h": "x"})
    assert got == {"a.b": 1.0, "a.c[0]": 2.5, "a.c[1].d": 3.0}


def test_compare_flags_ci_verdicts_missing_stages_and_numbers():
    committed = {"04_rl": rec([CLAIM, OLD_STYLE, {**CLAIM, "claim": "gone"}], acc=0.5, n=10, seconds={"umed": 3.0}),
                 "05_ablations": rec([CLAIM]), "06_generalization": None}
    rerun = copy.deepcopy(committed)
    r04 = rerun["04_rl"]["metrics"]
    r04["claims"][0]["difference"] = 0.12            # outside the committed [0.01, 0.09]
    r04["claims"][1]["verdict"] = "opposite"          # a verdict flips; 0.03 stays inside 0.03 ± 0.02
    r04["claims"] = r04["claims"][:2] + [{**CLAIM, "claim": "brand new"}]
    r04["acc"], r04["seconds"] = 0.55, {"umed": 99.0}  # a number moves; timings are never compared
    rerun["05_ablations"] = None                      # the rerun of 05 failed
    out = verify.compare(committed, rerun)

    st = out["stages"].set_index("stage")
    assert st.loc["04_rl", "status"] == "compared" and st.loc["04_rl", "outside CI"] == 1
    assert st.loc["04_rl", "verdicts changed"] == 1 and st.loc["04_rl", "numbers changed"] == 1
    assert st.loc["04_rl", "numbers compared"] == 2  # acc and n; seconds skipped
    assert st.loc["05_ablations", "status"] == "no rerun results"
    assert st.loc["06_generalization", "status"] == "no committed results"

    cl = out["claims"].set_index("claim")
    assert cl.loc["AAR beats SFT", "position"] == "OUTSIDE CI" and not cl.loc["AAR beats SFT", "verdict changed"]
    assert cl.loc["GRPO beats SFT", "position"] == "inside CI" and cl.loc["GRPO beats SFT", "verdict changed"]
    assert cl.loc["GRPO beats SFT", "ci_low"] == pytest.approx(0.01)  # old results: difference ± ci95
    assert cl.loc["gone", "position"] == "missing in rerun"
    assert cl.loc["brand new", "position"] == "new claim (not committed)"

    nu = out["numbers"].set_index("number")
    assert nu.loc["acc", "status"] == "changed" and nu.loc["acc", "abs diff"] == pytest.approx(0.05)
    assert nu.loc["n", "status"] == "same"

    md = verify.render(out, "t")
    assert "OUTSIDE CI" in md and "| YES |" in md and "no rerun results" in md
    assert "1 of 2 changed" in md and "| 04_rl | acc |" in md


def test_inside_ci_edges_and_tolerance():
    c = rec([{**CLAIM, "difference": 0.09}], x=1.0)
    r = rec([{**CLAIM, "difference": 0.09}], x=1.0 + 1e-9)  # the CI is closed; float noise is "same"
    out = verify.compare({"04_rl": c}, {"04_rl": r})
    assert out["claims"]["position"].tolist() == ["inside CI"]
    assert out["numbers"]["status"].tolist() == ["same"]


@pytest.fixture
def git_repo(tmp_path):
    """A throwaway git repo: a tiny stage 01 that saves x, a stage 02 params, committed results with x=5."""
    repo = tmp_path / "repo"
    body = ["import repro.config, repro.results\ncfg = repro.config.from_namespace(globals(), '01_demo')",
            "repro.results.save(cfg, {'x': x, 'claims': [{'paper': 'p', 'claim': 'c', 'difference': x / 10,"
            " 'ci_low': 0.0, 'ci_high': 0.6, 'verdict': 'reproduced'}]})"]
    write_notebook(repo / "notebooks" / "01_demo.ipynb", 'profile = "smoke"\nseed = 0\nx = 1\n', body)
    write_notebook(repo / "notebooks" / "02_later.ipynb", 'profile = "smoke"\nseed = 0\n', ["pass"])
    write_notebook(repo / "notebooks" / "07_report.ipynb", 'profile = "smoke"\n', ["pass"])
    for stem, text in (("01_demo", "x: 7\n"), ("02_later", "seed: 0\n"), ("07_report", "profile: smoke\n")):
        (repo / "params" / "smoke").mkdir(parents=True, exist_ok=True)
        (repo / "params" / "smoke" / f"{stem}.yaml").write_text(text)
    committed = {"stage": "01_demo", "metrics": {"x": 5, "claims": [
        {"paper": "p", "claim": "c", "difference": 0.5, "ci_low": 0.4, "ci_high": 0.6, "verdict": "reproduced"}]}}
    (repo / "results" / "smoke").mkdir(parents=True)
    (repo / "results" / "smoke" / "01_demo.json").write_text(json.dumps(committed))
    (repo / ".gitignore").write_text("runs/\n")
    for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, capture_output=True)
    return repo


def test_stages_to_run(git_repo):
    assert verify.stages_to_run(git_repo, "smoke", None) == ["01_demo", "02_later"]  # 07 never reruns
    assert verify.stages_to_run(git_repo, "smoke", ["2"]) == ["02_later"]
    with pytest.raises(SystemExit, match="--only 05: no stage"):
        verify.stages_to_run(git_repo, "smoke", ["05"])


def test_prepare_scratch_clones_drops_rerun_results_and_copies_runs(git_repo, tmp_path):
    (git_repo / "runs" / "smoke" / "data").mkdir(parents=True)
    (git_repo / "runs" / "smoke" / "data" / "d.txt").write_text("data")
    (git_repo / "runs" / "smoke" / "notebooks").mkdir()
    scratch = tmp_path / "scratch"
    verify.prepare_scratch(git_repo, scratch, "smoke", ["02_later"], log=lambda s: None)
    assert (scratch / "notebooks" / "01_demo.ipynb").exists() and (scratch / verify.MARKER).exists()
    assert (scratch / "results" / "smoke" / "01_demo.json").exists()  # not rerun: kept
    assert (scratch / "runs" / "smoke" / "data" / "d.txt").read_text() == "data"  # later stage: inputs copied
    assert not (scratch / "runs" / "smoke" / "notebooks").exists()
    verify.prepare_scratch(git_repo, scratch, "smoke", ["01_demo"], log=lambda s: None)  # reuses its own folder
    assert not (scratch / "results" / "smoke" / "01_demo.json").exists()
    assert not (scratch / "runs").exists()
    other = tmp_path / "precious"
    other.mkdir()
    with pytest.raises(SystemExit, match="not a verify scratch folder"):
        verify.prepare_scratch(git_repo, other, "smoke", ["01_demo"])


def test_verify_reruns_in_scratch_and_leaves_committed_results(git_repo, tmp_repo, monkeypatch, capsys):
    from repro import paths

    for name, sub in [("ROOT", ""), ("RESULTS", "results")]:
        monkeypatch.setattr(paths, name, git_repo / sub if sub else git_repo)
    before = (git_repo / "results" / "smoke" / "01_demo.json").read_text()
    scratch = git_repo / "runs" / "verify" / "smoke"
    assert verify.main(["--profile", "smoke", "--only", "01"]) == 0
    assert (git_repo / "results" / "smoke" / "01_demo.json").read_text() == before  # untouched
    assert json.loads((scratch / "results" / "smoke" / "01_demo.json").read_text())["metrics"]["x"] == 7
    md = (scratch / "verify.md").read_text()
    assert "| 01_demo | x | 5 | 7 | 2 | changed |" in md
    assert "OUTSIDE CI" in md  # rerun difference 0.7 vs committed CI [0.4, 0.6]
    assert "full comparison in" in capsys.readouterr().out
    # a failing rerun: exit status non-zero, the comparison still written
    (git_repo / "params" / "smoke" / "01_demo.yaml").write_text("x: 'not an int'\n")
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "bad"], cwd=git_repo,
                   check=True)
    assert verify.main(["--profile", "smoke", "--only", "01"]) != 0
    assert "no rerun results" in (scratch / "verify.md").read_text()
    with pytest.raises(SystemExit, match=r"--record: the rerun failed \(exit status"):
        verify.main(["--profile", "smoke", "--only", "01", "--record"])
    assert not list((git_repo / "results" / "smoke").glob("verify_*.json"))


# ----------------------------------------------------------------------------------------------- --isa
def with_isa(record, isa):
    return {**record, "provenance": {**record.get("provenance", {}), "hardware": {"cpu_capability": isa}}}


def test_isa_resolution_and_the_verdicts_held_line():
    committed = {"04_rl": with_isa(rec([CLAIM]), "AVX2"), "05_ablations": with_isa(rec([]), "AVX2")}
    assert verify.resolve_isa("committed", committed) == "avx2"
    assert verify.resolve_isa(None, committed) is None and verify.resolve_isa("native", committed) is None
    assert verify.resolve_isa("AVX512", committed) == "avx512"
    assert verify.ISA_ENV["avx2"]["ATEN_CPU_CAPABILITY"] == "avx2"
    with pytest.raises(SystemExit, match="--isa 'sse': expected committed, native or one of default, avx2, avx512, "
                                         "aten-default"):
        verify.resolve_isa("sse", committed)
    with pytest.raises(SystemExit, match=r"record several \(AVX2, AVX512\)"):
        verify.resolve_isa("committed", {**committed, "06_generalization": with_isa(rec([]), "AVX512")})
    with pytest.raises(SystemExit, match="record none"):
        verify.resolve_isa("committed", {"04_rl": rec([CLAIM])})

    rerun = {"04_rl": with_isa(rec([{**CLAIM, "verdict": "opposite"}, {**CLAIM, "claim": "new"}]), "AVX512")}
    out = verify.compare({"04_rl": committed["04_rl"]}, rerun)
    st = out["stages"].set_index("stage")
    assert (st.loc["04_rl", "isa committed"], st.loc["04_rl", "isa rerun"]) == ("AVX2", "AVX512")
    line = verify.verdicts_held(out["claims"])
    # +0.05 [+0.01, +0.09] at Holm factor 2: c = 0.0204 * z_0.9875 = 0.0457, a rerun ~ N(0.05, 0.0289^2) stays
    # above it with probability Phi(0.149) = 0.559, so 0.44 of a verdict was expected to change
    assert verify.replication.agreement(CLAIM) == pytest.approx(0.559, abs=0.002)
    assert line == ("verdicts held: 0 of 1 (a rerun was expected to change 0.4 of the 1 it predicts); changed: "
                    "04_rl umed 'AAR beats SFT' (reproduced -> opposite)")
    assert line in verify.render(out, "t")


def test_verify_with_forced_kernels_reruns_on_them_in_its_own_scratch(git_repo, tmp_repo, monkeypatch, capsys):
    """--isa default: the rerun's stage records torch's DEFAULT kernels (every x86 CPU has them), in
    runs/verify/smoke-default; a forced ISA this CPU lacks is refused before anything runs."""
    from repro import paths

    for name, sub in [("ROOT", ""), ("RESULTS", "results")]:
        monkeypatch.setattr(paths, name, git_repo / sub if sub else git_repo)
    assert verify.main(["--profile", "smoke", "--only", "01", "--isa", "default"]) == 0
    scratch = git_repo / "runs" / "verify" / "smoke-default"
    res = json.loads((scratch / "results" / "smoke" / "01_demo.json").read_text())
    assert res["provenance"]["hardware"]["cpu_capability"] == "DEFAULT"
    out = capsys.readouterr().out
    assert "torch kernels forced to DEFAULT (ATEN_CPU_CAPABILITY=default" in out
    assert "verify: verdicts held: 1 of 1" in out and "warning" not in out
    assert "rerun kernels forced to DEFAULT" in (scratch / "verify.md").read_text()
    # the cheap perturbation (ATen's portable kernels only), recorded for stage 07's ledger
    assert verify.main(["--profile", "smoke", "--only", "01", "--isa", "aten-default", "--record"]) == 0
    got = json.loads((git_repo / "results" / "smoke" / "verify_aten-default.json").read_text())
    assert (got["isa"], got["env"], got["held"], got["compared"]) == (
        "aten-default", {"ATEN_CPU_CAPABILITY": "default"}, 1, 1)
    assert got["stages"]["01_demo"]["rerun_capability"] == "DEFAULT"
    assert got["claims"][0]["verdict_rerun"] == "reproduced" and got["claims"][0]["rerun"] == pytest.approx(0.7)
    assert "--isa aten-default --record" in got["command"]
    monkeypatch.setattr(verify, "probe_isa", lambda env: "AVX2")  # as on a CPU without AVX-512
    with pytest.raises(SystemExit, match="torch uses AVX2 kernels with ATEN_CPU_CAPABILITY=avx512 on this CPU"):
        verify.main(["--profile", "smoke", "--only", "01", "--isa", "avx512"])
    assert not (git_repo / "runs" / "verify" / "smoke-avx512").exists()


def with_threads(record, n):
    return {**record, "provenance": {**record.get("provenance", {}), "hardware": {"torch_threads": n}}}


def test_threads_resolution():
    committed = {"02_sft": with_threads(rec([]), 2), "04_rl": with_threads(rec([CLAIM]), 2)}
    assert verify.resolve_threads("committed", committed) == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert verify.resolve_threads("8", committed)["OMP_NUM_THREADS"] == "8"
    assert verify.resolve_threads(None, committed) == {} and verify.resolve_threads("native", committed) == {}
    with pytest.raises(SystemExit, match=r"--threads '0': expected committed, native or a positive integer"):
        verify.resolve_threads("0", committed)
    with pytest.raises(SystemExit, match=r"record several \(2, 4\)"):
        verify.resolve_threads("committed", {**committed, "05_ablations": with_threads(rec([]), 4)})
    with pytest.raises(SystemExit, match="record none"):
        verify.resolve_threads("committed", {"04_rl": rec([CLAIM])})

"""pyproject.toml and environment.yml carry the same exact pins."""

from __future__ import annotations

import re
import tomllib

import yaml

from repro import paths


def _pins(reqs):
    out = {}
    for r in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^;\s]+)", r.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_pyproject_and_environment_yml_agree():
    proj = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["project"]
    py = _pins(proj["dependencies"] + proj["optional-dependencies"]["dev"])
    env = yaml.safe_load((paths.ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _pins(pip) == py
    assert all("==" in r for r in proj["dependencies"]), "every runtime dependency is pinned exactly"
    assert py["torch"] == "2.14.1" and py["torchvision"] == "0.29.1"

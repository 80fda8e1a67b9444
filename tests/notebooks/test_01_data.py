"""Papermill smoke run of notebook 01 through the runner, asserting the sizes and artifacts it must produce."""

from __future__ import annotations

import json

import pytest

from repro import paths
from tests.conftest import run_stages

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result():
    run_stages("--profile", "smoke", "--only", "01", "--force")
    return json.loads(paths.results_file("smoke", "01_data").read_text())


def test_01_data_smoke(result):
    m = result["metrics"]
    assert m["n_images"] == 19 * 12  # 19 classes (6 sources: normal + categories) x 12 images
    assert sum(m["images_per_split"].values()) == m["n_images"]
    for task in ("vqa", "mcq", "instruct", "conv", "report"):
        assert m["rows"][task]["train"] > 0 and m["rows"][task]["test"] > 0
    assert result["provenance"]["seed"] == 0 and result["provenance"]["git"]["sha"]
    for name in ("gallery.png", "gallery.pdf", "distributions.png", "dataset_card.md", "dataset_card.csv"):
        assert (paths.figures_dir("smoke") / f"01_data_{name}").exists(), name
    executed = json.loads((paths.run_dir("smoke") / "notebooks" / "01_data.ipynb").read_text())
    assert not any("ipywidgets" in json.dumps(c.get("outputs", [])) for c in executed["cells"])

"""Shared figure style and saving (PNG for the README, PDF for papers); figures are staged until save()."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from repro import paths
from repro.results import pending_dir

PALETTE = "colorblind"


def setup_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "axes.titleweight": "bold", "figure.titleweight": "bold"})


def save_figure(fig, cfg, name: str) -> Path:
    """Stage `fig` as <stem>_<name>.png/.pdf; it lands in figures/<profile>/ when results.save() runs."""
    d = pending_dir(cfg.profile, cfg.stem)
    for ext in ("png", "pdf"):
        fig.savefig(d / f"{cfg.stem}_{name}.{ext}")
    return paths.figures_dir(cfg.profile) / f"{cfg.stem}_{name}.png"

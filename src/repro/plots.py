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


def loss_curves(panels: dict[str, dict], title: str = "Training loss"):
    """One panel per entry of `panels` ({panel title: {label: (step, loss) DataFrame}}), one line per run."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.8), squeeze=False)
    for ax, (panel, histories) in zip(axes[0], panels.items()):
        for label, df in histories.items():
            if len(df):
                ax.plot(df["step"], df["loss"], label=label, lw=1.8)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_title(panel)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def sample_generations(rows: list[dict], predictions: list[str], n: int = 6, title: str = "Sample generations"):
    """Image with the true box (green) and the predicted box (red, dashed), question, answer and truth."""
    import numpy as np

    from repro.data import schema, tasks
    from repro.data.viz import draw_box

    n = min(n, len(rows))
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n, 4.6), squeeze=False)
    for ax, row, pred in zip(axes[0], rows[:n], predictions[:n]):
        img = np.asarray(row["image"])
        h, w = img.shape[:2]
        ax.imshow(img, interpolation="nearest")
        for box in row.get("bboxes") or []:
            draw_box(ax, box, color="#2ca02c", lw=1.6)
        box = tasks.parse_instruct(pred).get("bbox") or schema.parse_bbox(pred)
        if box:  # percent -> pixels
            draw_box(ax, [box[0] * w / 100, box[1] * h / 100, box[2] * w / 100, box[3] * h / 100],
                     color="#d62728", ls="--", lw=1.6)
        ax.set_xticks([])
        ax.set_yticks([])
        truth = row["messages"][-1]["content"]
        ax.set_title(f"{row['source']}: {row['category']}", fontsize=9)
        ax.set_xlabel(_wrap(f"model: {pred}", 38) + "\n" + _wrap(f"truth: {truth}", 38), fontsize=7, loc="left")
    fig.suptitle(title + "  (green: true box, red dashed: predicted box)")
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int, max_lines: int = 4) -> str:
    import textwrap

    lines = textwrap.wrap(text, width)
    return "\n".join(lines[:max_lines]) + (" …" if len(lines) > max_lines else "")

"""Figures of stage 03: reward distributions, reward correlations, localized noising, VRR attention maps."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from repro.data.viz import draw_box
from repro.metrics import source_order


def distributions(long: pd.DataFrame, n_cols: int = 4):
    """One panel per reward: its values on the SFT samples per source (box + points); only the sources where the
    reward applies (NaN = not applicable is dropped)."""
    df = long.dropna(subset=["value"])
    names = list(dict.fromkeys(df["reward"]))
    n_rows = -(-len(names) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.4 * n_cols, 2.9 * n_rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        sub = df[df["reward"] == name]
        order = source_order(sub["source"].unique())
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated `vert` to bxp
            warnings.filterwarnings("ignore", message=".*vert: bool.*")
            sns.boxplot(data=sub, x="source", y="value", order=order, ax=ax, color="0.88", fliersize=0, linewidth=0.8)
        sns.stripplot(data=sub, x="source", y="value", order=order, ax=ax, size=3, alpha=0.6, jitter=0.25)
        ax.set_title(f"{name} ({'/'.join(dict.fromkeys(sub['task']))})", fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("reward", fontsize=8)
        ax.tick_params(axis="x", labelrotation=35, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("Reward distributions on SFT-model samples per source (panel title: reward (tasks))")
    fig.tight_layout()
    return fig


def correlations(wide: pd.DataFrame, rewards: list[str], min_pairs: int = 5):
    """Spearman correlation between rewards over the samples where both apply; blank where fewer than
    `min_pairs` samples have both (rewards of different tasks never meet) or a reward is constant."""
    cols = [r for r in rewards if r in wide and wide[r].notna().sum() >= min_pairs]
    corr = wide[cols].corr(method="spearman", min_periods=min_pairs)
    fig, ax = plt.subplots(figsize=(0.55 * len(cols) + 2.5, 0.5 * len(cols) + 2))
    sns.heatmap(corr, mask=corr.isna(), vmin=-1, vmax=1, cmap="vlag", annot=True, fmt=".2f", annot_kws={"size": 7},
                square=True, cbar_kws={"shrink": 0.7}, ax=ax)
    ax.set_title("Spearman correlation between rewards on the same samples\n(blank: never on the same task, or "
                 "constant)")
    fig.tight_layout()
    return fig, corr


def _show(ax, img, title: str, boxes=(), cmap=None):
    ax.imshow(img, cmap=cmap, interpolation="nearest")
    for b in boxes:
        draw_box(ax, b)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def noising(examples: list[dict]):
    """Rows: examples {"image", "bboxes", "heatmap", "panels": {title: noised image}, "label"}; columns: the image
    with the true box, the tool's heatmap, then each noised version."""
    n_cols = 2 + max(len(e["panels"]) for e in examples)
    fig, axes = plt.subplots(len(examples), n_cols, figsize=(1.9 * n_cols, 2.05 * len(examples)), squeeze=False)
    for row, e in zip(axes, examples):
        for ax in row:
            ax.axis("off")
        _show(row[0], np.asarray(e["image"]), e.get("label", "image"), e.get("bboxes", ()))
        _show(row[1], e["heatmap"], "heatmap", cmap="magma")
        for ax, (title, img) in zip(row[2:], e["panels"].items()):
            _show(ax, np.asarray(img), title, e.get("bboxes", ()))
        for ax in row[: 2 + len(e["panels"])]:
            ax.axis("on")
    fig.suptitle("MMedPO localized lesion noising: released replace rule vs the paper's blend (green: true box)")
    fig.tight_layout()
    return fig


def vrr_maps(rows: list[dict], maps: list[np.ndarray], captions: list[str]):
    """Each image with the anchor tokens' attention over its patches (overlay) and the true box (green)."""
    n = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.9), squeeze=False)
    for ax, row, m, cap in zip(axes[0], rows, maps, captions):
        img = np.asarray(row["image"])
        h, w = img.shape[:2]
        ax.imshow(img, interpolation="nearest")
        # Each patch value drawn over its pixel block (extent = image edges): the grid lines up with the pixels.
        ax.imshow(m, cmap="magma", alpha=0.55, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
        for b in row.get("bboxes") or []:
            draw_box(ax, b, lw=1.6)
        ax.set_title(f"{row['source']}: {row['category']}", fontsize=8)
        ax.set_xlabel(cap, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("VRR: attention of the class-name tokens over the image patches (green: true box)")
    fig.tight_layout()
    return fig


def probe_heatmap(table: pd.DataFrame):
    """reward x probe: the probe's gain over the empty answer relative to the truth's (1 = as good as the truth)."""
    g = table.pivot(index="reward", columns="probe", values="gain").astype(float)
    fig, ax = plt.subplots(figsize=(1.3 * g.shape[1] + 3, 0.42 * g.shape[0] + 1.8))
    sns.heatmap(g.clip(0, 2), mask=g.isna(), vmin=0, vmax=2, cmap="YlOrRd", annot=g.round(2), fmt="",
                annot_kws={"size": 7}, ax=ax, cbar_kws={"label": "gain (1 = as much as the truth)"})
    ax.set_title("Hacking probes: share of the true answer's reward a probe keeps\n(>= 0.9 fooled, > 1 the probe "
                 "pays more; blank: reward not applicable)")
    fig.tight_layout()
    return fig

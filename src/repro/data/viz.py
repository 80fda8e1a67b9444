"""Gallery figures of image records (SynthMed or real loaders): one row per source, one column per class."""

from __future__ import annotations

import matplotlib.patches as mpatches
import matplotlib.pyplot as plt
import seaborn as sns

from repro.data.schema import NORMAL, SOURCES


def draw_box(ax, box, color=None, ls: str = "-", lw: float = 1.2) -> None:
    """A pixel box [x1, y1, x2, y2] (x2/y2 exclusive) on an imshow axis; default colour: the true-box green."""
    x1, y1, x2, y2 = box
    # Pixel edges sit at -0.5 in imshow coordinates.
    ax.add_patch(mpatches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=lw, ls=ls,
                                    edgecolor=color or sns.color_palette("bright")[2]))


def show_record(ax, record, draw_boxes: bool = True, title: str | None = None) -> None:
    """Image on `ax`, its bboxes as rectangles, and a short title (source / category / region)."""
    ax.imshow(record["image"], interpolation="nearest")
    if draw_boxes:
        for box in record["bboxes"]:
            draw_box(ax, box)
    if title is None:
        title = f"{record['category']}\n{record['region']}"
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def gallery(records, per_cell: int = 1, draw_boxes: bool = True):
    """Figure with a row per source and columns per class (normal first); `per_cell` images side by side."""
    by_cell: dict[tuple[str, str], list] = {}
    for r in records:
        by_cell.setdefault((r["source"], r["category"]), []).append(r)
    sources = [s for s in SOURCES if any(k[0] == s for k in by_cell)]
    classes = {s: [NORMAL] + SOURCES[s]["categories"] for s in sources}
    n_cols = max(len(c) for c in classes.values()) * per_cell
    fig, axes = plt.subplots(len(sources), n_cols, figsize=(1.35 * n_cols, 1.55 * len(sources)), squeeze=False)
    for i, s in enumerate(sources):
        for j in range(n_cols):
            axes[i, j].axis("off")
        for ci, cat in enumerate(classes[s]):
            for k, rec in enumerate(by_cell.get((s, cat), [])[:per_cell]):
                ax = axes[i, ci * per_cell + k]
                ax.axis("on")
                show_record(ax, rec, draw_boxes, title=f"{cat}\n{rec['region']}" if k == 0 else rec["region"])
        axes[i, 0].set_ylabel(SOURCES[s]["paper_name"], fontsize=8)
        axes[i, 0].axis("on")
    fig.tight_layout()
    return fig

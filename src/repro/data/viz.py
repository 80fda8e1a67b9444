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


# ---------------------------------------------------------------- Dr-LLaVA's decision tree as a diagram
def tree_graph(paths=None) -> tuple[list[tuple[int, str]], list[tuple[tuple[int, str], tuple[int, str]]]]:
    """(nodes, edges) of the diagnostic decision tree: a node is (category 1..5, label), one per label a category
    can take on some path (a label shared by paths, e.g. "suitable", is one node); an edge joins the labels of
    consecutive categories on a path. Both in the order of decision_tree.PATHS. paths: {diagnosis: 5 labels}."""
    from repro.data import decision_tree

    paths = decision_tree.PATHS if paths is None else paths
    nodes: list[tuple[int, str]] = []
    edges: list[tuple[tuple[int, str], tuple[int, str]]] = []
    for labels in paths.values():
        steps = [(c, lab) for c, lab in enumerate(labels, start=1)]
        nodes += [n for n in steps if n not in nodes]
        edges += [e for e in zip(steps, steps[1:]) if e not in edges]
    return nodes, edges


def tree_figure(answers: list | None = None, title: str = "Dr-LLaVA's diagnostic decision tree"):
    """The decision tree, one row per category (quality check at the top, diagnosis at the bottom), each path's
    leaf named by its diagnosis. answers: optional parsed labels of one conversation's turns 1..5 (None =
    unparseable), drawn as a red dashed walk, so a reader sees where it left every valid path."""
    import matplotlib.pyplot as plt

    from repro.data import decision_tree

    nodes, edges = tree_graph()
    pos = {}
    for c in range(1, 6):
        row = [n for n in nodes if n[0] == c]
        for i, n in enumerate(row):
            pos[n] = ((i + 0.5) / len(row), -c)
    fig, ax = plt.subplots(figsize=(9, 5))
    for a, b in edges:
        ax.plot(*zip(pos[a], pos[b]), color="0.6", lw=1.5, zorder=1)
    if answers:
        walk = [pos.get((c, lab)) for c, lab in enumerate(answers, start=1)]
        for p, q in zip(walk, walk[1:]):
            if p is not None and q is not None:
                ax.plot(*zip(p, q), color="tab:red", lw=2.5, ls="--", zorder=2)
    for n, (x, y) in pos.items():
        ax.text(x, y, n[1], ha="center", va="center", fontsize=9, zorder=3,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.3"})
    leaves: dict = {}
    for diagnosis, labels in decision_tree.PATHS.items():  # blood and clot end on the same leaf
        leaves.setdefault((5, labels[-1]), []).append(diagnosis)
    for leaf, names in leaves.items():
        x, y = pos[leaf]
        ax.annotate(" / ".join(names), (x, y), (x, y - 0.45), ha="center", fontsize=8, color="0.35")
    ax.set_yticks([-c for c in range(1, 6)], [decision_tree.CATEGORY_NAMES[c] for c in range(1, 6)])
    ax.set_xticks([])
    ax.set_xlim(0, 1)
    ax.set_ylim(-5.8, -0.5)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title + (" (red: the conversation's answers)" if answers else ""))
    fig.tight_layout()
    return fig

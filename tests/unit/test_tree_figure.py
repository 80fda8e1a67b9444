"""Dr-LLaVA's decision tree as a graph and a figure (repro.data.viz)."""

from __future__ import annotations

import matplotlib

from repro.data import viz

matplotlib.use("Agg")


def test_tree_graph_by_hand():
    nodes, edges = viz.tree_graph()
    # labels per category on some path: 2 + 3 + 3 + 4 + 4; "inadequate" at categories 3, 4 and 5 is three nodes
    assert len(nodes) == 16 and [c for c, _ in nodes].count(4) == 4
    assert {(3, "inadequate"), (4, "inadequate"), (5, "inadequate")} <= set(nodes)
    # consecutive pairs on some path: 3 + 4 + 4 + 4, shared prefixes counted once
    assert len(edges) == 15
    assert ((3, "abnormal"), (4, "plasma cells")) in edges and ((4, "plasma cells"), (5, "AML")) not in edges
    small = {"a": ("x", "y", "z", "u", "v"), "b": ("x", "y", "w", "u", "v")}
    assert viz.tree_graph(small) == ([(1, "x"), (2, "y"), (3, "z"), (4, "u"), (5, "v"), (3, "w")],
                                     [((1, "x"), (2, "y")), ((2, "y"), (3, "z")), ((3, "z"), (4, "u")),
                                      ((4, "u"), (5, "v")), ((2, "y"), (3, "w")), ((3, "w"), (4, "u"))])


def test_tree_figure_draws_a_walk():
    fig = viz.tree_figure(["suitable", "adequate", "abnormal", "plasma cells", "AML"])
    ax = fig.axes[0]
    red = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(ax.texts) == 16 + 4 and len(red) == 4  # 16 nodes + 4 leaves' diagnoses; the walk's 4 steps

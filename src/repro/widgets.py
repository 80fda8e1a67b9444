"""ipywidgets for JupyterLab. Notebooks call these only when `interactive` is True; params files set it False,
so papermill runs never build them."""

from __future__ import annotations


def data_browser(data_dir):
    """Pick a task, split and row; see the image (true boxes drawn) and the conversation text."""
    import ipywidgets as W
    import matplotlib.pyplot as plt

    from repro.data import build
    from repro.data.viz import show_record

    out = W.Output()
    task = W.Dropdown(options=list(build.TASKS), description="task")
    split = W.Dropdown(options=["train", "val", "test"], description="split")
    idx = W.IntSlider(min=0, max=0, description="row")
    cache = {}

    def current():
        key = task.value
        if key not in cache:
            cache[key] = build.load_task(data_dir, key)
        return cache[key][split.value]

    def redraw(*_):
        ds = current()
        idx.max = max(len(ds) - 1, 0)
        r = ds[min(idx.value, idx.max)]
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(3, 3))
            import numpy as np

            show_record(ax, {**r, "image": np.asarray(r["image"])}, title=f"{r['source']}: {r['category']}")
            plt.show()
            for m in r["messages"]:
                print(f"{m['role'].upper():>9}: {m['content']}")

    for w in (task, split, idx):
        w.observe(redraw, names="value")
    redraw()
    return W.VBox([W.HBox([task, split, idx]), out])

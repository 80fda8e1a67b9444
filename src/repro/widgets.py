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


def reward_playground(rows_by_task: dict, rewards: dict):
    """Pick a task and a test row, type a completion (one turn per line for conversations) and see every reward
    that applies, with its explanation. `rows_by_task`: {task: [row dicts]}; `rewards`: repro.rewards.suite
    .task_rewards(...) (pass a VRR function there to see the attention reward too)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    from IPython.display import display

    from repro.data.viz import show_record
    from repro.rewards import suite

    tasks = [t for t in rows_by_task if rows_by_task[t]]
    task = W.Dropdown(options=tasks, description="task")
    idx = W.IntSlider(min=0, max=0, description="row")
    text = W.Textarea(layout=W.Layout(width="95%", height="90px"), description="completion")
    reset = W.Button(description="use the true answer")
    out = W.Output()

    def row():
        rows = rows_by_task[task.value]
        return rows[min(idx.value, len(rows) - 1)]

    def completion():
        return text.value.split("\n") if task.value == "conv" else text.value

    def fill_truth(*_):
        t = suite.truth(row())
        new = "\n".join(t) if isinstance(t, list) else t
        if new == text.value:
            redraw()  # the text observer fires only on a change
        text.value = new

    def redraw(*_):
        r = row()
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(2.2, 2.2))
            show_record(ax, {**r, "image": np.asarray(r["image"])}, title=f"{r['source']}: {r['category']}")
            plt.show()
            print("QUESTION:", suite.prompt_text(r))
            explained = suite.explain_all(task.value, r, completion(), rewards)
            table = pd.DataFrame([{"reward": k, "value": v["reward"],
                                   "why": "; ".join(f"{a}={b}" for a, b in v.items() if a != "reward"
                                                    and not hasattr(b, "shape"))[:160]}
                                  for k, v in explained.items()])
            display(table)

    def new_task(*_):
        idx.max = max(len(rows_by_task[task.value]) - 1, 0)
        fill_truth()

    task.observe(new_task, names="value")
    idx.observe(fill_truth, names="value")
    text.observe(redraw, names="value")
    reset.on_click(fill_truth)
    new_task()
    return W.VBox([W.HBox([task, idx, reset]), text, out])

"""All rewards of the four papers side by side: which reward applies to which task, and scoring completions.

    rewards = suite.task_rewards(vrr_fn=attention.make_vrr_reward(model, processor))   # {task: [reward fns]}
    long = suite.score(rows_by_task, completions_by_task, rewards)   # one row per (sample, reward)
    wide = suite.wide(long)                                          # one row per sample, one column per reward

Completions: a str per single-turn row; a list of turn answers per conversation row. Rewards get the rows' columns in
TRL's signature (the clinical panel reads the truth from `answer`, which is the target text in vqa / instruct /
report rows; MCQ's `answer` is a letter, so the panel is not applied to MCQ). VRR and AAR are model-based and only
present when `vrr_fn` is given; AAR max-normalises ALR and VRR over the samples of the same row (column `id`).
"""

from __future__ import annotations

import pandas as pd

from repro.chat import first_user_text
from repro.rewards import clinical, localization, rules, vqa

TASK_ORDER = ("mcq", "instruct", "conv", "vqa", "report")


def task_rewards(vrr_fn=None, semantic_judge=None, clinical_panel=None) -> dict[str, list]:
    """{task: [reward functions]} for the tasks the suite's samples come from. semantic_judge / clinical_panel
    replace the rule judges (e.g. rewards.llm_judge.make_semantic_judge(paths) / make_clinical_panel(paths));
    None keeps them. The reward names stay the same either way."""
    semantic, semantic_fraction = vqa.semantic_reward, vqa.semantic_fraction_reward
    if semantic_judge is not None:
        semantic = vqa.make_semantic_reward(semantic_judge)
        semantic_fraction = vqa.make_semantic_reward(semantic_judge, binary=False)
    relevance = clinical.make_clinical_relevance(clinical_panel) if clinical_panel else clinical.clinical_relevance
    instruct = [localization.alr_reward, localization.relevance_reward]
    if vrr_fn is not None:
        instruct += [vrr_fn, localization.make_aar_reward(group_key="id", vrr_fn=vrr_fn)]
    else:
        instruct += [localization.make_aar_reward(group_key="id")]
    return {
        "mcq": [vqa.format_reward, vqa.accuracy_reward, semantic, semantic_fraction, vqa.ecr_reward,
                vqa.cwr_reward],
        "instruct": instruct + [relevance],
        "conv": [rules.drllava_reward, rules.drllava_gated_reward, rules.released_reward],
        "vqa": [relevance],
        "report": [relevance],
    }


def sample_completions(model, processor, rows_by_task: dict[str, list[dict]], k: int = 1, temperature: float = 0.0,
                       seed: int = 0, batch_size: int = 32, progress: bool = True) -> tuple[dict, dict]:
    """k completions per row from the model (greedy when temperature is 0, so k > 1 only repeats then).
    Returns (rows_by_task with each row repeated k times, completions_by_task aligned with them); conversations are
    5-turn rollouts on the model's own answers (eval.generate_conversation)."""
    import torch

    from repro import evaluation as ev

    rows_out, comps_out = {}, {}
    with torch.random.fork_rng(devices=[]):  # sampled completions are a function of the seed only
        torch.manual_seed(seed)
        for task, rows in rows_by_task.items():
            rep = [r for r in rows for _ in range(max(1, k))]
            if task == "conv":
                comps = ev.generate_conversation(model, processor, rep, ev.MAX_NEW_TOKENS[task], batch_size,
                                                 temperature=temperature, progress=progress)
            else:
                comps = ev.generate(model, processor, rep, ev.MAX_NEW_TOKENS[task], batch_size,
                                    temperature=temperature, progress=progress, desc=task)
            rows_out[task], comps_out[task] = rep, comps
    return rows_out, comps_out


prompt_text = first_user_text  # the question of a single-turn row (the first user message)


def truth(row: dict):
    """The reference completion of a row: the target text, or the list of turn answers of a conversation."""
    if row.get("task") == "conv":
        return list(row["answers"])
    return row["messages"][-1]["content"]


def columns(rows: list[dict]) -> dict[str, list]:
    """Rows -> TRL-style columns (lists aligned with the completions); every key of the first row."""
    keys = {k for r in rows for k in r}
    return {k: [r.get(k) for r in rows] for k in keys}


def call(reward, rows: list[dict], completions: list) -> list:
    """One reward on aligned rows and completions through the TRL signature (prompts = the user questions)."""
    cols = columns(rows)
    cols.pop("prompt", None)
    return list(reward([prompt_text(r) for r in rows], list(completions), **cols))


def score(rows_by_task: dict[str, list[dict]], completions_by_task: dict[str, list], rewards: dict[str, list],
          label: str | None = None) -> pd.DataFrame:
    """Long table: task, id, source, category, sample (index within the task), completion, reward, value (NaN where
    the reward does not apply) and an optional `label` column (e.g. the probe name)."""
    out = []
    for task in [t for t in TASK_ORDER if t in rows_by_task] + [t for t in rows_by_task if t not in TASK_ORDER]:
        rows, comps = rows_by_task[task], completions_by_task[task]
        for f in rewards.get(task, []):
            values = call(f, rows, comps)
            for k, (r, c, v) in enumerate(zip(rows, comps, values)):
                out.append({"task": task, "id": r.get("id"), "source": r.get("source"), "category": r.get("category"),
                            "sample": k, "completion": c if isinstance(c, str) else "\n".join(map(str, c)),
                            "reward": f.__name__, "value": float("nan") if v is None else float(v)})
    df = pd.DataFrame(out, columns=["task", "id", "source", "category", "sample", "completion", "reward", "value"])
    if label is not None:
        df.insert(0, "label", label)
    return df


def wide(long: pd.DataFrame) -> pd.DataFrame:
    """One row per sample, one column per reward."""
    keys = [k for k in ("label", "task", "sample") if k in long]  # one sample; id ... completion depend on it
    meta = long.drop_duplicates(keys).set_index(keys)[["id", "source", "category", "completion"]]
    values = long.set_index(keys + ["reward"])["value"].unstack("reward")
    values = values[list(dict.fromkeys(long["reward"]))]  # rewards in the order they were scored
    return meta.join(values).reset_index().rename_axis(columns=None)


def breakdown_examples(long: pd.DataFrame, per_task: int = 2, width: int = 90) -> pd.DataFrame:
    """A readable table of a few samples per task: completion (shortened) and every applicable reward."""
    w = wide(long)
    rewards = [c for c in w.columns if c in set(long["reward"])]
    w["_applicable"] = w[rewards].notna().sum(axis=1)
    parts = []
    for _, g in w.groupby("task", sort=False):
        # distinct rows, those where most rewards apply first (an abnormal image shows ALR and VRR too)
        g = g.sort_values("_applicable", ascending=False, kind="stable").drop_duplicates("id").head(per_task)
        g = g.drop(columns="_applicable").dropna(axis=1, how="all").copy()
        g["completion"] = g["completion"].str.replace("\n", " / ").str.slice(0, width)
        parts.append(g.drop(columns=["sample"]))
    return pd.concat(parts, ignore_index=True) if parts else w


def summary(long: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, share applicable and n per (task, reward)."""
    g = long.groupby(["task", "reward"], sort=False)["value"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(), "applicable": g.apply(lambda v: v.notna().mean()),
                         "n": g.size()})


def explain_all(task: str, row: dict, completion, rewards: dict[str, list]) -> dict[str, dict]:
    """{reward name: its explanation dict} for one completion (the playground widget shows these)."""
    out = {}
    for f in rewards.get(task, []):
        value = call(f, [row], [completion])[0]  # the value TRL would see (AAR: normalised within this one sample)
        d = f.explain(completion, **row) if hasattr(f, "explain") else {}
        out[f.__name__] = {"reward": value, **{k: v for k, v in d.items() if k != "reward"}}
    return out

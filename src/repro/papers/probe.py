"""A fixed validation probe per paper (issue 25): did an arm learn what it was paid for?

    spec = probe.Spec(task="conv", rows=val_rows, reward_fns=[rules.drllava_reward], k=4, max_new_tokens=32,
                      metric="conversation_correct", multi_turn=True, missing_eos_penalty=-2.0)
    table = probe.score(model, processor, spec)        # one row per probe item (below)
    cb = probe.Recorder(spec, points=[0, 10, 20, 30])  # ppo.train(callback=cb) / grpo.train(callbacks=[cb.trl()])

The same items and the same sampling seed for every arm, seed and point, so two points differ only by the weights.
At each point the probe scores, per item i (a validation row; its k samples at the training temperature):
    reward[i]        mean over the k samples of the arm's OWN training reward (weighted reward functions plus the
                     missing-EOS penalty per cut answer: the number its optimiser climbs)
    target_pass1[i]  mean over the k samples of the paper's target metric (the test's metric, e.g. conversation
                     accuracy), i.e. sampled pass@1
    target_greedy[i] the target metric of the greedy answer (what the test split scores)

"learned" (`learned`): the probe reward at the last point beats step 0 by a paired test over items (x seeds when
several are pooled), clustered by image (repro.stats.compare): the 95% CI of end - start lies above 0. Parameters that
moved (the old "trained" rule, end KL > min_kl) are necessary, not sufficient.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

PROBE_SEED = 20251  # the sampling seed of every probe point (never the training stream: fork_rng below)
# "Above 0" for the learned rule means above float noise: the same weights scored in two worker processes differed
# by up to 2.7e-8 per item (cpu run at 57355ee: the lr-0 null's end probe against the step 0 another seed scored,
# Recorder's `shared`), so a CI of such differences alone must not call a policy that cannot move "learned".
FLOAT_NOISE = 1e-6
COLUMNS = ["step", "item", "cluster", "reward", "target_pass1", "target_greedy"]


@dataclass
class Spec:
    """What one paper's probe scores. rows: the validation rows as the evaluation reads them (image, messages,
    answers...); train_rows: the same rows as the trainer sees them (GRPO's `prompt` column), default `rows`."""

    task: str                    # evaluation task of the target metric: conv | instruct | mcq | vqa | report
    rows: list
    reward_fns: list
    metric: str                  # row_scores metric of the target (e.g. conversation_correct, mau_correct)
    k: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 32
    multi_turn: bool = False
    missing_eos_penalty: float = 0.0
    weights: list | None = None
    train_rows: list | None = None
    batch_size: int = 32
    seed: int = PROBE_SEED


def val_rows(folder, task: str, limit: int = 0, variant: str | None = None, split: str = "val",
             where=None) -> list[dict]:
    """The probe's fixed items: `split` rows of `task` (of one conversation `variant`, and where(row) when given),
    `limit` of them spread over sources and classes (evaluation.stratified_indices; 0 = all). The same call gives
    the same rows every time."""
    from repro import evaluation as ev

    rows = ev.load_rows(folder, task, split)
    if variant is not None:
        rows = [r for r in rows if r.get("variant", "standard") == variant]
    if where is not None:
        rows = [r for r in rows if where(r)]
    if limit and limit < len(rows):
        keep = ev.stratified_indices([r["id"] for r in rows], [f"{r['source']}/{r['category']}" for r in rows], limit)
        rows = [rows[i] for i in keep]
    return rows


def _targets(task: str, preds: list, rows: list, metric: str) -> tuple[np.ndarray, pd.DataFrame]:
    from repro import evaluation as ev

    long = ev.row_scores(task, ev.score(task, preds, rows)[1][f"{task}_rows"])
    long = long[long["metric"] == metric].reset_index(drop=True)
    if len(long) != len(rows):
        raise ValueError(f"probe: metric {metric!r} of task {task!r} scores {len(long)} of {len(rows)} rows")
    return long["score"].to_numpy(dtype=float), long[["item", "cluster"]]


def score(model, processor, spec: Spec, step: int = 0) -> pd.DataFrame:
    """The probe at the model's current weights -> DataFrame[COLUMNS], one row per item (module docstring).
    Sampling runs under a forked RNG seeded with spec.seed: the caller's random stream does not move."""
    from repro import evaluation as ev
    from repro.train import rollouts

    rows, train_rows = spec.rows, spec.train_rows or spec.rows
    cfg = SimpleNamespace(k=spec.k, max_new_tokens=spec.max_new_tokens, temperature=spec.temperature,
                          gen_batch_size=spec.batch_size * spec.k, minibatch=spec.batch_size)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(spec.seed)
            roll = rollouts.rollout_conversation if spec.multi_turn else rollouts.rollout_single
            samples = roll(model, processor, [dict(r) for r in train_rows], cfg)
            weights = spec.weights or [1.0] * len(spec.reward_fns)
            s, _ = rollouts.score_samples(spec.reward_fns, weights, [dict(r) for r in train_rows], samples)
            missing = torch.tensor([sum(not e for e in x.ended) for x in samples], dtype=torch.float32)
            reward = (s + spec.missing_eos_penalty * missing).numpy().reshape(len(rows), spec.k)
            preds = [list(x.answers) if spec.multi_turn else x.answers[0] for x in samples]
            many = [r for r in rows for _ in range(spec.k)]
            pass1, _ = _targets(spec.task, preds, many, spec.metric)
            if spec.multi_turn:
                greedy_preds = ev.generate_conversation(model, processor, rows, spec.max_new_tokens, spec.batch_size,
                                                        0.0, progress=False)
            else:
                greedy_preds = ev.generate(model, processor, rows, spec.max_new_tokens, spec.batch_size, 0.0,
                                           progress=False)
            greedy, ids = _targets(spec.task, greedy_preds, rows, spec.metric)
    finally:
        model.train(was_training)
    return pd.DataFrame({"step": step, "item": ids["item"], "cluster": ids["cluster"],
                         "reward": reward.mean(1), "target_pass1": pass1.reshape(len(rows), spec.k).mean(1),
                         "target_greedy": greedy})[COLUMNS]


def read_table(path) -> pd.DataFrame:
    """A probe table saved as CSV (item and cluster ids stay strings: "000123" must not become 123; floats come back
    bit for bit)."""
    return pd.read_csv(path, dtype={"item": str, "cluster": str})


def points(steps: int, n: int = 3) -> list[int]:
    """Step 0 and `n` points along a run of `steps` updates, the last one at its end: [0, s/n, 2s/n, ..., s]."""
    if steps <= 0:
        return [0]
    return sorted({0, *(max(1, round(steps * j / n)) for j in range(1, n + 1))})


class Recorder:
    """Scores the probe at the given steps of a run. As our PPO's `callback(step, model, processor)` (step 0 is
    called before the first update) or, via `trl()`, as a transformers TrainerCallback for TRL's trainers."""

    def __init__(self, spec, at: list[int], path=None, scorer=None, shared=None):
        """path: a CSV the table is saved to after every point and read back from, so a resumed or cached training
        run (whose callback is not called again for the steps it already did) keeps its earlier points.
        shared: a CSV of the step-0 table shared by runs that start from the same weights with the same spec (the
        seeds of one arm: the probe samples under its own fixed seed, so their step 0 is the same table, to float
        noise across processes: FLOAT_NOISE). Read when it exists, else scored and written (two runs that score it
        at once write equal tables; the later one stays)."""
        from pathlib import Path

        self.spec, self.at, self.path = spec, sorted(set(at)), Path(path) if path else None
        self.shared = Path(shared) if shared else None
        self.scorer = scorer or score  # score(model, processor, spec, step) -> a probe table
        self.tables = []
        if self.path is not None and self.path.exists():
            self.tables = [read_table(self.path)]
        self.done: set[int] = {int(s) for t in self.tables for s in t["step"]}

    def __call__(self, step: int, model, processor) -> None:
        if step in self.at and step not in self.done:
            if step == 0 and self.shared is not None and self.shared.exists():
                table = read_table(self.shared)
            else:
                table = self.scorer(model, processor, self.spec, step)
                if step == 0 and self.shared is not None:
                    _write(self.shared, table)
            self.tables.append(table)
            self.done.add(step)
            if self.path is not None:
                _write(self.path, self.table())

    def table(self) -> pd.DataFrame:
        return pd.concat(self.tables, ignore_index=True) if self.tables else pd.DataFrame(columns=COLUMNS)

    def trl(self, processor):
        from transformers import TrainerCallback

        rec = self

        class _Probe(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kw):
                rec(0, model, processor)

            def on_step_end(self, args, state, control, model=None, **kw):
                rec(int(state.global_step), model, processor)

        return _Probe()


def _write(path, table: pd.DataFrame) -> None:
    from repro import results

    results._atomic_write(path, table.to_csv(index=False))


# ----------------------------------------------------------------------------------------------- DPO's probe
@dataclass
class PairSpec:
    """DPO / MMedPO's probe: held-out preference pairs (never trained on) scored by the implicit reward margin
    beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x_l) - log pi_ref(y_l|x_l))] against the frozen start
    `ref`, and the target metric (closed-VQA accuracy) on validation rows, greedy and sampled."""

    pairs: list                  # preference rows: prompt, chosen, rejected, images, rejected_images, id
    ref: object                  # the frozen start model (the DPO reference)
    beta: float
    target: Spec                 # rows / metric / k of the target metric (its reward_fns are not used)
    ref_logps: list | None = None  # per pair (chosen, rejected) under `ref`: computed at the first point, reused

    def reference(self, processor) -> list[tuple[float, float]]:
        """log pi_ref of each pair's chosen and rejected answer: the reference is frozen, so once per probe."""
        if self.ref_logps is None:
            self.ref_logps = [(answer_logp(self.ref, processor, r["prompt"], r["images"][0], r["chosen"]),
                               answer_logp(self.ref, processor, r["prompt"], r["rejected_images"][0], r["rejected"]))
                              for r in self.pairs]
        return self.ref_logps


@torch.no_grad()
def answer_logp(model, processor, prompt: str, image, answer: str) -> float:
    """log pi(answer | image, prompt): the summed log-probabilities of the answer's tokens and its end of turn."""
    from repro.chat import assistant_message, user_message

    user = [user_message(prompt, with_image=True)]
    head = processor.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template(user + [assistant_message(answer)], tokenize=False)
    if not full.startswith(head):
        raise ValueError("answer_logp: the chat template renders the prompt differently once an answer follows")
    enc = processor(text=[full], images=[[image]], return_tensors="pt").to(model.device)
    n_head = processor(text=[head], images=[[image]], return_tensors="pt")["input_ids"].shape[1]
    logp = torch.log_softmax(model(**enc).logits[0, :-1].float(), dim=-1)  # [T-1, V]: position t predicts t+1
    return float(logp[n_head - 1:].gather(1, enc["input_ids"][0, n_head:, None]).sum())


def score_pairs(model, processor, spec: PairSpec, step: int = 0) -> pd.DataFrame:
    """DPO's probe table: one row per held-out pair (reward = its implicit reward margin, cluster = its image) and
    one per target row (target_greedy / target_pass1: closed-VQA correctness), NaN where a column does not apply."""
    from repro import evaluation as ev

    was_training = model.training
    model.eval()
    try:
        margins, items, clusters = [], [], []
        for i, (r, (ref_c, ref_r)) in enumerate(zip(spec.pairs, spec.reference(processor), strict=True)):
            pc = answer_logp(model, processor, r["prompt"], r["images"][0], r["chosen"])
            pr = answer_logp(model, processor, r["prompt"], r["rejected_images"][0], r["rejected"])
            margins.append(spec.beta * ((pc - ref_c) - (pr - ref_r)))
            items.append(f"pair:{i}")
            clusters.append(str(r.get("id", i)))
        t = spec.target
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(t.seed)
            many = [r for r in t.rows for _ in range(t.k)]
            sampled = ev.generate(model, processor, many, t.max_new_tokens, t.batch_size, t.temperature, progress=False)
            greedy = ev.generate(model, processor, t.rows, t.max_new_tokens, t.batch_size, 0.0, progress=False)
        pass1, _ = _targets(t.task, sampled, many, t.metric)
        g, ids = _targets(t.task, greedy, t.rows, t.metric)
    finally:
        model.train(was_training)
    pairs = pd.DataFrame({"step": step, "item": items, "cluster": clusters, "reward": margins,
                          "target_pass1": np.nan, "target_greedy": np.nan})
    target = pd.DataFrame({"step": step, "item": ids["item"], "cluster": ids["cluster"], "reward": np.nan,
                           "target_pass1": pass1.reshape(len(t.rows), t.k).mean(1), "target_greedy": g})
    return pd.concat([pairs, target], ignore_index=True)[COLUMNS]


# ----------------------------------------------------------------------------------------------- the learned rule
def _as_scores(table: pd.DataFrame, step: int, col: str, seed) -> pd.DataFrame:
    part = table[(table["step"] == step) & table[col].notna()]  # DPO's table: target rows have no reward
    return pd.DataFrame({"seed": seed, "item": part["item"].astype(str), "cluster": part["cluster"].astype(str),
                         "score": part[col].astype(float)})


def learned(tables: dict, col: str = "reward", n_boot: int = 2000) -> dict:
    """The learned rule over one arm's seeds: tables {seed: probe table}. Compares each seed's last point with its
    step 0, paired by (seed, item), images resampled (repro.stats.compare). Returns {learned, reward_start,
    reward_end, ci_low, ci_high, difference, n_items, seeds, step_end}; learned = ci_low > FLOAT_NOISE."""
    from repro import stats

    end_parts, start_parts, step_end = [], [], None
    for seed, t in tables.items():
        if t is None or not len(t) or 0 not in set(t["step"]):
            continue
        last = int(t["step"].max())
        if last == 0:
            continue
        step_end = last
        end_parts.append(_as_scores(t, last, col, seed))
        start_parts.append(_as_scores(t, 0, col, seed))
    if not end_parts:
        return {"learned": False, "reward_start": None, "reward_end": None, "ci_low": None, "ci_high": None,
                "difference": None, "n_items": 0, "seeds": [], "step_end": None, "why": "no probe after step 0"}
    end, start = pd.concat(end_parts, ignore_index=True), pd.concat(start_parts, ignore_index=True)
    r = stats.compare(end, start, n_boot=n_boot, binary=False)
    ok = bool(np.isfinite(r["ci_low"]) and r["ci_low"] > FLOAT_NOISE)
    why = "" if ok else (f"probe {col} end - start {stats.ci_text(r['difference'], r['ci_low'], r['ci_high'])}: "
                         "the CI does not lie above 0")
    return {"learned": ok, "reward_start": float(start["score"].mean()), "reward_end": float(end["score"].mean()),
            "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]), "difference": float(r["difference"]),
            "n_items": int(r["n_items"]), "seeds": sorted(tables), "step_end": step_end, "why": why}


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per point: mean probe reward, target pass@1 and greedy target (the curves figure's data); for DPO's table
    also the preference accuracy, the share of held-out pairs whose implicit reward margin is above 0."""
    out = table.groupby("step", as_index=False)[["reward", "target_pass1", "target_greedy"]].mean()
    pairs = table[table["item"].astype(str).str.startswith("pair:")]
    if len(pairs):
        acc = pairs.assign(acc=(pairs["reward"] > 0).astype(float)).groupby("step")["acc"].mean()
        out["preference_accuracy"] = out["step"].map(acc)
    return out

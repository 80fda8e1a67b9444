"""Throughput of the rule rewards (completions/s) on one core, called in TRL-sized batches.

Two workloads per reward: "repeated" cycles through 4 realistic completions (a policy repeats its phrasings, so
the rewards' parser caches hit), "unique" appends a distinct number to every completion (every cache misses).

Run as: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_rewards.py [--n 20000] [--batch 64]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

# One core: set before numpy loads so BLAS/OpenMP pools stay single-threaded even if the caller forgot.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from repro.data import decision_tree as dt  # noqa: E402
from repro.data.tasks import instruct_target, mcq_target  # noqa: E402
from repro.rewards import clinical, localization, rules, vqa  # noqa: E402

TARGET = 20_000


def workloads() -> dict:
    """Per reward: (completions, columns) with a realistic mix of good, wrong and malformed outputs."""
    mcq_row = {"answer": "B", "options": ["nodule", "cyst", "mass", "normal"],
               "reason_facts": {"modality": "CT", "region": "liver", "finding": "cyst"}}
    mcq = [[{"role": "assistant", "content": mcq_target("This is a CT image of the liver. It shows cyst.", "B")}],
           "<think>The image is an X-ray view of the chest. It looks normal.</think><answer>A</answer>",
           "<think>unsure</think> <answer>B. cyst</answer> trailing", "B"]
    ins_row = {"abnormal": True, "bboxes": [[16, 16, 32, 48]], "category": "nodule", "image_size": 64}
    ins = [instruct_target(True, "[25, 25, 50, 75]", "nodule", "lung", "CT"),
           instruct_target(True, "[20, 30, 55, 70]", "mass", "lung", "CT"),
           instruct_target(False, "", "normal", "lung", "CT"), "Detection: abnormal. nodule"]
    conv_row = {"turn_categories": [1, 2, 3, 4, 5], "turn_labels": list(dt.PATHS["AML"]),
                "answers": [dt.ANSWER_BANKS["test"][a][0] for _, a in dt.TURN_KEYS["AML"]]}
    good = [dt.ANSWER_BANKS["train"][a][1] for _, a in dt.TURN_KEYS["AML"]]
    conv = ["\n".join(good), good, good[:3] + ["No abnormality.", "It is healthy."], "\n".join(good[:2])]
    report = "CT image of the liver. There is a small cyst in the upper left part of the image."
    rej = ["CT image of the liver. There is a large mass in the lower right part of the image.",
           "X-ray of the chest. The lungs are clear.", "The liver appears normal.", report]
    return {
        vqa.format_reward: (mcq, mcq_row), vqa.accuracy_reward: (mcq, mcq_row),
        vqa.semantic_reward: (mcq, mcq_row), vqa.ecr_reward: (mcq, mcq_row), vqa.cwr_reward: (mcq, mcq_row),
        localization.alr_reward: (ins, ins_row), localization.relevance_reward: (ins, ins_row),
        rules.drllava_reward: (conv, conv_row), rules.drllava_gated_reward: (conv, conv_row),
        rules.released_reward: (conv, conv_row), clinical.clinical_relevance: (rej, {"answer": report}),
    }


_TAGS = itertools.count()  # one counter for the whole run: no unique completion repeats across rewards


def _unique(c):
    tag = f" ({next(_TAGS)})"
    if isinstance(c, str):
        return c + tag
    if isinstance(c, list) and c and isinstance(c[0], dict):
        return [{**c[0], "content": c[0]["content"] + tag}]
    return [t + tag for t in c]


def rate(f, comps, row, n: int, batch: int, unique: bool) -> float:
    cols = {k: [v] * batch for k, v in row.items()}
    calls = max(1, n // batch)
    batches = [[_unique(comps[(j * batch + i) % len(comps)]) if unique else comps[i % len(comps)]
                for i in range(batch)] for j in range(calls + 1)]
    f(None, batches.pop(), **cols)  # warm up (compiled regexes) on a batch that is not timed
    t0 = time.perf_counter()
    for b in batches:
        f(None, b, trainer_state=None, **cols)
    return calls * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000, help="completions per reward and workload")
    ap.add_argument("--batch", type=int, default=64, help="completions per call (TRL passes one batch)")
    args = ap.parse_args()
    print(f"{'reward':28s} {'repeated/s':>12s} {'unique/s':>12s}  target {TARGET:,}/s")
    for f, (comps, row) in workloads().items():
        rep = rate(f, comps, row, args.n, args.batch, unique=False)
        uni = rate(f, comps, row, args.n, args.batch, unique=True)
        flag = "ok" if min(rep, uni) >= TARGET else "ok (repeated)" if rep >= TARGET else "SLOW"
        print(f"{f.__name__:28s} {rep:12,.0f} {uni:12,.0f}  {flag}")


if __name__ == "__main__":
    main()

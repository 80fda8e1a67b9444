"""Dr-LLaVA rule-based conversation reward (docs/methods.md §1(b)).

Completion format
-----------------
One completion is one whole conversation's answers, in the order the questions were asked:
  * a list of answer strings (or chat messages; the assistant contents are the turns), or
  * one string (or one assistant message) with one answer per line: the multi-turn rollout joins the turn answers
    with "\\n" (ROLLOUT_SEP). Blank lines are dropped.
Missing turns count as unparseable; answers beyond the number of turns are ignored (`explain` reports them as
"extra").
Columns: turn_categories (list of 1..5 in the order asked) and turn_labels (reference labels, same order).

Reward (ours, `drllava_reward`)
-------------------------------
    c_i = +1 if classify_answer(cat_i, answer_i) == label_i, -0.5 if it is unparseable (None), 0 if wrong
    a_i = +1 if (parsed_{i-1}, parsed_i) lie together on a valid diagnostic path (decision_tree.is_consistent_pair,
          categories of turns i-1 and i in the order asked), else 0
    R = sum_i c_i + sum_{i>=2} a_i            range [-0.5 n, 2n - 1]: [-2.5, 9] for n = 5 turns
Consistency is checked on the *parsed* answers and credits any valid path, as in the release: a coherent but wrong
path still earns the consistency points.

Gated older variant (`drllava_gated_reward`, commits 30bf26e / dcbd9c1; docs/methods.md §1(b) caveat 3)
    R = c_q if c_q <= 0 else 1 + sum_i c_i, with c_q the correctness of the quality (category 1) turn
    range [-0.5, n + 1]: [-0.5, 6] for 5 turns; consistency is not used.

Released HEAD semantics (`released_reward`, to show the bugs): labels from decision_tree.released_rules_label for
both the prediction and the *reference answer text* (column `answers`), so "no match" == "no match" earns +1;
consistency against the knowledge rows; the per-turn length term -|len(x)-len(y)|/10 if that exceeds 1, on the
label strings (with `abs`, not the crashing `math.abs`). On this label vocabulary |len(x)-len(y)| <= 8, so the term
is always 0: dead code. Range [-2.5, 9] for 5 turns.
"""

from __future__ import annotations

import functools

from repro.data import decision_tree as dt
from repro.rewards import make_reward, turns_of

ROLLOUT_SEP = "\n"
RIGHT, WRONG, UNPARSEABLE = 1.0, 0.0, -0.5

# The parsers are pure functions of (category, text) and dominate the cost (~20 us per turn); a policy repeats its
# phrasings, so a bounded cache makes the reward several times faster in RL without changing any value.
_classify = functools.lru_cache(maxsize=1 << 16)(dt.classify_answer)
_released_label = functools.lru_cache(maxsize=1 << 16)(dt.released_rules_label)


def split_turns(completion, n_turns: int) -> tuple[list[str | None], list[str]]:
    """(answers for the n turns, padded with None; the extra answers beyond n). Never raises."""
    parts = turns_of(completion)
    if len(parts) == 1:  # one text (a str, or TRL's single assistant message): the rollout joined the turns
        parts = [p for p in parts[0].split(ROLLOUT_SEP) if p.strip()]
    return (parts[:n_turns] + [None] * max(0, n_turns - len(parts))), parts[n_turns:]


def _valid_conversation(cats, labels) -> bool:
    return (isinstance(cats, (list, tuple)) and isinstance(labels, (list, tuple)) and 0 < len(cats) == len(labels)
            and all(type(c) is int and c in dt.CATEGORY_LABELS for c in cats))


def _correctness(parsed, label) -> float:
    if parsed is None:
        return UNPARSEABLE
    return RIGHT if parsed == label else WRONG


def explain_drllava(completion, turn_categories=None, turn_labels=None) -> dict:
    """Dr-LLaVA reward of one conversation: sum of per-turn correctness (+1 / 0 / -0.5 unparseable) plus +1 per
    adjacent pair on a valid diagnostic path. Range [-0.5 n, 2n - 1] ([-2.5, 9] for 5 turns); None without a
    valid turn_categories / turn_labels row (not a conversation)."""
    if not _valid_conversation(turn_categories, turn_labels):
        return {"reward": None, "why": "no valid turn_categories / turn_labels"}
    cats = list(turn_categories)
    labels = [dt.to_label(c, lab) for c, lab in zip(cats, turn_labels)]
    answers, extra = split_turns(completion, len(cats))
    parsed = [_classify(c, a) for c, a in zip(cats, answers)]
    correct = [_correctness(p, lab) for p, lab in zip(parsed, labels)]
    consistent = [float(p0 is not None and p1 is not None and dt.is_consistent_pair(c0, p0, c1, p1))
                  for c0, p0, c1, p1 in zip(cats, parsed, cats[1:], parsed[1:])]
    return {"reward": sum(correct) + sum(consistent), "categories": cats, "labels": labels, "answers": answers,
            "parsed": parsed, "correctness": correct, "consistency": consistent, "extra": extra}


def explain_drllava_gated(completion, turn_categories=None, turn_labels=None) -> dict:
    """Older gated Dr-LLaVA reward: c_q if the quality turn's correctness c_q <= 0, else 1 + sum of correctness.
    Range [-0.5, n + 1] ([-0.5, 6] for 5 turns); None without a valid conversation row. Without a category-1
    turn the gate is open (1 + sum)."""
    d = explain_drllava(completion, turn_categories, turn_labels)
    if d["reward"] is None:
        return d
    cats = d["categories"]
    c_q = d["correctness"][cats.index(1)] if 1 in cats else RIGHT
    d["gate"] = c_q
    d["reward"] = c_q if c_q <= 0 else 1.0 + sum(d["correctness"])
    return d


def length_term(x: str, y: str) -> float:
    """Released per-turn length term on the label strings: -|len(x)-len(y)|/10 if that exceeds 1, else 0."""
    d = abs(len(str(x)) - len(str(y))) / 10
    return -d if d > 1 else 0.0


def explain_released(completion, turn_categories=None, answers=None) -> dict:
    """Released HEAD `calculate_reward`, bugs kept, crash removed: labels of prediction and reference text from the
    released keyword rules; +1 if equal (including "no match" == "no match"), -0.5 if the prediction is
    "no match", else 0; +1 per adjacent pair on a knowledge row; plus the (always 0) length term.
    Range [-0.5 n, 2n - 1]; None without turn_categories and reference `answers` of the same length."""
    refs = answers
    if not (_valid_conversation(turn_categories, refs) and all(isinstance(r, str) for r in refs)):
        return {"reward": None, "why": "needs turn_categories and reference answers (column `answers`)"}
    cats = list(turn_categories)
    preds, extra = split_turns(completion, len(cats))
    outcomes = [_released_label(c, p) for c, p in zip(cats, preds)]
    gt = [_released_label(c, r) for c, r in zip(cats, refs)]
    correct = [1.0 if o == g else (-0.5 if o == "no match" else 0.0) for o, g in zip(outcomes, gt)]
    align = [float(dt.is_consistent_pair(c0, o0, c1, o1)) for c0, o0, c1, o1 in zip(cats, outcomes, cats[1:],
                                                                                        outcomes[1:])]
    length = [length_term(o, g) for o, g in zip(outcomes, gt)]
    return {"reward": sum(correct) + sum(align) + sum(length), "categories": cats, "answers": preds,
            "outcomes": outcomes, "gt": gt, "correctness": correct, "consistency": align, "length": length,
            "extra": extra}


_CONV = ("turn_categories", "turn_labels")
# Range bounds for up to 5 turns (the only conversation length in the data); longer rows are clipped on output.
drllava_reward = make_reward("drllava_reward", explain_drllava, _CONV, -2.5, 9.0, raw=True)
drllava_gated_reward = make_reward("drllava_gated_reward", explain_drllava_gated, _CONV, -0.5, 6.0, raw=True)
released_reward = make_reward("drllava_released_reward", explain_released, ("turn_categories", "answers"),
                              -2.5, 9.0, raw=True)


def drllava_turn_rewards(completion, turn_categories=None, turn_labels=None) -> list[float]:
    """drllava_reward split by turn: turn i earns c_i + a_i (its correctness, and its consistency with turn i-1;
    a_1 = 0), so the list sums to the conversation's reward. Empty without a valid conversation row."""
    d = explain_drllava(completion, turn_categories, turn_labels)
    if d["reward"] is None:
        return []
    return [c + (d["consistency"][i - 1] if i > 0 else 0.0) for i, c in enumerate(d["correctness"])]


def released_turn_rewards(completion, turn_categories=None, answers=None) -> list[float]:
    """released_reward split by turn (correctness + length term + alignment with the turn before), summing to it."""
    d = explain_released(completion, turn_categories, answers)
    if d["reward"] is None:
        return []
    return [c + ln + (d["consistency"][i - 1] if i > 0 else 0.0)
            for i, (c, ln) in enumerate(zip(d["correctness"], d["length"]))]


# rollouts.turn_scores: PPO's per-turn credit. The gated reward has none: its quality gate makes the sum depend on
# turn 1 as a whole, so it is credited at the conversation's end.
drllava_reward.per_turn = drllava_turn_rewards
released_reward.per_turn = released_turn_rewards


def make_drllava_reward(variant: str = "sum"):
    """"sum" -> drllava_reward (paper HEAD structure, our parsers), "gated" -> drllava_gated_reward,
    "released" -> released_reward (released keyword rules)."""
    table = {"sum": drllava_reward, "gated": drllava_gated_reward, "released": released_reward}
    if variant not in table:
        raise ValueError(f"unknown Dr-LLaVA reward variant {variant!r}; expected one of {list(table)}")
    return table[variant]


def turn_accuracy(completion, turn_categories, turn_labels) -> dict:
    """Question-level accuracy (turns right) and conversation-level accuracy (all right), docs/methods.md §1(e)."""
    d = explain_drllava(completion, turn_categories, turn_labels)
    if d["reward"] is None:
        return {"question": None, "conversation": None, "diagnosis": None}
    ok = [c == RIGHT for c in d["correctness"]]
    diag = ok[d["categories"].index(5)] if 5 in d["categories"] else None
    return {"question": sum(ok) / len(ok), "conversation": float(all(ok)), "diagnosis": diag}

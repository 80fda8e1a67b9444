"""Does our PPO learn? Three small tasks whose optimum is known and reachable, on a tiny LLaVA (slow tests).

The start is a tiny VLM (smoke size, 16 px images -> 4 image tokens) taught by a few teacher-forced steps to answer
"yes" or "no" - built from the rollout module's own pieces (encode_prompt, turn_suffix), so the supervised
sequences are token for token what a rollout produces:
    single turn  "Is there an abnormality?" -> "yes" 75% / "no" 25%.  Reward 1 for "no".  Start ~0.25, optimum 1.
    multi turn   three clinician questions -> "yes" / "no" at random on each turn, whatever the question.  Reward
                 = number of turns matching TARGET (yes, no, no), one score per conversation at its end, as
                 Dr-LLaVA's.  Start ~1.5 of 3, optimum 3: the policy must learn which question wants which answer
                 from a conversation-level score, through the masked clinician turns.
    long answers the same three questions, each answer the decision word + FILL (~12 tokens), right 85% of the
                 time at the start (~2.5 of 3): most conversations tie at 3 of 3, as Dr-LLaVA's do at 9 of 9.
PPO must raise the reward measured *after* training (64 fresh samples at T = 1, fixed seed) to near the optimum
within a fixed number of steps. Such a test catches sign, masking, alignment and scale bugs that tests of the
pieces miss.

What made learning reliable on this tiny model (multi-turn task from an earlier draft of the fixture, start
1.64 of 3; final turns right of 3 per seed):
lr 3e-4 with k = 8, 2 epochs, 40 steps: 2.97 / 2.95 / 2.97 / 2.98; k = 4 with 4 epochs, 30 steps: 2.98 / 2.98 /
3.00 (3 seeds); k = 8, 2 epochs, 30 steps (the test below, seed 0): 2.88;
k = 4 with 2 epochs, 30 steps: 2.86 / 2.20 / 2.63 (one seed's first turn drifted the wrong way, 0.56 -> 0.28: too
few samples per step for a conversation-level score to tell the turns apart). lr 1e-5 and 5e-5 leave the reward
flat over 30 steps (1.64 -> 1.63 / 1.77): the policy barely moves. kl_beta 0.1, gamma = lam = 1, leave-one-out
baseline, no whitening throughout. Measured CPU time is printed (run with -s).
"""

from __future__ import annotations

import random
import time

import pytest
import torch
from PIL import Image

from repro.chat import user_message
from repro.models import build_tiny_vlm, load_vlm
from repro.train import ppo, ppo_math, rollouts

pytestmark = pytest.mark.slow

QUESTION = "Is there an abnormality?"
QUESTIONS = ["Is the lesion red?", "Is the lesion round?", "Is the lesion large?"]
TARGET = ["yes", "no", "no"]
FILL = ", and the lesion is clearly visible in this image"
CORPUS = [QUESTION, *QUESTIONS, "yes", "no", "yes no maybe"] * 12
IMAGE = Image.new("RGB", (16, 16), (120, 60, 60))
SINGLE_ROWS = [{"messages": [{"role": "user", "content": QUESTION}], "image": IMAGE, "id": i} for i in range(4)]
CONV_ROWS = [{"questions": QUESTIONS, "image": IMAGE, "id": i} for i in range(4)]


def no_reward(prompts, completions, **kw):
    return [1.0 if c[-1]["content"].strip().lower() == "no" else 0.0 for c in completions]


def turns_right(prompts, completions, **kw):
    """Turns whose answer starts with the TARGET word (the answer is that word alone, or the word + FILL)."""
    return [float(sum(_word(m["content"]) == t for m, t in zip(c, TARGET))) for c in completions]


def _word(answer: str) -> str:
    return answer.strip().lower().split(",")[0].strip()


def _teacher_forced(processor, questions: list[str], answers: list[str]) -> rollouts.Sample:
    """The sequence a rollout would produce had the policy answered `answers` (each answer + its EOS = action)."""
    tok = processor.tokenizer
    s = rollouts.encode_prompt(processor, [user_message(questions[0], with_image=True)], IMAGE)
    for t, answer in enumerate(answers):
        if t:
            s.extend(tok(rollouts.turn_suffix(processor, questions[t], True), add_special_tokens=False)["input_ids"],
                     is_action=False)
        s.extend(tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], is_action=True)
    return s


def _sft(root, corpus: list[str], make_batch, steps: int = 40):
    """A tiny LLaVA taught `steps` Adam steps (lr 3e-3) on make_batch(rng) -> list of teacher-forced Samples."""
    init = build_tiny_vlm(root / "init", corpus, size="smoke", image_size=16, patch_size=8, vocab_size=300, seed=0)
    model, processor = load_vlm(init, device="cpu")
    model.eval()  # dropout off, as in PPO
    rng = random.Random(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for _ in range(steps):
            batch = make_batch(processor, rng)
            logits, _, targets, mask = rollouts.forward(model, batch, processor.tokenizer.pad_token_id, 1.0)
            loss = -ppo_math.masked_mean(ppo_math.token_logprobs(logits, targets), mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.save_pretrained(root / "sft")
    processor.save_pretrained(root / "sft")
    return root, root / "sft"


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """Batches of 8 single-turn examples (yes 75%) + 8 conversations (yes / no at random on every turn)."""
    def batch(processor, rng):
        out = [_teacher_forced(processor, [QUESTION], ["yes" if rng.random() < 0.75 else "no"]) for _ in range(8)]
        return out + [_teacher_forced(processor, QUESTIONS, [rng.choice(["yes", "no"]) for _ in QUESTIONS])
                      for _ in range(8)]

    return _sft(tmp_path_factory.mktemp("ppo_learning"), CORPUS, batch)


@pytest.fixture(scope="module")
def long_start(tmp_path_factory):
    """Conversations whose answers are long (the decision word + FILL, ~12 tokens) and right 85% of the time."""
    def batch(processor, rng):
        flip = {"yes": "no", "no": "yes"}
        return [_teacher_forced(processor, QUESTIONS, [(t if rng.random() < 0.85 else flip[t]) + FILL for t in TARGET])
                for _ in range(16)]

    return _sft(tmp_path_factory.mktemp("ppo_learning_long"), CORPUS + [f"yes{FILL}", f"no{FILL}"] * 12, batch)


def _measure(path, multi_turn: bool, n: int = 64, max_new_tokens: int = 4) -> tuple[float, list[float]]:
    """Mean reward of n fresh samples at T = 1 (seeded, the caller's RNG untouched); multi turn also per turn."""
    model, processor = load_vlm(path, device="cpu")
    model.eval()
    with torch.random.fork_rng():
        torch.manual_seed(123)
        cfg = ppo.PPOConfig(k=n, max_new_tokens=max_new_tokens)
        if not multi_turn:
            samples = rollouts.rollout_single(model, processor, SINGLE_ROWS[:1], cfg)
            return sum(no_reward(None, [[{"content": s.answers[0]}] for s in samples])) / n, []
        samples = rollouts.rollout_conversation(model, processor, CONV_ROWS[:1], cfg)
    per_turn = [sum(_word(s.answers[t]) == TARGET[t] for s in samples) / n for t in range(len(TARGET))]
    return sum(per_turn), per_turn


def _train(start, name, rows, reward, multi_turn, **kw):
    """PPO with the settings the module docstring reports as reliable (kw overrides); (info, CPU seconds)."""
    root, sft_dir = start
    cfg = ppo.PPOConfig(**{**dict(steps=30, batch_size=2, k=8, ppo_epochs=2, minibatch=16, lr=3e-4, kl_beta=0.1,
                                  max_new_tokens=4, save_steps=1000, seed=0), **kw})
    t0 = time.process_time()
    info = ppo.train(sft_dir, root / name, rows, [reward], cfg, multi_turn=multi_turn, progress=False)
    return info, time.process_time() - t0


def test_single_turn_ppo_learns_to_answer_no(start):
    before, _ = _measure(start[1], multi_turn=False)
    assert 0.1 <= before <= 0.45  # headroom, and the rewarded answer is sometimes sampled
    info, cpu = _train(start, "single", SINGLE_ROWS, no_reward, multi_turn=False)
    after, _ = _measure(info["final_dir"], multi_turn=False)
    hist = info["log_history"]
    print(f"\nsingle turn: P(no) {before:.2f} -> {after:.2f} in {len(hist)} steps, {cpu:.1f} s CPU; "
          f"kl_end {hist[-1]['kl']:.2f}")
    assert after >= 0.9
    assert hist[-1]["kl"] > 0.1  # it got there by moving away from the reference, as it must


def test_multi_turn_ppo_learns_which_question_wants_which_answer(start):
    before, per_turn_before = _measure(start[1], multi_turn=True)
    assert 1.0 <= before <= 2.0 and all(0.2 <= p <= 0.8 for p in per_turn_before)
    info, cpu = _train(start, "multi", CONV_ROWS, turns_right, multi_turn=True)
    after, per_turn = _measure(info["final_dir"], multi_turn=True)
    print(f"\nmulti turn: turns right {before:.2f} -> {after:.2f} of 3 (per turn {per_turn_before} -> {per_turn}) "
          f"in {len(info['log_history'])} steps, {cpu:.1f} s CPU")
    assert after >= 2.7 and min(per_turn) >= 0.8


def test_multi_turn_ppo_keeps_long_right_answers_and_fixes_the_wrong_ones(long_start):
    """Near the ceiling with ~36 answer tokens per conversation, where issue 11's position signal bites. Measured on
    this start (2.75 of 3), seeds 0 / 1 / 2: the defaults end at 2.97 / 2.95 / 2.91 with peak KL 0.6-0.8 nats; the
    old settings (lam 0.95, no baseline, whitening) at 2.86 / 2.86 / 2.95 with peak KL 1.9-3.2, their first turn
    going down (0.91 -> 0.88 with seed 0) while later turns go up. On a start with more errors (2.53, an earlier
    draft of this fixture) the old settings went *down* to 2.33, turn 1 0.88 -> 0.45; the defaults went to 3.0."""
    before, per_turn_before = _measure(long_start[1], multi_turn=True, max_new_tokens=24)
    assert 2.2 <= before <= 2.8
    info, cpu = _train(long_start, "long", CONV_ROWS, turns_right, multi_turn=True, max_new_tokens=24)
    after, per_turn = _measure(info["final_dir"], multi_turn=True, max_new_tokens=24)
    hist = info["log_history"]
    print(f"\nlong answers: turns right {before:.2f} -> {after:.2f} of 3 (per turn {per_turn_before} -> {per_turn}), "
          f"{hist[0]['response_length']:.0f} answer tokens per conversation, {len(hist)} steps, {cpu:.1f} s CPU")
    assert after >= 2.85 and after > before and min(per_turn) >= 0.85

"""Our PPO on the smoke model: rollouts (repro.train.rollouts: answer-only masks, scoring alignment, banned vision
tokens, reward columns, AAR grouping), the value head, and short single-/multi-turn runs of repro.train.ppo
(parameters move, same seed -> same history, exact resume, value warm-up). The maths: test_ppo_math.py; whether
the trainer learns: test_ppo_learning.py (slow).

Run with `-s` to see the measured seconds per step.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from repro import chat
from repro.data import build, conversations
from repro.models import build_tiny_qwen25vl, build_tiny_vlm, load_vlm
from repro.rewards import localization, rules
from repro.train import ppo, ppo_math, rollouts, sft

KW = dict(n_per_class=5, n_normal=5, image_size=64, difficulty=0.5, yes_share=0.5, split_fractions=[0.6, 0.2, 0.2],
          conv_train_variants=["standard"], conv_eval_variants=list(conversations.VARIANTS),
          heldout_categories=[])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo")
    data = root / "data"
    build.build(data, seed=0, **KW)
    init = build_tiny_vlm(root / "init", sft.corpus(data), size="smoke", seed=0)
    instruct = list(build.load_task(data, "instruct")["train"].select(range(6)))
    conv = list(build.load_task(data, "conv")["train"].select(range(4)))
    return root, data, init, instruct, conv


@pytest.fixture(scope="module")
def llava(setup):
    return load_vlm(setup[2], device="cpu")


def char_reward(prompts, completions, **kw):
    """A reward that varies between random completions: distinct characters of the (last) answer / 10."""
    return [len(set(c[-1]["content"])) / 10 for c in completions]


# ----------------------------------------------------------------------------------------------- model pieces
def test_value_head_shapes_and_round_trip(llava, tmp_path):
    model, processor = llava
    head = ppo.ValueHead(ppo.hidden_size(model))
    assert head(torch.randn(3, 7, ppo.hidden_size(model))).shape == (3, 7)
    torch.manual_seed(0)
    rows = [{"messages": [{"role": "user", "content": "Is there an abnormality?"}], "image": None}]
    samples = rollouts.rollout_single(model, processor, rows, ppo.PPOConfig(k=2, max_new_tokens=3))
    with torch.no_grad():
        torch.nn.init.normal_(head.linear.weight)  # a zero head would hide a wrong hidden-state slice
        logits, hidden, targets, mask = rollouts.forward(model, samples, processor.tokenizer.pad_token_id, 1.0,
                                                         hidden=True)
        values = head(hidden)
    # Right-aligned action space, cut to start one position before the first answer token (logits_to_keep).
    prompt_len = samples[0].action.index(1)
    width = len(samples[0].ids) - prompt_len
    assert values.shape == mask.shape == targets.shape == logits.shape[:2] == (2, width)
    assert mask.sum() == sum(sum(s.action) for s in samples) and mask[:, 0].all()
    with torch.no_grad():
        full = model(**rollouts.collate(samples, processor.tokenizer.pad_token_id, "cpu")["inputs"],
                     output_hidden_states=True)
    # The value of the state before answer token t is read at position t-1, where its logits are.
    keep = torch.ones(logits.shape[-1], dtype=torch.bool)
    keep[rollouts.banned_ids(model)] = False  # the <image> column is masked in forward() (see the next test)
    assert torch.allclose(logits[..., keep], full.logits[:, prompt_len - 1:-1][..., keep], atol=1e-5)
    assert torch.allclose(values, head(full.hidden_states[-1][:, prompt_len - 1:-1]), atol=1e-5)
    ppo.save_value_head(head, tmp_path)
    again = ppo.load_value_head(tmp_path, ppo.hidden_size(model))
    assert torch.equal(again.linear.weight, head.linear.weight)


class _PreferImage(torch.nn.Module):
    # An lm_head that makes <image> by far the likeliest next token.
    def __init__(self, inner, image_id):
        super().__init__()
        self.inner, self.image_id = inner, image_id

    def forward(self, x):
        out = self.inner(x)
        out[..., self.image_id] += 100.0
        return out


def test_vision_placeholders_are_never_sampled_nor_scored(setup, llava):
    model, processor = llava
    image_id = model.config.image_token_id
    assert rollouts.banned_ids(model) == [image_id]
    inner = model.lm_head
    model.lm_head = _PreferImage(inner, image_id)
    try:
        torch.manual_seed(0)
        # Multi-turn: a sampled <image> would reach the next turn's prompt and break the image-feature merge.
        samples = rollouts.rollout_conversation(model, processor, setup[4][:1], ppo.PPOConfig(k=2, max_new_tokens=4))
        assert all(t != image_id for s in samples for t in sum(s.answer_ids, []))
        logits, _, targets, mask = rollouts.forward(model, samples, processor.tokenizer.pad_token_id, 1.0)
        logp = ppo_math.token_logprobs(logits, targets)
        assert torch.isfinite(logp).all() and (logp[mask == 1] > -50).all()
        assert (torch.log_softmax(logits, -1)[..., image_id] < -1e6).all()
    finally:
        model.lm_head = inner


def test_kl_is_zero_when_the_policy_equals_the_reference(setup, llava):
    model, processor = llava
    ref, _ = load_vlm(setup[2], device="cpu")  # a separate copy, as in train()
    torch.manual_seed(0)
    samples = rollouts.rollout_single(model, processor, setup[3][:2], ppo.PPOConfig(k=2, max_new_tokens=6))
    head = ppo.ValueHead(ppo.hidden_size(model))
    sc = rollouts.score_rollout(model, ref, samples, processor.tokenizer.pad_token_id, ppo.PPOConfig(minibatch=3),
                                head)
    assert sc["mask"].sum() > 0
    _, kl = ppo_math.shaped_rewards(sc["logp"], sc["ref_logp"], sc["mask"], torch.zeros(4), 0.1)
    assert (kl == 0).all()
    with torch.no_grad():  # and not zero once the policy moves
        next(p for n, p in model.named_parameters() if "lm_head" in n).add_(0.05)
    try:
        sc2 = rollouts.score_rollout(model, ref, samples, processor.tokenizer.pad_token_id, ppo.PPOConfig(), head)
        assert (sc2["logp"] - sc2["ref_logp"]).abs().max() > 0
    finally:
        with torch.no_grad():
            next(p for n, p in model.named_parameters() if "lm_head" in n).sub_(0.05)


def test_single_turn_scoring_with_shared_prompts_matches_the_full_forward(setup, llava, monkeypatch):
    # rollouts.forward runs each distinct prompt once for its k samples (repro.train.shared_prefix): on every
    # answer token, the logits, hidden states and targets of the full left-padded forward; gradients too.
    model, processor = llava
    torch.manual_seed(0)
    cfg = ppo.PPOConfig(k=3, max_new_tokens=6)
    samples = rollouts.rollout_single(model, processor, setup[3][:3], cfg)
    assert rollouts.shareable(model, samples) and len({len(s.ids) for s in samples}) > 1  # answers differ in length
    conv = rollouts.rollout_conversation(model, processor, setup[4][:1], cfg)
    assert not rollouts.shareable(model, conv)  # conversations take the full forward
    pad = processor.tokenizer.pad_token_id
    out = {}
    for shared in (True, False):
        monkeypatch.setattr(rollouts, "shareable", lambda m, s, shared=shared: shared)
        model.zero_grad()
        logits, h, targets, mask = rollouts.forward(model, samples, pad, 0.7, hidden=True)
        m = mask.bool()
        (torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        out[shared] = (logits[m], h[m], targets[m], mask, grads)
    model.zero_grad()
    (lg, hs, tg, mk, gr), (lg0, hs0, tg0, mk0, gr0) = out[True], out[False]
    assert torch.equal(mk, mk0) and torch.equal(tg, tg0)
    torch.testing.assert_close(lg, lg0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(hs, hs0, atol=1e-4, rtol=1e-4)
    assert gr.keys() == gr0.keys()
    for n in gr0:
        torch.testing.assert_close(gr[n], gr0[n], atol=1e-4, rtol=1e-3, msg=n)


def test_multi_turn_action_mask_is_one_exactly_on_the_answers(setup, llava):
    model, processor = llava
    tok = processor.tokenizer
    conv = setup[4][:2]
    torch.manual_seed(0)
    samples = rollouts.rollout_conversation(model, processor, conv, ppo.PPOConfig(k=2, max_new_tokens=5))
    assert [s.query for s in samples] == [0, 0, 1, 1]
    eos = tok.eos_token_id
    image_id = model.config.image_token_id
    for s in samples:
        row = conv[s.query]
        assert len(s.answers) == len(s.answer_ids) == len(row["questions"]) == 5
        assert [t for t, a in zip(s.ids, s.action) if a] == sum(s.answer_ids, [])
        assert all(a == 0 for t, a in zip(s.ids, s.action) if t == image_id)
        # Drop the answers (keep a sampled EOS, which ends the turn): what is left must be the chat template of
        # the conversation with empty answers, token for token - every question token is masked out.
        kept = [t for t, a in zip(s.ids, s.action) if not a or t == eos]
        msgs = []
        for t, q in enumerate(row["questions"]):
            msgs.append(chat.user_message(q, with_image=t == 0))
            if t < 4:
                msgs.append({"role": "assistant", "content": [{"type": "text", "text": ""}]})
        text = processor.apply_chat_template(msgs, add_generation_prompt=True)
        want = processor(text=[text], images=[[row["image"].convert("RGB")]], return_tensors="pt")["input_ids"][0]
        assert kept == want.tolist() + ([eos] if s.ended[-1] else [])


def test_loss_gradient_is_zero_off_the_answer_tokens(setup, llava):
    model, processor = llava
    torch.manual_seed(0)
    samples = rollouts.rollout_conversation(model, processor, setup[4][:1], ppo.PPOConfig(k=2, max_new_tokens=4))
    head = ppo.ValueHead(ppo.hidden_size(model))
    torch.nn.init.normal_(head.linear.weight)
    logits, hidden, targets, mask = rollouts.forward(model, samples, processor.tokenizer.pad_token_id, 1.0,
                                                     hidden=True)
    values = head(hidden)
    logits.retain_grad()
    values.retain_grad()
    g = torch.Generator().manual_seed(1)
    # Every input is non-zero everywhere (also off the mask), so only the masking can zero the gradient there.
    junk = [torch.randn(mask.shape, generator=g) for _ in range(4)]
    loss, stats = ppo_math.ppo_loss(logits, values, targets, mask, junk[0] - 5, junk[1], junk[2], junk[3],
                                    clip=0.2, clip_value=0.2, vf_coef=0.1, ent_coef=0.1)
    loss.backward()
    off = mask == 0
    assert off.any() and (~off).any()
    assert (logits.grad[off] == 0).all() and (values.grad[off] == 0).all()
    assert logits.grad[~off].abs().sum() > 0 and values.grad[~off].abs().sum() > 0
    assert set(stats) >= {"policy_loss", "value_loss", "entropy", "clip_frac", "approx_kl"}
    # The value head reads detached hidden states: a value loss never reaches the language model.
    model.zero_grad(set_to_none=True)
    _, hidden, _, _ = rollouts.forward(model, samples, processor.tokenizer.pad_token_id, 1.0, hidden=True)
    head(hidden).pow(2).sum().backward()
    assert head.linear.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_rewards_get_columns_and_aar_normalises_per_query():
    seen = {}

    def spy(prompts, completions, **kw):
        seen.update(kw, prompts=prompts, completions=completions)
        return [None, 1.0, 2.0, 3.0]

    # Both rows share an id on purpose: grouping must follow the query, not the id column.
    facts = {"id": "same", "abnormal": True, "category": "nodule", "region": "lung", "modality": "CT",
             "bboxes": [[16, 16, 32, 32]]}  # percent box [25, 25, 50, 50] in a 64-px image
    rows = [dict(facts, extra="a"), dict(facts, extra="b")]
    good = "Detection: abnormal. Localization: [25, 25, 50, 50]. Recognition: nodule in the lung, CT."
    half = "Detection: abnormal. Localization: [25, 25, 50, 38]. Recognition: nodule in the lung, CT."
    none = "Detection: abnormal. Localization: none. Recognition: nodule in the lung, CT."
    samples = [rollouts.Sample(query=q, ids=[], action=[], token_extra={}, image={}, prompts=[{"role": "user"}],
                          answers=[a], answer_ids=[[q, 7]]) for q, a in [(0, good), (0, half), (1, half), (1, none)]]
    aar = localization.make_aar_reward(group_key="query_id", scale="sum")  # "mean": test_localization.py
    total, raw = rollouts.score_samples([aar, spy], [1.0, 0.5], rows, samples)
    assert seen["query_id"] == [0, 0, 1, 1] and seen["extra"] == ["a", "a", "b", "b"]
    assert seen["completion_ids"] == [[0, 7], [0, 7], [1, 7], [1, 7]]
    assert seen["completions"][1] == [{"role": "assistant", "content": half}]
    rel = localization.relevance_reward(None, [good, half, half, none], **{k: [facts[k]] * 4 for k in facts})
    alr = [a - r for a, r in zip(raw["aar_reward"], rel)]
    iou_half = 13 / 25
    assert alr == pytest.approx([1.0, iou_half, 1.0, 0.0])  # "half" is the best of query 1, so it scores 1
    assert raw["spy"] == [None, 1.0, 2.0, 3.0]
    assert total.tolist() == pytest.approx([raw["aar_reward"][0], raw["aar_reward"][1] + 0.5,
                                            raw["aar_reward"][2] + 1.0, raw["aar_reward"][3] + 1.5])


def test_batch_indices_walk_epochs_without_repeats():
    seq = [i for s in range(6) for i in ppo.batch_indices(5, 2, s, seed=3)]
    assert sorted(seq[:5]) == list(range(5)) and sorted(seq[5:10]) == list(range(5))
    assert seq == [i for s in range(6) for i in ppo.batch_indices(5, 2, s, seed=3)]


# ----------------------------------------------------------------------------------------------- training runs
def _params(path):
    model, _ = load_vlm(path, device="cpu")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Boom(RuntimeError):
    pass


def _interrupting(after_calls: int):
    calls = {"n": 0}

    def char_reward(prompts, completions, **kw):  # same name as the real one: same run key
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise Boom("interrupted")
        return [len(set(c[-1]["content"])) / 10 for c in completions]

    return char_reward


def test_single_turn_run_moves_the_policy_is_deterministic_and_resumes_exactly(setup):
    root, _, init, instruct, _ = setup
    cfg = ppo.PPOConfig(steps=3, batch_size=2, k=2, ppo_epochs=2, minibatch=2, lr=1e-3, max_new_tokens=8,
                        save_steps=1, seed=0)
    rewards = [localization.make_aar_reward(group_key="query_id"), char_reward]
    a = ppo.train(init, root / "st_a", instruct, rewards, cfg, reward_weights=[1.0, 1.0], progress=False)
    print(f"\nsingle-turn PPO: {a['seconds_per_step']} s/step (2 prompts x 2 samples, 8 new tokens)")
    hist = a["log_history"]
    assert [h["step"] for h in hist] == [1, 2, 3]
    keys = {"reward", "reward/aar_reward", "reward/char_reward", "kl", "entropy", "response_length", "policy_loss",
            "value_loss", "clip_frac", "approx_kl", "eos_rate", "value_mean", "explained_variance", "policy_update"}
    assert keys <= set(hist[0])
    # Step 1 is the value warm-up (value_warmup_steps=1): the head learns, the policy does not move, so step 2's
    # rollout is still scored by a policy equal to the reference.
    assert [h["policy_update"] for h in hist] == [0, 1, 1] and hist[0]["policy_loss"] is None
    assert hist[0]["kl"] == 0.0 and hist[1]["kl"] == 0.0 and hist[0]["value_mean"] == 0.0
    assert hist[1]["value_mean"] != 0.0  # the warm-up moved the zero-initialised head
    assert hist[-1]["kl"] != 0.0 and 0 < hist[0]["response_length"] <= 8
    before, after = _params(init), _params(a["final_dir"])
    assert any(not torch.equal(before[k], after[k]) for k in before)
    head = ppo.load_value_head(a["final_dir"], 128)
    assert head.linear.weight.abs().sum() > 0

    # Interrupted in step 3 (checkpoint-2 on disk), then rerun: resumes and ends exactly where run `a` ended.
    with pytest.raises(Boom):
        ppo.train(init, root / "st_b", instruct, [rewards[0], _interrupting(2)], cfg, progress=False)
    assert (root / "st_b" / "checkpoints" / "checkpoint-2" / ppo.VALUE_HEAD_FILE).exists()
    b = ppo.train(init, root / "st_b", instruct, rewards, cfg, progress=False)
    assert b["resumed_from"].endswith("checkpoint-2")
    assert b["log_history"] == hist
    b_params = _params(b["final_dir"])
    assert all(torch.equal(after[k], b_params[k]) for k in after)

    # Another seed in the same folder: a new run key, so no resume, and another history.
    c = ppo.train(init, root / "st_b", instruct, rewards, dataclasses.replace(cfg, seed=1),
                  progress=False)
    assert c["resumed_from"] is None and c["log_history"] != hist


def test_multi_turn_run_moves_the_policy_and_is_deterministic(setup):
    root, _, init, _, conv = setup
    cfg = ppo.PPOConfig(steps=2, batch_size=2, k=2, ppo_epochs=1, minibatch=4, lr=1e-3, max_new_tokens=6,
                        save_steps=10, seed=0, value_warmup_steps=0)
    rewards = [rules.make_drllava_reward(), char_reward]
    rng = torch.get_rng_state()
    a = ppo.train(init, root / "mt_a", conv, rewards, cfg, multi_turn=True, reward_weights=[1.0, 0.5],
                  progress=False)
    print(f"\nmulti-turn PPO: {a['seconds_per_step']} s/step (2 convs x 2 samples x 5 turns, 6 new tokens/turn)")
    assert torch.equal(torch.get_rng_state(), rng)  # train() reseeds per step inside fork_rng only
    h = a["log_history"][0]
    assert h["reward"] == pytest.approx(h["reward/drllava_reward"] + 0.5 * h["reward/char_reward"], abs=1e-5)
    assert 5 <= h["response_length"] <= 30  # five answers of 1..6 tokens each
    assert h["kl"] == 0.0
    # One epoch, one minibatch holding every sample: the update starts from the scored policy, so ratio == 1.
    assert all(x["approx_kl"] < 1e-8 and x["clip_frac"] == 0.0 for x in a["log_history"])
    before, after = _params(init), _params(a["final_dir"])
    assert any(not torch.equal(before[k], after[k]) for k in before)
    b = ppo.train(init, root / "mt_b", conv, rewards, cfg, multi_turn=True, reward_weights=[1.0, 0.5],
                  progress=False)
    assert b["log_history"] == a["log_history"]
    assert (root / "mt_a" / "checkpoints" / "checkpoint-2").exists()  # the last step always checkpoints


def test_qwen25vl_code_path_trains_a_step(setup):
    root, data, _, instruct, conv = setup
    qwen = build_tiny_qwen25vl(root / "qwen", sft.corpus(data))
    cfg = ppo.PPOConfig(steps=1, batch_size=1, k=2, ppo_epochs=1, minibatch=2, lr=1e-3, max_new_tokens=4,
                        value_warmup_steps=0)
    info = ppo.train(qwen, root / "qwen_mt", conv, [char_reward], cfg, multi_turn=True, progress=False)
    assert info["log_history"][0]["response_length"] >= 5
    model, _ = load_vlm(info["final_dir"], device="cpu")
    assert type(model).__name__.startswith("Qwen2_5_VL")

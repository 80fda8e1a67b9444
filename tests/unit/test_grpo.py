"""GRPO stage: rows in TRL's vision format feeding the Zhu et al. rewards, the variant table, 2-step runs of each
loss type that move the policy, resume under the run key, and the zero-reward known answer."""

from __future__ import annotations

import pytest
import torch

from repro.chat import first_user_text
from repro.data import build
from repro.models import build_tiny_vlm, load_vlm
from repro.rewards import text_of, vqa
from repro.train import grpo, sft

KW = dict(n_per_class=5, n_normal=5, image_size=64, difficulty=0.5, yes_share=0.5, split_fractions=[0.6, 0.2, 0.2],
          conv_train_variants=["standard"], conv_eval_variants=["standard"], heldout_categories=[])
# mask_truncated=False: a random tiny model never ends within 8 tokens, so masking truncated completions would mask all.
FAST = dict(num_generations=4, batch_size=2, max_completion_length=8, lr=1e-2, beta=0.04, temperature=1.0, seed=0,
            mask_truncated=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    data = root / "data"
    build.build(data, seed=0, **KW)
    init = build_tiny_vlm(root / "init", sft.corpus(data), size="smoke", seed=0)
    return root, data, init


def _params(path) -> dict:
    model, _ = load_vlm(path, device="cpu", dtype="fp32")
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def distinct_chars_reward(completions, **kwargs):
    """Test-only reward with spread on a random policy's text (the paper's rewards are all 0 there)."""
    return [len(set(text_of(c))) / 16 for c in completions]


def test_rows_have_trls_prompt_format_and_the_reward_columns(setup):
    from trl.data_utils import prepare_multimodal_messages

    _, data, init = setup
    ds = grpo.grpo_dataset(data, "train", limit=4, seed=0)
    mcq = {r["id"]: r for r in build.load_task(data, "mcq")["train"]}
    assert len(ds) == 4 and {"prompt", "image", *grpo.REWARD_COLUMNS} <= set(ds.column_names)
    assert "messages" not in ds.column_names  # the gold answer must not leak into the prompt
    _, processor = load_vlm(init, device="cpu")
    for r in ds:
        src = mcq[r["id"]]
        (msg,) = r["prompt"]
        assert msg["role"] == "user" and [b["type"] for b in msg["content"]] == ["image", "text"]
        assert msg["content"][1]["text"] == first_user_text(src)
        # What GRPOTrainer does with the row: fill the placeholder from `image`, render, tokenize.
        filled = prepare_multimodal_messages(r["prompt"], images=[r["image"]])
        enc = processor.apply_chat_template([filled], add_generation_prompt=True, tokenize=True, return_dict=True)
        assert (torch.as_tensor(enc["input_ids"]) == processor.tokenizer.convert_tokens_to_ids("<image>")).sum() == 64
        # TRL calls rewards with list columns and chat completions: the gold target earns format and accuracy.
        cols = {k: [r[k]] for k in grpo.REWARD_COLUMNS}
        gold = [[{"role": "assistant", "content": src["messages"][1]["content"]}]]
        assert vqa.format_reward(prompts=[r["prompt"]], completions=gold, **cols) == [1.0]
        assert vqa.accuracy_reward(prompts=[r["prompt"]], completions=gold, **cols) == [1.0]
        assert vqa.semantic_reward(prompts=[r["prompt"]], completions=gold, **cols) == [1.0]


def test_variant_table_matches_the_paper_settings():
    v = grpo.VARIANTS
    assert set(v) == {"grpo", "grpo_semantic", "dr_grpo", "ecr", "cwr"}
    for name, var in v.items():
        assert var.reward_names[:2] == ["format_reward", "accuracy_reward"], name
        assert len(var.weights) == len(var.rewards)
    assert (v["grpo"].loss_type, v["grpo"].scale_rewards) == ("grpo", "group")
    assert (v["dr_grpo"].loss_type, v["dr_grpo"].scale_rewards) == ("dr_grpo", "none")
    assert v["grpo_semantic"].reward_names[2] == "semantic_reward"
    assert v["ecr"].reward_names[2].startswith("ecr_reward") and v["cwr"].reward_names[2].startswith("cwr_reward")
    assert all(v[n].loss_type == "grpo" for n in ("grpo_semantic", "ecr", "cwr"))
    with pytest.raises(ValueError, match="unknown GRPO variant"):
        grpo.get_variant("ppo")


@pytest.mark.parametrize("loss_type,scale", [("grpo", "group"), ("dr_grpo", "none")])
def test_two_steps_of_each_loss_type_move_the_policy(setup, loss_type, scale):
    root, data, init = setup
    ds = grpo.grpo_dataset(data, limit=8)
    var = grpo.Variant(f"smoke_{loss_type}", (vqa.format_reward, distinct_chars_reward), (1.0, 1.0),
                       loss_type=loss_type, scale_rewards=scale)
    out = root / f"run_{loss_type}"
    info = grpo.train(init, out, ds, var, max_steps=2, save_steps=2, run_key={"t": loss_type}, use_cpu=True, **FAST)
    before, after = _params(init), _params(info["final_dir"])
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("language_model" in k for k in changed)
    cv = grpo.curves(info["log_history"])
    assert list(cv["step"]) == [1, 2]
    assert {"reward", "kl", "completion_length", "format_reward", "distinct_chars_reward"} <= set(cv.columns)
    assert (cv["completion_length"] <= FAST["max_completion_length"]).all()
    assert info["completions"] == 2 * FAST["batch_size"] * FAST["num_generations"]
    if loss_type == "grpo":  # same key, finished: the saved run comes back, nothing is retrained or overwritten
        again = grpo.train(init, out, ds, var, max_steps=2, save_steps=2, run_key={"t": loss_type}, use_cpu=True,
                           **FAST)
        assert again.get("cached") and again["log_history"] == info["log_history"]
        assert all(torch.equal(after[k], v) for k, v in _params(again["final_dir"]).items())
        other = grpo.train(init, out, ds, var, max_steps=1, run_key={"t": "other"}, use_cpu=True, **FAST)
        assert other["resumed_from"] is None


def test_paper_rewards_are_all_zero_on_a_random_policy_so_it_stays_put(setup):
    """Known answer: a random tiny VLM never writes <think>..</think><answer>..</answer>, so every reward is 0, every
    advantage is 0, the policy gradient is exactly 0 (beta=0: no KL term) and Adam leaves the weights as they are.
    The logged accuracy mean is 0.0, not None: the answer/options columns reached the reward through TRL."""
    root, data, init = setup
    ds = grpo.grpo_dataset(data, limit=4)
    info = grpo.train(init, root / "zero", ds, "grpo", max_steps=1, use_cpu=True, **{**FAST, "beta": 0.0})
    (h,) = [h for h in info["log_history"] if "reward" in h]
    assert h["rewards/format_reward/mean"] == 0.0 and h["rewards/accuracy_reward/mean"] == 0.0
    assert h["frac_reward_zero_std"] == 1.0 and h["grad_norm"] == 0.0
    before, after = _params(init), _params(info["final_dir"])
    assert all(torch.equal(before[k], after[k]) for k in before)


# ----------------------------------------------------------------------------------------------- generation budget
def test_default_completion_length_is_evaluations_budget_and_covers_the_ecr_cap():
    from repro import evaluation

    assert grpo.MAX_COMPLETION_LENGTH == evaluation.MAX_NEW_TOKENS["mcq"] == 96
    assert vqa.completion_tokens_needed(vqa.DEFAULT_CAP) == 2 * 32 + 12 == 76 <= grpo.MAX_COMPLETION_LENGTH
    for name in ("ecr", "cwr"):
        assert grpo.length_caps(grpo.VARIANTS[name]) == [vqa.DEFAULT_CAP]
        grpo.check_completion_length(grpo.VARIANTS[name], 76)  # exactly enough: fine
        with pytest.raises(ValueError, match="max_completion_length=64"):  # the old cpu value
            grpo.check_completion_length(grpo.VARIANTS[name], 64)
    grpo.check_completion_length(grpo.VARIANTS["grpo"], 8)  # no length reward, no constraint


def test_train_refuses_a_budget_below_the_ecr_cap_before_loading_anything(tmp_path):
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo.train(tmp_path / "missing_init", tmp_path / "out", [], "ecr", max_steps=1, max_completion_length=40)
    assert not (tmp_path / "out").exists()


def test_config_masks_truncated_completions(tmp_path):
    v = grpo.VARIANTS["grpo"]
    kw = dict(max_steps=1, num_generations=2, batch_size=1, lr=1e-4, beta=0.0, max_completion_length=96,
              temperature=1.0, seed=0, use_cpu=True)
    assert grpo.make_config(tmp_path, v, **kw).mask_truncated_completions is True
    assert grpo.make_config(tmp_path, v, mask_truncated=False, **kw).mask_truncated_completions is False


def test_similarity_metric_is_not_a_training_reward():
    rewards = {f for var in grpo.VARIANTS.values() for f in var.rewards}
    assert vqa.reasoning_similarity not in rewards and vqa.similarity_scores not in rewards
    assert not any("similar" in f.__name__ for f in rewards)


# ----------------------------------------------------------------------------------------------- matched update size
def test_matched_lr_known_answers():
    v = grpo.VARIANTS
    assert grpo.matched_lr(1e-4, v["grpo"]) == 1e-4 and grpo.matched_lr(1e-4, v["ecr"]) == 1e-4
    for optim in ("adamw_torch", "adamw_torch_fused", "adam_8bit", "rmsprop"):
        assert grpo.matched_lr(1e-4, v["dr_grpo"], optim=optim) == 1e-4  # Adam-type: scale-invariant steps
    # SGD: lr / kappa, kappa = E[sigma_g |o_i|] / L_max; sigma 0.5, |o| 30, L_max 96 -> kappa 0.15625 -> lr * 6.4
    assert grpo.matched_lr(1e-4, v["dr_grpo"], optim="sgd", kappa=0.5 * 30 / 96) == pytest.approx(6.4e-4)
    with pytest.raises(ValueError, match="kappa"):
        grpo.matched_lr(1e-4, v["dr_grpo"], optim="sgd")
    with pytest.raises(ValueError, match="no update-size rule"):
        grpo.matched_lr(1e-4, grpo.Variant("x", (), (), loss_type="dapo"))


def _one_step(optim_cls, scale: float, lr: float) -> torch.Tensor:
    """The parameter update of one optimizer step on `scale` * a fixed loss (a 2-step run, to include moments)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 3)
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    opt = optim_cls(lin.parameters(), lr=lr)
    for _ in range(2):
        before = lin.weight.detach().clone()
        opt.zero_grad()
        (scale * ((lin(x) - y) ** 2).mean()).backward()
        opt.step()
    return lin.weight.detach() - before


def test_the_matching_rule_equalises_update_size():
    """Why matched_lr returns lr for Adam and lr / kappa for SGD: a gradient scaled by kappa (Dr.GRPO vs GRPO) leaves
    an AdamW step unchanged, and scales an SGD step by kappa, which lr / kappa undoes."""
    kappa = 0.15625
    adam_ref, adam_dr = _one_step(torch.optim.AdamW, 1.0, 1e-2), _one_step(torch.optim.AdamW, kappa, 1e-2)
    assert torch.allclose(adam_dr, adam_ref, rtol=1e-4, atol=1e-9)
    sgd_ref, sgd_same_lr = _one_step(torch.optim.SGD, 1.0, 1e-2), _one_step(torch.optim.SGD, kappa, 1e-2)
    assert not torch.allclose(sgd_same_lr, sgd_ref, rtol=1e-2)  # equal lr: a confound under SGD
    dr = grpo.VARIANTS["dr_grpo"]
    sgd_matched = _one_step(torch.optim.SGD, kappa, grpo.matched_lr(1e-2, dr, optim="sgd", kappa=kappa))
    assert torch.allclose(sgd_matched, sgd_ref, rtol=1e-4, atol=1e-9)

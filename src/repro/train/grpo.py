"""GRPO fine-tuning on the multiple-choice VQA task with TRL's GRPOTrainer (Zhu et al. 2025, docs/methods.md §2).

    ds = grpo_dataset(data_dir, "train", limit=256)
    info = train(sft_dir, out_dir, ds, "dr_grpo", max_steps=50)     # {"final_dir", "log_history", "seconds", ...}
    curves(info["log_history"])                                      # step, reward, kl, completion length, ...

Variants (`VARIANTS`), each a reward set, reward weights, a loss aggregation and an advantage scaling:
    grpo           format + accuracy; loss_type="grpo" (per-sequence 1/|o_i| token mean, then mean over sequences),
                   scale_rewards="group": A_i = (r_i - mean_G r) / std_G r, the DeepSeekMath GRPO of the paper.
    grpo_semantic  grpo + the semantic-alignment reward (RuleJudge by default; an LLM judge plugs in via rewards.vqa).
    dr_grpo        format + accuracy; loss_type="dr_grpo" (token sum / (batch * max_completion_length), no 1/|o_i|)
                   and scale_rewards="none": A_i = r_i - mean_G r. Dr.GRPO (Liu et al. 2025) removes *both* biases:
                   the length normalisation and the std division (std division up-weights questions whose group
                   rewards barely vary, i.e. too easy or too hard questions), so both settings change together.
    ecr / cwr      grpo + the Extended-Chain / Correctness-Weighted length reward (rewards.vqa.make_ecr / make_cwr).
Reward weights are all 1 [INFERRED]: the paper does not give them, and a sum of {0,1} rewards keeps every term on the
same scale. TRL's multi_objective_aggregation="sum_then_normalize" sums the weighted rewards, then forms advantages.

Generation budget: max_completion_length defaults to evaluation's MCQ budget (MAX_COMPLETION_LENGTH = 96 tokens =
repro.evaluation.MAX_NEW_TOKENS["mcq"]): training lets the policy write what evaluation will read, and 96 covers the
76 tokens a <think> at the ECR/CWR cap needs (rewards.vqa.completion_tokens_needed); a variant with a length reward
refuses a smaller budget (ValueError naming max_completion_length). Truncated completions are masked out of the loss
(GRPOConfig.mask_truncated_completions): a cut-off answer has no <answer> block, and scoring it 0 would teach
"shorter" whenever the cap, not the answer, was the problem.

Dr.GRPO vs GRPO at matched update size (`match_update_size=True`, matched_lr): see matched_lr for the derivation.
With TRL's default optimizer (AdamW) the matched learning rate is the same learning rate.

Batching: `batch_size` counts *prompts* per optimizer step; TRL's per_device_train_batch_size counts completions,
so it is batch_size * num_generations (every prompt's G completions land in the same step, as GRPO needs).
On CPU: fp32 (bf16=False), no activation checkpointing, use_cpu=True. TRL 1.16's GRPOConfig has no
max_prompt_length any more, so prompts (with their 64 image tokens) are never truncated; completions are cut at
max_completion_length. Checkpoints go to <out_dir>/checkpoints, resumed only under the same run key (as sft.train),
from the checkpoint's weights (runs.restore_weights) and with a prompt order seeded by (seed, epoch), so that a
resumed run ends bit-identical to an uninterrupted one (tests/unit/test_resume.py); the final model and processor go
to <out_dir>/final.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from repro.chat import first_user_text, user_message
from repro.data import build
from repro.rewards import vqa
from repro.train import runs

# Columns the Zhu et al. rewards read (TRL passes every dataset column to every reward function as a list).
REWARD_COLUMNS = ("answer", "options", "answer_text", "reason_facts", "category", "region", "modality")
KEEP_COLUMNS = REWARD_COLUMNS + ("id", "source", "question_kind")


@dataclass(frozen=True)
class Variant:
    """One GRPO configuration of the paper: reward functions (TRL signature), their weights, and TRL's loss_type
    and scale_rewards (advantage normalisation)."""

    name: str
    rewards: tuple
    weights: tuple[float, ...]
    loss_type: str = "grpo"
    scale_rewards: str = "group"
    note: str = field(default="", compare=False)

    def __post_init__(self):
        if len(self.rewards) != len(self.weights):
            raise ValueError(f"variant {self.name}: {len(self.rewards)} rewards but {len(self.weights)} weights")

    @property
    def reward_names(self) -> list[str]:
        return [f.__name__ for f in self.rewards]


_BASE = (vqa.format_reward, vqa.accuracy_reward)
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("grpo", _BASE, (1.0, 1.0), note="GRPO: format + accuracy, std-normalised group advantage"),
    Variant("grpo_semantic", _BASE + (vqa.semantic_reward,), (1.0, 1.0, 1.0),
            note="GRPO + semantic-alignment reward (reasoning names the right finding/region/modality)"),
    Variant("dr_grpo", _BASE, (1.0, 1.0), loss_type="dr_grpo", scale_rewards="none",
            note="Dr.GRPO: no 1/|o| length normalisation, no std division of the advantage"),
    Variant("ecr", _BASE + (vqa.ecr_reward,), (1.0, 1.0, 1.0),
            note="GRPO + Extended Chain Reward (longer <think>, unconditionally)"),
    Variant("cwr", _BASE + (vqa.cwr_reward,), (1.0, 1.0, 1.0),
            note="GRPO + Correctness-Weighted length Reward (longer <think> only when correct)"),
)}


MAX_COMPLETION_LENGTH = 96  # = repro.evaluation.MAX_NEW_TOKENS["mcq"] (a test keeps them equal)


def length_caps(v: Variant) -> list[int]:
    """The word caps of the variant's length rewards (ECR / CWR carry `.cap`); [] without one."""
    return [int(f.cap) for f in v.rewards if getattr(f, "cap", None)]


def check_completion_length(v: Variant, max_completion_length: int) -> None:
    """ValueError when the generation budget cannot reach a length reward's cap (vqa.completion_tokens_needed)."""
    caps = length_caps(v)
    need = max((vqa.completion_tokens_needed(c) for c in caps), default=0)
    if max_completion_length < need:
        raise ValueError(f"max_completion_length={max_completion_length} is below the {need} tokens that variant "
                         f"{v.name}'s length reward (cap {max(caps)} words) needs; use >= {need} (default "
                         f"{MAX_COMPLETION_LENGTH}, evaluation's MCQ budget)")


ADAM_FAMILY = ("adam", "lamb", "lion", "rmsprop", "adafactor")  # optimizers that divide by a running gradient scale


def matched_lr(lr: float, v: Variant, *, optim: str = "adamw_torch", kappa: float | None = None) -> float:
    """Learning rate at which variant `v` takes updates of the same size as GRPO at `lr` (match_update_size).

    Derivation. At the start of a step (ratio 1, no clipping) the policy loss of one completion o_i of group g is
    -w_i * sum_t log pi(o_it), with the per-token weight
        GRPO     w_i = (r_i - mean_g r) / (sigma_g * |o_i| * N)        (std-normalised advantage, 1/|o_i| token mean)
        Dr.GRPO  w_i = (r_i - mean_g r) / (L_max * N)                  (raw advantage, constant divisor L_max)
    (N completions per step, L_max = max_completion_length). The gradients therefore differ by the factor
    kappa_i = sigma_g * |o_i| / L_max (Dr.GRPO / GRPO), e.g. sigma ~ 0.5, |o| ~ 30, L_max = 96 -> kappa ~ 0.16.
      - Plain SGD (update = lr * gradient): the expected update matches at lr_dr = lr / E[kappa]; `kappa` must be
        given (an estimate of E[sigma_g |o_i|] / L_max from a pilot step), else ValueError.
      - Adam-type optimizers (TRL's default AdamW): update = lr * m / (sqrt(v) + eps) with m, v running means of g
        and g^2. A constant factor c on every gradient scales m by c and sqrt(v) by c, so the update is unchanged
        (while c|g| >> eps): at equal lr the two losses already take equal-size steps, and scaling lr by 1/kappa
        would *create* a 6x confound. So lr_dr = lr. What still differs is the weighting *within* a step (1/sigma_g
        across groups, 1/|o_i| across completions): that is the difference between the methods, not a confound.
        One side effect stays: the KL term (beta * k3 per token) is normalised like the policy term in each loss,
        but the advantages it is weighed against are in reward units for Dr.GRPO and in std units for GRPO, so the
        effective KL strength of Dr.GRPO is ~1/sigma times GRPO's at the same beta.
    Variants other than dr_grpo (same loss and scaling as GRPO) get `lr` back.
    """
    if v.loss_type == "grpo" and v.scale_rewards == "group":
        return lr
    if v.loss_type != "dr_grpo" or v.scale_rewards != "none":
        raise ValueError(f"matched_lr: no update-size rule for loss_type={v.loss_type!r}, "
                         f"scale_rewards={v.scale_rewards!r}")
    if any(name in str(optim).lower() for name in ADAM_FAMILY):
        return lr
    if kappa is None or not (math.isfinite(kappa) and kappa > 0):
        raise ValueError(f"matched_lr: optim={optim!r} scales updates with the gradient; pass kappa = "
                         f"E[sigma_g |o_i|] / max_completion_length (> 0), got {kappa!r}")
    return lr / kappa


def get_variant(variant: str | Variant) -> Variant:
    if isinstance(variant, Variant):
        return variant
    if variant not in VARIANTS:
        raise ValueError(f"unknown GRPO variant {variant!r}; known: {sorted(VARIANTS)}")
    return VARIANTS[variant]


# ----------------------------------------------------------------------------------------------- data
def to_grpo_row(row: dict) -> dict:
    """MCQ task row -> TRL's vision GRPO row: a conversational prompt whose user message carries an image
    placeholder block (TRL fills it from the `image` column), the image, and the reward columns."""
    out = {"prompt": [user_message(first_user_text(row), with_image=True)], "image": row["image"]}
    out.update({k: row[k] for k in KEEP_COLUMNS if k in row})
    return out


def grpo_dataset(data_dir, split: str = "train", limit: int | None = None, seed: int = 0):
    """The MCQ split as GRPO rows (see to_grpo_row); with `limit`, a seeded random subset of that size."""
    ds = build.load_task(data_dir, "mcq")[split]
    if limit is not None and limit < len(ds):
        ds = ds.shuffle(seed=seed).select(range(limit))
    return ds.map(to_grpo_row, remove_columns=[c for c in ds.column_names if c not in KEEP_COLUMNS + ("image",)])


# ----------------------------------------------------------------------------------------------- training
@functools.cache
def _epoch_sampler_trainer():
    """GRPOTrainer whose prompt order is a function of (seed, epoch) only, so a resumed run replays it.

    Why: TRL's RepeatSampler draws each epoch's permutation from one torch.Generator seeded once, so epoch e's order
    depends on how many epochs this *process* has iterated. A run resumed after an epoch boundary restarts the
    generator and repeats epoch 0's order where the uninterrupted run had a new one (found by the kill/resume test).
    Trainer calls sampler.set_epoch(epoch) at every epoch start (also the resumed one); the sampler reseeds there.
    """
    import numpy as np
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    from repro.train import shared_prefix

    class EpochRepeatSampler(RepeatSampler):
        epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = int(epoch)

        def __iter__(self):
            if self.shuffle:
                state = np.random.SeedSequence([int(self.seed or 0), self.epoch]).generate_state(1)[0]
                self.generator.manual_seed(int(state))
            return super().__iter__()

    class EpochSeededGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Generation with one prompt pass per distinct prompt (shared_prefix.generate): TRL calls
            # unwrapped_model.generate, which on one process is self.model.
            own = self.model.generate
            self.model.generate = functools.partial(shared_prefix.generate, self.model, own)

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                               pixel_values=None, num_images=None, **multimodal):
            # One pass over each distinct prompt for its G completions (repro.train.shared_prefix: same log-probs,
            # ~3x fewer tokens); TRL's own scorer for what it does not cover (image grids, MoE aux loss, ...).
            if (not compute_aux_loss and (num_images is None or set(num_images) <= {1})
                    and shared_prefix.applies(input_ids, pixel_values, multimodal)):
                with self.accelerator.autocast():
                    logps, entropy = shared_prefix.completion_logps(model, input_ids, attention_mask, logits_to_keep,
                                                                    pixel_values, self.temperature, compute_entropy)
                return logps, entropy, None
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                pixel_values=pixel_values, num_images=num_images, **multimodal)

        def _get_train_sampler(self, dataset=None):
            base = super()._get_train_sampler(dataset)
            return EpochRepeatSampler(data_source=base.data_source, mini_repeat_count=base.mini_repeat_count,
                                      batch_size=base.batch_size, repeat_count=base.repeat_count,
                                      shuffle=base.shuffle, seed=base.seed)

    return EpochSeededGRPOTrainer



def make_config(out_dir, v: Variant, *, max_steps: int, num_generations: int, batch_size: int, lr: float,
                beta: float, max_completion_length: int, temperature: float, seed: int, use_cpu: bool,
                bf16: bool = False, save_steps: int = 100, logging_steps: int = 1, mask_truncated: bool = True,
                **extra):
    """The GRPOConfig of a run (separate so benchmarks and tests build the exact trainer train() builds)."""
    from trl import GRPOConfig

    return GRPOConfig(
        # constant lr: RL runs here are short, and a decaying schedule would make a 2-step smoke run half-step.
        output_dir=str(out_dir), max_steps=max_steps, learning_rate=lr, lr_scheduler_type="constant",
        per_device_train_batch_size=batch_size * num_generations, num_generations=num_generations,
        max_completion_length=max_completion_length, temperature=temperature, beta=beta,
        mask_truncated_completions=mask_truncated,
        loss_type=v.loss_type, scale_rewards=v.scale_rewards, reward_weights=list(v.weights),
        # The reward columns must reach the reward functions (1.16's default is already False; say so anyway).
        remove_unused_columns=False,
        logging_steps=logging_steps, save_strategy="steps", save_steps=save_steps, save_total_limit=1,
        seed=seed, data_seed=seed, report_to=[], use_cpu=use_cpu, bf16=bf16, activation_checkpointing=False,
        dataloader_num_workers=0, disable_tqdm=False, **extra,
    )


def train(init_dir, out_dir, dataset, variant: str | Variant = "grpo", *, max_steps: int, num_generations: int = 8,
          batch_size: int = 2, lr: float = 1e-4, beta: float = 0.04, max_completion_length: int | None = None,
          temperature: float = 1.0, seed: int = 0, run_key: dict | None = None, use_cpu: bool | None = None,
          save_steps: int = 100, logging_steps: int = 1, lora: dict | None = None, bf16: bool = False,
          callbacks: list | None = None, config_extra: dict | None = None, match_update_size: bool = True,
          mask_truncated: bool = True) -> dict:
    """GRPO-train the model at `init_dir` on `dataset` (grpo_dataset rows) with `variant`; returns
    {"final_dir", "log_history", "seconds", "steps", "resumed_from", "weights_restored", "variant", "completions",
    "lr_effective", "max_completion_length"}.

    beta: KL coefficient to the frozen initial model (TRL's k3 estimator); 0.04 is the DeepSeekMath value (the
    paper uses a KL penalty but its beta was not retrieved). beta=0 drops the reference model (faster).
    max_completion_length: None -> MAX_COMPLETION_LENGTH (evaluation's MCQ budget); below what a length reward's cap
    needs -> ValueError. mask_truncated: GRPOConfig.mask_truncated_completions (module docstring).
    match_update_size: train at matched_lr(lr, variant) (the same lr under AdamW; see matched_lr).
    Resume: only from checkpoints written under the same run key (run_key + every argument here), with the
    checkpoint's weights, optimizer and RNG state (runs.restore_weights).
    config_extra: further GRPOConfig fields (e.g. use_vllm / vllm_mode from repro.train.launch; GPU only).
    """
    from repro.models import load_vlm

    v = get_variant(variant)
    if max_completion_length is None:
        max_completion_length = MAX_COMPLETION_LENGTH
    check_completion_length(v, max_completion_length)
    lr = matched_lr(lr, v) if match_update_size else lr
    key = {"run_key": run_key, "init": str(init_dir), "variant": v.name, "rewards": v.reward_names,
           "weights": v.weights, "loss_type": v.loss_type, "scale_rewards": v.scale_rewards,
           "max_steps": max_steps, "num_generations": num_generations, "batch_size": batch_size, "lr": lr,
           "beta": beta, "max_completion_length": max_completion_length, "temperature": temperature,
           "seed": seed, "n_rows": len(dataset), "lora": lora, "mask_truncated": mask_truncated}
    if config_extra:  # only when given: the keys (and caches) of existing runs stay as they were
        key["config_extra"] = config_extra
    done, ckpt_dir, resume, use_cpu = runs.start(out_dir, key, use_cpu, dataset=dataset)
    if done:
        return done
    # From init even when resuming: TRL copies the reference model from the model it is given; runs.train_and_save
    # then copies the checkpoint's weights into the policy only (runs.restore_weights).
    model, processor = load_vlm(init_dir, device="cpu" if use_cpu else None, lora=lora,
                                dtype="bf16" if bf16 else "fp32")
    args = make_config(ckpt_dir, v, max_steps=max_steps, num_generations=num_generations, batch_size=batch_size,
                       lr=lr, beta=beta, max_completion_length=max_completion_length, temperature=temperature,
                       seed=seed, use_cpu=use_cpu, bf16=bf16, save_steps=save_steps, logging_steps=logging_steps,
                       mask_truncated=mask_truncated, **(config_extra or {}))
    trainer = _epoch_sampler_trainer()(model=model, reward_funcs=list(v.rewards), args=args, train_dataset=dataset,
                                       processing_class=processor, callbacks=callbacks)
    return runs.train_and_save(trainer, processor, out_dir, resume=resume, lora=lora, max_steps=max_steps,
                               variant=v.name, completions=max_steps * batch_size * num_generations,
                               lr_effective=lr, max_completion_length=max_completion_length)


# Logged key (TRL 1.16) -> column of curves(). rewards/<name>/mean columns are added per reward function.
CURVE_KEYS = {"reward": "reward", "reward_std": "reward_std", "kl": "kl", "loss": "loss", "entropy": "entropy",
              "completions/mean_length": "completion_length", "completions/clipped_ratio": "clipped_ratio",
              "frac_reward_zero_std": "frac_reward_zero_std", "step_time": "step_time"}


def curves(log_history: list[dict]):
    """Per-logging-step DataFrame: step, reward (weighted sum, mean over completions), reward_std, kl (absent when
    beta=0), loss, entropy, completion_length (mean tokens), clipped_ratio, frac_reward_zero_std, step_time and one
    column per reward function (its mean), named after the function."""
    import pandas as pd

    rows = []
    for h in log_history:
        if "reward" not in h:  # the final train summary (train_runtime, ...) has no per-step metrics
            continue
        row = {"step": h["step"]}
        row.update({col: h[k] for k, col in CURVE_KEYS.items() if k in h})
        row.update({k[len("rewards/"):-len("/mean")]: val for k, val in h.items()
                    if k.startswith("rewards/") and k.endswith("/mean")})
        rows.append(row)
    return pd.DataFrame(rows)

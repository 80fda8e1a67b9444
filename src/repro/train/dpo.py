"""DPO and MMedPO's clinical-weighted multimodal DPO on TRL's DPOTrainer (docs/methods.md §3).

    info = train(sft_dir, out_dir, pref_ds, weighted=False, max_steps=50)   # plain DPO: text pairs, weight 1
    info = train(sft_dir, out_dir, pref_ds, weighted=True, max_steps=50)    # MMedPO: text + visual pairs, weighted

Preference set (repro.data.preference): columns prompt (question text), chosen, rejected (answers), images ([image]),
rejected_images ([image]: the same image for a text pair, the lesion-noised image for a visual pair), weight (clinical
relevance s'), kind ("text" | "visual"), id, source, category.

MMedPO's loss as released (train/dpo/dpo_trainer_weighted.py), for pair i with summed completion log-probs:
    delta_i = [log pi(y_w|x) - log ref(y_w|x)] - [log pi(y_l|x*) - log ref(y_l|x*)]
    loss    = (1/B) sum_i  w_i * -log sigmoid(beta * delta_i)
x* is the noised image for visual pairs (y_l = y_w there) and x itself for text pairs.
Normalisation: by the batch size B, not by sum_i w_i, as the released code does (loss_i *= w_i; loss = mean). This
keeps the paper's objective -E[s' log sigma(...)]: a batch of low-relevance pairs gets a small gradient. Dividing by
sum w would rescale every batch back to unit weight, undoing the down-weighting whenever a batch's pairs share a
weight (and divide by zero for an all-zero batch). So a weight-0 pair adds nothing to the loss or the gradient, but
still counts in B: loss([a, b], w=[1, 0]) = loss([a], w=[1]) / 2.

TRL 1.16 has no per-pair weight hook (docs/design.md §6), so WeightedDPOTrainer
    - keeps the weight and rejected_images columns (remove_unused_columns=False),
    - collates with WeightedVisionPreferenceCollator: TRL's vision preference collator, then the rejected half's
      image tensors are replaced by the processed rejected images and the weights travel as `weight`,
    - overrides DPOTrainer._compute_loss (the method DPOTrainer.compute_loss delegates to) with the weighted sigmoid
      loss above, reusing DPOTrainer.compute_ref_log_probs for the reference (frozen copy, or the adapter switched off
      under PEFT) and logging the usual rewards/* and logps/* metrics plus `weight` and `loss_unweighted`.
Plain DPO is TRL's DPOTrainer unchanged on text pairs only: visual pairs have y_l = y_w, so without the noised image
on the rejected half their DPO margin is identically 0 and they would only add a constant log 2 to the loss.
On CPU: fp32, no activation checkpointing, max_length=None so the 64 image tokens are never cut.

Equal text-pair exposure (`equal_text_exposure=True`, text_exposure_steps): plain DPO trains on the text pairs only,
MMedPO on text + visual pairs, so at the same step count MMedPO sees only a fraction n_text / n_pairs of DPO's text
pairs (~0.6 on the cpu preference set: ~40% fewer). MMedPO's step count is raised to max_steps * n_pairs / n_text so
that the expected number of text pairs it sees equals DPO's max_steps * batch_size; what is left between the two
arms is what MMedPO adds (the visual pairs and the clinical weights), not less training on the shared pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from repro.chat import user_message
from repro.train import runs

KEEP_COLUMNS = ("weight", "kind", "id", "source", "category")


# ----------------------------------------------------------------------------------------------- data
def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def to_dpo_row(row: dict) -> dict:
    """Preference row -> TRL's conversational vision preference row (the image block heads the user turn)."""
    return {"prompt": [user_message(row["prompt"], with_image=True)], "chosen": _assistant(row["chosen"]),
            "rejected": _assistant(row["rejected"])}


def to_dpo_rows(ds, weighted: bool):
    """The preference set in TRL's format. weighted=False (plain DPO): text pairs only, weight 1, rejected image =
    the image. weighted=True (MMedPO): every pair with its weight and its rejected image."""
    if not weighted:
        ds = ds.filter(lambda k: k == "text", input_columns="kind")
        ds = ds.map(lambda r: {"weight": 1.0, "rejected_images": r["images"]})
    keep = {"images", "rejected_images", *KEEP_COLUMNS}
    return ds.map(to_dpo_row, remove_columns=[c for c in ds.column_names if c not in keep])


# ----------------------------------------------------------------------------------------------- collator
@dataclass
class WeightedVisionPreferenceCollator(DataCollatorForVisionPreference):
    """TRL's vision preference collator + MMedPO's two extras: `weight` (B,) and the rejected half's own image.

    The batch is [chosen_1..chosen_B, rejected_1..rejected_B]. TRL processes each example's `images` for both halves;
    here all image tensors (pixel_values, and image_grid_thw for Qwen-style processors) are recomputed from
    images + rejected_images in that order. The noised image has the image's size, so the number of image tokens in
    the text (computed by TRL from the chosen image) stays right.
    """

    def torch_call(self, examples: list[dict]) -> dict:
        chosen_imgs = [list(ex["images"]) for ex in examples]
        rejected_imgs = [list(ex.get("rejected_images") or ex["images"]) for ex in examples]
        weights = torch.tensor([float(ex.get("weight", 1.0)) for ex in examples], dtype=torch.float32)
        out = super().torch_call(examples)
        pix = self.processor.image_processor(images=chosen_imgs + rejected_imgs, return_tensors="pt")
        for k, v in pix.items():
            if k in out:  # only the tensors TRL's collator produced (pixel_values, image_grid_thw, ...)
                out[k] = v
        out["weight"] = weights
        return out


# ----------------------------------------------------------------------------------------------- trainer
class WeightedDPOTrainer(DPOTrainer):
    """DPOTrainer whose loss is the MMedPO weighted sigmoid DPO loss (module docstring). Only the plain setting is
    supported (loss_type ["sigmoid"], reverse KL, no LD-DPO / WPO weighting, reference log-probs computed on the fly):
    that is MMedPO's loss, and it keeps the override short."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        expected = {"loss_type": ["sigmoid"], "f_divergence_type": "reverse_kl", "ld_alpha": None,
                    "use_weighting": False, "precompute_ref_log_probs": False, "remove_unused_columns": False}
        bad = {k: getattr(self.args, k) for k, want in expected.items() if getattr(self.args, k) != want}
        if bad:
            raise ValueError(f"WeightedDPOTrainer supports only MMedPO's plain weighted sigmoid loss; got {bad}")

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)
        weight = inputs.pop("weight")
        completion_mask = inputs["completion_mask"]
        model_kwargs = {k: v for k, v in inputs.items() if k != "completion_mask"}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        seq_len = completion_mask.size(1) - 1
        # Masked positions (label -100) have log-prob 0, so the sum is over completion tokens only (summed, not
        # averaged, as MMedPO's _get_batch_logps(average_log_prob=False)).
        logps = outputs.log_probs[:, -seq_len:].sum(dim=1)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)
        ref_model = self.ref_model if self.ref_model is not None else self.model  # None only under PEFT
        ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(ref_model, inputs)

        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps
        per_pair = -F.logsigmoid(self.beta * (chosen_logratios - rejected_logratios))
        weight = weight.to(per_pair)
        loss = (weight * per_pair).mean()  # / batch size, not / sum(weight): see the module docstring
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss

        gather = self.accelerator.gather
        chosen_rewards = self.beta * chosen_logratios.detach()
        rejected_rewards = self.beta * rejected_logratios.detach()
        m = self._metrics[mode]
        m["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        m["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        m["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
        m["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        m["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        m["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        m["weight"].append(gather(weight).mean().item())
        m["loss_unweighted"].append(gather(per_pair.detach()).mean().item())
        return (loss, outputs) if return_outputs else loss


# ----------------------------------------------------------------------------------------------- training

def make_config(out_dir, *, max_steps: int, batch_size: int, lr: float, beta: float, seed: int, use_cpu: bool,
                bf16: bool = False, save_steps: int = 100, logging_steps: int = 1, warmup_ratio: float = 0.03):
    """The DPOConfig of a run. Cosine schedule with 3% warmup as MMedPO's script; sigmoid loss, beta 0.1 default."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(out_dir), max_steps=max_steps, per_device_train_batch_size=batch_size, learning_rate=lr,
        lr_scheduler_type="cosine", beta=beta,
        # int(): a short run gets no warmup at all, rather than a whole first step at lr 0.
        warmup_steps=int(warmup_ratio * max_steps),
        loss_type=["sigmoid"], max_length=None,
        # weight and rejected_images must reach the collator; TRL's own vision collator ignores extra keys.
        remove_unused_columns=False,
        logging_steps=logging_steps, save_strategy="steps", save_steps=save_steps, save_total_limit=1,
        seed=seed, data_seed=seed, report_to=[], use_cpu=use_cpu, bf16=bf16, activation_checkpointing=False,
        dataloader_num_workers=0, disable_tqdm=False,
    )


def make_trainer(model, processor, dataset, args, *, weighted: bool, callbacks: list | None = None):
    """DPOTrainer (plain) or WeightedDPOTrainer with its collator, on rows from to_dpo_rows."""
    if not weighted:
        return DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                          callbacks=callbacks)
    collator = WeightedVisionPreferenceCollator(processor=processor, max_length=args.max_length)
    return WeightedDPOTrainer(model=model, args=args, data_collator=collator, train_dataset=dataset,
                              processing_class=processor, callbacks=callbacks)


def text_exposure_steps(max_steps: int, n_text: int, n_pairs: int) -> int:
    """MMedPO's step count whose expected number of text pairs equals DPO's at `max_steps` (same batch size B):
    DPO sees max_steps * B text pairs; MMedPO sees steps * B * n_text / n_pairs in expectation (exactly, over whole
    epochs), so steps = max_steps * n_pairs / n_text, rounded to the nearest step (at least max_steps).
    E.g. 30 DPO steps, 60 text of 100 pairs -> 50 MMedPO steps (50 * 8 * 0.6 = 240 = 30 * 8 text pairs)."""
    if not 0 < n_text <= n_pairs:
        raise ValueError(f"text_exposure_steps: need 0 < n_text <= n_pairs, got n_text={n_text}, n_pairs={n_pairs}")
    return max(int(max_steps), math.floor(max_steps * n_pairs / n_text + 0.5))


def train(init_dir, out_dir, dataset, *, weighted: bool, max_steps: int, batch_size: int = 4, lr: float = 5e-5,
          beta: float = 0.1, seed: int = 0, run_key: dict | None = None, use_cpu: bool | None = None,
          save_steps: int = 100, logging_steps: int = 1, lora: dict | None = None, bf16: bool = False,
          callbacks: list | None = None, equal_text_exposure: bool = True) -> dict:
    """DPO (weighted=False) or MMedPO weighted DPO (weighted=True) of the model at `init_dir` on a preference set
    (raw preference columns, converted with to_dpo_rows, or rows already converted). Returns {"final_dir",
    "log_history", "seconds", "steps" (the steps trained), "requested_steps", "text_pairs_seen" (expected),
    "resumed_from", "weights_restored", "pairs"}. With weighted and equal_text_exposure, MMedPO trains
    text_exposure_steps(max_steps, ...) steps (module docstring). Resume: only under the same run key, from the
    checkpoint's weights, optimizer and RNG state (runs.restore_weights)."""
    from repro.models import load_vlm

    if isinstance(dataset[0]["prompt"], str):
        dataset = to_dpo_rows(dataset, weighted)
    requested = max_steps
    kinds = dataset["kind"] if "kind" in dataset.column_names else ["text"] * len(dataset)
    n_text = sum(k == "text" for k in kinds)
    if weighted and equal_text_exposure:
        max_steps = text_exposure_steps(max_steps, n_text, len(dataset))
    key = {"run_key": run_key, "init": str(init_dir), "weighted": weighted, "max_steps": max_steps,
           "batch_size": batch_size, "lr": lr, "beta": beta, "seed": seed, "n_rows": len(dataset),
           "lora": lora}
    done, ckpt_dir, resume, use_cpu = runs.start(out_dir, key, use_cpu, dataset=dataset)
    if done:
        return done
    # From init even when resuming: TRL copies the reference model from the model it is given; runs.train_and_save
    # then copies the checkpoint's weights into the policy only (runs.restore_weights).
    model, processor = load_vlm(init_dir, device="cpu" if use_cpu else None, lora=lora,
                                dtype="bf16" if bf16 else "fp32")
    args = make_config(ckpt_dir, max_steps=max_steps, batch_size=batch_size, lr=lr, beta=beta, seed=seed,
                       use_cpu=use_cpu, bf16=bf16, save_steps=save_steps, logging_steps=logging_steps)
    trainer = make_trainer(model, processor, dataset, args, weighted=weighted, callbacks=callbacks)
    return runs.train_and_save(trainer, processor, out_dir, resume=resume, lora=lora, max_steps=max_steps,
                               weighted=weighted, pairs=len(dataset), requested_steps=requested,
                               text_pairs_seen=max_steps * batch_size * n_text / max(len(dataset), 1))


CURVE_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
              "logps/rejected", "weight", "loss_unweighted")


def curves(log_history: list[dict]):
    """Per-logging-step DataFrame of the DPO metrics TRL logs (and weight / loss_unweighted for MMedPO)."""
    import pandas as pd

    return pd.DataFrame([{"step": h["step"], **{k: h[k] for k in CURVE_KEYS if k in h}}
                         for h in log_history if "loss" in h])

"""Vision-encoder pretraining: the tiny analog of starting from a pretrained CLIP.

Real VLMs (LLaVA, Qwen2.5-VL, MedVInt, LLaVA-Med) never learn their vision tower from the language-model loss
alone: it comes pretrained. A tiny tower trained from scratch only through the LM loss barely moves in a CPU budget
(measured here: after one SFT epoch the model answered from text priors only — always "abnormal", the most
common diagnosis). So, before any language training, the CLIP tower of the freshly built VLM is trained with
supervised heads on the *train* images of stage 01, on exactly the features the LLM will read (the last hidden
state of the 64 patch tokens, CLS dropped):
    class head    [mean, max]-pooled patches -> (source, category) jointly: 19 classes (what is it, which modality)
    region head   [mean, max]-pooled patches -> body region
    lesion head   every patch -> fraction of that patch covered by the lesion mask (where is it)
    box head      every patch touching the lesion -> the lesion's box (x1, y1, x2, y2 as fractions of the image)
    digit head    every patch touching the lesion -> the tens and units digits of the box in percent, as the LLM
                  writes it ("[23, 45, ..." is spelled 2 3 , 4 5 ...): a linear read-out of the digits
The heads are thrown away; the tower's weights are written back into the VLM checkpoint. Nothing of val/test is
seen. For real checkpoints (gpu profile) this stage is skipped: their towers are already pretrained.
Why max pooling and the box head (measured on the cpu data, 600 steps, held-out val): with mean pooling alone a
lesion covering one of 64 patches is averaged away (class accuracy 0.66, DeepLesion 0.20 = chance); the box head
is the tiny analog of a grounding-pretrained tower (UMed-LVLM's Qwen-VL backbone was pretrained on grounding):
without it 600 instruct-only SFT steps reached mean IoU 0.19 and MAU-style 0.27 on val, with it 0.26 and 0.33
(difficulty-0.35 data). The digit head makes the digits the LLM must write linearly readable from a lesion patch
(a linear digit read-out scores IoU >= 0.5 on 41 % of val boxes vs 46 % for the box regression); its effect on the
LLM alone was not measured (it came in together with the cpu profile's other changes, see params/cpu/02_sft.yaml).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np


def _targets(ds, classes, regions, grid: int):
    """(class index, region index, lesion fraction per patch (n x grid^2), first box as image fractions (n x 4))."""
    labels = np.array([classes.index(f"{s}/{c}") for s, c in zip(ds["source"], ds["category"])])
    region = np.array([regions.index(r) for r in ds["region"]])
    masks = np.stack([np.asarray(m, dtype=np.float32) for m in ds["mask"]])
    n, h, w = masks.shape
    # fraction of each patch covered by the lesion: mean over the (h/grid x w/grid) pixels of the patch
    frac = masks.reshape(n, grid, h // grid, grid, w // grid).mean(axis=(2, 4)).reshape(n, grid * grid)
    boxes = np.zeros((n, 4), np.float32)  # rows without a box (normal, bone marrow) are masked out of the loss
    for i, b in enumerate(ds["bboxes"]):
        if b:
            boxes[i] = np.asarray(b[0], np.float32) / np.array([w, h, w, h], np.float32)
    return labels, region, frac, boxes


def _pool(f):
    """[mean, max] over the patches: max keeps a one-patch lesion from being averaged away."""
    import torch

    return torch.cat([f.mean(1), f.max(1).values], -1)


def match_image_scale(model, pixel_values) -> float:
    """Rescale the projector's last layer so projected image features have the mean norm of the word embeddings
    (models.EMBED_NORM says why). Returns the factor applied."""
    import torch

    proj = model.model.multi_modal_projector
    with torch.no_grad():
        f = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states[-1][:, 1:]
        current = proj(f).norm(dim=-1).mean()
        target = model.get_input_embeddings().weight.norm(dim=-1).mean()
        factor = float(target / current)
        proj.linear_2.weight.mul_(factor)
        proj.linear_2.bias.mul_(factor)
    return factor


def pretrain(init_dir, out_dir, data_dir, *, steps: int = 600, batch_size: int = 32, lr: float = 2e-3,
             seed: int = 0, progress: bool = True, train_indices: list[int] | None = None) -> dict:
    """Train the vision tower of the VLM at `init_dir`; save the whole VLM to `out_dir`. Returns metrics.
    train_indices: only these rows of the train images (stage 06's held-out-free bases must never see the
    held-out images); None = all, as in stage 02."""
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    from repro.data import schema
    from repro.data.build import load_task
    from repro.models import load_vlm

    torch.manual_seed(seed)
    model, processor = load_vlm(init_dir, device="cpu", dtype="fp32")
    tower = model.model.vision_tower
    grid = int(round(model.config.image_seq_length ** 0.5)) if hasattr(model.config, "image_seq_length") else 8
    images = load_task(data_dir, "images")
    train, val = images["train"], images["val"]
    if train_indices is not None:
        train = train.select(train_indices)
    classes = sorted({f"{s}/{c}" for s, c in zip(train["source"], train["category"])})
    regions = sorted(set(train["region"]))
    if train_indices is not None:  # the val check scores the classes the heads know (held-out ones cannot be named)
        val = val.select([i for i, (s, c, r) in enumerate(zip(val["source"], val["category"], val["region"]))
                          if f"{s}/{c}" in classes and r in regions])
    y_cls, y_reg, y_les, y_box = _targets(train, classes, regions, grid)
    pix = processor.image_processor(list(train["image"]), return_tensors="pt")["pixel_values"]
    hidden = tower.config.hidden_size
    heads = nn.ModuleDict({"cls": nn.Linear(2 * hidden, len(classes)), "region": nn.Linear(2 * hidden, len(regions)),
                           "lesion": nn.Linear(hidden, 1), "box": nn.Linear(hidden, 4),
                           "digits": nn.Linear(hidden, 4 * 2 * 10)})
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    y_cls, y_reg, y_les, y_box = (torch.tensor(a) for a in (y_cls, y_reg, y_les, y_box))

    def features(px):
        # exactly what LLaVA feeds the projector: last layer, CLS dropped ("default" strategy)
        return tower(px, output_hidden_states=True).hidden_states[-1][:, 1:]

    tower.train()
    history, t0 = [], time.time()
    for step in tqdm(range(steps), desc="vision pretraining", disable=not progress):
        idx = torch.randint(0, len(pix), (batch_size,), generator=gen)
        f = features(pix[idx])
        pooled = _pool(f)
        loss_cls = nn.functional.cross_entropy(heads["cls"](pooled), y_cls[idx])
        loss_reg = nn.functional.cross_entropy(heads["region"](pooled), y_reg[idx])
        loss_les = nn.functional.binary_cross_entropy_with_logits(heads["lesion"](f).squeeze(-1), y_les[idx])
        # L1 box error (in image fractions) of every patch the lesion touches
        touch = (y_les[idx] > 0).float()
        err = (torch.sigmoid(heads["box"](f)) - y_box[idx][:, None]).abs().sum(-1)
        loss_box = (err * touch).sum() / touch.sum().clamp(min=1.0)
        # cross-entropy of the 8 box digits (tens, units of x1 y1 x2 y2 in percent) on the same patches
        pct = (y_box[idx] * 100).round().clamp(0, 99).long()
        digits = torch.stack([pct // 10, pct % 10], -1)[:, None].expand(-1, f.shape[1], -1, -1)  # B, P, 4, 2
        ce = nn.functional.cross_entropy(heads["digits"](f).reshape(-1, 10), digits.reshape(-1), reduction="none")
        loss_digits = (ce.view(*touch.shape, 8).mean(-1) * touch).sum() / touch.sum().clamp(min=1.0)
        loss = loss_cls + 0.5 * loss_reg + 2.0 * loss_les + loss_box + loss_digits
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0 or step == steps - 1:
            history.append({"step": step + 1, "loss": loss.item(), "loss_cls": loss_cls.item(),
                            "loss_lesion": loss_les.item(), "loss_box": loss_box.item(),
                            "loss_digits": loss_digits.item()})
    seconds = time.time() - t0

    # held-out check of what the tower learned (val images; never used for training)
    tower.eval()
    v_cls, _, v_les, v_box = _targets(val, classes, regions, grid)
    with torch.no_grad():
        f = torch.cat([features(b) for b in
                       processor.image_processor(list(val["image"]), return_tensors="pt")["pixel_values"].split(128)])
        correct = heads["cls"](_pool(f)).argmax(-1).numpy() == v_cls
        acc = float(correct.mean())
        by_source = {src: float(correct[np.array(val["source"]) == src].mean()) for src in sorted(set(val["source"]))}
        les_logit = heads["lesion"](f).squeeze(-1)
        pred_les = torch.sigmoid(les_logit).numpy()
        # box probe: the box read from the most lesion-like patch, IoU >= 0.5 rate on val images that have a box
        box = torch.sigmoid(heads["box"](f))[torch.arange(len(f)), les_logit.argmax(1)].numpy()
    lesion_patches = v_les > 0.25
    hit = float(((pred_les > 0.5) == lesion_patches)[lesion_patches].mean()) if lesion_patches.any() else float("nan")
    has_box = v_box.any(axis=1)
    box_hits = [schema.iou(list(100 * box[i]), list(100 * v_box[i])) >= 0.5 for i in np.flatnonzero(has_box)]
    box_rate = float(np.mean(box_hits)) if box_hits else float("nan")

    scale = match_image_scale(model, pix[:256])

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    info = {"final_dir": str(out_dir), "seconds": round(seconds, 1), "steps": steps, "classes": len(classes),
            "val_class_acc": acc, "val_class_acc_by_source": by_source, "val_lesion_patch_recall": hit,
            "val_box_probe_iou50": box_rate,
            "projector_scale": scale, "history": history, "train_images": len(train)}
    (out_dir / "vision_pretraining.json").write_text(json.dumps(info, indent=1))
    return info

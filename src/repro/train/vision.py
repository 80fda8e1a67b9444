"""Vision-encoder pretraining: the tiny analog of starting from a pretrained CLIP.

Real VLMs (LLaVA, Qwen2.5-VL, MedVInt, LLaVA-Med) never learn their vision tower from the language-model loss
alone: it comes pretrained. A tiny tower trained from scratch only through the LM loss barely moves in a CPU budget
(measured here: after one SFT epoch the model answered from text priors only — always "abnormal", the most
common diagnosis). So, before any language training, the CLIP tower of the freshly built VLM is trained with
supervised heads on the *train* images of stage 01, on exactly the features the LLM will read (the last hidden
state of the 64 patch tokens, CLS dropped):
    class head    mean-pooled patches -> (source, category) jointly: 19 classes (what is it, which modality)
    region head   mean-pooled patches -> body region
    lesion head   every patch -> fraction of that patch covered by the lesion mask (where is it)
The heads are thrown away; the tower's weights are written back into the VLM checkpoint. Nothing of val/test is
seen. For real checkpoints (gpu profile) this stage is skipped: their towers are already pretrained.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np


def _targets(ds, classes, regions, grid: int):
    labels = np.array([classes.index(f"{s}/{c}") for s, c in zip(ds["source"], ds["category"])])
    region = np.array([regions.index(r) for r in ds["region"]])
    masks = np.stack([np.asarray(m, dtype=np.float32) for m in ds["mask"]])
    n, h, w = masks.shape
    # fraction of each patch covered by the lesion: mean over the (h/grid x w/grid) pixels of the patch
    frac = masks.reshape(n, grid, h // grid, grid, w // grid).mean(axis=(2, 4)).reshape(n, grid * grid)
    return labels, region, frac


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
             seed: int = 0, progress: bool = True) -> dict:
    """Train the vision tower of the VLM at `init_dir`; save the whole VLM to `out_dir`. Returns metrics."""
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    from repro.data.build import load_task
    from repro.models import load_vlm

    torch.manual_seed(seed)
    model, processor = load_vlm(init_dir, device="cpu", dtype="fp32")
    tower = model.model.vision_tower
    grid = int(round(model.config.image_seq_length ** 0.5)) if hasattr(model.config, "image_seq_length") else 8
    images = load_task(data_dir, "images")
    train, val = images["train"], images["val"]
    classes = sorted({f"{s}/{c}" for s, c in zip(train["source"], train["category"])})
    regions = sorted(set(train["region"]))
    y_cls, y_reg, y_les = _targets(train, classes, regions, grid)
    pix = processor.image_processor(list(train["image"]), return_tensors="pt")["pixel_values"]
    hidden = tower.config.hidden_size
    heads = nn.ModuleDict({"cls": nn.Linear(hidden, len(classes)), "region": nn.Linear(hidden, len(regions)),
                           "lesion": nn.Linear(hidden, 1)})
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    y_cls, y_reg, y_les = torch.tensor(y_cls), torch.tensor(y_reg), torch.tensor(y_les)

    def features(px):
        # exactly what LLaVA feeds the projector: last layer, CLS dropped ("default" strategy)
        return tower(px, output_hidden_states=True).hidden_states[-1][:, 1:]

    tower.train()
    history, t0 = [], time.time()
    for step in tqdm(range(steps), desc="vision pretraining", disable=not progress):
        idx = torch.randint(0, len(pix), (batch_size,), generator=gen)
        f = features(pix[idx])
        pooled = f.mean(1)
        loss_cls = nn.functional.cross_entropy(heads["cls"](pooled), y_cls[idx])
        loss_reg = nn.functional.cross_entropy(heads["region"](pooled), y_reg[idx])
        loss_les = nn.functional.binary_cross_entropy_with_logits(heads["lesion"](f).squeeze(-1), y_les[idx])
        loss = loss_cls + 0.5 * loss_reg + 2.0 * loss_les
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0 or step == steps - 1:
            history.append({"step": step + 1, "loss": loss.item(), "loss_cls": loss_cls.item(),
                            "loss_lesion": loss_les.item()})
    seconds = time.time() - t0

    # held-out check of what the tower learned (val images; never used for training)
    tower.eval()
    v_cls, _, v_les = _targets(val, classes, regions, grid)
    with torch.no_grad():
        f = torch.cat([features(b) for b in
                       processor.image_processor(list(val["image"]), return_tensors="pt")["pixel_values"].split(128)])
        correct = heads["cls"](f.mean(1)).argmax(-1).numpy() == v_cls
        acc = float(correct.mean())
        by_source = {src: float(correct[np.array(val["source"]) == src].mean()) for src in sorted(set(val["source"]))}
        pred_les = torch.sigmoid(heads["lesion"](f).squeeze(-1)).numpy()
    lesion_patches = v_les > 0.25
    hit = float(((pred_les > 0.5) == lesion_patches)[lesion_patches].mean()) if lesion_patches.any() else float("nan")

    scale = match_image_scale(model, pix[:256])

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    info = {"final_dir": str(out_dir), "seconds": round(seconds, 1), "steps": steps, "classes": len(classes),
            "val_class_acc": acc, "val_class_acc_by_source": by_source, "val_lesion_patch_recall": hit,
            "projector_scale": scale, "history": history}
    (out_dir / "vision_pretraining.json").write_text(json.dumps(info, indent=1))
    return info

"""The training loop: seeded, resumable, with per-epoch validation and periodic checkpoints.

Device: CUDA with mixed precision (float16 autocast + gradient scaling) when present, else CPU
with one thread per available core. Loss: pixel-wise cross-entropy plus soft Dice of the
contamination class (the Dice term keeps the rare class, 13 % of the pixels, from being
under-weighted). The batch order and every augmentation are functions of (seed, epoch), so an
interrupted run resumed from its last checkpoint follows the same path as an uninterrupted one.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from evaluate.metrics import confusion, pooled
from evaluate.predict import predict_probability
from train.checkpoints import CheckpointError, load_weights, read_checkpoint, save_checkpoint
from train.datasets import PairDataset
from train.model import UNet, architecture, build_model


def choose_device(name: str = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; or an explicit torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(threads: int | None) -> int:
    """Torch intra-op threads: `threads`, else the cores this process may use."""
    n = int(threads) if threads else len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy plus `dice_weight` x (1 - soft Dice of class 1), Dice over the whole batch.

    logits: (N, 2, H, W); target: (N, H, W) int64 class indices.
    """
    ce = F.cross_entropy(logits.float(), target)
    if not dice_weight:
        return ce
    prob = torch.softmax(logits.float(), dim=1)[:, 1]
    truth = (target == 1).float()
    dice = (2 * (prob * truth).sum() + 1.0) / (prob.sum() + truth.sum() + 1.0)
    return ce + dice_weight * (1 - dice)


def make_optimizer(model: UNet, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    if cfg["name"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    if cfg["name"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    raise ValueError(f"optim.name must be adam or adamw, got {cfg['name']!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], total_steps: int):
    """Learning-rate schedule per step: onecycle, cosine or constant."""
    if cfg["schedule"] == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg["lr"], total_steps=total_steps, pct_start=cfg.get("pct_start", 0.2))
    if cfg["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if cfg["schedule"] == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(f"optim.schedule must be onecycle, cosine or constant, got {cfg['schedule']!r}")


def validate(model: UNet, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
             batch_size: int, device: torch.device) -> tuple[dict[str, float], list[np.ndarray]]:
    """Pooled metrics of `model` on standardised `images` against boolean `masks`, and the counts."""
    prob = predict_probability([model], np.stack(images), batch_size=batch_size, device=device)
    counts = [confusion(p > 0.5, m) for p, m in zip(prob, masks)]
    return pooled(counts), counts


def fit(config: dict[str, Any], train_set: PairDataset, val_set: PairDataset | None,
        out_dir: Path, resume: bool = False, desc: str = "train") -> tuple[UNet, dict[str, Any]]:
    """Train a U-Net on `train_set`, validating on `val_set` (whole images) every epoch.

    Writes `out_dir/last.ckpt` (weights + optimizer state) every `loop.checkpoint_every` epochs
    and at the end; with `resume` continues from it. Returns the model and
    {"history": [per-epoch dict], "final": last validation metrics, "seconds": training time}.
    """
    loop, optim = config["loop"], config["optim"]
    device = choose_device(config.get("device", "auto"))
    if device.type == "cpu":
        set_threads(config.get("threads"))
    amp = device.type == "cuda" and bool(loop.get("amp", True))
    seed = int(config["seed"])
    arch = architecture(config["model"])
    torch.manual_seed(seed)
    model = build_model(arch).to(device)
    optimizer = make_optimizer(model, optim)
    batch = int(loop["batch_size"])
    steps_per_epoch = max(1, len(train_set) // batch)
    epochs = int(loop["epochs"])
    scheduler = make_scheduler(optimizer, optim, epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    last = Path(out_dir) / "last.ckpt"
    start, history, seconds = 0, [], 0.0
    if resume and last.exists():
        payload = read_checkpoint(last)
        if payload["architecture"] != arch:
            raise CheckpointError(f"{last}: architecture {payload['architecture']} differs from the "
                                  f"configured {arch}; resume with the run's original config")
        load_weights(model, payload, last)
        state = payload["training"]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start, history, seconds = payload["epoch"], list(state["history"]), float(state["seconds"])

    val_images = val_masks = None
    if val_set is not None:
        pairs = [val_set[i] for i in range(len(val_set))]
        val_images = [img[0].numpy() for img, _ in pairs]
        val_masks = [m.numpy().astype(bool) for _, m in pairs]

    def checkpoint(epoch: int) -> None:
        training = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "history": history, "seconds": seconds}
        save_checkpoint(last, model, arch, config, epoch, history[-1] if history else {}, training)

    bar = tqdm(total=epochs * steps_per_epoch, initial=start * steps_per_epoch, desc=desc,
               unit="step", dynamic_ncols=True, leave=False)
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        model.train()
        train_set.set_epoch(epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(train_set)).tolist()
        loader = DataLoader(train_set, batch_size=batch, sampler=order, drop_last=len(train_set) >= batch,
                            num_workers=int(loop.get("workers", 0)), pin_memory=device.type == "cuda")
        losses = []
        for image, mask in loader:
            image, mask = image.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = model(image)
            loss = ce_dice_loss(logits, mask, float(loop.get("dice_weight", 1.0)))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
        seconds += time.perf_counter() - t0
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(seconds, 1)}
        every = int(loop.get("val_every", 1))
        if val_images is not None and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
            model.eval()
            record.update(validate(model, val_images, val_masks, batch, device)[0])
            bar.set_postfix(epoch=epoch + 1, loss=f"{record['loss']:.3f}",
                            jaccard=f"{record['jaccard']:.3f}")
        history.append(record)
        if (epoch + 1) % int(loop.get("checkpoint_every", 1)) == 0 or epoch + 1 == epochs:
            checkpoint(epoch + 1)
    bar.close()
    model.eval()
    return model, {"history": history, "final": history[-1] if history else {}, "seconds": seconds}


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


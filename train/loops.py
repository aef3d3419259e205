"""The training loop: seeded, resumable, with per-epoch validation and periodic checkpoints.

Device: CUDA with mixed precision (float16 autocast + gradient scaling) when present, else CPU
with one thread per available core. Loss: pixel-wise cross-entropy plus soft Dice of the
contamination class (the Dice term keeps the rare class, 13 % of the pixels, from being
under-weighted). A four-class structure network (`task: classes`) is pretrained on class maps with
`classes_loss` and fine-tuned on contamination-only labels with the partial-label `marginal_loss`
(`loss_function` picks). The atom task (config `task: atoms`, a 1-channel network) is trained on the
atom map by binary cross-entropy with soft targets, outside the contamination (`atom_loss`). The batch order and every augmentation are functions of (seed, epoch), so an
interrupted run resumed from its last checkpoint follows the same path as an uninterrupted one.

Small training sets get a floor on optimisation steps (`loop.min_steps`): every epoch is then
repeated an integer number of times, and the validation, checkpoint and encoder-freezing periods
(in epochs) with it. Under `torchrun` the model is wrapped in DistributedDataParallel and each
process takes every world-size-th sample of the epoch's order (batch_size is per process);
process 0 validates and writes checkpoints.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import math

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from grapheneseg.metrics import confusion, pooled
from train.datasets import ATOM_IGNORE, ATOM_PEAK
from train.models.runtime import DEVICES, inference_device, pad_to, predict_probability
from train.models.checkpoints import CheckpointError, load_weights, read_checkpoint, save_checkpoint
from torch.utils.data import Dataset
from train.models.unet import UNet, architecture, build_model


def choose_device(name: str = "auto") -> torch.device:
    """The training device: "auto", "cpu" or "cuda" resolved as for inference (`inference_device`:
    a clear error for cuda without CUDA), the GPU being this process's (LOCAL_RANK under torchrun;
    a clear error when the node has fewer GPUs than processes); any other torch device name as given."""
    if name not in DEVICES:
        return torch.device(name)
    target = inference_device(name)
    if target.type != "cuda":
        return target
    rank, count = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
    if rank >= count:
        raise ValueError(f"process {rank} of this node needs CUDA device {rank}, but torch sees {count}: "
                         "start at most one process per GPU (torchrun --nproc-per-node) or use --device cpu")
    return torch.device("cuda", rank)


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


def classes_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy plus `dice_weight` x (1 - the mean over classes of each class's soft Dice):
    the mean gives the thin grain-boundary class (a few % of the pixels) the say of the others, so
    it cannot vanish.

    logits: (N, K, H, W); target: (N, H, W) int64 class indices 0..K-1 (simulate.labels order).
    """
    ce = F.cross_entropy(logits.float(), target)
    if not dice_weight:
        return ce
    prob = torch.softmax(logits.float(), dim=1)
    truth = F.one_hot(target, prob.shape[1]).permute(0, 3, 1, 2).float()
    dice = (2 * (prob * truth).sum((0, 2, 3)) + 1.0) / (prob.sum((0, 2, 3)) + truth.sum((0, 2, 3)) + 1.0)
    return ce + dice_weight * (1 - dice.mean())


def marginal_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Partial-label loss of a K-class network on contamination-only labels: a pixel labelled
    contamination (1) scores the log-probability of class 1, one labelled "not contamination" (0)
    the log of the summed probability of every other class (its marginal likelihood), plus
    `dice_weight` x (1 - soft Dice of class 1). With K = 2 it is `ce_dice_loss`.

    logits: (N, K, H, W); target: (N, H, W) int64, 1 = contamination, 0 = anything else.
    """
    logits = logits.float()
    total = torch.logsumexp(logits, dim=1)
    others = torch.logsumexp(torch.cat([logits[:, :1], logits[:, 2:]], dim=1), dim=1)
    nll = torch.where(target == 1, total - logits[:, 1], total - others).mean()
    if not dice_weight:
        return nll
    prob = torch.exp(logits[:, 1] - total)
    truth = (target == 1).float()
    dice = (2 * (prob * truth).sum() + 1.0) / (prob.sum() + truth.sum() + 1.0)
    return nll + dice_weight * (1 - dice)


def loss_function(config: Mapping[str, Any], targets: str) -> Any:
    """The loss for `targets` ("masks": contamination labels, "classes": four-class maps, "atoms":
    atom maps): masks train a 2-class network with `ce_dice_loss` and a K-class one with the
    partial-label `marginal_loss`."""
    if targets == "atoms":
        return atom_loss
    dice = float(config["loop"].get("dice_weight", 1.0))
    if targets == "classes":
        return lambda logits, target: classes_loss(logits, target, dice)
    if int(architecture(config["model"])["classes"]) > 2:
        return lambda logits, target: marginal_loss(logits, target, dice)
    return lambda logits, target: ce_dice_loss(logits, target, dice)


def atom_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the atom map, soft targets, mean over the pixels not ignored.

    logits: (N, 1, H, W); target: (N, H, W) 0-ATOM_PEAK, ATOM_IGNORE where not counted.
    """
    keep = (target != ATOM_IGNORE).float()
    truth = target.float().clamp(max=ATOM_PEAK) / ATOM_PEAK
    loss = F.binary_cross_entropy_with_logits(logits[:, 0].float(), truth, reduction="none")
    return (loss * keep).sum() / keep.sum().clamp(min=1.0)


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
    counts = [confusion(p > 0.5, np.asarray(m, dtype=bool)) for p, m in zip(prob, masks)]
    return pooled(counts), counts


ATOM_METRICS = ("map_rmse",)
CLASS_NAMES = ("lattice", "contamination", "vacuum", "boundary")  # simulate.labels' class order


@torch.inference_mode()
def validate_classes(model: UNet, images: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                     batch_size: int, device: torch.device) -> tuple[dict[str, float], list[np.ndarray]]:
    """Pooled metrics of the contamination channel (as `validate`) and the IoU of each class of
    the argmax map ("iou_<class>", "miou") of a K-class `model` against class-index `targets`,
    from one forward pass per batch."""
    counts = []
    inter = np.zeros(len(CLASS_NAMES))
    union = np.zeros(len(CLASS_NAMES))
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.stack(images[start:start + batch_size]))[:, None].to(device)
        padded, (h, w) = pad_to(x, 2 ** (model.depth - 1))
        prob = torch.softmax(model(padded).float(), dim=1)[:, :, :h, :w].cpu().numpy()
        pred = prob.argmax(1)
        truth = np.stack(targets[start:start + batch_size])
        counts += [confusion(p > 0.5, t == 1) for p, t in zip(prob[:, 1], truth)]
        for k in range(len(CLASS_NAMES)):
            inter[k] += np.sum((pred == k) & (truth == k))
            union[k] += np.sum((pred == k) | (truth == k))
    iou = {f"iou_{name}": float(inter[k] / union[k]) if union[k] else float("nan")
           for k, name in enumerate(CLASS_NAMES)}
    return {**pooled(counts), **iou, "miou": float(np.nanmean(list(iou.values())))}, counts


def validate_atoms(model: UNet, images: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                   batch_size: int, device: torch.device) -> tuple[dict[str, float], list[np.ndarray]]:
    """{"map_rmse": root-mean-square error of the predicted atom map (0-1) over every pixel not
    ignored} of `model` on standardised `images` against atom-task `targets`, and no counts."""
    prob = predict_probability([model], np.stack(images), batch_size=batch_size, device=device)
    targets = np.stack(targets)
    keep = targets != ATOM_IGNORE
    error = (prob - np.minimum(targets, ATOM_PEAK) / ATOM_PEAK)[keep]
    return {"map_rmse": float(np.sqrt(np.mean(error**2))) if error.size else float("nan")}, []


def epoch_order(n: int, seed: int, epoch: int, samples: int | None = None) -> list[int]:
    """Indices of epoch `epoch`: a seeded permutation of range(n), or with `samples` the next
    `samples` items of an endless stream of seeded permutations (epochs of a huge set)."""
    if not samples:
        return np.random.default_rng([seed, epoch]).permutation(n).tolist()
    start = epoch * samples
    order: list[int] = []
    for k in range(start // n, (start + samples - 1) // n + 1):
        perm = np.random.default_rng([seed, 1_000_003, k]).permutation(n)
        lo, hi = max(start, k * n) - k * n, min(start + samples, (k + 1) * n) - k * n
        order.extend(perm[lo:hi].tolist())
    return order


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def fit(config: dict[str, Any], train_set: Dataset, val_set: Dataset | None,
        out_dir: Path, resume: bool = False, desc: str = "train",
        init: Mapping[str, torch.Tensor] | None = None,
        watch: Mapping[str, Dataset] | None = None, targets: str = "masks") -> tuple[UNet, dict[str, Any]]:
    """Train a U-Net on `train_set`, validating on `val_set` (whole images) every `val_every` epochs.

    `init`: a state dict to start from (fine-tuning) instead of random weights. `watch`: more
    labelled sets validated alongside, recorded as "<name>_<metric>" (e.g. real images while
    pretraining on simulations; always contamination masks). `targets`: what `train_set` and
    `val_set` hold, "masks", "classes" or "atoms" (`loss_function`). Writes `out_dir/last.ckpt` (weights + optimizer state) every
    `loop.checkpoint_every` epochs and at the end; with `resume` continues from it. Returns the
    model and {"history": [per-epoch dict], "final": last record, "seconds": training time,
    "steps", "samples", "world_size"}; seconds, steps and samples cover every epoch of the run,
    those before a resume included.
    """
    loop, optim = config["loop"], config["optim"]
    loss_of = loss_function(config, targets)
    device = choose_device(config.get("device", "auto"))
    if device.type == "cpu":
        set_threads(config.get("threads"))
    amp = device.type == "cuda" and bool(loop.get("amp", True))
    seed = int(config["seed"])
    arch = architecture(config["model"])
    torch.manual_seed(seed)
    model = build_model(arch)
    if init is not None:
        model.load_state_dict(init)
    model = model.to(device)
    rank, size = world()
    net = DistributedDataParallel(model) if size > 1 else model
    optimizer = make_optimizer(model, optim)
    batch = int(loop["batch_size"])
    samples = loop.get("samples_per_epoch") or None
    per_epoch = int(samples) if samples else len(train_set)
    steps_per_epoch = max(1, per_epoch // size // batch)
    # floor on optimisation steps: repeat every epoch `scale` times (the same rule for every arm)
    scale = max(1, math.ceil(int(loop.get("min_steps") or 0) / (int(loop["epochs"]) * steps_per_epoch)))
    epochs = int(loop["epochs"]) * scale
    val_every = int(loop.get("val_every", 1)) * scale
    checkpoint_every = int(loop.get("checkpoint_every", 1)) * scale
    frozen_epochs = int(loop.get("freeze_encoder_epochs") or 0) * scale
    encoder = [p for block in model.down for p in block.parameters()]
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

    checks = {}
    if rank == 0:
        for name, labelled in {"": val_set, **(watch or {})}.items():
            if labelled is not None:
                pairs = [labelled[i] for i in range(len(labelled))]
                checks[name] = ([img[0].numpy() for img, _ in pairs], [m.numpy() for _, m in pairs])

    def checkpoint(epoch: int) -> None:
        training = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "history": history, "seconds": seconds}
        save_checkpoint(last, model, arch, config, epoch, history[-1] if history else {}, training)

    bar = tqdm(total=epochs * steps_per_epoch, initial=start * steps_per_epoch, desc=desc,
               unit="step", dynamic_ncols=True, leave=False, disable=rank != 0)
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        net.train()
        if epoch < frozen_epochs:  # frozen encoder: its batch norm keeps the pretrained statistics
            model.down.eval()
        train_set.set_epoch(epoch)
        order = epoch_order(len(train_set), seed, epoch, samples)
        order = order[rank:len(order) - len(order) % size:size]
        loader = DataLoader(train_set, batch_size=batch, sampler=order, drop_last=len(order) >= batch,
                            num_workers=int(loop.get("workers", 0)), pin_memory=device.type == "cuda",
                            persistent_workers=False)
        losses = []
        for image, mask in loader:
            image, mask = image.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = net(image)
            loss = loss_of(logits, mask)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if epoch < frozen_epochs:  # encoder frozen: AdamW skips parameters without gradient
                for p in encoder:
                    p.grad = None
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
        seconds += time.perf_counter() - t0
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(seconds, 1)}
        if checks and ((epoch + 1) % val_every == 0 or epoch + 1 == epochs):
            model.eval()
            for name, (images, masks) in checks.items():
                check = {"atoms": validate_atoms, "classes": validate_classes}.get(targets if not name else "masks",
                                                                                  validate)
                metrics, counts = check(model, images, masks, batch, device)
                record.update({f"{name}_{k}" if name else k: v for k, v in metrics.items()})
                if not name and counts:  # pooled [tp, fp, fn, tn] of the validation set (inner validation)
                    record["counts"] = np.sum(counts, axis=0).tolist()
            shown = "map_rmse" if targets == "atoms" else "jaccard"
            bar.set_postfix({"epoch": epoch + 1, "loss": f"{record['loss']:.3f}",
                             shown: f"{record.get(shown, float('nan')):.3f}"})
        history.append(record)
        if rank == 0 and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
            checkpoint(epoch + 1)
        if size > 1:
            dist.barrier()
    bar.close()
    model.eval()
    steps = epochs * steps_per_epoch  # the whole run, like `seconds` (a resumed run's earlier epochs too)
    return model, {"history": history, "final": history[-1] if history else {}, "seconds": seconds,
                   "steps": steps, "samples": steps * batch * size, "world_size": size}

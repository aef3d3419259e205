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

A caller that shows its own progress (the napari fine-tune widget) watches every step through
`observed(callback)`; the callback may raise to stop the run (a cancel) before its checkpoint.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
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

# (run description, steps done, steps in the run) after every optimisation step; see `observed`
StepObserver = Callable[[str, int, int], None]
_OBSERVER: ContextVar[StepObserver | None] = ContextVar("training_observer", default=None)
_BARS: ContextVar[bool] = ContextVar("training_progress_bars", default=True)


@contextmanager
def observed(callback: StepObserver | None) -> Iterator[None]:
    """Call `callback(desc, done, total)` after every training step of the runs started inside
    (in this thread); an exception it raises stops the run where it is (nothing more is saved)."""
    token = _OBSERVER.set(callback)
    try:
        yield
    finally:
        _OBSERVER.reset(token)


@contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """Show or hide the progress bars of the training runs started inside (in this thread): how
    `--quiet` reaches every run of a command (cross-validation folds, inner validation, the guard,
    a report's arms) without a flag through each layer between."""
    token = _BARS.set(show)
    try:
        yield
    finally:
        _BARS.reset(token)


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
    """Pooled metrics of `model` on standardised `images` against boolean `masks`, and the counts.
    Images of different sizes (a lab's own micrographs, pairs resampled to the model's scale) are
    predicted in groups of one size."""
    prob: list[np.ndarray] = [np.empty(0)] * len(images)
    shapes: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        shapes.setdefault(np.shape(image), []).append(i)
    for index in shapes.values():
        found = predict_probability([model], np.stack([images[i] for i in index]), batch_size=batch_size, device=device)
        for i, p in zip(index, found):
            prob[i] = p
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


class Trainer:
    """One training run as a loop over small hooks (as nnU-Net's trainer): `resume`, `train_epoch`
    (calling `train_step` per batch), `validate_epoch`, `save`; `run` ties them together. A
    variant overrides a hook, not the loop. Built by `fit`, which documents the arguments."""

    def __init__(self, config: dict[str, Any], train_set: Dataset, val_set: Dataset | None, out_dir: Path,
                 desc: str = "train", init: Mapping[str, torch.Tensor] | None = None,
                 watch: Mapping[str, Dataset] | None = None, targets: str = "masks", image_counts: bool = False):
        loop, optim = config["loop"], config["optim"]
        self.config, self.train_set, self.targets = config, train_set, targets
        self.image_counts = image_counts  # also keep each validation image's counts (inner validation)
        self.loss_of = loss_function(config, targets)
        self.device = device = choose_device(config.get("device", "auto"))
        if device.type == "cpu":
            set_threads(config.get("threads"))
        self.amp = device.type == "cuda" and bool(loop.get("amp", True))
        self.seed = int(config["seed"])
        self.arch = architecture(config["model"])
        torch.manual_seed(self.seed)
        model = build_model(self.arch)
        if init is not None:
            model.load_state_dict(init)
        self.model = model = model.to(device)
        self.rank, self.size = world()
        self.net = DistributedDataParallel(model) if self.size > 1 else model
        self.optimizer = make_optimizer(model, optim)
        self.batch = int(loop["batch_size"])
        self.samples = loop.get("samples_per_epoch") or None
        per_epoch = int(self.samples) if self.samples else len(train_set)
        self.steps_per_epoch = max(1, per_epoch // self.size // self.batch)
        # floor on optimisation steps: repeat every epoch `scale` times (the same rule for every arm)
        scale = max(1, math.ceil(int(loop.get("min_steps") or 0) / (int(loop["epochs"]) * self.steps_per_epoch)))
        self.epochs = int(loop["epochs"]) * scale
        self.val_every = int(loop.get("val_every", 1)) * scale
        self.checkpoint_every = int(loop.get("checkpoint_every", 1)) * scale
        self.frozen_epochs = int(loop.get("freeze_encoder_epochs") or 0) * scale
        self.workers = int(loop.get("workers", 0))
        self.encoder = [p for block in model.down for p in block.parameters()]
        self.scheduler = make_scheduler(self.optimizer, optim, self.epochs * self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.last = Path(out_dir) / "last.ckpt"
        self.start, self.history, self.seconds = 0, [], 0.0
        self.checks = {}  # {"" (validation) or a watched set's name: (images, masks)}, on rank 0 only
        if self.rank == 0:
            for name, labelled in {"": val_set, **(watch or {})}.items():
                if labelled is not None:
                    pairs = [labelled[i] for i in range(len(labelled))]
                    self.checks[name] = ([img[0].numpy() for img, _ in pairs], [m.numpy() for _, m in pairs])
        self.bar: Any = None
        self.desc = desc

    def resume(self) -> None:
        """Continue from `last.ckpt` (weights, optimizer, scheduler, scaler, history) when it exists."""
        if not self.last.exists():
            return
        payload = read_checkpoint(self.last)
        if payload["architecture"] != self.arch:
            raise CheckpointError(f"{self.last}: architecture {payload['architecture']} differs from the "
                                  f"configured {self.arch}; resume with the run's original config")
        load_weights(self.model, payload, self.last)
        state = payload["training"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start, self.history, self.seconds = payload["epoch"], list(state["history"]), float(state["seconds"])

    def frozen(self, epoch: int) -> bool:
        """Whether the encoder is frozen in `epoch` (fine-tuning's first epochs)."""
        return epoch < self.frozen_epochs

    def train_step(self, image: torch.Tensor, target: torch.Tensor, epoch: int) -> float:
        """One optimisation step on a batch; returns its loss."""
        image, target = image.to(self.device, non_blocking=True), target.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            logits = self.net(image)
        loss = self.loss_of(logits, target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.frozen(epoch):  # encoder frozen: AdamW skips parameters without gradient
            for p in self.encoder:
                p.grad = None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.item()

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Every step of one epoch (this rank's share of the seeded order); the epoch's record."""
        t0 = time.perf_counter()
        self.net.train()
        if self.frozen(epoch):  # frozen encoder: its batch norm keeps the pretrained statistics
            self.model.down.eval()
        self.train_set.set_epoch(epoch)
        order = epoch_order(len(self.train_set), self.seed, epoch, self.samples)
        order = order[self.rank:len(order) - len(order) % self.size:self.size]
        loader = DataLoader(self.train_set, batch_size=self.batch, sampler=order, drop_last=len(order) >= self.batch,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        losses = []
        observer = _OBSERVER.get()
        for image, target in loader:
            losses.append(self.train_step(image, target, epoch))
            self.bar.update()
            self.bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
            if observer is not None:
                observer(self.desc, epoch * self.steps_per_epoch + len(losses), self.epochs * self.steps_per_epoch)
        self.seconds += time.perf_counter() - t0
        return {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(self.seconds, 1)}

    def validate_epoch(self, record: dict[str, Any]) -> None:
        """Validate on the validation set and the watched sets, adding their metrics to `record`."""
        self.model.eval()
        for name, (images, masks) in self.checks.items():
            check = {"atoms": validate_atoms, "classes": validate_classes}.get(self.targets if not name else "masks",
                                                                              validate)
            metrics, counts = check(self.model, images, masks, self.batch, self.device)
            record.update({f"{name}_{k}" if name else k: v for k, v in metrics.items()})
            if not name and counts:  # pooled [tp, fp, fn, tn] of the validation set (inner validation)
                record["counts"] = np.sum(counts, axis=0).tolist()
                if self.image_counts:  # and each image's, in the validation set's order (the guard's bootstrap)
                    record["image_counts"] = [np.asarray(c).tolist() for c in counts]
        shown = "map_rmse" if self.targets == "atoms" else "jaccard"
        self.bar.set_postfix({"epoch": record["epoch"], "loss": f"{record['loss']:.3f}",
                              shown: f"{record.get(shown, float('nan')):.3f}"})

    def save(self, epoch: int) -> None:
        """`last.ckpt`: the weights and everything `resume` needs."""
        training = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(), "history": self.history, "seconds": self.seconds}
        save_checkpoint(self.last, self.model, self.arch, self.config, epoch,
                        self.history[-1] if self.history else {}, training)

    def run(self) -> tuple[UNet, dict[str, Any]]:
        """The loop: train, validate every `val_every` epochs and at the end, save every
        `checkpoint_every` epochs and at the end."""
        self.bar = tqdm(total=self.epochs * self.steps_per_epoch, initial=self.start * self.steps_per_epoch,
                        desc=self.desc, unit="step", dynamic_ncols=True, leave=False,
                        disable=self.rank != 0 or not _BARS.get())
        for epoch in range(self.start, self.epochs):
            record = self.train_epoch(epoch)
            if self.checks and ((epoch + 1) % self.val_every == 0 or epoch + 1 == self.epochs):
                self.validate_epoch(record)
            self.history.append(record)
            if self.rank == 0 and ((epoch + 1) % self.checkpoint_every == 0 or epoch + 1 == self.epochs):
                self.save(epoch + 1)
            if self.size > 1:
                dist.barrier()
        self.bar.close()
        self.model.eval()
        steps = self.epochs * self.steps_per_epoch  # the whole run, like `seconds` (a resumed run's earlier epochs too)
        return self.model, {"history": self.history, "final": self.history[-1] if self.history else {},
                            "seconds": self.seconds, "steps": steps, "samples": steps * self.batch * self.size,
                            "world_size": self.size}


def fit(config: dict[str, Any], train_set: Dataset, val_set: Dataset | None,
        out_dir: Path, resume: bool = False, desc: str = "train",
        init: Mapping[str, torch.Tensor] | None = None,
        watch: Mapping[str, Dataset] | None = None, targets: str = "masks",
        image_counts: bool = False) -> tuple[UNet, dict[str, Any]]:
    """Train a U-Net on `train_set`, validating on `val_set` (whole images) every `val_every` epochs.

    `init`: a state dict to start from (fine-tuning) instead of random weights. `watch`: more
    labelled sets validated alongside, recorded as "<name>_<metric>" (e.g. real images while
    pretraining on simulations; always contamination masks). `targets`: what `train_set` and
    `val_set` hold, "masks", "classes" or "atoms" (`loss_function`). `image_counts`: every
    validation record also keeps each validation image's [tp, fp, fn, tn] ("image_counts"). Writes `out_dir/last.ckpt` (weights + optimizer state) every
    `loop.checkpoint_every` epochs and at the end; with `resume` continues from it. Returns the
    model and {"history": [per-epoch dict], "final": last record, "seconds": training time,
    "steps", "samples", "world_size"}; seconds, steps and samples cover every epoch of the run,
    those before a resume included. The loop itself is `Trainer`.
    """
    trainer = Trainer(config, train_set, val_set, out_dir, desc, init, watch, targets, image_counts)
    if resume:
        trainer.resume()
    return trainer.run()

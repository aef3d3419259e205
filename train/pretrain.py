"""Pretraining on simulated, automatically labelled micrographs (HDF5 files of `simulate generate`).

The images are streamed from the files (train.datasets.H5Rows: only the rows read are loaded, so
100,000-image sets fit), preprocessed exactly as the real ones (Bezier flat field, then
standardisation after the augmentation) and augmented as in `train real`. A held-out simulated
validation part is made of whole structures, so that the variants (other optics and dose) of one
structure never straddle training and validation. An optional real labelled folder is validated
alongside to watch the transfer. Under `torchrun --nproc-per-node N` the training is
data-parallel (DistributedDataParallel; gloo on CPU, nccl on CUDA).

`task: atoms` (`train pretrain --task atoms`) trains the same U-Net with one output channel on the
files' atom maps instead (train.datasets.atom_target): an atom finder from zero human labels.
`task: classes` (`--task classes`) trains four output channels on the files' class maps (lattice,
contamination, vacuum, grain boundary; train.loops.classes_loss): a structure model whose
channel 1 is contamination, so that it also serves wherever a contamination model does, and is
fine-tuned on contamination-only real labels by the partial-label train.loops.marginal_loss.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from grapheneseg.config import save_config, to_plain, write_json
from grapheneseg.metrics import METRICS
from simulate.dataset import open_dataset, require_atoms
from train.models.checkpoints import save_checkpoint
from train.datasets import real_pairs, sim_pairs
from train.loops import ATOM_METRICS, choose_device, fit, world
from train.models.unet import architecture

TASK_CLASSES = {"contamination": 2, "classes": 4, "atoms": 1}  # output channels of each task's network


def sim_rows(paths: Sequence[Path]) -> np.ndarray:
    """(N, 2) (file number, row) of every image of `paths` (schemas checked)."""
    rows = []
    for number, path in enumerate(paths):
        with open_dataset(path) as file:
            n = file["images"].shape[0]
        rows.append(np.stack([np.full(n, number), np.arange(n)], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)


def split_by_structure(paths: Sequence[Path], val_fraction: float, val_max: int,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), each (N, 2) (file number, row).

    A structure (file seed, structure id from the `meta` table) is held out when a hash of
    (seed, file seed, structure) falls below `val_fraction`; the validation part keeps the
    first `val_max` of its images and the rest of the held-out structures is used by neither.
    """
    train, val = [], []
    for number, path in enumerate(paths):
        with open_dataset(path) as file:
            structures = file["meta"].fields("structure")[:].astype(np.int64)
            file_seed = int(file.attrs["seed"])
        held = {s: np.random.default_rng([seed, file_seed, int(s)]).random() < val_fraction
                for s in np.unique(structures)}
        is_val = np.array([held[s] for s in structures], dtype=bool)
        rows = np.stack([np.full(len(structures), number), np.arange(len(structures))], axis=1)
        train.append(rows[~is_val])
        val.append(rows[is_val])
    val_rows = np.concatenate(val)[:int(val_max)]
    return np.concatenate(train), val_rows


def pixel_range(paths: Sequence[Path], rows: np.ndarray) -> list[float]:
    """[min, max] pixel size (A/px) of the simulated images `rows` ((file number, row) pairs)."""
    sizes = []
    for number, path in enumerate(paths):
        with open_dataset(path) as file:
            sizes.append(file["meta"].fields("pixel_size")[:][rows[rows[:, 0] == number, 1]])
    sizes = np.concatenate(sizes)
    return [float(sizes.min()), float(sizes.max())]


def configure_task(cfg: DictConfig, paths: Sequence[Path], real_val: Path | None) -> str:
    """The config's task, checked against the data: "contamination" (2-class masks), "classes"
    (the simulator's four-class maps: a 4-channel network, model.classes) or "atoms" (a 1-channel
    network on the atom maps)."""
    task = cfg.get("task", "contamination")
    if task == "contamination":
        return task
    if task not in TASK_CLASSES:
        raise ValueError(f"task must be contamination, classes or atoms, not {task!r}")
    if real_val and task == "atoms":
        raise ValueError("--real-val validates contamination masks; it does not apply to task=atoms")
    if task == "atoms":
        for path in paths:
            with open_dataset(path) as file:
                require_atoms(file, path)
    classes = OmegaConf.select(cfg, "model.classes", default=TASK_CLASSES[task])
    if classes != TASK_CLASSES[task]:
        raise ValueError(f"task={task} predicts {TASK_CLASSES[task]} channel(s): model.classes must be "
                         f"{TASK_CLASSES[task]}, not {classes}")
    OmegaConf.update(cfg, "model.classes", TASK_CLASSES[task], force_add=True)
    return task


def init_distributed(device: str = "auto") -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL when the run trains
    on CUDA (one GPU per process), else Gloo (also on a GPU machine with `device` cpu)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        import torch

        target = choose_device(device)
        if target.type == "cuda":
            torch.cuda.set_device(target)
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")


def pretrain(cfg: DictConfig, data: list[Path], out: Path, real_val: Path | None = None,
             resume: bool = False) -> dict[str, Any]:
    """Train a U-Net on the simulated files `data`; write the checkpoint `out` (.ckpt), its
    resolved config `out.yaml` beside it and the per-epoch history `out.history.json`.

    Work files (last.ckpt for `resume`) go to `<out stem>.training/`. Returns
    {"out", "train_images", "val_images", "seconds", "samples", "images_per_second", "world_size",
    "sim_val": pooled metrics on the held-out simulations, "real_val": on `real_val` or None}.
    """
    init_distributed(str(cfg.get("device", "auto")))
    rank, size = world()
    out, paths = Path(out), [Path(p) for p in data]
    history = out.with_name(f"{out.stem}.history.json")
    if resume and out.exists() and history.exists():  # finished earlier
        return json.loads(history.read_text())["summary"]
    if not paths:
        raise ValueError("pretraining needs at least one simulated HDF5 file (--data)")
    task = configure_task(cfg, paths, real_val)
    config = to_plain(cfg)
    sim = config["sim"]
    train_rows, val_rows = split_by_structure(paths, sim["val_fraction"], sim["val_max"], sim["split_seed"])
    if len(train_rows) == 0:
        raise ValueError(f"no training images left in {[str(p) for p in paths]} after the validation split")
    loop = config["loop"]
    train_set = sim_pairs(paths, train_rows, augment=config["augment"], crop=loop["crop"],
                          crops_per_image=loop["crops_per_image"], seed=config["seed"], task=task)
    val_set = sim_pairs(paths, val_rows, task=task) if len(val_rows) else None
    targets = {"atoms": "atoms", "classes": "classes"}.get(task, "masks")
    watch = {"real": real_pairs(Path(real_val))} if real_val else None
    if rank == 0:
        save_config(cfg, out.parent, name=f"{out.stem}.yaml")
    t0 = time.perf_counter()
    model, result = fit(config, train_set, val_set, out.parent / f"{out.stem}.training", resume=resume,
                        desc="pretrain", watch=watch, targets=targets)
    final = result["final"]
    summary = {
        "out": str(out), "train_images": int(len(train_rows)), "val_images": int(len(val_rows)),
        "seconds": round(result["seconds"], 1), "wall_seconds": round(time.perf_counter() - t0, 1),
        "samples": int(result["samples"]),  # crops or images drawn over all epochs and processes
        "images_per_second": round(result["samples"] / max(result["seconds"], 1e-9), 1),
        "world_size": size,
        "task": task, "sim_val": {k: v for k, v in final.items()
                                      if k in (ATOM_METRICS if task == "atoms" else METRICS)
                                      or (task == "classes" and (k.startswith("iou_") or k == "miou"))},
        "real_val": {k[5:]: v for k, v in final.items() if k.startswith("real_")} or None,
    }
    if rank == 0:
        metrics = {**summary["sim_val"], **{f"real_{k}": v for k, v in (summary["real_val"] or {}).items()}}
        save_checkpoint(out, model, architecture(config["model"]), config, len(result["history"]), metrics,
                        pixel_range=pixel_range(paths, train_rows))
        write_json(history, {"summary": summary, "history": result["history"]})
        (out.parent / f"{out.stem}.training" / "last.ckpt").unlink(missing_ok=True)
    if size > 1:
        dist.barrier()
    return summary


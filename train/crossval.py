"""Training on the real labelled micrographs: k-fold cross-validation or one model on all images.

A cross-validation run folder (as nnU-Net's) holds:
    config.yaml       resolved config
    splits.json       the folds (evaluate.splits), reused by every arm trained on the same data
    fold_K/           model.ckpt, metrics.json (history + test metrics of that fold)
                      (fold_K_repeat_R/ for repeats after the first)
    cv_metrics.json   pooled metrics over all test pixels, per fold, mean and spread over folds,
                      per image, timing
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from evaluate.config import save_config, to_plain
from evaluate.metrics import mean_and_spread, pooled, scores
from evaluate.micrographs import LabelledSet, load_labelled
from evaluate.splits import load_or_make_splits
from train.checkpoints import read_checkpoint, save_checkpoint
from train.datasets import real_pairs
from train.loops import fit, validate, write_json
from train.model import architecture


def fold_dir(run_dir: Path, split: dict) -> Path:
    name = f"fold_{split['fold']}" + (f"_repeat_{split['repeat']}" if split["repeat"] else "")
    return Path(run_dir) / name


def _train_sets(config: dict[str, Any], data: LabelledSet, train: list[str], test: list[str] | None):
    loop = config["loop"]
    train_set = real_pairs(data, train, augment=config["augment"], crop=loop["crop"],
                           crops_per_image=loop["crops_per_image"], seed=config["seed"])
    test_set = real_pairs(data, test) if test else None
    return train_set, test_set


def train_fold(config: dict[str, Any], data: LabelledSet, split: dict, run_dir: Path,
               resume: bool = False) -> dict[str, Any]:
    """Train on split["train"], test on split["test"]; writes fold_K/model.ckpt and metrics.json.
    With `resume`, a finished fold is read back and an interrupted one continues."""
    out = fold_dir(run_dir, split)
    metrics_path = out / "metrics.json"
    if resume and metrics_path.exists() and (out / "model.ckpt").exists():
        return json.loads(metrics_path.read_text())
    train_set, test_set = _train_sets(config, data, split["train"], split["test"])
    model, result = fit(config, train_set, test_set, out, resume=resume,
                        desc=f"fold {split['fold']}" + (f" repeat {split['repeat']}" if split["repeat"] else ""))
    images = [test_set[i][0][0].numpy() for i in range(len(test_set))]
    masks = [test_set[i][1].numpy().astype(bool) for i in range(len(test_set))]
    test_metrics, counts = validate(model, images, masks, config["loop"]["batch_size"],
                                    next(model.parameters()).device)
    record = {"repeat": split["repeat"], "fold": split["fold"], "test": test_metrics,
              "counts": {n: c.tolist() for n, c in zip(split["test"], counts)},
              "seconds": result["seconds"], "history": result["history"]}
    save_checkpoint(out / "model.ckpt", model, architecture(config["model"]), config,
                    len(result["history"]), test_metrics)
    write_json(metrics_path, record)
    (out / "last.ckpt").unlink(missing_ok=True)
    return record


def cross_validate(cfg: DictConfig, real: Path, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """k-fold CV (cfg.cv.folds x cfg.cv.repeats) on the labelled folder `real` into `run_dir`."""
    config = to_plain(cfg)
    run_dir = Path(run_dir)
    data = load_labelled(Path(real))
    splits = load_or_make_splits(run_dir / "splits.json", data.names, int(cfg.cv.folds),
                                 int(cfg.cv.repeats), int(cfg.cv.split_seed))
    save_config(cfg, run_dir)
    t0 = time.perf_counter()
    folds = [train_fold(config, data, split, run_dir, resume) for split in splits]
    counts = {(f["repeat"], name): np.array(c) for f in folds for name, c in f["counts"].items()}
    summary = {
        "pooled": pooled(counts.values()),
        "per_fold": [{"repeat": f["repeat"], "fold": f["fold"], **f["test"]} for f in folds],
        "fold_mean_std": mean_and_spread([f["test"] for f in folds]),
        "per_image": {f"{name}" if r == 0 else f"{name}@repeat{r}": scores(c)
                      for (r, name), c in counts.items()},
        "train_seconds": round(sum(f["seconds"] for f in folds), 1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "n_images": len(data), "folds": int(cfg.cv.folds), "repeats": int(cfg.cv.repeats),
    }
    write_json(run_dir / "cv_metrics.json", summary)
    return summary


def train_all(cfg: DictConfig, real: Path, out: Path, resume: bool = False) -> dict[str, Any]:
    """One model on every image of `real`, saved at `out` (a .ckpt file; config beside it)."""
    config = to_plain(cfg)
    out = Path(out)
    data = load_labelled(Path(real))
    work = out.parent / f"{out.stem}.training"
    if resume and out.exists():
        return {"out": str(out), **read_checkpoint(out)["metrics"]}
    save_config(cfg, out.parent, name=f"{out.stem}.yaml")
    train_set, _ = _train_sets(config, data, data.names, None)
    model, result = fit(config, train_set, None, work, resume=resume, desc="all images")
    metrics = {"train_loss": result["final"].get("loss"), "seconds": result["seconds"]}
    save_checkpoint(out, model, architecture(config["model"]), config, len(result["history"]), metrics)
    (work / "last.ckpt").unlink(missing_ok=True)
    if work.exists() and not any(work.iterdir()):
        work.rmdir()
    return {"out": str(out), **metrics}

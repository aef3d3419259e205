"""Checkpoints as plain dicts that load with `torch.load(..., weights_only=True)`.

Layout (FORMAT, version 1):
    format, format_version   identify the file
    task                     what the network predicts: "contamination" (2-class softmax) or
                             "atoms" (1-channel atom map, `train pretrain --task atoms`); files
                             written before the key existed are contamination models
    architecture             train.models.unet.architecture(...) of the weights
    state_dict               model weights (tensors)
    config                   the run's resolved config (plain dict), incl. preprocessing
    preprocessing            name of the input preprocessing the model expects
    metrics                  validation metrics at save time (may be empty)
    versions                 python, torch, grapheneseg
    epoch                    epochs completed
    train_images             names of the real images the weights were trained on (fine-tuning
                             and real-only runs; empty for simulation-only pretraining), so that
                             scoring on them can be flagged
    selection (optional)     the inner-validation choice of training length (train.selection)
    training (optional)      optimizer / scheduler / grad-scaler state, for `--resume`
"""
from __future__ import annotations

import os
import pickle
import platform
from importlib import metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from train.models.unet import UNet, architecture, build_model

FORMAT = "grapheneseg-unet"
FORMAT_VERSION = 1
MODEL_FILE = "model.ckpt"  # the checkpoint inside a run folder (fold_*/model.ckpt for a cross-validation run)
PREPROCESSING = "bezier-flat-field+standardise"
TASKS = ("contamination", "atoms")
TASK_HINT = {"contamination": "a segmentation model (train pretrain/real/finetune)",
             "classes": "a four-class structure model (train pretrain --task classes)",
             "atoms": "an atom-map model (train pretrain --task atoms)"}


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, of another kind or of another architecture."""


def versions() -> dict[str, str]:
    try:
        own = metadata.version("grapheneseg")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return {"python": platform.python_version(), "torch": str(torch.__version__), "grapheneseg": own}


def save_checkpoint(path: Path, model: UNet, arch: dict[str, Any], config: dict[str, Any],
                    epoch: int, metrics: dict[str, Any] | None = None,
                    training: dict[str, Any] | None = None, train_images: Sequence[str] = (),
                    selection: dict[str, Any] | None = None,
                    pixel_range: Sequence[float] | None = None) -> Path:
    """Write a checkpoint atomically (temporary file, then rename: an interruption leaves no
    truncated file behind). `pixel_range`: the [min, max] A/px of the simulated images the model
    was trained on, so that `evaluate predict` resamples micrographs into it (None: not known)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "task": config.get("task", "contamination"),
        "architecture": dict(arch),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config, "preprocessing": PREPROCESSING, "metrics": metrics or {},
        "versions": versions(), "epoch": int(epoch), "train_images": sorted(train_images),
    }
    if selection is not None:
        payload["selection"] = selection
    if pixel_range is not None:
        payload["pixel_range"] = [round(float(v), 4) for v in pixel_range]
    if training is not None:
        payload["training"] = training
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict at `path`; CheckpointError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
            # not PyTorch's advice (weights_only=False would run the file's code): say what it is
            raise CheckpointError(f"{path}: not a {FORMAT} checkpoint of this tool: it holds Python objects "
                                  f"other than tensors and plain data, which this tool never writes") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or another file "
                              f"type): {type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (no '{FORMAT}' format tag)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {payload.get('format_version')} "
                              f"is not supported (expected {FORMAT_VERSION})")
    if payload.get("preprocessing") != PREPROCESSING:
        raise CheckpointError(f"{path}: model expects preprocessing {payload.get('preprocessing')!r}, "
                              f"this version provides {PREPROCESSING!r}")
    payload.setdefault("task", "contamination")
    return payload


def check_task(payload: dict[str, Any], task: str, path: Path) -> None:
    """CheckpointError when the checkpoint predicts another thing than `task`. A four-class
    ("classes") model also serves where contamination is asked for: its channel 1 is contamination
    (simulate.labels' class order), so its softmax there is the contamination probability."""
    if payload["task"] != task and not (task == "contamination" and payload["task"] == "classes"):
        raise CheckpointError(f"{path}: an {payload['task']!r} checkpoint ({TASK_HINT.get(payload['task'], 'unknown')}), "
                              f"but {TASK_HINT[task]} is needed here")


def load_weights(model: nn.Module, payload: dict[str, Any], path: Path) -> None:
    """Load `payload`'s weights into `model`; CheckpointError naming `path` on any mismatch."""
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: weights do not fit the architecture "
                              f"{payload.get('architecture')}: {str(err).splitlines()[0][:300]}") from None


def load_model(path: Path, task: str | None = None) -> tuple[UNet, dict[str, Any]]:
    """The model stored at `path` (in eval mode, on CPU) and its checkpoint dict; with `task`, a
    CheckpointError when the checkpoint is of another task."""
    payload = read_checkpoint(path)
    if task is not None:
        check_task(payload, task, path)
    try:
        model = build_model(architecture(payload["architecture"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid architecture {payload.get('architecture')}: {err}") from None
    load_weights(model, payload, path)
    return model.eval(), payload


def checkpoint_paths(model_path: Path | Sequence[Path]) -> list[Path]:
    """The checkpoint files a model path stands for: the file itself, a folder's model.ckpt, or
    every fold_*/model.ckpt of a cross-validation run folder; for several paths (an ensemble of
    them), all of theirs in order, each file once (a CheckpointError names one given twice)."""
    if not isinstance(model_path, (str, Path)):
        paths = [p for one in model_path for p in checkpoint_paths(one)]
        twice = sorted({str(p) for p in paths if paths.count(p) > 1})
        if twice:
            raise CheckpointError(f"{', '.join(twice)}: given more than once, it would count twice in the ensemble")
        return paths
    model_path = Path(model_path)
    if model_path.is_file():
        return [model_path]
    if model_path.is_dir():
        if (model_path / MODEL_FILE).is_file():
            return [model_path / MODEL_FILE]
        folds = sorted(model_path.glob(f"fold_*/{MODEL_FILE}"))
        if folds:
            return folds
        raise CheckpointError(f"{model_path}: folder holds no {MODEL_FILE} and no fold_*/{MODEL_FILE}")
    raise CheckpointError(f"{model_path}: no such checkpoint file or run folder")


def trained_on(model_path: Path, names: Sequence[str]) -> dict[str, list[str]]:
    """{checkpoint path: the `names` it was trained on} for every checkpoint of `model_path` that
    records training images among `names` (scoring on them overstates the model)."""
    wanted = set(names)
    overlap = {}
    for path in checkpoint_paths(model_path):
        seen = sorted(wanted.intersection(read_checkpoint(path).get("train_images", [])))
        if seen:
            overlap[str(path)] = seen
    return overlap

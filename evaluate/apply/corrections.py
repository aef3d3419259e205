"""Corrected masks back into the model: save a micrograph with its hand-corrected contamination
mask as a labelled pair, then fine-tune on a folder of such pairs.

A pair is `NAME.png` (8-bit grey) + `NAME_LABEL.png` (0/255), the layout `train real|finetune`
reads. It is saved at the scale the model segments the micrograph at (`Predictor.plan`: resampled
to the model's pixel size when the micrograph's lies outside the model's range), so fine-tuning
sees graphene at the scale inference will. An existing pair is never overwritten silently.

`finetune` is `train finetune --folds 0` on such a folder, guarded as the CLI is: the pretrained
model is kept, and the summary says so, when fine-tuning does not beat it on held-out corrections
beyond noise. A `progress(desc, done, total)` callback sees every step and may raise to cancel.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grapheneseg.formats import Micrograph
from grapheneseg.micrographs import LABEL_SUFFIX, read_image, read_label

from .predictor import Predictor
from .scale import Scale, decide_scale, resample
from .segment import save_png

NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class SavedPair:
    """The pair written (or found identical) and the scale it was saved at."""

    image: Path
    label: Path
    shape: tuple[int, int]
    pixel_size: float | None  # A/px of the saved pair; None: the micrograph's own, unknown
    resampled: bool
    unchanged: bool  # the folder already held exactly this pair


def pair_name(name: str) -> str:
    """A file-system safe pair name (no folder, no suffix, no `_LABEL` ending)."""
    stem = NAME.sub("_", Path(name).stem).strip("._") or "micrograph"
    return stem[: -len(LABEL_SUFFIX)] + "_" if stem.endswith(LABEL_SUFFIX) else stem


def as_8bit(image: np.ndarray) -> np.ndarray:
    """Grey levels 0-255 over the 0.1-99.9 percentiles (the public labelled set is 8-bit)."""
    lo, hi = np.nanpercentile(image, [0.1, 99.9])
    scaled = (np.asarray(image, np.float64) - lo) / (hi - lo if hi > lo else 1.0)
    return np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)


def save_pair(predictor: Predictor, micrograph: Micrograph, mask: np.ndarray, folder: Path,
              name: str | None = None, scale: Scale | None = None, overwrite: bool = False) -> SavedPair:
    """Write `micrograph` and its corrected boolean `mask` (the micrograph's grid) as
    `folder/NAME.png` + `NAME_LABEL.png` at `predictor`'s working scale (`scale` default:
    `decide_scale`). An existing pair that differs raises FileExistsError unless `overwrite`."""
    mask = np.asarray(mask)
    if mask.shape != micrograph.image.shape:
        raise ValueError(f"{micrograph.path}: mask shape {mask.shape} differs from the micrograph's "
                         f"{micrograph.image.shape}")
    scale = scale or decide_scale(micrograph)
    image = predictor.plan(micrograph, scale)
    resampled = image.shape != micrograph.image.shape
    label = mask > 0
    if resampled:
        label = resample(label.astype(np.float32), image.shape, order=0) > 0.5
    grey, label8 = as_8bit(image), label.astype(np.uint8) * 255
    folder = Path(folder)
    stem = pair_name(name or str(micrograph.path))
    paths = folder / f"{stem}.png", folder / f"{stem}{LABEL_SUFFIX}.png"
    size = None if not scale.pixel_size else (
        scale.pixel_size * micrograph.image.shape[0] / image.shape[0] if resampled else scale.pixel_size)
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        if all(p.exists() for p in paths) and np.array_equal(read_image(paths[0]), grey) \
                and np.array_equal(read_label(paths[1])[0], label):
            return SavedPair(*paths, image.shape, size, resampled, unchanged=True)
        raise FileExistsError(f"{existing[0]}: a different labelled pair of that name exists; choose another "
                              "name or overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    save_png(grey, paths[0])
    save_png(label8, paths[1])
    return SavedPair(*paths, image.shape, size, resampled, unchanged=False)


def finetune(folder: Path, out: Path, pretrained: Path | None = None, device: str = "auto",
             overrides: Sequence[str] = (), progress: Callable[[str, int, int], None] | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Fine-tune `pretrained` (default: the packaged contamination model) on every pair in
    `folder` and save the model at `out` (.ckpt, its config beside it), as `train finetune
    --folds 0` does: the cpu preset, inner validation on held-out pairs, the pretrained model kept
    when fine-tuning does not beat it beyond noise. Returns train_all's summary with `message`
    (the guard's verdict). `overrides`: Hydra `key=value` words of the train config."""
    from grapheneseg.config import load_config, override
    from train.crossval import train_all
    from train.loops import observed
    from train.models import registry
    from train.selection import describe

    out = Path(out)
    if out.suffix != ".ckpt":
        raise ValueError(f"{out}: give a checkpoint file name ending in .ckpt")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another name or overwrite it")
    pretrained = Path(pretrained) if pretrained else registry.packaged("contamination")
    cfg = load_config("train", [override("data.real_dir", folder), "cv.folds=0",
                                override("finetune.pretrained", pretrained), f"device={device}", *overrides])
    with observed(progress):
        result = train_all(cfg, Path(folder), out)
    selection = result.get("selection")
    result["message"] = (describe(selection) if selection else
                         f"fine-tuned for the configured length on {len(result['train_images'])} pair(s) "
                         "(too few for inner validation: no check against the pretrained model)")
    return result

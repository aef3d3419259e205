"""Torch datasets of (micrograph, contamination mask) pairs.

`PairDataset` works on any indexable source of flat-fielded images and boolean masks: lists in
memory for the real labelled micrographs (`real_pairs`), or lazily read arrays (e.g. h5py
datasets of simulated images) for larger sets. Each item is (image (1, H, W) float32 standardised,
mask (H, W) int64 class index); a training set yields `crops_per_image` augmented crops of every
image per epoch, a validation set the whole standardised images.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from evaluate.micrographs import LabelledSet, load_labelled
from evaluate.preprocessing import flat_field

from train.augment import Augmenter


class PairDataset(Dataset):
    """Images and masks from `images`/`masks` (same length, indexable), optionally augmented."""

    def __init__(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 augment: Mapping[str, Any] | None = None, crop: int | None = None,
                 crops_per_image: int = 1, seed: int = 0):
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images, self.masks = images, masks
        self.augmenter = Augmenter(augment or {"enabled": False}, crop)
        self.repeats = max(1, int(crops_per_image))
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of `epoch` (the same after a resume)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        source = index % len(self.images)
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        image, mask = self.augmenter(np.asarray(self.images[source], dtype=np.float32),
                                     np.asarray(self.masks[source]), seed)
        return torch.from_numpy(image)[None], torch.from_numpy(mask.astype(np.int64))


def flat_fielded(data: LabelledSet) -> list[np.ndarray]:
    """Flat-field corrected images (the first, deterministic half of preprocessing), once."""
    return [flat_field(image).astype(np.float32) for image in data.images]


def real_pairs(folder: Path | LabelledSet, names: Sequence[str] | None = None,
               **dataset_args: Any) -> PairDataset:
    """A PairDataset over the labelled real micrographs of `folder` (optionally only `names`)."""
    data = folder if isinstance(folder, LabelledSet) else load_labelled(Path(folder))
    if names is not None:
        index = {name: i for i, name in enumerate(data.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise ValueError(f"images {missing[:3]} not found among the labelled set")
        data = data.subset([index[n] for n in names])
    return PairDataset(flat_fielded(data), data.masks, **dataset_args)

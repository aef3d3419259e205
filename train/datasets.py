"""Torch datasets of (micrograph, contamination mask) pairs.

`PairDataset` works on any indexable source of flat-fielded images and boolean masks: lists in
memory for the real labelled micrographs (`real_pairs`), or lazily read arrays (e.g. h5py
datasets of simulated images, `sim_pairs`) for larger sets. Each item is (image (1, H, W) float32 standardised,
mask (H, W) int64 class index); a training set yields `crops_per_image` augmented crops of every
image per epoch, a validation set the whole standardised images.

The atom task (`train pretrain --task atoms`) uses the same pairs with another target: the
simulated atom map as uint8 0-ATOM_PEAK, and ATOM_IGNORE inside the contamination mask, where the
sheet is hidden under amorphous carbon and the loss is not counted (`atom_target`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from grapheneseg.micrographs import LabelledSet, load_labelled
from grapheneseg.preprocessing import flat_field

from train.augment import Augmenter

ATOM_PEAK = 254  # atom-task target value at an atom (the map's 0-255 scaled to 0-254)
ATOM_IGNORE = 255  # atom-task target value where the loss is not counted (contamination)


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


class H5Rows(Sequence):
    """Rows of one array (`images` or `masks`) of simulated-dataset HDF5 files, read lazily.

    `rows` is an (N, 2) array of (file number, row). Files are opened on first access in each
    process (never before a fork or a pickling for data-loader workers: h5py handles do not
    survive either), so a 100,000-image file costs only the rows actually read. Images are
    flat-fielded on reading, the deterministic half of the real images' preprocessing.
    """

    def __init__(self, paths: Sequence[Path], name: str, rows: np.ndarray):
        self.paths, self.name = [str(p) for p in paths], name
        self.rows = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
        self._files: dict[int, Any] = {}
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}, "_pid": -1}

    def _file(self, number: int):
        import h5py

        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        if number not in self._files:
            self._files[number] = h5py.File(self.paths[number], "r")
        return self._files[number]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> np.ndarray:
        number, row = self.rows[index]
        array = self._file(int(number))[self.name][int(row)]
        return flat_field(array) if self.name == "images" else array


def atom_target(atoms: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 atom-task target: the atom map (0-255) scaled to 0-ATOM_PEAK, ATOM_IGNORE where `mask`."""
    target = np.round(atoms.astype(np.float32) * (ATOM_PEAK / 255)).astype(np.uint8)
    target[np.asarray(mask) > 0] = ATOM_IGNORE
    return target


class H5AtomTargets(H5Rows):
    """Atom-task targets (`atom_target`) of rows of simulated HDF5 files, read lazily."""

    def __init__(self, paths: Sequence[Path], rows: np.ndarray):
        super().__init__(paths, "atoms", rows)

    def __getitem__(self, index: int) -> np.ndarray:
        number, row = self.rows[index]
        file = self._file(int(number))
        return atom_target(file["atoms"][int(row)], file["masks"][int(row)])


def sim_pairs(paths: Sequence[Path], rows: np.ndarray, task: str = "contamination",
              **dataset_args: Any) -> PairDataset:
    """A PairDataset over `rows` ((file number, row) pairs) of simulated HDF5 files; targets are
    the contamination masks, with task "classes" the four-class maps (0 lattice, 1 contamination,
    2 vacuum, 3 grain boundary), with task "atoms" the atom-task targets."""
    if task == "atoms":
        targets = H5AtomTargets(paths, rows)
    else:
        targets = H5Rows(paths, "classes" if task == "classes" else "masks", rows)
    return PairDataset(H5Rows(paths, "images", rows), targets, **dataset_args)


class MixedPairs(Dataset):
    """A real training set with simulated samples mixed in: `fraction` of the items (so, on
    average, of every batch) are drawn from `sim`, the rest are the real items in turn."""

    def __init__(self, real: PairDataset, sim: PairDataset, fraction: float, seed: int = 0):
        if not 0 <= fraction < 1:
            raise ValueError(f"finetune.sim_fraction must be in [0, 1), got {fraction}")
        self.real, self.sim, self.seed = real, sim, int(seed)
        self.n_sim = int(round(len(real) * fraction / (1 - fraction)))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.real.set_epoch(epoch)
        self.sim.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.real) + self.n_sim

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index < len(self.real):
            return self.real[index]
        pick = np.random.default_rng([self.seed, self.epoch, index]).integers(len(self.sim))
        return self.sim[int(pick)]

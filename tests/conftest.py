"""Shared fixtures: tiny synthetic labelled micrographs written as NAME.png + NAME_LABEL.png."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent  # the checkout (tests/ lies at its top)


def synthetic_micrograph(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A honeycomb-like lattice (three cosines) with one amorphous blob; returns (uint8 image, mask)."""
    y, x = np.mgrid[:size, :size].astype(float)
    k, angle = 2 * np.pi * 0.2, rng.uniform(0, np.pi / 3)
    lattice = sum(np.cos(k * (x * np.cos(angle + j * np.pi / 3) + y * np.sin(angle + j * np.pi / 3)))
                  for j in range(3))
    cy, cx, radius = rng.uniform(0.25 * size, 0.75 * size, 2).tolist() + [rng.uniform(0.12, 0.22) * size]
    mask = (y - cy) ** 2 + (x - cx) ** 2 < radius**2
    amorphous = scipy.ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.5)
    amorphous *= 3.0 / amorphous.std()
    image = 120 + 15 * lattice * np.where(mask, 0.2, 1.0) + 15 * amorphous * mask
    image *= 1 + 0.2 * x / size  # illumination gradient, removed by the flat field
    image += rng.normal(0, 2, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_labelled_folder(folder: Path, n: int = 6, size: int = 64, seed: int = 0) -> Path:
    """Write `n` synthetic pairs into `folder` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, mask = synthetic_micrograph(rng, size)
        Image.fromarray(image).save(folder / f"img{i:02d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(folder / f"img{i:02d}_LABEL.png")
    return folder


@pytest.fixture
def real_dir(tmp_path: Path) -> Path:
    """A folder of 6 synthetic 64x64 labelled micrographs."""
    return write_labelled_folder(tmp_path / "real")


def formats_dir() -> Path | None:
    """The small real microscope files (DM3, DM4, TIA, EMD, TIFF) read in place:
    $GRAPHENESEG_FORMATS_DIR, else shared/data/formats in a folder above the checkout; None when absent."""
    import os

    if os.environ.get("GRAPHENESEG_FORMATS_DIR"):
        return Path(os.environ["GRAPHENESEG_FORMATS_DIR"])
    for base in Path(__file__).resolve().parents:
        if (base / "shared" / "data" / "formats").is_dir():
            return base / "shared" / "data" / "formats"
    return None


FORMATS = formats_dir()


# Tiny presets shared by the tests (Hydra overrides): a 2-level, 4-feature U-Net; batches of four
# 32 px crops with no step floor on one thread; the tiny simulation grid in one process.
TINY_NET = ["model.depth=2", "model.features=4"]
TINY_BATCH = ["loop.batch_size=4", "loop.crop=32", "loop.min_steps=0", "threads=1"]
TINY_GRID = ["grid=tiny", "workers=1"]

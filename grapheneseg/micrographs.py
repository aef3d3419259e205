"""Reading labelled real micrographs: folders of NAME.png + NAME_LABEL.png pairs.

Labels: every pixel > 0 is contamination (the positive class), 0 is everything else. Labels that
are not strictly binary (e.g. 0/255 resampled with interpolation, or 0/1) are binarised the same
way; the fraction of intermediate values is reported by `LabelledSet.nonbinary`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

LABEL_SUFFIX = "_LABEL"
IMAGE_EXTENSIONS = (".png",)


class DataError(ValueError):
    """Bad input data; the message names the file and the fault."""


@dataclass
class LabelledSet:
    """Images (float32, raw intensities) and boolean contamination masks, in name order."""

    names: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    nonbinary: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: list[int] | np.ndarray) -> "LabelledSet":
        idx = [int(i) for i in indices]
        return LabelledSet(
            [self.names[i] for i in idx], [self.images[i] for i in idx], [self.masks[i] for i in idx]
        )


def read_image(path: Path) -> np.ndarray:
    """One greyscale micrograph as float32; clear errors for unreadable or non-finite files."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGB", "RGBA", "P", "LA"):
                img = img.convert("L")
            array = np.asarray(img, dtype=np.float32)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: unreadable or truncated image ({err})") from None
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D greyscale image, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: contains non-finite pixel values (NaN or inf)")
    return array


def read_label(path: Path) -> tuple[np.ndarray, float]:
    """Binary mask (label > 0) and the fraction of pixels that were neither 0 nor the maximum."""
    raw = read_image(path)
    top = raw.max()
    nonbinary = float(np.mean((raw > 0) & (raw < top))) if top > 0 else 0.0
    return raw > 0, nonbinary


def find_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """(name, image, label) for every pair in `folder`; an unpaired file is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of labelled micrographs (`evaluate fetch-real` downloads the "
                        "public set into data/real; --real DIR or GRAPHENESEG_REAL_DIR point elsewhere)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    labels = {p.stem[: -len(LABEL_SUFFIX)]: p for p in files if p.stem.endswith(LABEL_SUFFIX)}
    images = {p.stem: p for p in files if not p.stem.endswith(LABEL_SUFFIX)}
    if not images and not labels:
        raise DataError(f"{folder}: no NAME.png / NAME{LABEL_SUFFIX}.png pairs found (empty folder)")
    for name in sorted(images.keys() - labels.keys()):
        raise DataError(f"{images[name]}: image without label (expected {name}{LABEL_SUFFIX}.png)")
    for name in sorted(labels.keys() - images.keys()):
        raise DataError(f"{labels[name]}: label without image (expected {name}.png)")
    return [(name, images[name], labels[name]) for name in sorted(images)]


def load_labelled(folder: Path) -> LabelledSet:
    """Load every pair of `folder`, checking that image and label have the same size."""
    result = LabelledSet([], [], [])
    for name, image_path, label_path in find_pairs(folder):
        image = read_image(image_path)
        mask, nonbinary = read_label(label_path)
        if image.shape != mask.shape:
            raise DataError(
                f"{label_path}: size {mask.shape[::-1]} does not match image {image_path.name} "
                f"size {image.shape[::-1]} (width x height)"
            )
        result.names.append(name)
        result.images.append(image)
        result.masks.append(mask)
        if nonbinary > 0:
            result.nonbinary[name] = nonbinary
    return result

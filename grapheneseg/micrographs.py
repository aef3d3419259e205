"""Reading labelled real micrographs: folders of NAME.png + NAME_LABEL.png pairs.

Labels: every pixel > 0 is contamination (the positive class), 0 is everything else. Labels that
are not strictly binary (e.g. 0/255 resampled with interpolation, or 0/1) are binarised the same
way; the fraction of intermediate values is kept in `LabelledSet.nonbinary` and reported in a
warning. A folder is checked whole before anything is used (as nnU-Net's dataset integrity check):
the error lists every broken pair, not only the first.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

LABEL_SUFFIX = "_LABEL"
IMAGE_EXTENSIONS = (".png",)
OTHER_MICROGRAPHS = (".dm3", ".dm4", ".emd", ".ser", ".tif", ".tiff", ".jpg", ".jpeg")
MIN_SIDE = 32  # px: smaller images hold too few lattice periods to train on (evaluate refuses them too)


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


def read_image(path: Path, frame: int = 0) -> np.ndarray:
    """One greyscale micrograph (frame `frame` of a multi-frame file) as float32; clear errors for
    unreadable or non-finite files."""
    try:
        with Image.open(path) as img:
            if frame:
                img.seek(frame)
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


def image_frames(path: Path) -> int:
    """Frames in an image file read by Pillow (an animated PNG or a multi-page file holds several;
    `read_image` reads the first); 1 when unreadable (`read_image` names the fault)."""
    try:
        with Image.open(path) as img:
            return int(getattr(img, "n_frames", 1))
    except (OSError, ValueError, SyntaxError):
        return 1


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
    others = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in OTHER_MICROGRAPHS)
    if others:
        warnings.warn(f"{folder}: {len(others)} micrograph file(s) not used for training, only NAME.png + "
                      f"NAME{LABEL_SUFFIX}.png pairs are: {', '.join(others[:5])}{' ...' if len(others) > 5 else ''} "
                      "(convert them to PNG beside their labels to use them)", stacklevel=2)
    labels = {p.stem[: -len(LABEL_SUFFIX)]: p for p in files if p.stem.endswith(LABEL_SUFFIX)}
    images = {p.stem: p for p in files if not p.stem.endswith(LABEL_SUFFIX)}
    if not images and not labels:
        raise DataError(f"{folder}: no NAME.png / NAME{LABEL_SUFFIX}.png pairs found (empty folder)")
    problems = [f"{images[n]}: image without label (expected {n}{LABEL_SUFFIX}.png)"
                for n in sorted(images.keys() - labels.keys())]
    problems += [f"{labels[n]}: label without image (expected {n}.png)" for n in sorted(labels.keys() - images.keys())]
    _raise_all(folder, problems)
    return [(name, images[name], labels[name]) for name in sorted(images)]


def _raise_all(folder: Path, problems: list[str]) -> None:
    """One DataError naming every broken file of `folder` (nothing when `problems` is empty)."""
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        raise DataError(f"{folder}: {len(problems)} broken pairs:\n  " + "\n  ".join(problems))


def load_labelled(folder: Path) -> LabelledSet:
    """Load every pair of `folder`, checking that image and label have the same size, that neither
    is a stack and that the image is not too small; every unreadable file, mismatched pair or
    stack is listed in one DataError, before anything trains on the folder."""
    result, problems = LabelledSet([], [], []), []
    for name, image_path, label_path in find_pairs(folder):
        try:
            image = read_image(image_path)
            mask, nonbinary = read_label(label_path)
        except DataError as err:
            problems.append(str(err))
            continue
        if image.shape != mask.shape:
            problems.append(f"{label_path}: size {mask.shape[::-1]} does not match image {image_path.name} "
                            f"size {image.shape[::-1]} (width x height)")
            continue
        if min(image.shape) < MIN_SIDE:
            problems.append(f"{image_path}: {image.shape[1]} x {image.shape[0]} px: too small to train on "
                            f"(at least {MIN_SIDE} px a side)")
            continue
        frames = max(image_frames(image_path), image_frames(label_path))
        if frames > 1:
            problems.append(f"{image_path}: a stack of {frames} frames: a labelled micrograph must be one image "
                            "(save the labelled frame alone)")
            continue
        result.names.append(name)
        result.images.append(image)
        result.masks.append(mask)
        if nonbinary > 0:
            result.nonbinary[name] = nonbinary
    _raise_all(Path(folder), problems)
    if result.nonbinary:
        worst = max(result.nonbinary, key=result.nonbinary.get)
        warnings.warn(f"{folder}: {len(result.nonbinary)} of {len(result)} labels are not strictly binary "
                      f"(most: {worst}{LABEL_SUFFIX}.png, {100 * result.nonbinary[worst]:.1f} % of its pixels "
                      f"between 0 and its maximum); binarised as label > 0", stacklevel=2)
    return result

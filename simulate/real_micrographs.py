"""A lab's micrographs brought to the simulated scale (`load_real`), for `simulate calibrate`.

The micrographs may be of any supported format, size and pixel size: each is brought to the
simulated scale by binning (or upsampling) by a power of two into the simulator's pixel-size
range, on the file's pixel size, else its lattice's; then cut into image_px x image_px tiles, its
labels likewise (nearest-neighbour). A folder of image_px micrographs at the simulated scale is
used as it is. Apart from the fit (`simulate.calibration`) because it only reads and scales files
and needs nothing of the simulator.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import scipy.ndimage

from grapheneseg import GRAPHENE_D100
from grapheneseg.formats import SUPPORTED, Micrograph, read_micrograph
from grapheneseg.lattice import LatticeReading, read_lattice
from grapheneseg.micrographs import LABEL_SUFFIX, MIN_SIDE, DataError, read_label

LATTICE_LIMIT = GRAPHENE_D100 / 2  # A/px: coarser pixels cannot resolve graphene's 2.13 A {100} planes
LABEL_FORMATS = (".png", ".tif", ".tiff")  # NAME_LABEL.* read as masks (label > 0)
SCALE_SLACK = np.sqrt(2.0)  # a folder's common factor is kept for micrographs within this factor of the range


@dataclasses.dataclass
class RealSet:
    """A folder's micrographs at the simulated scale: image_px x image_px tiles (and their masks),
    the pixel size of each tile (A/px, nan where unknown), what was done to each micrograph
    (`used`: file, pixel size, its source, bin factor, tiles) and what was left out (`skipped`:
    file, reason)."""

    images: list[np.ndarray]
    masks: list[np.ndarray] | None
    pixel_sizes: np.ndarray
    used: list[dict]
    skipped: list[dict]


def micrograph_files(folder: Path, labelled: bool) -> list[tuple[Path, Path | None]]:
    """(micrograph, label or None) for every micrograph in `folder` (any supported format); with
    `labelled` each NAME.ext needs a NAME_LABEL.png (or .tif), and every broken pair is named in
    one DataError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of micrographs")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED)
    images = [p for p in files if not p.stem.endswith(LABEL_SUFFIX)]
    if not images:
        raise DataError(f"{folder}: no micrographs ({', '.join(SUPPORTED)}) found")
    if not labelled:
        return [(p, None) for p in images]
    labels: dict[str, list[Path]] = {}
    for p in files:
        if p.stem.endswith(LABEL_SUFFIX) and p.suffix.lower() in LABEL_FORMATS:
            labels.setdefault(p.stem[: -len(LABEL_SUFFIX)], []).append(p)
    stems: dict[str, list[Path]] = {}
    for p in images:
        stems.setdefault(p.stem, []).append(p)
    problems = [f"{folder}: {len(ps)} micrographs named {s} ({', '.join(p.name for p in ps)}): one label cannot "
                "serve both" for s, ps in stems.items() if len(ps) > 1]
    problems += [f"{folder}: {len(ps)} labels for {s} ({', '.join(p.name for p in ps)})"
                 for s, ps in labels.items() if len(ps) > 1]
    problems += [f"{p}: micrograph without label (expected {p.stem}{LABEL_SUFFIX}.png)" for p in images
                 if p.stem not in labels]
    problems += [f"{ps[0]}: label without micrograph" for s, ps in labels.items() if s not in stems]
    if problems:
        raise DataError(problems[0] if len(problems) == 1 else
                        f"{folder}: {len(problems)} broken pairs:\n  " + "\n  ".join(problems))
    return [(p, labels[p.stem][0]) for p in images]


def read_scale(micrograph: Micrograph) -> tuple[float | None, str, LatticeReading | None]:
    """(pixel size in A/px or None, its source, the lattice reading): the file's own calibration,
    else the graphene lattice (`grapheneseg.lattice.read_lattice`, as `evaluate predict` reads it)."""
    if micrograph.pixel_size:
        return float(micrograph.pixel_size), "file", None
    if min(micrograph.image.shape) < MIN_SIDE:
        return None, "none", None
    reading = read_lattice(micrograph.image)
    if reading.pixel_size is None:
        return None, "none", reading
    return float(reading.pixel_size), "lattice (ambiguous)" if reading.ambiguous else "lattice", reading


def scale_exponents(pixel_sizes: list[float | None], pixel_range: tuple[float, float]) -> tuple[int, list[int | None]]:
    """(the folder's common k, per micrograph k) such that binning by 2**k (k < 0: upsampling by 2**-k) brings it to the
    simulated pixel-size range `pixel_range`: the folder's common k (the median micrograph's, nearest
    the range's geometric centre) wherever it leaves the pixel size within a factor `SCALE_SLACK` of
    the range, so micrographs taken at one magnification are treated alike (a folder already at the
    simulated scale stays as it is); else the micrograph's own, which lands within a factor sqrt 2 of
    the range's centre. None where the pixel size is unknown; the common k is 0 when none is known."""
    lo, hi = pixel_range
    centre = np.sqrt(lo * hi)
    known = [np.log2(centre / p) for p in pixel_sizes if p]
    common = int(np.round(np.median(known))) if known else 0
    out: list[int | None] = []
    for p in pixel_sizes:
        if not p:
            out.append(None)
        elif lo / SCALE_SLACK <= p * 2.0 ** common <= hi * SCALE_SLACK:
            out.append(common)
        else:
            out.append(int(np.round(np.log2(centre / p))))
    return common, out


def rescale(image: np.ndarray, exponent: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """`image` binned by 2**exponent (block means of whole bins, a ragged edge trimmed; the mask takes
    the pixel at each bin's centre, nearest-neighbour) or, for exponent < 0, upsampled by 2**-exponent
    (linear interpolation; the mask repeated, nearest-neighbour); unchanged for 0."""
    if exponent == 0:
        return image, mask
    b = 2 ** abs(exponent)
    if exponent > 0:
        h, w = (n // b * b for n in image.shape)
        binned = image[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
        return binned, None if mask is None else mask[b // 2:h:b, b // 2:w:b]
    up = scipy.ndimage.zoom(np.asarray(image, np.float32), b, order=1, grid_mode=True, mode="grid-mirror")
    return up, None if mask is None else np.repeat(np.repeat(mask, b, axis=0), b, axis=1)


def tiles(image: np.ndarray, size: int) -> list[tuple[slice, slice]]:
    """Non-overlapping size x size tiles of `image`, as many as fit, centred (the margin left over is
    split between both sides); one tile, the whole image, when it is size x size."""
    h, w = image.shape
    ny, nx = h // size, w // size
    y0, x0 = (h - ny * size) // 2, (w - nx * size) // 2
    return [(slice(y0 + i * size, y0 + (i + 1) * size), slice(x0 + j * size, x0 + (j + 1) * size))
            for i in range(ny) for j in range(nx)]


def load_real(folder: Path, labelled: bool, image_px: int, pixel_range: tuple[float, float],
              warn=None) -> RealSet:
    """The folder's micrographs (any supported format, size and pixel size; with `labelled`, their
    masks) brought to the simulated scale and cut into image_px x image_px tiles.

    Each micrograph's pixel size is the file's own, else its graphene lattice's (`read_scale`); it
    is binned (or upsampled) by a power of two into the simulated range (`scale_exponents`,
    `rescale`), then tiled (`tiles`). A micrograph already image_px x image_px at the simulated scale
    is its own single tile, unchanged. Left out, each with a warning naming it and why: one with no
    pixel size and no lattice (unless it is image_px x image_px in a folder at the simulated
    scale: then it is used as it is, with a warning), one whose pixels are too coarse to show the
    lattice, one smaller than image_px at the simulated scale. A DataError when none is left."""
    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    folder = Path(folder)
    files = micrograph_files(folder, labelled)
    found = []  # (path, label, pixel size, source, reading)
    for path, label in files:
        micrograph = read_micrograph(path)
        found.append((path, label, *read_scale(micrograph)))
    common, exponents = scale_exponents([f[2] for f in found], pixel_range)
    images, masks, sizes, used, skipped, nonbinary = [], [] if labelled else None, [], [], [], []

    def skip(path: Path, reason: str) -> None:
        skipped.append({"file": str(path), "reason": reason})
        warn(f"{path}: left out of the calibration: {reason}")

    for (path, label, size, source, reading), exponent in zip(found, exponents):
        micrograph = read_micrograph(path)
        image, (h, w) = micrograph.image, micrograph.image.shape
        if micrograph.frames > 1:
            warn(f"{path}: {micrograph.note}")
        mask = None
        if labelled:
            mask, fraction = read_label(label)
            if fraction > 0:
                nonbinary.append(label.name)
            if mask.shape != image.shape:
                raise DataError(f"{label}: size {mask.shape[1]}x{mask.shape[0]} does not match {path.name} ({w}x{h})")
        if size is None:
            if (h, w) != (image_px, image_px) or common != 0:
                skip(path, f"{w} x {h} px with no pixel size in the file and no graphene lattice found "
                           "(its scale is unknown; save it with its pixel size, e.g. as a calibrated TIFF)")
                continue
            warn(f"{path}: no pixel size in the file and no graphene lattice found; used at its own scale "
                 f"({image_px} x {image_px} px, like the folder's other micrographs)")
            exponent = 0
        elif size > LATTICE_LIMIT:
            skip(path, f"{size:.3g} \u00c5/px ({source}): too coarse for the graphene lattice (2.13 \u00c5 planes "
                       f"need < {LATTICE_LIMIT:.3f} \u00c5/px)")
            continue
        factor = 2.0 ** exponent
        if exponent and reading is not None and reading.ambiguous:
            warn(f"{path}: the lattice reads {size:.3f} \u00c5/px but {reading.rival:.3f} \u00c5/px fits too "
                 f"({reading.reason}); scaled on {size:.3f}: save it with its pixel size to be sure")
        scaled, scaled_mask = rescale(image, exponent, mask)
        if min(scaled.shape) < image_px:
            skip(path, f"{w} x {h} px at {size:.3g} \u00c5/px ({source}) is {scaled.shape[1]} x {scaled.shape[0]} px "
                       f"at {size * factor:.3g} \u00c5/px after {_how(exponent)}: smaller than the simulated "
                       f"{image_px} x {image_px} px")
            continue
        cuts = tiles(scaled, image_px)
        images += [scaled[c] for c in cuts]
        if labelled:
            masks += [scaled_mask[c] for c in cuts]
        sizes += [size * factor if size else np.nan] * len(cuts)
        used.append({"file": str(path), "pixel_size": None if size is None else round(size, 4), "source": source,
                     "bin": factor, "tiles": len(cuts)})
    if nonbinary:
        warn(f"{folder}: {len(nonbinary)} labels are not strictly binary (e.g. {nonbinary[0]}); binarised as label > 0")
    if not images:
        raise DataError(f"{folder}: no micrograph could be brought to the simulated scale "
                        f"({len(skipped)} left out: {skipped[0]['reason']}{' ...' if len(skipped) > 1 else ''})")
    return RealSet(images, masks, np.array(sizes, dtype=float), used, skipped)


def _how(exponent: int) -> str:
    return "nothing" if exponent == 0 else (f"binning {2 ** exponent}x{2 ** exponent}" if exponent > 0
                                             else f"upsampling {2 ** -exponent}x")

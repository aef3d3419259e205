"""Fiji-ready TIFF: maps written with the ImageJ resolution and unit of the micrograph they belong to.

Fiji/ImageJ (and napari, via tifffile) read the pixel size of an ImageJ TIFF from its XResolution
and YResolution tags (pixels per unit) and the unit from the ImageJ description; a map written
here shows the same scale bar as the micrograph. Pixel sizes are given in A (the unit of the
whole tool) and written in nm (ImageJ's usual unit for HRTEM). Data types follow what ImageJ
opens: float32 for probabilities and uncertainties, uint8 for masks (bool: 0/255, ImageJ's
binary convention, as the PNG masks) and class maps (values kept). The scale is also written in
DigitalMicrograph's TIFF tags, which RosettaSciIO reads (it drops ImageJ units other than
microns), so `evaluate predict`, HyperSpy and the napari reader read these files at their scale.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from grapheneseg.formats import TO_ANGSTROM  # unit names (ImageJ's among them) -> A per unit

RESOLUTION_UNIT_ANGSTROM = {2: 2.54e8, 3: 1e8}  # TIFF ResolutionUnit INCH, CENTIMETER -> A


def imagej_array(array: np.ndarray) -> np.ndarray:
    """`array` in a type ImageJ opens: bool -> uint8 0/255, integers -> uint8 (values 0-255 kept,
    a ValueError outside), floats -> float32."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"a class map must hold values 0-255 for an 8-bit TIFF, not {array.min()}-{array.max()}")
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    raise ValueError(f"no ImageJ TIFF type for {array.dtype}")


def write_tiff(path: Path | str, array: np.ndarray, pixel_size_A: float | None, unit: str = "nm",
               info: dict[str, str] | None = None) -> Path:
    """Write a 2-D map as an ImageJ TIFF with resolution 1 / pixel size (in `unit`, nm by default)
    and that unit; without a pixel size, no calibration (Fiji then shows pixels). `info` (e.g. the
    provenance: tool version, model and config SHA-256) goes into ImageJ's Info property (Fiji:
    Image > Show Info). Written to a temporary name and renamed, so a killed run leaves no
    half-written file. Returns the path."""
    import tifffile

    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"a 2-D map is needed, not shape {array.shape}")
    if unit.lower() not in TO_ANGSTROM:
        raise ValueError(f"unknown unit {unit!r}; one of {', '.join(sorted(TO_ANGSTROM))}")
    data = imagej_array(array)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata: dict = {}
    kwargs: dict = {}
    if data.dtype == np.float32 and np.isfinite(data).any():  # (an all-NaN map, e.g. no lattice: no display range)
        metadata.update(min=float(np.nanmin(data)), max=float(np.nanmax(data)))
    if pixel_size_A:
        size = pixel_size_A / TO_ANGSTROM[unit.lower()]
        metadata["unit"] = unit
        kwargs["resolution"] = (1.0 / size, 1.0 / size)
        # the same scale as DigitalMicrograph's private tags (x, y unit; x, y scale): RosettaSciIO
        # (HyperSpy, and so `evaluate predict`) reads ImageJ units only when they are microns
        kwargs["extratags"] = [(65003, "s", 0, unit, False), (65004, "s", 0, unit, False),
                               (65009, "d", 1, float(size), False), (65010, "d", 1, float(size), False)]
    if info:
        metadata["Info"] = "\n".join(f"{k} = {v}" for k, v in info.items())
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    tifffile.imwrite(tmp, data, imagej=True, metadata=metadata, **kwargs)
    os.replace(tmp, path)
    return path


def read_tiff_scale(path: Path | str) -> tuple[np.ndarray, float | None]:
    """(the first image of a TIFF, its pixel size in A or None): from the XResolution and
    YResolution tags with the ImageJ unit, else the TIFF ResolutionUnit (inch, cm); None when
    neither names a length."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        array = page.asarray()
        tags = page.tags
        sizes = []
        for name in ("XResolution", "YResolution"):
            if name not in tags:
                return array, None
            num, den = tags[name].value
            if not num:
                return array, None
            sizes.append(den / num)  # units per pixel
        unit = (tif.imagej_metadata or {}).get("unit")
        if unit is not None:
            factor = TO_ANGSTROM.get(str(unit).strip().lower())
        else:
            code = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else None
            factor = RESOLUTION_UNIT_ANGSTROM.get(int(code)) if code is not None else None
        if factor is None:
            return array, None
        return array, float(np.mean(sizes)) * factor

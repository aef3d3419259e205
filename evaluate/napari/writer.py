"""napari writer: *File > Save Selected Layer(s)* as an ImageJ TIFF at the layer's scale.

napari's own TIFF writer drops the scale; this one writes the layer's pixel size (its scale in a
length unit, as the plugin's reader and widgets set it) into the TIFF's ImageJ resolution and
unit (evaluate.apply.tiff.write_tiff), so Fiji, napari and `evaluate predict` read it back at its
size. Images are written as float32, label layers as uint8 class ids (float32 beyond 255).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evaluate.apply.tiff import write_tiff

from .layers import LENGTH_TO_ANGSTROM


def layer_pixel_size(meta: dict[str, Any]) -> float | None:
    """A/px of a layer from its scale and units (None when the unit is not a length)."""
    units = [str(u).lower() for u in (meta.get("units") or ("pixel", "pixel"))]
    scale = meta.get("scale") or (1.0, 1.0)
    if units[-1] not in LENGTH_TO_ANGSTROM:
        return None
    return float(scale[-1]) * LENGTH_TO_ANGSTROM[units[-1]]


def write_tiff_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: `data` (2-D) to `path` at the layer's pixel size; returns [path]."""
    array = np.asarray(data)
    if array.ndim != 2:
        raise ValueError(f"layer {meta.get('name', '')!r}: a 2-D layer is needed, not shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer) and array.size and (array.min() < 0 or array.max() > 255):
        array = array.astype(np.float32)
    return [str(write_tiff(Path(path), array, layer_pixel_size(meta)))]

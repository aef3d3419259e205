"""napari reader: micrographs (.dm3 .dm4 .emd .ser .tif .tiff .png .jpg .jpeg) as image layers at
their physical scale.

A file is read by grapheneseg.formats.read_micrograph and its pixel size decided by
evaluate.apply.segment.scale_of, the two calls `evaluate predict` makes, so the layer's scale is
the pixel size the tool segments at: from the file, else from the graphene lattice, else unknown
(scale 1, in pixels). The scale is in nm per pixel (napari's scale bar then reads nm); the metadata
keeps the pixel size in A, where it came from and the file.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grapheneseg.formats import SUPPORTED, read_micrograph

from .layers import image_kwargs

LayerData = tuple[Any, dict, str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader function when every path is a micrograph format the tool reads, else None (napari
    then asks another reader)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or any(Path(p).suffix.lower() not in SUPPORTED for p in paths):
        return None
    return read_layers


def scale_of_file(micrograph: Any) -> tuple[float | None, str, str]:
    """(pixel size in A, its source, a note) as `evaluate predict` decides it; a lattice that cannot
    be read (too few pixels) gives (None, "unknown", why)."""
    from evaluate.apply.segment import scale_of

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            size, source = scale_of(micrograph)
        except ValueError as err:
            return None, "unknown", f"no pixel size in the file and no lattice read ({err})"
    note = "; ".join(str(w.message) for w in caught)
    return size, source, note


def read_layers(path: str | list[str]) -> list[LayerData]:
    """One image layer per file: (image, kwargs with scale/units in nm and metadata, "image")."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for one in paths:
        micrograph = read_micrograph(one)
        size, source, note = scale_of_file(micrograph)
        notes = [n for n in (micrograph.note if hasattr(micrograph, "note") else "", note) if n]
        layers.append((micrograph.image, image_kwargs(Path(one).stem, size, source, path=str(one),
                                                      note="; ".join(notes)), "image"))
    return layers

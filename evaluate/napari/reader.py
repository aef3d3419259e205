"""napari reader: micrographs (.dm3 .dm4 .emd .ser .tif .tiff .png .jpg .jpeg) as image layers at
their physical scale.

A file is read by grapheneseg.formats.read_micrograph and its scale decided by
evaluate.apply.scale.decide_scale, the two calls `evaluate predict` makes, so the layer's scale is
the pixel size the tool segments at: from the file, else from the graphene lattice, else unknown
(scale 1, in pixels). The scale is in nm per pixel (napari's scale bar then reads nm); the metadata
keeps the pixel size in A, where it came from, the file and the decided `Scale` itself (with its
lattice reading), which the widgets hand to the Predictor while the layer's scale agrees with it.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from grapheneseg.formats import SUPPORTED, read_micrograph

from ..apply.scale import decide_scale

from .layers import image_kwargs

LayerData = tuple[Any, dict, str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader function when every path is a micrograph format the tool reads, else None (napari
    then asks another reader)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or any(Path(p).suffix.lower() not in SUPPORTED for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """One image layer per file: (image, kwargs with scale/units in nm and metadata, "image")."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for one in paths:
        micrograph = read_micrograph(one)
        scale = decide_scale(micrograph)
        notes = [n for n in (micrograph.note, scale.warning(str(one))) if n]
        layers.append((micrograph.image, image_kwargs(Path(one).stem, scale, path=str(one), note="; ".join(notes)),
                       "image"))
    return layers

"""The plugin's logic, without napari or Qt: layer data in, layer data out.

A layer is described here as napari's LayerData tuple (data, kwargs, layer type); the widgets only
pass the open layers' data, scale, units and metadata in and add what comes back. The work is done
by evaluate.api (which calls the library `evaluate predict`, `atoms` and `suggest` call), so a layer
holds what the CLI writes for the same micrograph, model and options. Every layer made from an
image keeps that image's scale, units and translation, so the maps lie exactly on it.
"""
from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grapheneseg.formats import Micrograph

from ..apply.scale import Scale, ScaleSource

LENGTH_TO_ANGSTROM = {"nm": 10.0, "nanometer": 10.0, "angstrom": 1.0, "å": 1.0, "a": 1.0, "pm": 0.01,
                      "um": 1e4, "µm": 1e4, "micrometer": 1e4}


def image_kwargs(name: str, scale: Scale, path: str | None = None, note: str = "") -> dict:
    """Image-layer kwargs: scale in nm per pixel (1 pixel when the pixel size is unknown), the unit,
    and metadata {pixel_size_A, pixel_size_source, path, note, scale (the `Scale` itself)}."""
    calibrated = bool(scale.pixel_size)
    size = scale.pixel_size / 10.0 if calibrated else 1.0
    return {"name": name, "scale": (size, size), "units": ("nm", "nm") if calibrated else ("pixel", "pixel"),
            "metadata": {"pixel_size_A": scale.pixel_size if calibrated else None,
                         "pixel_size_source": str(scale.source), "path": path, "note": note, "scale": scale}}


@dataclass
class Source:
    """An image layer as the plugin sees it: its 2-D data and where it lies."""

    name: str
    data: Any
    scale: tuple[float, float] = (1.0, 1.0)
    translate: tuple[float, float] = (0.0, 0.0)
    units: tuple[str, str] = ("pixel", "pixel")
    metadata: dict = field(default_factory=dict)

    @classmethod
    def of(cls, layer: Any) -> Source:
        """From a napari Image layer (anything with name, data, scale, translate, units, metadata)."""
        units = tuple(str(u) for u in getattr(layer, "units", ("pixel", "pixel")))
        return cls(layer.name, layer.data, tuple(map(float, layer.scale)), tuple(map(float, layer.translate)),
                   units, dict(layer.metadata))

    def image(self) -> np.ndarray:
        data = np.asarray(self.data)
        if data.ndim != 2 or np.iscomplexobj(data) or not np.issubdtype(data.dtype, np.number):
            raise ValueError(f"layer {self.name!r}: a 2-D grey image is needed, not shape {data.shape} "
                             f"({data.dtype}); split channels or take one frame first")
        return data

    def micrograph(self) -> Micrograph:
        """The layer's image as a micrograph named after its file (the reader's), else the layer,
        so that every message names what the user opened."""
        return Micrograph(Path(self.metadata.get("path") or self.name), np.asarray(self.image(), np.float32), None)

    def decided_scale(self, pixel_size: float | None = None) -> Scale | None:
        """The scale to segment at: `pixel_size` (A/px, given), else the reader's `Scale`
        (metadata) while the layer's scale still agrees with it, else the layer's scale when its
        unit is a length, else None (the Predictor then reads the lattice of the data)."""
        if pixel_size:
            return Scale(float(pixel_size), ScaleSource.GIVEN)
        read = self.metadata.get("scale")
        unit = self.units[-1].lower()
        from_scale = self.scale[-1] * LENGTH_TO_ANGSTROM[unit] if unit in LENGTH_TO_ANGSTROM else None
        if isinstance(read, Scale) and read.pixel_size and (
                from_scale is None or np.isclose(from_scale, read.pixel_size, rtol=1e-6)):
            return read
        if from_scale:
            return Scale(float(from_scale), ScaleSource.LAYER)
        return None

    def like(self, name: str, **extra: Any) -> dict:
        """kwargs of a layer on this image's grid (same scale, translation, units)."""
        return {"name": name, "scale": self.scale, "translate": self.translate, "units": self.units, **extra}


def _model(model: str | Path | None) -> Any:
    return None if model in (None, "") else Path(model).expanduser()


def segmentation_layers(source: Source, model: str | Path | None = None, device: str = "auto",
                        tta: bool = False, uncertainty: bool = False, pixel_size: float | None = None,
                        threshold: float | None = None) -> list[tuple]:
    """[contamination Labels, probability Image(, uncertainty Image)] of an image layer, on its
    grid, each with the metadata `evaluate predict` writes for it. `pixel_size` (A/px) overrides
    the layer's."""
    from evaluate import api

    result = api.segment(source.micrograph(), None, _model(model), device, tta, uncertainty, threshold,
                         scale=source.decided_scale(pixel_size))
    meta = {**result.metadata, "file": source.metadata.get("path") or source.name, "image_layer": source.name,
            "model": str(model or "packaged default"), "tta": tta}
    layers = [(result.mask.astype(np.uint8), source.like(f"{source.name} contamination", metadata=meta,
                                                           opacity=0.5), "labels"),
              (result.probability, source.like(f"{source.name} P(contamination)", metadata=meta,
                                               colormap="magma", contrast_limits=(0.0, 1.0), opacity=0.6,
                                               blending="additive", visible=False), "image")]
    if result.uncertainty is not None:
        layers.append((result.uncertainty, source.like(f"{source.name} uncertainty", metadata=meta,
                                                       colormap="viridis", contrast_limits=(0.0, 0.25),
                                                       opacity=0.6, blending="translucent", visible=False), "image"))
    return layers


def atom_layers(source: Source, method: str = "network", model: str | Path | None = None,
                atom_model: str | Path | None = None, device: str = "auto",
                pixel_size: float | None = None) -> list[tuple]:
    """[atoms Points, bonds Vectors coloured by angle mod 60 degrees] outside the contamination, on
    the image's grid (as `evaluate atoms`)."""
    from evaluate import api

    found = api.atoms(source.micrograph(), None, _model(model), _model(atom_model), method, device=device,
                      scale=source.decided_scale(pixel_size))
    meta = {"image_layer": source.name, "method": found.method, "bond_px": found.bond_px,
            "pixel_size_A": found.segmentation.pixel_size,
            "pixel_size_source": str(found.segmentation.pixel_size_source),
            "atoms": len(found.atoms), "bonds": len(found.bonds), **found.registration}
    points = (found.atoms, source.like(f"{source.name} atoms", metadata=meta, size=0.5 * found.bond_px,
                                       face_color="cyan", border_width=0), "points")
    starts = found.atoms[found.bonds[:, 0]] if len(found.bonds) else np.zeros((0, 2))
    ends = found.atoms[found.bonds[:, 1]] if len(found.bonds) else np.zeros((0, 2))
    vectors = np.stack([starts, ends - starts], axis=1)
    bonds = (vectors, source.like(f"{source.name} bonds", metadata=meta, features={"angle": found.angles},
                                  edge_color="angle", edge_colormap="hsv", edge_width=0.15 * found.bond_px,
                                  vector_style="line"), "vectors")
    return [points, bonds]


def structure_layers(source: Source, model: str | Path | None = None, device: str = "auto",
                     pixel_size: float | None = None) -> list[tuple]:
    """[the four classes as Labels in the paper's colours (the lattice left clear), the lattice
    orientation Image (hue over 0-60 degrees, NaN off the lattice; hidden: opaque, it would cover
    the micrograph), the grains Labels (hidden)] of
    an image layer, on its grid, as `evaluate structure` maps them; the metadata holds the
    structure.csv row and the grains.csv rows."""
    from evaluate import api
    from evaluate.apply.structure import COLOURS

    found = api.structure(source.micrograph(), None, _model(model), device, scale=source.decided_scale(pixel_size))
    colours = {cls: tuple(c / 255 for c in rgb) + (1.0,) for cls, rgb in COLOURS.items()}
    colours.update({0: "transparent", None: "transparent"})  # the lattice (class 0) untinted
    meta = {"image_layer": source.name, "summary": found.summary, "grains": found.grain_table,
            "pixel_size_A": found.segmentation.pixel_size,
            "pixel_size_source": str(found.segmentation.pixel_size_source)}
    return [(found.classes, source.like(f"{source.name} classes", metadata=meta, colormap=colours, opacity=0.5),
             "labels"),
            (found.orientation, source.like(f"{source.name} orientation (deg mod 60)", metadata=meta, colormap="hsv",
                                            contrast_limits=(0.0, 60.0), opacity=0.5, blending="translucent",
                                            visible=False),
             "image"),
            (found.grains, source.like(f"{source.name} grains", metadata=meta, opacity=0.4, visible=False), "labels")]


def save_correction(source: Source, mask: Any, folder: str | Path, model: str | Path | None = None,
                    pixel_size: float | None = None, overwrite: bool = False) -> Any:
    """Save an image layer and its corrected contamination Labels (any label > 0 is contamination)
    as a labelled pair named after the layer, at the scale `model` segments it at
    (evaluate.api.save_pair); a different pair of that name is not overwritten unless `overwrite`."""
    from evaluate import api

    mask = np.asarray(mask)
    if mask.shape != np.shape(source.data):
        raise ValueError(f"the mask ({mask.shape[1]} x {mask.shape[0]} px) is not on layer {source.name!r}'s grid "
                         f"({np.shape(source.data)[1]} x {np.shape(source.data)[0]} px): choose its contamination layer")
    return api.save_pair(source.micrograph(), mask > 0, Path(folder).expanduser(), None, _model(model), source.name,
                         overwrite, scale=source.decided_scale(pixel_size))


def finetune_layers(folder: str | Path, out: str | Path, model: str | Path | None = None, device: str = "auto",
                    source: Source | None = None, progress: Any = None,
                    overrides: Sequence[str] = ()) -> tuple[dict, list[tuple]]:
    """Fine-tune `model` (default: the packaged one) on the pairs of `folder` into `out`
    (evaluate.api.finetune, guarded; `progress(desc, done, total)` every step, which may raise to
    cancel), then segment `source` with the result: (the summary, its segmentation layers)."""
    from evaluate.apply.corrections import finetune

    summary = finetune(Path(folder).expanduser(), Path(out).expanduser(), _model(model), device, overrides,
                       progress=progress)
    layers = [] if source is None else segmentation_layers(source, Path(out).expanduser(), device)
    return summary, layers


@dataclass
class Pick:
    """One micrograph to label next."""

    rank: int
    layer: str
    score: float
    contamination_fraction: float
    why: str


def suggest_steps(sources: Sequence[Source], n: int = 10, coverage_every: int | None = None,
                  model: str | Path | None = None, device: str = "auto"
                  ) -> Generator[tuple[int, int], None, tuple[list[Pick], dict[str, str]]]:
    """Which of the image layers to label next (evaluate.apply.suggest.choose: uncertainty with
    diversity, as `evaluate suggest`): yields (done, total) after each image; returns (the picks,
    {layer: why it was skipped} for layers the model refused or failed on, which the others outlive)."""
    from evaluate import api
    from evaluate.apply.suggest import COVERAGE_EVERY, choose

    results, skipped = [], {}
    for i, source in enumerate(sources):
        try:
            one = api.segment(source.micrograph(), None, _model(model), device, uncertainty=True, scale=source.decided_scale())
        except ValueError as err:  # a refused or unreadable layer: said, and the others go on
            skipped[source.name] = f"layer {source.name!r}: {err}"
        else:
            one.segmentation.micrograph.path = Path(source.name)
            results.append(one.segmentation)
        yield i + 1, len(sources)
    chosen = choose(results, n, COVERAGE_EVERY if coverage_every is None else coverage_every) if results else []
    return [Pick(c.rank, str(c.segmentation.micrograph.path), c.score, c.segmentation.contamination_fraction,
                 c.why) for c in chosen], skipped


def run_steps(steps: Generator) -> Any:
    """Run a generator like `suggest_steps` to its end and return its value (no progress)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value

"""A segmentation and what `evaluate predict` writes of it.

`Segmentation` is one micrograph's contamination probability and mask on its own grid, with the
`Scale` it was segmented at and the `Notice`s a user must be told; the Predictor
(evaluate.apply.predictor) makes them. Here: the files a command could not answer for
(`Refused`, `Skipped`), the overlay, the folder expansion, and predictions.csv with the mask,
probability and uncertainty images.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from grapheneseg.formats import SUPPORTED, Micrograph
from grapheneseg.micrographs import LABEL_SUFFIX, DataError
from grapheneseg.tables import merge_rows

from .scale import Scale, ScaleSource

CSV_COLUMNS = ["file", "status", "pixel_size_A", "pixel_size_source", "height", "width",
               "contamination_fraction", "graphene_fraction", "seconds", "uncertainty", "ood", "note"]
# Peak memory of segmenting one micrograph: a fixed part (the interpreter, torch, the model) and a
# part per pixel at the network's scale (image, resampling, tiles, probability; measured 33-72 B/px
# on 2,048-8,700 px images, benchmarks/bench_apply.py) plus the input's own float32 copies.
MEMORY_BASE_GB, MEMORY_PER_PIXEL, MEMORY_PER_INPUT_PIXEL = 0.5, 80.0, 16.0
OVERLAY_RGB = np.array([255, 40, 40])
OVERLAY_ALPHA = 0.4


class Refused(DataError):
    """A readable file the model cannot answer for (an overview image, a few pixels, too large):
    refused before any computing, with the reason in a microscopist's words."""


@dataclass(frozen=True)
class Skipped:
    """A file with no segmentation: `refused` (not something the model can answer for) or
    `failed` (unreadable, or an error while segmenting it); `reason` names the file."""

    status: str
    reason: str

    def __str__(self) -> str:
        return self.reason


def memory_gb(input_shape: tuple[int, int], network_shape: tuple[int, int]) -> float:
    """Estimated peak memory (GB) of segmenting an image of `input_shape` at `network_shape`."""
    return (MEMORY_BASE_GB + (MEMORY_PER_PIXEL * np.prod(network_shape)
                              + MEMORY_PER_INPUT_PIXEL * np.prod(input_shape)) / 1e9)


@dataclass(frozen=True)
class Notice:
    """Something a user must be told: `kind` scale, ood, model or overlap, and the message."""

    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Segmentation:
    """A micrograph's contamination probability and mask on its own grid."""

    micrograph: Micrograph
    probability: np.ndarray
    mask: np.ndarray
    scale: Scale
    seconds: float
    uncertainty: np.ndarray | None = None  # per-pixel std (evaluate.apply.uncertainty), when asked for
    ood: list[str] = field(default_factory=list)  # out-of-range measures (evaluate.apply.ood)
    disagreement: float | None = None  # per-image score (evaluate.apply.uncertainty.jaccard_disagreement), when asked for
    notices: list[Notice] = field(default_factory=list)  # what the user must be told (scale, ood)

    @property
    def pixel_size(self) -> float | None:
        return self.scale.pixel_size

    @property
    def pixel_size_source(self) -> ScaleSource:
        return self.scale.source

    @property
    def contamination_fraction(self) -> float:
        return float(self.mask.mean())

    @property
    def graphene_fraction(self) -> float:
        """Share of the field not covered by amorphous carbon (the paper's sorting key)."""
        return 1.0 - self.contamination_fraction


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB uint8: the micrograph in grey (1st-99th percentile stretch), contamination tinted red."""
    lo, hi = np.percentile(image, [1, 99])
    grey = np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * OVERLAY_RGB
    return rgb.astype(np.uint8)


def input_files(inputs: Sequence[Path | str]) -> list[Path]:
    """Micrograph files named by `inputs`: files, or folders (supported suffixes, labels skipped)."""
    files: list[Path] = []
    for path in map(Path, inputs):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in SUPPORTED
                            and not p.stem.endswith(LABEL_SUFFIX))
        else:
            files.append(path)  # unsupported or missing files are reported when read
    if not files:
        raise DataError(f"no micrographs ({', '.join(SUPPORTED)}) in {[str(p) for p in inputs]}")
    return files


def prediction_rows(results: Sequence[Segmentation], skipped: dict[str, Skipped] | None = None
                    ) -> list[dict[str, Any]]:
    """The predictions.csv rows (CSV_COLUMNS) of a run: one per segmented file (status
    `segmented`) and one per refused or failed file (its reason in `note`); files as absolute paths."""
    rows = [{"file": str(seg.micrograph.path.resolve()), "status": "segmented",
             "pixel_size_A": None if seg.pixel_size is None else f"{seg.pixel_size:.4f}",
             "pixel_size_source": seg.pixel_size_source, "height": seg.mask.shape[0], "width": seg.mask.shape[1],
             "contamination_fraction": f"{seg.contamination_fraction:.5f}",
             "graphene_fraction": f"{seg.graphene_fraction:.5f}", "seconds": f"{seg.seconds:.3f}",
             "uncertainty": None if seg.disagreement is None else f"{seg.disagreement:.5f}",
             "ood": ";".join(seg.ood), "note": seg.micrograph.note} for seg in results]
    rows += [{"file": str(Path(path).resolve()), "status": skip.status, "note": skip.reason}
             for path, skip in (skipped or {}).items()]
    return rows


FORMATS = ("png", "tiff", "both")


def write_predictions(results: Sequence[Segmentation], out_dir: Path,
                      skipped: dict[str, Skipped] | None = None, image_format: str = "png") -> Path:
    """<stem>_mask.png (255 = contamination), <stem>_overlay.png, <stem>_uncertainty.png (when
    computed) and predictions.csv in `out_dir`. `image_format` "tiff" (or "both") writes, instead
    of (or beside) the mask PNG, Fiji-ready ImageJ TIFFs at the micrograph's pixel size
    (evaluate.apply.tiff; no scale when it is unknown): <stem>_mask.tif (uint8 0/255),
    <stem>_probability.tif (float32) and <stem>_uncertainty.tif (float32 std, when computed).
    predictions.csv: CSV_COLUMNS; uncertainty: the Jaccard
    disagreement of evaluate.apply.uncertainty, empty when not computed; ood: the out-of-range
    measures, `;`-separated, empty when none; refused and failed files with their reason in
    `note`). predictions.csv keeps the rows of earlier runs into `out_dir` and replaces only the
    rows of files predicted again (grapheneseg.tables.merge_rows: safe for parallel runs)."""
    from .tiff import write_tiff
    from .uncertainty import plot_uncertainty

    if image_format not in FORMATS:
        raise ValueError(f"image format must be one of {', '.join(FORMATS)}, not {image_format!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for seg in results:
        stem = seg.micrograph.path.stem
        if image_format in ("png", "both"):
            Image.fromarray(seg.mask.astype(np.uint8) * 255).save(out_dir / f"{stem}_mask.png")
        if image_format in ("tiff", "both"):
            write_tiff(out_dir / f"{stem}_mask.tif", seg.mask, seg.pixel_size)
            write_tiff(out_dir / f"{stem}_probability.tif", seg.probability, seg.pixel_size)
            if seg.uncertainty is not None:
                write_tiff(out_dir / f"{stem}_uncertainty.tif", seg.uncertainty, seg.pixel_size)
        Image.fromarray(overlay(seg.micrograph.image, seg.mask)).save(out_dir / f"{stem}_overlay.png")
        if seg.uncertainty is not None:
            plot_uncertainty(seg, out_dir / f"{stem}_uncertainty.png")
    return merge_rows(out_dir / "predictions.csv", CSV_COLUMNS, prediction_rows(results, skipped))

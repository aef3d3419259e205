"""A segmentation and what `evaluate predict` writes of it.

`Segmentation` is one micrograph's contamination probability and mask on its own grid, with the
`Scale` it was segmented at and the `Notice`s a user must be told; the Predictor
(evaluate.apply.predictor) makes them. Here: the files a command could not answer for
(`Refused`, `Skipped`), the overlay, the folder expansion, and predictions.csv with the mask,
probability and uncertainty images.
"""
from __future__ import annotations

import csv
import hashlib
import os
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

PROVENANCE = ["tool_version", "model_sha256", "config_sha256", "input_sha256"]  # which code, model, options, file
CSV_COLUMNS = ["file", "status", "pixel_size_A", "pixel_size_source", "height", "width",
               "contamination_fraction", "graphene_fraction", "seconds", "uncertainty", "ood", "note",
               "frame", "frame_agreement", "outputs", *PROVENANCE]
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
    stem: str = ""  # the outputs' path relative to the output folder, less their suffix (`output_stems`)
    provenance: dict[str, str] = field(default_factory=dict)  # PROVENANCE: tool version, model, config, input
    frame_agreement: float | None = None  # a series' consensus: mean Jaccard of its frames' masks with it
    drift_px: float | None = None  # a series' consensus: the largest drift of a frame from the first

    @property
    def frame(self) -> str:
        """Which frame of its file this answers for: "" (a single image), 1..N, "mean" or "consensus"."""
        m = self.micrograph
        if m.frames <= 1:
            return ""
        return str(m.frame + 1) if m.reading in ("frame", "first") else m.reading

    @property
    def out_stem(self) -> str:
        """Where this micrograph's outputs go, relative to the output folder: `stem`, else the file's stem."""
        return self.stem or self.micrograph.path.stem

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


def input_files(inputs: Sequence[Path | str], exclude: Path | None = None) -> list[Path]:
    """Micrograph files named by `inputs`: files, or folders searched recursively (a microscope
    session leaves a tree of folders per day or sample; supported suffixes, labels, hidden
    folders and the folder `exclude` (the output folder, whose masks are PNGs too) skipped), each
    file once, in the order given (a folder's files sorted by path)."""
    skip = Path(exclude).resolve() if exclude else None
    files: list[Path] = []
    for path in map(Path, inputs):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in SUPPORTED and p.is_file()
                            and not p.stem.endswith(LABEL_SUFFIX)
                            and not any(part.startswith(".") for part in p.relative_to(path).parts[:-1])
                            and not (skip and p.resolve().is_relative_to(skip)))
        else:
            files.append(path)  # unsupported or missing files are reported when read
    seen: set[Path] = set()
    files = [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]
    if not files:
        raise DataError(f"no micrographs ({', '.join(SUPPORTED)}) in {[str(p) for p in inputs]}")
    return files


def output_stems(files: Sequence[Path]) -> dict[Path, str]:
    """{file: its outputs' stem relative to the output folder}: the file's path relative to the
    folder that holds all of `files`, without its suffix, so the outputs mirror the input tree and
    two inputs never write one output path (day1/0001.dm4 -> day1/0001_mask.png, day2/0001.dm4 ->
    day2/0001_mask.png; one flat folder gives plain names, as before). Two files that differ only
    in their suffix (0001.dm4, 0001.tif) keep it in the stem (0001_dm4, 0001_tif)."""
    if not files:
        return {}
    resolved = [Path(f).resolve() for f in files]
    root = Path(os.path.commonpath([r.parent for r in resolved]))
    stems = {f: r.relative_to(root).with_suffix("").as_posix() for f, r in zip(files, resolved)}
    counts: dict[str, int] = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {f: f"{stem}_{Path(f).suffix.lstrip('.').lower()}" if counts[stem] > 1 else stem
            for f, stem in stems.items()}


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
             "ood": ";".join(seg.ood), "note": seg.micrograph.note, "frame": seg.frame,
             "frame_agreement": None if seg.frame_agreement is None else f"{seg.frame_agreement:.3f}",
             "outputs": seg.out_stem, **seg.provenance}
            for seg in results]
    rows += [{"file": str(Path(path).resolve()), "status": skip.status, "note": skip.reason}
             for path, skip in (skipped or {}).items()]
    return rows


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (a micrograph's identity in predictions.csv, whatever its name)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_outputs(stem: str, image_format: str, uncertainty: bool) -> list[str]:
    """The files `write_predictions` writes for one micrograph, relative to the output folder."""
    names = ["_overlay.png"]
    if image_format in ("png", "both"):
        names.append("_mask.png")
    if image_format in ("tiff", "both"):
        names += ["_mask.tif", "_probability.tif"] + (["_uncertainty.tif"] if uncertainty else [])
    if uncertainty:
        names.append("_uncertainty.png")
    return [stem + n for n in names]


def already_done(out_dir: Path, files: Sequence[Path], stems: dict[Path, str], provenance: dict[str, str],
                 image_format: str, uncertainty: bool, given: float | None = None) -> set[Path]:
    """The `files` an earlier run into `out_dir` finished with the same tool version, model and
    config (`provenance`, less the input): predictions.csv holds a `segmented` row for the file
    with its bytes' SHA-256 and those hashes, the row names the same outputs, every output of
    `image_format` exists, and the row's scale is the one this run would use (a file's own
    calibration, else the pixel size `given`, --pixel-size, else none given). A run killed midway
    wrote rows only for files whose outputs it had finished, so the next run redoes exactly the rest."""
    table = Path(out_dir) / "predictions.csv"
    if not table.exists():
        return set()
    by_file: dict[str, list[dict[str, str]]] = {}
    with table.open(newline="") as f:
        for r in csv.DictReader(f):
            by_file.setdefault(r["file"], []).append(r)

    def finished(row: dict[str, str], stem: str) -> bool:
        outputs = row.get("outputs") or ""
        return not (row.get("status") != "segmented"
                    or not (outputs in (stem, f"{stem}_consensus") or outputs.startswith(f"{stem}_frame"))
                    or any(row.get(k) != v for k, v in provenance.items())
                    or (uncertainty and not row.get("uncertainty") and row.get("frame") != "consensus")
                    or (row.get("pixel_size_source") != ScaleSource.FILE.value
                        and (row.get("pixel_size_source") == ScaleSource.GIVEN.value) != bool(given))
                    or (given and row.get("pixel_size_source") == ScaleSource.GIVEN.value
                        and row.get("pixel_size_A") != f"{float(given):.4f}")
                    or not all((Path(out_dir) / name).exists() for name in expected_outputs(
                        row["outputs"], image_format, uncertainty and row.get("frame") != "consensus")))

    done = set()
    for path in files:
        rows = by_file.get(str(Path(path).resolve()), [])
        if rows and all(finished(row, stems[path]) for row in rows) \
                and rows[0].get("input_sha256") == file_sha256(Path(path)):
            done.add(path)
    return done


FORMATS = ("png", "tiff", "both")


def save_png(array: np.ndarray, path: Path) -> Path:
    """Save an 8-bit image as PNG under a temporary name, then rename it: a run killed midway
    leaves no half-written file."""
    tmp = path.with_name(f".{path.stem}.tmp.png")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


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
        stem = seg.out_stem
        (out_dir / stem).parent.mkdir(parents=True, exist_ok=True)
        if image_format in ("png", "both"):
            save_png(seg.mask.astype(np.uint8) * 255, out_dir / f"{stem}_mask.png")
        if image_format in ("tiff", "both"):
            write_tiff(out_dir / f"{stem}_mask.tif", seg.mask, seg.pixel_size, info=seg.provenance)
            write_tiff(out_dir / f"{stem}_probability.tif", seg.probability, seg.pixel_size, info=seg.provenance)
            if seg.uncertainty is not None:
                write_tiff(out_dir / f"{stem}_uncertainty.tif", seg.uncertainty, seg.pixel_size, info=seg.provenance)
        save_png(overlay(seg.micrograph.image, seg.mask), out_dir / f"{stem}_overlay.png")
        if seg.uncertainty is not None:
            tmp = out_dir / f"{stem}.tmp_uncertainty.png"
            os.replace(plot_uncertainty(seg, tmp), out_dir / f"{stem}_uncertainty.png")
    return merge_rows(out_dir / "predictions.csv", CSV_COLUMNS, prediction_rows(results, skipped))

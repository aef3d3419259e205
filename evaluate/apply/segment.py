"""Applying a trained U-Net to micrographs of any size and format.

Scale, not size, is what a network learns: a U-Net pretrained on simulations saw graphene only at
the pixel sizes it was simulated at, which its checkpoint records (`pixel_range`). So a
micrograph whose pixel size lies outside `pixel_range` (by default the model's recorded range;
`FALLBACK_RANGE` for models that record none) is first resampled to `target_pixel_size` (by
default the middle of that range; anti-aliased), then segmented whole or, when larger than `tile`, in overlapping tiles blended
with linear ramps; the probability map is resampled back to the input grid. The pixel size comes
from the file, else from the caller, else from the graphene lattice itself
(`grapheneseg.lattice.read_lattice`; a reading ambiguous by sqrt 3 warns and says so in its source); when none of them gives one, the image is segmented at its
native scale with a `ScaleWarning` naming the file and `pixel_size_source = unknown`.
benchmarks/bench_apply.py measures resampling against tiling at the native scale, and
benchmarks/bench_scale.py the whole chain on rescaled real micrographs.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage
from PIL import Image

from grapheneseg import GRAPHENE_D100
from grapheneseg.formats import SUPPORTED, Micrograph, read_micrograph
from grapheneseg.lattice import read_lattice
from grapheneseg.micrographs import LABEL_SUFFIX, DataError
from grapheneseg.preprocessing import preprocess
from grapheneseg.tables import merge_rows
from train.inference import tiled_probability

DEFAULT_MODEL = "sim_default.ckpt"  # shipped in grapheneseg/models/ with its model card (sim_default.md)
DEFAULT_ATOM_MODEL = "atoms_default.ckpt"  # the atom-map network of `evaluate atoms` (atoms_default.md)
DEFAULT_CLASSES_MODEL = "classes_default.ckpt"  # the four-class structure network of `evaluate structure`
CSV_COLUMNS = ["file", "status", "pixel_size_A", "pixel_size_source", "height", "width",
               "contamination_fraction", "graphene_fraction", "seconds", "uncertainty", "ood", "note"]
MIN_SIDE = 32  # px: a smaller image holds too few lattice periods to say anything about
LATTICE_LIMIT = GRAPHENE_D100 / 2  # A/px: coarser pixels cannot resolve graphene's 2.13 A {100} planes
# Peak memory of segmenting one micrograph: a fixed part (the interpreter, torch, the model) and a
# part per pixel at the network's scale (image, resampling, tiles, probability; measured 33-72 B/px
# on 2,048-8,700 px images, benchmarks/bench_apply.py) plus the input's own float32 copies.
MEMORY_BASE_GB, MEMORY_PER_PIXEL, MEMORY_PER_INPUT_PIXEL = 0.5, 80.0, 16.0
# Models that record no pixel range (real-only, or trained before it was recorded, such as the
# former shipped sim_default.ckpt v1 at 0.30-0.47 A/px): the 105 public images' 0.30-0.47 A/px, widened.
FALLBACK_RANGE, FALLBACK_TARGET = (0.28, 0.50), 0.385
OVERLAY_RGB = np.array([255, 40, 40])
OVERLAY_ALPHA = 0.4


def default_model(name: str | None = None) -> Path:
    """The packaged simulation-only checkpoint `name` (default DEFAULT_MODEL; zero human labels)
    used when no model is given."""
    from importlib.resources import files

    path = Path(str(files("grapheneseg") / "models" / (name or DEFAULT_MODEL)))
    if not path.is_file():
        raise DataError(f"{path}: the default model is missing from this installation; give --model CKPT (--atom-model CKPT for the atom model)")
    return path


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


def pixel_size_text(size: float) -> str:
    """A pixel size in the unit a microscopist would say it in: 0.42 A/px, 6.3 nm/px, 0.169 um/px."""
    if size < 10:
        return f"{size:.3g} \u00c5/px"
    return f"{size / 10:.3g} nm/px" if size < 1e4 else f"{size / 1e4:.3g} \u00b5m/px"


def memory_gb(input_shape: tuple[int, int], network_shape: tuple[int, int]) -> float:
    """Estimated peak memory (GB) of segmenting an image of `input_shape` at `network_shape`."""
    return (MEMORY_BASE_GB + (MEMORY_PER_PIXEL * np.prod(network_shape)
                              + MEMORY_PER_INPUT_PIXEL * np.prod(input_shape)) / 1e9)


class ScaleWarning(UserWarning):
    """A micrograph's pixel size is unknown: it is segmented at its native scale."""


def scale_of(micrograph: Micrograph, pixel_size: float | None = None) -> tuple[float | None, str]:
    """(pixel size in A, where it came from: file, given, lattice, "lattice (ambiguous)" or
    unknown); unknown and ambiguous warn. Ambiguous: the lattice spectrum allows the reading and
    one sqrt 3 apart ({110} taken for {100} or the reverse, grapheneseg.lattice.read_lattice); the
    reading is used and the warning names both, so the user can give --pixel-size."""
    if micrograph.pixel_size:
        return micrograph.pixel_size, "file"
    if pixel_size:
        return pixel_size, "given"
    reading = read_lattice(micrograph.image) if min(micrograph.image.shape) >= MIN_SIDE else None
    if reading is None or reading.pixel_size is None:
        warnings.warn(f"{micrograph.path}: no pixel size in the file, none given (--pixel-size) and no graphene "
                      "lattice found; segmented at its native scale, which is right only near 0.3-0.5 A/px",
                      ScaleWarning, stacklevel=2)
        return None, "unknown"
    if reading.ambiguous:
        warnings.warn(f"{micrograph.path}: the graphene lattice reads {reading.pixel_size:.3f} A/px, but "
                      f"{reading.rival:.3f} A/px fits its spectrum too (a ring that may be {{100}} or {{110}}: "
                      f"{reading.reason}); segmented at {reading.pixel_size:.3f}, give --pixel-size if you know it",
                      ScaleWarning, stacklevel=2)
        return reading.pixel_size, "lattice (ambiguous)"
    return reading.pixel_size, "lattice"


@dataclass
class Segmentation:
    """A micrograph's contamination probability and mask on its own grid."""

    micrograph: Micrograph
    probability: np.ndarray
    mask: np.ndarray
    pixel_size: float | None
    pixel_size_source: str
    seconds: float
    uncertainty: np.ndarray | None = None  # per-pixel std (evaluate.uncertainty), when asked for
    ood: list[str] = field(default_factory=list)  # out-of-range measures (evaluate.ood)
    disagreement: float | None = None  # per-image score (evaluate.uncertainty.jaccard_disagreement), when asked for

    @property
    def contamination_fraction(self) -> float:
        return float(self.mask.mean())

    @property
    def graphene_fraction(self) -> float:
        """Share of the field not covered by amorphous carbon (the paper's sorting key)."""
        return 1.0 - self.contamination_fraction


def _resample(image: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resample to `shape`; Gaussian anti-aliasing when shrinking."""
    factors = np.array(shape) / np.array(image.shape)
    if np.all(factors == 1):
        return image
    sigma = np.maximum((1 / factors - 1) / 2, 0)
    if np.any(sigma > 0):
        image = scipy.ndimage.gaussian_filter(image, sigma)
    return scipy.ndimage.zoom(image, factors, order=order, grid_mode=True, mode="grid-mirror")


def model_scale(model_path: Path | Sequence[Path], cfg: Any) -> Any:
    """A copy of the apply config `cfg` with `pixel_range` and `target_pixel_size` resolved for
    the checkpoint, run folder or several of them `model_path`: null takes the pixel range its
    checkpoints record (their intersection for an ensemble) and its middle, else `FALLBACK_RANGE`;
    an explicit range reaching outside the recorded one warns, naming the model (the network would
    see scales it was never trained on)."""
    from omegaconf import OmegaConf

    from train.checkpoints import read_checkpoint
    from train.inference import checkpoint_paths

    recorded = [read_checkpoint(p).get("pixel_range") for p in checkpoint_paths(model_path)]
    if not isinstance(model_path, (str, Path)):
        model_path = " + ".join(map(str, model_path))
    known = None
    if recorded and all(recorded):
        known = (max(r[0] for r in recorded), min(r[1] for r in recorded))
        if known[0] > known[1]:
            raise ValueError(f"{model_path}: its checkpoints were trained at disjoint pixel ranges {recorded}")
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)) if OmegaConf.is_config(cfg) \
        else OmegaConf.create(dict(cfg))
    if cfg.get("pixel_range") is None:
        cfg.pixel_range = list(known or FALLBACK_RANGE)
    elif known and (cfg.pixel_range[0] < known[0] - 1e-3 or cfg.pixel_range[1] > known[1] + 1e-3):
        warnings.warn(f"{model_path}: apply.pixel_range {list(cfg.pixel_range)} A/px reaches outside the "
                      f"{known[0]:.3f}-{known[1]:.3f} A/px the model was trained at; micrographs there are "
                      "segmented at scales it never saw (leave apply.pixel_range null to use the model's)",
                      stacklevel=2)
    if cfg.get("target_pixel_size") is None:
        lo, hi = cfg.pixel_range
        cfg.target_pixel_size = FALLBACK_TARGET if (lo, hi) == FALLBACK_RANGE else round((lo + hi) / 2, 4)
    return cfg


def network_scale(micrograph: Micrograph, cfg: Any, pixel_size: float | None = None
                  ) -> tuple[np.ndarray, float | None, str]:
    """(raw image at the network's scale, pixel size, its source): resampled to
    `cfg.target_pixel_size` when the pixel size lies outside `cfg.pixel_range` (both as resolved
    by `model_scale`; null: `FALLBACK_RANGE`, `FALLBACK_TARGET`). Decided before computing:
    `Refused` for an image under MIN_SIDE px, one whose pixels are too coarse for the lattice
    (> LATTICE_LIMIT), and one whose resampled size would need more than `cfg.max_memory_gb`."""
    h, w = micrograph.image.shape
    if min(h, w) < MIN_SIDE:
        raise Refused(f"{micrograph.path}: {w} x {h} px: too small (at least {MIN_SIDE} px a side)")
    size, source = scale_of(micrograph, pixel_size)
    if size is not None and size > LATTICE_LIMIT:
        raise Refused(f"{micrograph.path}: {pixel_size_text(size)} ({source}): an overview image; the graphene "
                      f"lattice (2.13 \u00c5 planes) needs < {LATTICE_LIMIT:.3f} \u00c5/px")
    lo, hi = cfg.get("pixel_range") or FALLBACK_RANGE
    target = cfg.get("target_pixel_size") or FALLBACK_TARGET
    shape = (h, w)
    if size is not None and not lo <= size <= hi:
        shape = tuple(max(16, int(round(n * size / target))) for n in (h, w))
    limit = cfg.get("max_memory_gb")
    if limit and memory_gb((h, w), shape) > limit:
        raise Refused(f"{micrograph.path}: {w} x {h} px at {pixel_size_text(size) if size else 'its own scale'}"
                      + (f", {shape[1]} x {shape[0]} px at the model's {target:g} \u00c5/px," if shape != (h, w) else "")
                      + f" needs about {memory_gb((h, w), shape):.1f} GB (> {limit:g} GB, --max-memory); crop or bin "
                      "it, or raise --max-memory")
    image = micrograph.image if shape == (h, w) else _resample(micrograph.image, shape)
    return image, size, source


def segment(models: Sequence[Any], micrograph: Micrograph, cfg: Any,
            pixel_size: float | None = None, uncertainty: bool = False) -> Segmentation:
    """Contamination probability and mask of one micrograph on its own grid (see module doc).
    With `uncertainty`, the probability is the mean over ensemble members x 8 symmetries and the
    per-pixel std over them is kept (evaluate.apply.uncertainty); the OOD measures are always checked."""
    from .ood import check

    start = time.perf_counter()
    image, size, source = network_scale(micrograph, cfg, pixel_size)
    std = disagreement = None
    if uncertainty:
        from .uncertainty import probability_and_std

        prob, std, disagreement = probability_and_std(models, preprocess(image), cfg)
        std = np.clip(_resample(std, micrograph.image.shape), 0.0, 0.5)
    else:
        prob = tiled_probability(models, preprocess(image), cfg.tile, cfg.overlap, cfg.batch_size,
                                 bool(cfg.get("tta", False)))
    prob = np.clip(_resample(prob, micrograph.image.shape), 0.0, 1.0)
    ood = check(micrograph.image, str(micrograph.path), zoom=image.shape[0] / micrograph.image.shape[0],
                lattice=True if source.startswith("lattice") else None)
    return Segmentation(micrograph, prob, prob > cfg.threshold, size, source, time.perf_counter() - start,
                        std, ood, disagreement)


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


def segment_files(model_path: Path | Sequence[Path], inputs: Sequence[Path | str], cfg: Any,
                  pixel_size: float | None = None, progress: bool = True, device: str = "auto",
                  uncertainty: bool = False, files: Sequence[Path] | None = None, backend: str = "torchscript"
                  ) -> tuple[list[Segmentation], dict[str, Skipped]]:
    """Segment every input (or exactly `files`, when given) with the checkpoint, run folder or
    several of them (one ensemble) `model_path` on `device` (auto, cpu or cuda), run by `backend`
    (torchscript or onnx, see train.inference.load_models). A file that
    cannot be read, or that `network_scale` refuses, or whose segmentation raises, is collected in
    {path: Skipped} and the others go on: one file never stops a folder."""
    from tqdm import tqdm

    from train.inference import load_models

    models = load_models(model_path, device, backend=backend)
    cfg = model_scale(model_path, cfg)
    done, skipped = [], {}
    for path in tqdm(input_files(inputs) if files is None else files, desc="segment", unit="img",
                     disable=not progress):
        try:
            done.append(segment(models, read_micrograph(path), cfg, pixel_size, uncertainty))
        except Refused as err:
            skipped[str(path)] = Skipped("refused", str(err))
        except DataError as err:
            skipped[str(path)] = Skipped("failed", str(err))
        except (MemoryError, ValueError, RuntimeError, OSError) as err:  # never a traceback for a user's file
            skipped[str(path)] = Skipped("failed", f"{path}: {type(err).__name__} while segmenting: {err}")
    return done, skipped


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

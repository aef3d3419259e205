"""The tool from Python (notebooks, scripts): `segment`, `atoms`, `structure` and `sort` on a
NumPy array, a file or a HyperSpy signal; `save_pair` and `finetune` to teach the model corrections.

    from evaluate import api
    result = api.segment("scan.dm4")                  # the packaged simulation-only model
    result.mask, result.probability, result.pixel_size, result.pixel_size_source, result.ood
    result = api.segment(image, pixel_size=0.38)      # a 2-D array and its pixel size in A/px
    result = api.segment(signal)                      # a HyperSpy Signal2D: its axes give the scale;
    result.mask                                       # ... and the maps come back as signals on them
    api.save_pair("scan.dm4", corrected, "pairs/")    # a corrected mask as a labelled pair
    api.finetune("pairs/", "mine.ckpt")               # guarded fine-tune; then api.segment(x, model="mine.ckpt")

Everything here goes through the Predictor that the `evaluate` commands use
(evaluate.apply.predictor; evaluate.apply.atoms; evaluate.apply.sorting.rank), so a result equals
`evaluate predict`'s on the same file with the same model and options. The pixel size comes from
the file or the signal's axes, else from `pixel_size`, else from the graphene lattice (as
`--pixel-size` and the CLI's fallback); `pixel_size_source` says which (file, signal, given,
lattice, lattice (ambiguous) or unknown). What the CLI prints as a warning is issued here as a
Python warning (`ScaleWarning`, `OODWarning`, UserWarning). Loaded models are kept per (the
checkpoints' bytes, device, task, backend), so repeated calls in a notebook do not reload them and a
checkpoint overwritten in place is loaded afresh. `backend="onnx"` runs the networks by ONNX
Runtime on the CPU (as `--backend onnx`).
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grapheneseg.config import load_config
from grapheneseg.formats import Micrograph, _pixel_size, read_micrograph
from train.models import registry
from train.models.checkpoints import checkpoint_paths

from .apply.predictor import Predictor
from .apply.scale import Scale, ScaleSource, decide_scale
from .apply.segment import input_files


class ScaleWarning(UserWarning):
    """A micrograph's pixel size is unknown (segmented at its native scale) or ambiguous."""


class OODWarning(UserWarning):
    """A micrograph is out of the training distribution (evaluate.apply.ood)."""

ARRAY_NAME = "<array>"  # the Micrograph path of an input given as an array


# ---- inputs -----------------------------------------------------------------------------------

def _is_signal(x: Any) -> bool:
    """A HyperSpy signal (duck-typed: no import of HyperSpy unless the caller already has it)."""
    return hasattr(x, "axes_manager") and hasattr(x, "data") and hasattr(x, "metadata")


def signal_pixel_size(signal: Any) -> float | None:
    """Pixel size in A of a HyperSpy signal's two signal axes when they are calibrated in length
    (the same unit table as the file readers, grapheneseg.formats)."""
    axes = [{"units": a.units, "scale": a.scale} for a in signal.axes_manager.signal_axes]
    return _pixel_size(axes)


def as_micrograph(x: Any, pixel_size: float | None = None) -> tuple[Micrograph, float | None]:
    """(the Micrograph, the pixel size to pass as `given`) of a path, a 2-D array or a 2-D
    HyperSpy signal. A file's or signal's own calibration wins over `pixel_size`, as in the CLI."""
    if isinstance(x, Micrograph):
        return x, pixel_size
    if isinstance(x, (str, Path)):
        return read_micrograph(x), pixel_size
    if _is_signal(x):
        if x.axes_manager.signal_dimension != 2 or x.axes_manager.navigation_dimension != 0:
            raise ValueError(f"a 2-D image signal is needed, not {x}; take one frame first (signal.inav[0])")
        title = str(x.metadata.get_item("General.title", "") or "") or "<signal>"
        return Micrograph(Path(title), np.asarray(x.data, dtype=np.float32), signal_pixel_size(x)), pixel_size
    image = np.asarray(x)
    if image.ndim != 2 or not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"a 2-D real-valued image is needed, not an array of shape {image.shape} and dtype {image.dtype}")
    if not np.isfinite(image).all():
        raise ValueError("the image contains non-finite pixel values (NaN or inf)")
    return Micrograph(Path(ARRAY_NAME), image.astype(np.float32), None), pixel_size


def _like(signal: Any, data: np.ndarray, title: str) -> Any:
    """A copy of `signal` (axes, calibration, metadata) holding `data` instead."""
    out = signal._deepcopy_with_new_data(data)
    out.metadata.General.title = title
    return out


def scale(x: Any, pixel_size: float | None = None) -> Scale:
    """The scale of a path, array or signal as `evaluate predict` decides it
    (evaluate.apply.scale.decide_scale: its pixel size in A, its source, the lattice reading; a
    signal's calibration reported as `signal`)."""
    micrograph, given = as_micrograph(x, pixel_size)
    return _scale_of(x, micrograph, given)


# ---- models, cached by content (a checkpoint overwritten in place is loaded again) -------------

@functools.lru_cache(maxsize=8)
def _loaded(key: str, paths: tuple[str, ...], device: str, task: str, backend: str) -> Predictor:
    model = Path(paths[0]) if len(paths) == 1 else [Path(p) for p in paths]
    return Predictor(model, {}, device, backend, task)


def predictor(model: Any = None, cfg: Any = None, device: str = "auto", task: str = "contamination",
              backend: str = "torchscript") -> Predictor:
    """The Predictor of `model` (a checkpoint, a run folder, a list of them; None: the packaged
    model of `task`) under the apply config `cfg` (default: `apply_config()`). Loaded models are
    kept per (the checkpoints' bytes, device, task, backend), so repeated calls in a notebook do
    not reload them, and a checkpoint file overwritten in place is loaded afresh."""
    path = registry.packaged(task) if model is None else model
    paths = tuple(str(p) for p in checkpoint_paths(Path(path) if isinstance(path, (str, Path)) else [Path(p) for p in path]))
    shared = _loaded(registry.content_key([Path(p) for p in paths]), paths, device, task, backend)
    return shared.configured(apply_config()[0] if cfg is None else cfg)


def clear_cache() -> None:
    """Forget the loaded models."""
    _loaded.cache_clear()


def _issue(notices: Sequence[Any]) -> None:
    """The library's notices as Python warnings (a notebook shows them): ScaleWarning, OODWarning or UserWarning."""
    for notice in notices:
        category = {"scale": ScaleWarning, "ood": OODWarning}.get(notice.kind, UserWarning)
        warnings.warn(str(notice), category, stacklevel=3)


def apply_config(config: dict | None = None, **flags: Any) -> Any:
    """configs/apply/default.yaml (what `evaluate predict` uses), with `config` {key: value}
    overrides and the non-None `flags` on top."""
    from omegaconf import OmegaConf

    from grapheneseg.config import load_config

    cfg = load_config("evaluate")
    apply = OmegaConf.create(OmegaConf.to_container(cfg.apply, resolve=True))
    for key, value in {**(config or {}), **{k: v for k, v in flags.items() if v is not None}}.items():
        if key not in apply:
            raise ValueError(f"unknown apply option {key!r}; known: {', '.join(apply)}")
        apply[key] = value
    atoms = OmegaConf.create(OmegaConf.to_container(cfg.atoms, resolve=True))
    return apply, atoms


# ---- results ----------------------------------------------------------------------------------

@dataclass
class SegmentResult:
    """Maps (arrays, or HyperSpy signals on the input's axes when the input was one) and the
    metadata `evaluate predict` writes to predictions.csv."""

    probability: Any
    mask: Any
    uncertainty: Any
    pixel_size: float | None  # A/px
    pixel_size_source: str  # file, signal, given, lattice or unknown
    contamination_fraction: float
    graphene_fraction: float
    ood: list[str]
    disagreement: float | None  # Jaccard disagreement (with uncertainty=True): predict's `uncertainty` column
    seconds: float
    file: str
    segmentation: Any = field(repr=False)  # the library's evaluate.apply.segment.Segmentation

    @property
    def metadata(self) -> dict[str, Any]:
        """One row of predictions.csv as a dict (the same columns, unformatted)."""
        h, w = self.segmentation.mask.shape
        return {"file": self.file, "pixel_size_A": self.pixel_size, "pixel_size_source": self.pixel_size_source,
                "height": h, "width": w, "contamination_fraction": self.contamination_fraction,
                "graphene_fraction": self.graphene_fraction, "seconds": self.seconds,
                "uncertainty": self.disagreement, "ood": list(self.ood),
                "note": getattr(self.segmentation.micrograph, "note", "")}


def _result(seg: Any, signal: Any = None) -> SegmentResult:
    prob, mask, std = seg.probability, seg.mask, seg.uncertainty
    if signal is not None:
        prob = _like(signal, prob, "contamination probability")
        mask = _like(signal, mask.astype(np.uint8), "contamination mask")
        std = None if std is None else _like(signal, std, "uncertainty (std of P)")
    return SegmentResult(prob, mask, std, seg.pixel_size, seg.pixel_size_source.value, seg.contamination_fraction,
                         seg.graphene_fraction, list(seg.ood), seg.disagreement, seg.seconds,
                         str(seg.micrograph.path), seg)


def _hyperspy_present() -> bool:
    import importlib.util

    return importlib.util.find_spec("hyperspy") is not None


# ---- the three applications -------------------------------------------------------------------

def segment(x: Any, pixel_size: float | None = None, model: Any = None, device: str = "auto",
            tta: bool = False, uncertainty: bool = False, threshold: float | None = None,
            config: dict | None = None, backend: str = "torchscript", *,
            scale: Scale | None = None) -> SegmentResult:
    """Contamination probability, mask (and per-pixel uncertainty) of one micrograph: a path,
    a 2-D array (with `pixel_size` in A/px when known) or a 2-D HyperSpy signal.

    `model`: a checkpoint, a run folder (fold ensemble) or a list of them; None: the packaged
    simulation-only model. `config`: further apply options (configs/apply/default.yaml: tile,
    overlap, batch_size, pixel_range, target_pixel_size). `scale`: a scale decided by the caller
    (e.g. napari's layer scale), used as it is. As `evaluate predict` does; what `evaluate
    predict` would print as a warning is issued as a Python warning (ScaleWarning, OODWarning)."""
    micrograph, given = as_micrograph(x, pixel_size)
    cfg, _ = apply_config(config, tta=tta, threshold=threshold)
    one = predictor(model, cfg, device, "contamination", backend)
    _issue(one.notices)
    seg = one.segment(micrograph, scale or _scale_of(x, micrograph, given), uncertainty)
    _issue(seg.notices)
    return _result(seg, x if _is_signal(x) and _hyperspy_present() else None)


def _scale_of(x: Any, micrograph: Micrograph, given: float | None) -> Scale:
    return decide_scale(micrograph, given, calibration_source=ScaleSource.SIGNAL if _is_signal(x) else ScaleSource.FILE)


@dataclass
class AtomsResult:
    """Atoms outside the contamination: positions (N, 2) as (row, col) px of the input, bonds
    (M, 2) as atom indices, bond angles mod 60 degrees, the C-C bond in px, the registration
    check of `evaluate atoms`, and the segmentation they were found beside."""

    atoms: np.ndarray
    bonds: np.ndarray
    angles: np.ndarray
    bond_px: float
    method: str
    registration: dict
    segmentation: SegmentResult

    @property
    def atoms_nm(self) -> np.ndarray | None:
        """Positions in nm (row, col) when the pixel size is known."""
        size = self.segmentation.pixel_size
        return None if not size else self.atoms * size / 10.0


def atoms(x: Any, pixel_size: float | None = None, model: Any = None, atom_model: Any = None,
          method: str = "network", contrast: str = "auto", device: str = "auto", tta: bool = False,
          config: dict | None = None, backend: str = "torchscript", *, scale: Scale | None = None) -> AtomsResult:
    """Atoms and bonds outside the contamination, as `evaluate atoms` finds them: `method`
    "network" (the atom-map network `atom_model`, default the packaged one) or "extrema" (local
    extrema at `contrast`). A ValueError when no scale is known (give `pixel_size`)."""
    from .apply.atoms import find_atoms, find_atoms_network, registration, registration_notices

    if method not in ("network", "extrema"):
        raise ValueError(f"method must be network or extrema, not {method!r}")
    seg = segment(x, pixel_size, model, device, tta, config=config, backend=backend, scale=scale)
    lib, micrograph = seg.segmentation, seg.segmentation.micrograph
    cfg, atoms_cfg = apply_config(config, tta=tta)
    if method == "network":
        graph = find_atoms_network(predictor(atom_model, cfg, device, "atoms", backend), micrograph, lib.scale,
                                   lib.mask, atoms_cfg.threshold, atoms_cfg.bond_tolerance)
    else:
        graph = find_atoms(micrograph.image, lib.mask, lib.pixel_size, contrast=contrast,
                           bond_tolerance=atoms_cfg.bond_tolerance)
    check = registration(micrograph.image, lib.pixel_size, atoms_cfg.min_reflection_balance)
    _issue(registration_notices(str(micrograph.path), check, atoms_cfg.min_reflection_balance))
    return AtomsResult(graph.atoms, graph.bonds, graph.angles, graph.bond_px, graph.how, check, seg)


@dataclass
class StructureResult:
    """The paper's four classes and the lattice's grains, as `evaluate structure` maps them: `classes`
    (uint8: 0 lattice, 1 contamination, 2 vacuum, 3 grain boundary), `orientation` (degrees mod 60,
    NaN off the lattice), `grains` (grain ids, 0 none), the structure.csv row (`summary`) and the
    grains.csv rows (`grain_table`), and the segmentation the contamination came from."""

    classes: np.ndarray
    orientation: np.ndarray
    grains: np.ndarray
    summary: dict[str, Any]
    grain_table: list[dict[str, Any]]
    segmentation: SegmentResult
    structure: Any = field(repr=False)  # the library's evaluate.apply.structure.Structure


def structure(x: Any, pixel_size: float | None = None, model: Any = None, device: str = "auto",
              config: dict | None = None, backend: str = "torchscript", *, scale: Scale | None = None
              ) -> StructureResult:
    """Structure map of one micrograph (a path, a 2-D array with `pixel_size`, or a HyperSpy
    signal), as `evaluate structure` makes it: the contamination of `segment` (the same model),
    vacuum, grains and boundaries from the lattice orientation at the segmentation's scale."""
    from .apply.structure import grain_rows, orientation_degrees, structure_of, structure_row

    seg = segment(x, pixel_size, model, device, config=config, backend=backend, scale=scale)
    lib = seg.segmentation
    cfg = load_config("evaluate").get("structure_maps")
    s = structure_of(lib.micrograph.image, lib.mask, lib.scale, path=lib.micrograph.path, cfg=cfg)
    labels = np.zeros(s.classes.shape, np.int32) if s.grains is None else s.grains.labels.astype(np.int32)
    return StructureResult(s.classes, orientation_degrees(s), labels, structure_row(s), grain_rows(s), seg, s)


def sort(inputs: Any, pixel_size: float | None = None, model: Any = None, device: str = "auto",
         tta: bool = False, config: dict | None = None, backend: str = "torchscript") -> list[SegmentResult]:
    """The micrographs cleanest first (highest graphene fraction; `evaluate sort`'s order):
    `inputs` a folder, or a list of paths, arrays or signals. Arrays are named <array>#i."""
    from .apply.sorting import rank

    if isinstance(inputs, (str, Path)):
        inputs = input_files([inputs])
    results = []
    for i, x in enumerate(inputs):
        one = segment(x, pixel_size, model, device, tta, config=config, backend=backend)
        if one.file == ARRAY_NAME:
            name = Path(f"{ARRAY_NAME}#{i}")
            one.segmentation.micrograph.path, one.file = name, str(name)
        results.append(one)
    by_seg = {id(r.segmentation): r for r in results}
    return [by_seg[id(s)] for s in rank([r.segmentation for r in results])]


# ---- corrections back into the model ------------------------------------------------------------

def save_pair(x: Any, mask: np.ndarray, folder: str | Path, pixel_size: float | None = None, model: Any = None,
              name: str | None = None, overwrite: bool = False, *, scale: Scale | None = None) -> Any:
    """Save a micrograph (path, array or signal) and its corrected contamination `mask` (True or
    > 0 = contamination, the micrograph's grid) as `folder/NAME.png` + `NAME_LABEL.png` at the
    scale `model` segments it at, ready for `finetune` (evaluate.apply.corrections.save_pair).
    A different pair of that name raises FileExistsError unless `overwrite`."""
    from .apply.corrections import save_pair as save

    micrograph, given = as_micrograph(x, pixel_size)
    one = predictor(model)
    return save(one, micrograph, np.asarray(mask), Path(folder), name,
                scale or _scale_of(x, micrograph, given), overwrite)


def finetune(folder: str | Path, out: str | Path, pretrained: Any = None, device: str = "auto",
             overrides: Sequence[str] = (), overwrite: bool = False) -> dict[str, Any]:
    """Fine-tune `pretrained` (default: the packaged model) on the pairs in `folder` and save it at
    `out` (.ckpt), guarded as `train finetune --folds 0`: the summary's `message` says whether
    fine-tuning was kept. Segment with it by `segment(x, model=out)`."""
    from .apply.corrections import finetune as run

    return run(Path(folder), Path(out), pretrained, device, overrides, overwrite=overwrite)


def table(results: Sequence[SegmentResult]) -> list[dict[str, Any]]:
    """The metadata rows of several results (e.g. for pandas.DataFrame(table(results)))."""
    return [r.metadata for r in results]

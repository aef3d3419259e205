"""Structure maps of micrographs: the reference paper's four classes, grains, boundaries and rings
(issue 23, items 3-5), the classical baseline.

Per micrograph, from its contamination mask (`evaluate predict`), its pixel size and, when given,
its atom graph (`evaluate atoms`):
- the local lattice orientation (evaluate.analysis.orientation: hexagonal order parameter at the
  measured lattice parameter), vacuum where the lattice's power vanishes outside the
  contamination, grains between orientation jumps and boundary lines where they meet;
- the four classes of the paper's Figure 1 (lattice, contamination, vacuum, grain boundary; the
  class numbers of the simulator's `classes`, simulate.labels): boundary = lattice pixels within
  `boundary_half_width` A of a boundary line, as the simulator labels it;
- the ring census of the atom graph (evaluate.analysis.rings), counted only when the registration
  check is `ok` (a half-bond shift makes a honeycomb of hexagon centres, whose rings mean nothing).
Areas and lengths are in physical units only when the pixel size is known; otherwise the table says
`unknown` (never a guess). Without a pixel size there is no lattice parameter, so no orientation.

Writers: `<stem>_classes.png` (lattice white, boundaries red, vacuum green, contamination blue),
`<stem>_orientation.png` (orientation 0-60 degrees on a colour wheel, boundaries drawn),
`structure.csv` (one row per micrograph) and `grains.csv` (one row per grain).
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage

from grapheneseg.formats import Micrograph
from grapheneseg.tables import merge_rows
from evaluate.analysis.orientation import (JUMP_DEG, MERGE_DEG, MIN_GRAIN_WINDOWS, MIN_RESOLVED_SHARE,
                                           VACUUM_FRACTION, VACUUM_GROW_A, VACUUM_REFERENCE_CONFIDENCE,
                                           VACUUM_WINDOW_PERIODS, WINDOW_PERIODS, Grains,
                                           OrientationMap, grains_of, lattice_and_vacuum, lattice_resolved,
                                           orientation_map)
from grapheneseg.preprocessing import preprocess
from grapheneseg.classes import BOUNDARY, CLASS_NAMES, CONTAMINATION, LATTICE, VACUUM

from evaluate.analysis.rings import MAX_RING, MIN_RING, Rings, ring_census
from .scale import Scale, ScaleSource, decide_scale
from .segment import PROVENANCE

BOUNDARY_HALF_WIDTH = 3.0  # A either side of a boundary line: the simulator's `boundary_width`
COLOURS = {LATTICE: (255, 255, 255), CONTAMINATION: (40, 80, 255), VACUUM: (40, 200, 40), BOUNDARY: (230, 20, 20)}
# Chosen on held-out simulations against their stored truth (benchmarks/bench_structure.py sim): a
# 3 degree jump, 2 degree merge and 1-window smallest grain find more of the boundaries than 5, 3
# and 4, and vacuum from a sharper, 1-period map follows hole edges that the 2-period map blurs.
DEFAULTS = {"window_periods": WINDOW_PERIODS, "jump_deg": JUMP_DEG, "merge_deg": MERGE_DEG,
            "min_grain_windows": MIN_GRAIN_WINDOWS, "vacuum_window_periods": VACUUM_WINDOW_PERIODS,
            "vacuum_fraction": VACUUM_FRACTION, "vacuum_reference_confidence": VACUUM_REFERENCE_CONFIDENCE,
            "vacuum_grow_A": VACUUM_GROW_A, "boundary_half_width": BOUNDARY_HALF_WIDTH}
STRUCTURE_COLUMNS = (["file", "frame", "pixel_size_A", "pixel_size_source", "lattice_check", "vacuum_check", "height",
                      "width"]
                     + [f"{c}_nm2" for c in CLASS_NAMES] + [f"{c}_fraction" for c in CLASS_NAMES]
                     + ["grains", "mean_grain_nm2", "boundary_length_nm", "boundary_per_nm2_graphene"]
                     + [f"rings_{n}" for n in range(MIN_RING, MAX_RING + 1)] + ["registration", "seconds", *PROVENANCE])
GRAIN_COLUMNS = ["file", "frame", "grain", "area_px", "area_nm2", "orientation_deg", "neighbours", "misorientation_deg",
                 "boundary_length_nm"]


@dataclass
class Structure:
    """One micrograph's structure map (module doc)."""

    path: Path
    classes: np.ndarray  # uint8, simulate.labels class numbers
    pixel_size: float | None
    pixel_size_source: str
    lattice_check: str  # "ok", "ambiguous: ..." (grapheneseg.lattice.read_lattice) or "no lattice"
    omap: OrientationMap | None
    grains: Grains | None
    rings: Rings | None
    registration: str  # the atom graph's registration check, "no atoms" without one
    seconds: float = 0.0
    frame: str = ""  # which frame of a stack ("" a single image; evaluate.apply.segment.Segmentation.frame)
    provenance: dict[str, str] = field(default_factory=dict)  # tool version, model, config, input (SHA-256)
    vacuum_check: str = "ok"  # "ok", or why no vacuum was called (a lattice too weak to tell holes from)

    def area_px(self, cls: int) -> int:
        return int(np.sum(self.classes == cls))

    @property
    def boundary_length_px(self) -> float | None:
        return None if self.grains is None else float(sum(p["length_px"] for p in self.grains.pairs.values()))


def _option(cfg: Any, key: str) -> Any:
    value = cfg.get(key) if isinstance(cfg, Mapping) or hasattr(cfg, "get") else None
    return DEFAULTS[key] if value is None else value


def lattice_check(scale: Scale) -> str:
    """"ok", "ambiguous: R A/px also fits" (a lattice reading with a rival sqrt 3 apart) or "no lattice"."""
    if scale.source is ScaleSource.AMBIGUOUS:
        return f"ambiguous: {scale.reading.rival:.3f} A/px also fits"
    return "no lattice" if scale.pixel_size is None else "ok"


def structure_of(image: np.ndarray, mask: np.ndarray | None = None, scale: Scale | None = None,
                 graph: Any = None, registration: str | None = None, path: Path | str = "",
                 cfg: Any = None) -> Structure:
    """The structure map of one micrograph (module doc). `mask`: contamination (True); `scale`: the
    pixel size with its source and lattice reading, as the segmentation decided it
    (evaluate.apply.scale.decide_scale; None: decided here from the image alone); `graph`: its atom
    graph (evaluate.apply.atoms.AtomGraph) and `registration` its check ("ok", "uncertain",
    "unknown"); `cfg`: options of `DEFAULTS`."""
    start = time.perf_counter()
    image = np.asarray(image, dtype=np.float32)
    mask = np.zeros(image.shape, bool) if mask is None else np.asarray(mask, bool)
    scale = scale or decide_scale(Micrograph(Path(path), image, None))
    pixel_size, check = scale.pixel_size, lattice_check(scale)
    classes = np.full(image.shape, LATTICE, np.uint8)
    classes[mask] = CONTAMINATION
    omap = grains = None
    vacuum_check = "ok" if pixel_size else "not called: no pixel size"
    if pixel_size:
        window, vacuum_window = float(_option(cfg, "window_periods")), float(_option(cfg, "vacuum_window_periods"))
        omap = orientation_map(image, pixel_size, window)
        sharp = omap if vacuum_window == window else orientation_map(image, pixel_size, vacuum_window)
        reference = float(_option(cfg, "vacuum_reference_confidence"))
        _, vacuum = lattice_and_vacuum(sharp, mask, float(_option(cfg, "vacuum_fraction")), reference,
                                       float(_option(cfg, "vacuum_grow_A")))
        if not lattice_resolved(sharp, mask, reference):
            vacuum_check = f"not called: a resolved lattice in under {MIN_RESOLVED_SHARE * 100:g} % of the field"
        lattice = ~mask & ~vacuum
        grains = grains_of(omap, lattice, float(_option(cfg, "jump_deg")), float(_option(cfg, "merge_deg")),
                           float(_option(cfg, "min_grain_windows")))
        classes[vacuum] = VACUUM
        if grains.boundary.any():
            near = scipy.ndimage.distance_transform_edt(~grains.boundary) * pixel_size
            classes[lattice & (near <= float(_option(cfg, "boundary_half_width")))] = BOUNDARY
    rings = None
    verdict = "no atoms" if graph is None else (registration or "unknown")
    if graph is not None and verdict == "ok":
        rings = ring_census(graph.atoms, graph.bonds)
    return Structure(Path(path), classes, pixel_size, scale.source, check, omap, grains, rings, verdict,
                     time.perf_counter() - start, vacuum_check=vacuum_check)


def structure_row(s: Structure) -> dict[str, Any]:
    """The row of `structure.csv` for one structure map (`unknown` where the scale is)."""
    h, w = s.classes.shape
    nm2 = (s.pixel_size / 10.0) ** 2 if s.pixel_size else None
    row: dict[str, Any] = {"file": str(Path(s.path).resolve()), "pixel_size_A": f"{s.pixel_size:.4f}" if s.pixel_size else "unknown",
                           "pixel_size_source": s.pixel_size_source, "lattice_check": s.lattice_check,
                           "vacuum_check": s.vacuum_check, "height": h, "width": w}
    for cls, name in enumerate(CLASS_NAMES):
        area = s.area_px(cls)
        row[f"{name}_nm2"] = f"{area * nm2:.3f}" if nm2 else "unknown"
        row[f"{name}_fraction"] = f"{area / (h * w):.4f}"
    if s.grains is None:
        row.update(grains="unknown", mean_grain_nm2="unknown", boundary_length_nm="unknown",
                   boundary_per_nm2_graphene="unknown")
    else:
        n = len(s.grains.area)
        graphene_nm2 = (s.area_px(LATTICE) + s.area_px(BOUNDARY)) * nm2
        length_nm = s.boundary_length_px * s.pixel_size / 10.0
        row.update(grains=n, mean_grain_nm2=f"{np.mean(list(s.grains.area.values())) * nm2:.3f}" if n else "",
                   boundary_length_nm=f"{length_nm:.2f}",
                   boundary_per_nm2_graphene=f"{length_nm / graphene_nm2:.4f}" if graphene_nm2 else "")
    counts = s.rings.counts() if s.rings is not None else {}
    for n in range(MIN_RING, MAX_RING + 1):
        row[f"rings_{n}"] = counts.get(n, "") if s.rings is not None else ""
    row["registration"] = s.registration
    row["seconds"] = f"{s.seconds:.2f}"
    return {**row, "frame": s.frame, **s.provenance}


def grain_rows(s: Structure) -> list[dict[str, Any]]:
    """The rows of `grains.csv` for one structure map: one per grain."""
    if s.grains is None:
        return []
    nm2 = (s.pixel_size / 10.0) ** 2
    rows = []
    for g, area in s.grains.area.items():
        others = s.grains.neighbours(g)
        pairs = [s.grains.pairs[(min(g, o), max(g, o))] for o in others]
        rows.append({"file": str(Path(s.path).resolve()), "grain": g, "area_px": area, "area_nm2": f"{area * nm2:.3f}",
                     "orientation_deg": f"{s.grains.orientation[g]:.2f}",
                     "neighbours": " ".join(map(str, others)),
                     "misorientation_deg": " ".join(f"{p['misorientation']:.2f}" for p in pairs),
                     "boundary_length_nm": " ".join(f"{p['length_px'] * s.pixel_size / 10:.2f}" for p in pairs),
                     "frame": s.frame, **s.provenance})
    return rows


def classes_rgb(classes: np.ndarray) -> np.ndarray:
    """RGB uint8 of a class map in the paper's colours (`COLOURS`)."""
    rgb = np.zeros(classes.shape + (3,), np.uint8)
    for cls, colour in COLOURS.items():
        rgb[classes == cls] = colour
    return rgb


def scale_bar_nm(width_px: int, pixel_size: float) -> float:
    """A round length (nm) near a fifth of an image `width_px` wide at `pixel_size` A/px."""
    target = width_px * pixel_size / 10 / 5
    return float(min((m * 10.0 ** e for e in range(-2, 4) for m in (1, 2, 5)), key=lambda v: abs(np.log(v / target))))


def write_classes(s: Structure, image: np.ndarray, path: Path) -> Path:
    """`<stem>_classes.png`: the micrograph in grey under its contamination, vacuum and boundary
    classes in the paper's colours (the lattice left clear), with a legend giving each class's
    share of the field and a scale bar in nm (when the pixel size is known)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    pre = preprocess(image)
    lo, hi = np.percentile(pre, [1, 99])
    rgb = np.repeat(np.clip((pre - lo) / max(hi - lo, 1e-6), 0, 1)[..., None], 3, axis=2)
    for cls in (CONTAMINATION, VACUUM, BOUNDARY):
        where = s.classes == cls
        rgb[where] = 0.45 * rgb[where] + 0.55 * np.array(COLOURS[cls]) / 255
    h, w = s.classes.shape
    fig = Figure(figsize=(7.5, 6.5))
    ax = fig.add_axes([0.02, 0.02, 0.7, 0.9])
    ax.imshow(rgb, interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"{s.path.name}: {structure_row(s)['grains']} grain(s); lattice check {s.lattice_check}", fontsize=9)
    shares = {cls: s.area_px(cls) / s.classes.size for cls in COLOURS}
    handles = [Patch(facecolor=np.array(COLOURS[cls]) / 255, edgecolor="black",
                     label=f"{CLASS_NAMES[cls].replace('_', ' ')}{' (untinted)' if cls == LATTICE else ''} "
                           f"{100 * shares[cls]:.1f} %") for cls in COLOURS]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.73, 0.9), fontsize=8, frameon=False)
    if s.pixel_size:
        bar_nm = scale_bar_nm(w, s.pixel_size)
        bar_px = bar_nm * 10 / s.pixel_size
        x0, y0 = 0.05 * w, 0.94 * h
        ax.plot([x0, x0 + bar_px], [y0, y0], color="white", linewidth=4, solid_capstyle="butt")
        ax.plot([x0, x0 + bar_px], [y0, y0], color="black", linewidth=1.5, solid_capstyle="butt")
        ax.text(x0 + bar_px / 2, y0 - 0.02 * h, f"{bar_nm:g} nm", color="white", ha="center", va="bottom",
                fontsize=9, fontweight="bold")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def orientation_degrees(s: Structure) -> np.ndarray:
    """float32 lattice orientation (degrees mod 60) on the lattice and boundary pixels, NaN elsewhere
    and everywhere when no lattice was read."""
    angle = np.full(s.classes.shape, np.nan, np.float32)
    if s.omap is not None:
        on_lattice = np.isin(s.classes, (LATTICE, BOUNDARY))
        angle[on_lattice] = s.omap.angle[on_lattice]
    return angle


def write_structure_tiffs(s: Structure, out_dir: Path, stem: str) -> list[Path]:
    """Fiji-ready ImageJ TIFFs at the micrograph's pixel size (evaluate.apply.tiff):
    `<stem>_classes.tif` (uint8 class ids as the simulator's `classes`: 0 lattice, 1 contamination,
    2 vacuum, 3 grain boundary), `<stem>_orientation.tif` (float32 degrees mod 60, NaN off the
    lattice and where no lattice was read) and `<stem>_grains.tif` (grain ids, 0 none; float32
    when there are more than 255)."""
    from .tiff import write_tiff

    angle = orientation_degrees(s)
    labels = np.zeros(s.classes.shape, np.uint8) if s.grains is None else s.grains.labels
    labels = labels.astype(np.uint8) if labels.max(initial=0) <= 255 else labels.astype(np.float32)
    return [write_tiff(out_dir / f"{stem}_classes.tif", s.classes.astype(np.uint8), s.pixel_size, info=s.provenance),
            write_tiff(out_dir / f"{stem}_orientation.tif", angle, s.pixel_size, info=s.provenance),
            write_tiff(out_dir / f"{stem}_grains.tif", labels, s.pixel_size, info=s.provenance)]


def draw_orientation(ax, image: np.ndarray, s: Structure, alpha: float = 0.6) -> None:
    """The micrograph in grey, the orientation of its lattice pixels (hue: 0-60 degrees, faded by
    confidence), contamination dark, boundary lines black, on a matplotlib axis."""
    import matplotlib.colors as mcolors

    pre = preprocess(image)
    lo, hi = np.percentile(pre, [1, 99])
    grey = np.clip((pre - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if s.omap is not None:
        hue = mcolors.hsv_to_rgb(np.stack([s.omap.angle / 60.0, np.ones_like(grey), np.ones_like(grey)], -1))
        weight = alpha * np.clip(s.omap.confidence, 0, 1)[..., None] * np.isin(s.classes, (LATTICE, BOUNDARY))[..., None]
        rgb = (1 - weight) * rgb + weight * hue
    rgb[s.classes == CONTAMINATION] *= 0.35
    if s.grains is not None:
        line = scipy.ndimage.binary_dilation(s.grains.boundary, iterations=max(1, image.shape[0] // 512))
        rgb[line] = 0.0
    ax.imshow(np.clip(rgb, 0.0, 1.0), interpolation="nearest")
    ax.axis("off")


def draw_wheel(ax) -> None:
    """The colour wheel legend: hue over 0-60 degrees of lattice orientation, drawn as a ring
    whose angle is the orientation (so the wheel's hexagonal repeat reads directly)."""
    import matplotlib.colors as mcolors

    theta = np.linspace(0, np.pi / 3, 121)
    radius = np.linspace(0.6, 1.0, 2)
    t, r = np.meshgrid(theta, radius)
    ax.pcolormesh(t, r, np.degrees(t), cmap=mcolors.ListedColormap(
        mcolors.hsv_to_rgb(np.stack([np.linspace(0, 1, 256), np.ones(256), np.ones(256)], -1))),
        vmin=0, vmax=60, shading="gouraud")
    ax.set_thetamin(0)
    ax.set_thetamax(60)
    ax.set_xticks(np.radians([0, 15, 30, 45, 60]))
    ax.set_xticklabels(["0", "15", "30", "45", "60 deg"], fontsize=7)
    ax.set_yticks([])
    ax.set_ylim(0, 1)
    ax.set_title("orientation\n(mod 60)", fontsize=8)


def write_orientation(image: np.ndarray, s: Structure, path: Path) -> Path:
    """`<stem>_orientation.png`: `draw_orientation` with the colour-wheel legend and the grain
    count, boundary length and pixel size in the title."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 7))
    ax = fig.add_axes([0.02, 0.02, 0.76, 0.88])
    draw_orientation(ax, image, s)
    wheel = fig.add_axes([0.79, 0.6, 0.2, 0.25], projection="polar")
    draw_wheel(wheel)
    row = structure_row(s)
    ax.set_title(f"{s.path.name}: {row['grains']} grains, boundaries {row['boundary_length_nm']} nm "
                 f"(pixel {row['pixel_size_A']} A, {s.pixel_size_source})", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_tables(structures: Sequence[Structure], out_dir: Path) -> tuple[Path, Path]:
    """`structure.csv` (one row per micrograph) and `grains.csv` (one row per grain) in `out_dir`,
    merged with the rows of earlier runs into `out_dir` (grapheneseg.tables.merge_rows: a file
    structured again replaces all its rows; safe for parallel runs)."""
    paths = out_dir / "structure.csv", out_dir / "grains.csv"
    merge_rows(paths[0], STRUCTURE_COLUMNS, [structure_row(s) for s in structures])
    merge_rows(paths[1], GRAIN_COLUMNS, [r for s in structures for r in grain_rows(s)])
    return paths


def run_structure(results: Sequence[Any], out_dir: Path, cfg: Any = None, atom_results: Sequence[Any] = (),
                  figures: bool = True, image_format: str = "png") -> tuple[list[Structure], tuple[Path, Path]]:
    """Structure maps of the segmentations `results` (evaluate.apply.segment.Segmentation: the
    micrograph, its contamination mask and its pixel size with its source), with the atom graphs
    of `atom_results` (evaluate.apply.atoms.AtomResult, matched by path) for the ring census;
    writes `<stem>_classes.png`, `<stem>_orientation.png` (with `figures`), with `image_format`
    "tiff" or "both" also `write_structure_tiffs`, and `structure.csv` and `grains.csv` to
    `out_dir`. `cfg`: options of `DEFAULTS` (a mapping; missing keys: defaults)."""
    out_dir = Path(out_dir)
    atoms = {str(a.path): a for a in atom_results}
    done = []
    for seg in results:
        micrograph = seg.micrograph
        found = atoms.get(str(micrograph.path))
        s = structure_of(micrograph.image, seg.mask, seg.scale, found.graph if found else None, found.check.get("registration") if found else None,
                         micrograph.path, cfg)
        s.frame, s.provenance = seg.frame, seg.provenance
        stem = seg.out_stem
        (out_dir / stem).parent.mkdir(parents=True, exist_ok=True)
        if figures:
            write_classes(s, micrograph.image, out_dir / f"{stem}_classes.png")
            write_orientation(micrograph.image, s, out_dir / f"{stem}_orientation.png")
        if image_format in ("tiff", "both"):
            write_structure_tiffs(s, out_dir, stem)
        done.append(s)
    return done, write_tables(done, out_dir)

"""Atom finding and bond graphs outside the contamination (the paper's Figure 5).

Two methods. "network" (the default of `evaluate atoms`): a U-Net trained on simulated images
only (`train pretrain --task atoms`) predicts a map of the graphene sheet's atoms, and the atoms
are its peaks; the image is first brought to the network's scale exactly as for segmentation
(`evaluate.apply.predictor.Predictor.plan`), so the contrast (white or black atoms, any defocus) is the
network's business. "extrema": atoms are local extrema of the flat-field-corrected image; which
sign marks the atoms is decided by the honeycomb's geometry: an atom's nearest neighbours sit one
C-C bond (1.42 A) away, a hexagon centre's 2.46 A away, so the polarity whose extrema most often
have a neighbour at one bond length is the atoms' (white- or black-atom contrast).
The scale comes from the pixel size when known, else from the lattice (`grapheneseg.lattice`, the
reader `predict` and `sort` use too), so the C-C bond (1.42 A) in pixels is known without a
calibrated pixel size. Both methods drop atoms inside the contamination mask and bond atoms
closer than `bond_tolerance` C-C bonds.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.ndimage
from scipy.spatial import cKDTree

from grapheneseg.formats import Micrograph
from evaluate.analysis.registration import reflection_balance
from grapheneseg.lattice import read_pixel_size
from grapheneseg.preprocessing import preprocess

from .segment import Notice, Segmentation, Skipped

if TYPE_CHECKING:
    from .predictor import Predictor
    from .scale import Scale

BOND = 1.42  # C-C bond length, A


@dataclass
class AtomGraph:
    """Atom positions (N, 2) as (row, col) px, bonds (M, 2) as atom indices, bond angles mod 60."""

    atoms: np.ndarray
    bonds: np.ndarray
    angles: np.ndarray
    contrast: str  # "white" or "black" (extrema method), "network" (network method)
    bond_px: float

    @property
    def how(self) -> str:
        """How the atoms were found, for titles and messages."""
        return "network atom map" if self.contrast == "network" else f"{self.contrast}-atom contrast"


def bond_length_px(image: np.ndarray, pixel_size: float | None = None) -> float:
    """C-C bond length in pixels of a raw micrograph: from the pixel size if given, else read from
    its lattice rings."""
    pixel_size = pixel_size or read_pixel_size(image)
    if not pixel_size:
        raise ValueError("no graphene lattice found: give the pixel size (--pixel-size) to locate atoms")
    return BOND / pixel_size


def refine(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(row, col) of maxima at pixels (rows, cols), sub-pixel by the centroid of their 3x3
    neighbourhood above its minimum; maxima on the outermost pixels are dropped."""
    inside = (rows > 0) & (rows < image.shape[0] - 1) & (cols > 0) & (cols < image.shape[1] - 1)
    rows, cols = rows[inside], cols[inside]
    patch = np.stack([image[rows + dr, cols + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)], 1)
    weights = patch - patch.min(axis=1, keepdims=True) + 1e-12
    dr = np.repeat([-1, 0, 1], 3)[None]
    dc = np.tile([-1, 0, 1], 3)[None]
    total = weights.sum(axis=1)
    return np.stack([rows + (weights * dr).sum(1) / total, cols + (weights * dc).sum(1) / total], 1).reshape(-1, 2)


def local_extrema(image: np.ndarray, bond_px: float) -> np.ndarray:
    """(row, col) of local maxima of a smoothed image, sub-pixel by a 3x3 centroid."""
    smooth = scipy.ndimage.gaussian_filter(image, max(bond_px / 4, 0.5))
    size = max(3, int(round(bond_px * 0.8)) | 1)
    peaks = (smooth == scipy.ndimage.maximum_filter(smooth, size=size))
    peaks &= smooth > scipy.ndimage.uniform_filter(smooth, size=int(3 * bond_px) | 1)
    return refine(smooth, *np.nonzero(peaks))


def map_peaks(atom_map: np.ndarray, bond_px: float, threshold: float) -> np.ndarray:
    """(row, col) of the peaks of a predicted atom map above `threshold`: maxima of a square
    neighbourhood that no bonded neighbour can share (a bond at 45 degrees spans 0.71 bonds in each
    axis, less up to 1 px where the atoms' pixels round towards each other), sub-pixel by
    `refine_gaussian`. Of equal maxima (a plateau) within that distance, one is kept."""
    distance = max(1, int(0.7 * bond_px - 1))
    peaks = (atom_map == scipy.ndimage.maximum_filter(atom_map, size=2 * distance + 1, mode="nearest"))
    peaks &= atom_map > threshold
    rows, cols = np.nonzero(peaks)
    points = np.stack([rows, cols], 1)
    drop = {j for _, j in cKDTree(points).query_pairs(distance, p=np.inf)} if len(points) else set()
    keep = np.array([i not in drop for i in range(len(points))], dtype=bool)
    return refine_gaussian(atom_map, rows[keep], cols[keep])


def refine_gaussian(atom_map: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(row, col) of peaks of a positive map at pixels (rows, cols), sub-pixel by a parabola
    through the logarithm of the peak and its two neighbours along each axis (exact for a
    Gaussian peak); shifts are clipped to half a pixel, peaks on the outermost pixels dropped."""
    inside = (rows > 0) & (rows < atom_map.shape[0] - 1) & (cols > 0) & (cols < atom_map.shape[1] - 1)
    rows, cols = rows[inside], cols[inside]
    log = np.log(np.maximum(atom_map, 1e-6))
    centre = log[rows, cols]
    out = []
    for lo, hi, at in ((log[rows - 1, cols], log[rows + 1, cols], rows), (log[rows, cols - 1], log[rows, cols + 1], cols)):
        curvature = lo - 2 * centre + hi
        shift = np.where(curvature < 0, 0.5 * (lo - hi) / np.where(curvature < 0, curvature, -1.0), 0.0)
        out.append(at + np.clip(shift, -0.5, 0.5))
    return np.stack(out, 1).reshape(-1, 2)


def bond_score(points: np.ndarray, bond_px: float) -> float:
    """Share of points whose nearest neighbour lies within 0.8-1.2 C-C bonds (atoms: high;
    hexagon centres, 1.73 bonds apart: low)."""
    if len(points) < 3:
        return 0.0
    dist, _ = cKDTree(points).query(points, k=2)
    return float(np.mean(np.abs(dist[:, 1] / bond_px - 1.0) < 0.2))


def find_atoms(image: np.ndarray, mask: np.ndarray | None = None, pixel_size: float | None = None,
               contrast: str = "auto", bond_tolerance: float = 1.3) -> AtomGraph:
    """Atoms outside `mask` (contamination), bonds shorter than bond_tolerance x the C-C bond.

    `contrast`: "white" (atoms bright), "black" (atoms dark) or "auto" (see `bond_score`).
    """
    pre = preprocess(image)
    bond_px = bond_length_px(image, pixel_size)
    if contrast not in ("auto", "white", "black"):
        raise ValueError(f"contrast must be auto, white or black, not {contrast!r}")
    candidates = {sign: local_extrema(s * pre, bond_px) for sign, s in (("white", 1.0), ("black", -1.0))}
    if contrast == "auto":
        contrast = max(candidates, key=lambda k: bond_score(candidates[k], bond_px))
    return bond_graph(candidates[contrast], mask, bond_px, bond_tolerance, contrast)


def bond_graph(atoms: np.ndarray, mask: np.ndarray | None, bond_px: float, bond_tolerance: float,
               contrast: str) -> AtomGraph:
    """The atoms outside `mask`, bonded when closer than `bond_tolerance` C-C bonds."""
    atoms = np.asarray(atoms, dtype=float).reshape(-1, 2)
    if mask is not None and len(atoms):
        r = np.clip(np.round(atoms[:, 0]).astype(int), 0, mask.shape[0] - 1)
        c = np.clip(np.round(atoms[:, 1]).astype(int), 0, mask.shape[1] - 1)
        atoms = atoms[~mask[r, c]]
    bonds = np.array(sorted(cKDTree(atoms).query_pairs(bond_tolerance * bond_px)), dtype=int).reshape(-1, 2)
    vec = atoms[bonds[:, 1]] - atoms[bonds[:, 0]] if len(bonds) else np.zeros((0, 2))
    angles = np.degrees(np.arctan2(vec[:, 0], vec[:, 1])) % 60.0
    return AtomGraph(atoms, bonds, angles, contrast, bond_px)


def find_atoms_network(predictor: Predictor, micrograph: Micrograph, scale: Scale, mask: np.ndarray | None = None,
                       threshold: float = 0.5, bond_tolerance: float = 1.3) -> AtomGraph:
    """Atoms outside `mask` as the peaks (above `threshold`) of the atom map that the atom-task
    `predictor` predicts at its own scale (the micrograph resampled as for segmentation), in the
    micrograph's own pixels; bonds as in `find_atoms`. A ValueError when the scale is unknown."""
    if not scale.pixel_size:
        raise ValueError("no graphene lattice found: give the pixel size (--pixel-size) to locate atoms")
    heat, zoom = predictor.probability(micrograph, scale)
    peaks = map_peaks(heat, BOND / scale.pixel_size * zoom, threshold)
    atoms = (peaks + 0.5) / zoom - 0.5  # network-scale pixel centres -> the micrograph's (grid-mode zoom)
    return bond_graph(atoms, mask, BOND / scale.pixel_size, bond_tolerance, "network")


def bond_statistics(graph: AtomGraph, mask: np.ndarray | None, shape: tuple[int, int],
                    margin_bonds: float = 2.0) -> dict[str, float]:
    """Label-free quality of a bond graph. Interior atoms: at least `margin_bonds` C-C bonds from
    the image border and from the contamination `mask` (so that all their neighbours are in view).
    Returns their number, the share with exactly 3 bonds (every atom inside a graphene sheet has
    3) and with none, and the relative spread (std / mean) of the lengths of their bonds (NaN when
    there are none)."""
    atoms, margin = graph.atoms, margin_bonds * graph.bond_px
    inside = np.all((atoms >= margin) & (atoms <= np.array(shape) - 1 - margin), axis=1)
    if mask is not None and mask.any() and len(atoms):
        distance = scipy.ndimage.distance_transform_edt(~mask)
        r = np.clip(np.round(atoms[:, 0]).astype(int), 0, shape[0] - 1)
        c = np.clip(np.round(atoms[:, 1]).astype(int), 0, shape[1] - 1)
        inside &= distance[r, c] >= margin
    degree = np.bincount(graph.bonds.ravel(), minlength=len(atoms))[inside]
    bonds = graph.bonds[inside[graph.bonds].any(axis=1)] if len(graph.bonds) else graph.bonds
    lengths = np.linalg.norm(atoms[bonds[:, 1]] - atoms[bonds[:, 0]], axis=1) if len(bonds) else np.zeros(0)
    nan = float("nan")
    return {"atoms": int(inside.sum()),
            "three_bonded": float(np.mean(degree == 3)) if len(degree) else nan,
            "unbonded": float(np.mean(degree == 0)) if len(degree) else nan,
            "bond_spread": float(lengths.std() / lengths.mean()) if len(lengths) else nan}


def match_atoms(found: np.ndarray, truth: np.ndarray, tolerance: float) -> tuple[float, float]:
    """(precision, recall) of found positions against true ones, one-to-one within `tolerance` px."""
    if len(found) == 0 or len(truth) == 0:
        return (1.0 if len(found) == 0 else 0.0), (1.0 if len(truth) == 0 else 0.0)
    dist, idx = cKDTree(truth).query(found, distance_upper_bound=tolerance)
    matched = len(set(idx[np.isfinite(dist)].tolist()))
    return matched / len(found), matched / len(truth)


def registration(image: np.ndarray, pixel_size: float | None, min_balance: float) -> dict:
    """Whether the atoms found in `image` may be the honeycomb shifted by half a lattice vector:
    {"reflection_balance": weakest / strongest {100} pair amplitude (None: no {100} spot or no
    scale), "registration": "uncertain" below `min_balance`, "unknown" without a reading, else "ok"}."""
    balance = reflection_balance(image, pixel_size) if pixel_size else None
    verdict = "unknown" if balance is None else ("uncertain" if balance < min_balance else "ok")
    return {"reflection_balance": balance, "registration": verdict}


def registration_notices(name: str, check: dict, min_balance: float) -> list[Notice]:
    """The warning a user must see when `check` (see `registration`) finds the registration uncertain."""
    if check["registration"] != "uncertain":
        return []
    return [Notice("registration", f"{name}: registration uncertain: the weakest {{100}} reflection pair has "
                                   f"{check['reflection_balance']:.2f} of the strongest's amplitude (< "
                                   f"atoms.min_reflection_balance {min_balance}); the atoms may all be half a C-C "
                                   "bond (0.7 A) off")]


ASTIGMATISM_NOTE = ("where two-fold astigmatism gives the three {100} reflection pairs CTFs of different signs, the "
                    "lattice image is also that of the sheet shifted by half a lattice vector, and the network's "
                    "honeycomb can be that shifted one (atoms ~0.7 A off, bond directions unchanged); images where it "
                    "is likely are flagged 'registration uncertain'")


def write_graph(graph: AtomGraph, out_dir: Path, stem: str, extra: dict | None = None) -> tuple[Path, Path, Path]:
    """<stem>_atoms.csv (row, col), <stem>_bonds.csv (i, j, length_px, angle_mod60_deg), summary
    JSON (with `extra`, e.g. `registration`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atoms_csv, bonds_csv = out_dir / f"{stem}_atoms.csv", out_dir / f"{stem}_bonds.csv"
    atoms_csv.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(atoms_csv, graph.atoms, fmt="%.3f", delimiter=",", header="row,col", comments="")
    lengths = np.linalg.norm(graph.atoms[graph.bonds[:, 1]] - graph.atoms[graph.bonds[:, 0]], axis=1) \
        if len(graph.bonds) else np.zeros(0)
    table = np.column_stack([graph.bonds, lengths, graph.angles]) if len(graph.bonds) else np.zeros((0, 4))
    np.savetxt(bonds_csv, table, fmt=["%d", "%d", "%.3f", "%.2f"], delimiter=",",
               header="i,j,length_px,angle_mod60_deg", comments="")
    summary = out_dir / f"{stem}_atoms.json"
    summary.write_text(json.dumps({"atoms": len(graph.atoms), "bonds": len(graph.bonds), "contrast": graph.contrast,
                                   "bond_px": graph.bond_px,
                                   "mean_bond_px": float(lengths.mean()) if len(lengths) else None,
                                   **(extra or {})}, indent=1))
    return atoms_csv, bonds_csv, summary


def draw_graph(ax, image: np.ndarray, graph: AtomGraph, mask: np.ndarray | None):
    """Draw the micrograph, the contamination (shaded) and the bonds coloured by angle mod 60
    degrees on a matplotlib axis; returns the bonds' LineCollection (None without bonds)."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    ax.imshow(preprocess(image), cmap="gray", interpolation="nearest")
    if mask is not None and mask.any():
        ax.imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.35, interpolation="nearest")
    lines = None
    if len(graph.bonds):
        segments = graph.atoms[graph.bonds][:, :, ::-1]  # (row, col) -> (x, y)
        lines = LineCollection(segments, cmap="hsv", norm=Normalize(0, 60), linewidths=1.5)
        lines.set_array(graph.angles)
        ax.add_collection(lines)
    ax.axis("off")
    return lines


def plot_graph(image: np.ndarray, graph: AtomGraph, mask: np.ndarray | None, path: Path) -> Path:
    """Figure 5 of the paper: bonds coloured by angle mod 60 degrees, contamination shaded."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 7))

    ax = fig.subplots()
    lines = draw_graph(ax, image, graph, mask)
    if lines is not None:
        fig.colorbar(lines, ax=ax, fraction=0.046, label="bond angle mod 60 (degrees)")
    ax.set_title(f"{len(graph.atoms)} atoms, {len(graph.bonds)} bonds ({graph.how})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


@dataclass
class AtomResult:
    """One micrograph's atoms: its graph, the registration check and the files written."""

    path: Path
    graph: AtomGraph
    check: dict
    notices: list[Notice] = field(default_factory=list)  # the registration warning, when uncertain


def atoms_of(results: Sequence[Segmentation], out_dir: Path, atoms_cfg: Any, method: str = "network",
             predictor: Predictor | None = None, contrast: str = "auto"
             ) -> tuple[list[AtomResult], dict[str, Skipped]]:
    """Atoms and bonds outside the contamination of each segmentation in `results`
    by `method` ("network": the atom-task `predictor`, at the scale each segmentation was made
    at; "extrema": local extrema at `contrast`), each
    with its `registration` check, written to `out_dir` (`write_graph`, `plot_graph`). Returns
    the results and {path: reason} for the micrographs where no atoms could be located."""
    done, failed = [], {}
    for seg in results:
        path, stem = seg.micrograph.path, seg.out_stem
        try:
            if method == "network":
                graph = find_atoms_network(predictor, seg.micrograph, seg.scale, seg.mask, atoms_cfg.threshold,
                                           atoms_cfg.bond_tolerance)
            else:
                graph = find_atoms(seg.micrograph.image, seg.mask, seg.pixel_size, contrast=contrast,
                                   bond_tolerance=atoms_cfg.bond_tolerance)
        except ValueError as err:
            failed[str(path)] = Skipped("failed", f"{path}: {err}")
            continue
        check = registration(seg.micrograph.image, seg.pixel_size, atoms_cfg.min_reflection_balance)
        write_graph(graph, out_dir, stem, check)
        plot_graph(seg.micrograph.image, graph, seg.mask, out_dir / f"{stem}_bonds.png")
        done.append(AtomResult(path, graph, check, registration_notices(str(path), check, atoms_cfg.min_reflection_balance)))
    return done, failed

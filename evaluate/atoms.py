"""Atom finding and bond graphs outside the contamination (the paper's Figure 5).

Atoms are local extrema of the flat-field-corrected image. Which sign marks the atoms is decided by the honeycomb's geometry: an atom's nearest neighbours
sit one C-C bond (1.42 A) away, a hexagon centre's 2.46 A away, so the polarity whose extrema
most often have a neighbour at one bond length is the atoms' (white- or black-atom contrast).
The scale comes from the pixel size when known, else from the lattice (`grapheneseg.lattice`, the
reader `predict` and `sort` use too), so the C-C bond (1.42 A) in pixels is known without a
calibrated pixel size.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage
from scipy.spatial import cKDTree

from grapheneseg.lattice import read_pixel_size
from grapheneseg.preprocessing import preprocess

BOND = 1.42  # C-C bond length, A


@dataclass
class AtomGraph:
    """Atom positions (N, 2) as (row, col) px, bonds (M, 2) as atom indices, bond angles mod 60."""

    atoms: np.ndarray
    bonds: np.ndarray
    angles: np.ndarray
    contrast: str  # "white" or "black"
    bond_px: float


def bond_length_px(image: np.ndarray, pixel_size: float | None = None) -> float:
    """C-C bond length in pixels of a raw micrograph: from the pixel size if given, else read from
    its lattice rings."""
    pixel_size = pixel_size or read_pixel_size(image)
    if not pixel_size:
        raise ValueError("no graphene lattice found: give the pixel size (--pixel-size) to locate atoms")
    return BOND / pixel_size


def local_extrema(image: np.ndarray, bond_px: float) -> np.ndarray:
    """(row, col) of local maxima of a smoothed image, sub-pixel by a 3x3 centroid."""
    smooth = scipy.ndimage.gaussian_filter(image, max(bond_px / 4, 0.5))
    size = max(3, int(round(bond_px * 0.8)) | 1)
    peaks = (smooth == scipy.ndimage.maximum_filter(smooth, size=size))
    peaks &= smooth > scipy.ndimage.uniform_filter(smooth, size=int(3 * bond_px) | 1)
    rows, cols = np.nonzero(peaks)
    inside = (rows > 0) & (rows < image.shape[0] - 1) & (cols > 0) & (cols < image.shape[1] - 1)
    rows, cols = rows[inside], cols[inside]
    patch = np.stack([smooth[rows + dr, cols + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)], 1)
    weights = patch - patch.min(axis=1, keepdims=True) + 1e-12
    dr = np.repeat([-1, 0, 1], 3)[None]
    dc = np.tile([-1, 0, 1], 3)[None]
    total = weights.sum(axis=1)
    return np.stack([rows + (weights * dr).sum(1) / total, cols + (weights * dc).sum(1) / total], 1)


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
    atoms = candidates[contrast]
    if mask is not None and len(atoms):
        r = np.clip(np.round(atoms[:, 0]).astype(int), 0, mask.shape[0] - 1)
        c = np.clip(np.round(atoms[:, 1]).astype(int), 0, mask.shape[1] - 1)
        atoms = atoms[~mask[r, c]]
    bonds = np.array(sorted(cKDTree(atoms).query_pairs(bond_tolerance * bond_px)), dtype=int).reshape(-1, 2)
    vec = atoms[bonds[:, 1]] - atoms[bonds[:, 0]] if len(bonds) else np.zeros((0, 2))
    angles = np.degrees(np.arctan2(vec[:, 0], vec[:, 1])) % 60.0
    return AtomGraph(atoms, bonds, angles, contrast, bond_px)


def match_atoms(found: np.ndarray, truth: np.ndarray, tolerance: float) -> tuple[float, float]:
    """(precision, recall) of found positions against true ones, one-to-one within `tolerance` px."""
    if len(found) == 0 or len(truth) == 0:
        return (1.0 if len(found) == 0 else 0.0), (1.0 if len(truth) == 0 else 0.0)
    dist, idx = cKDTree(truth).query(found, distance_upper_bound=tolerance)
    matched = len(set(idx[np.isfinite(dist)].tolist()))
    return matched / len(found), matched / len(truth)


def write_graph(graph: AtomGraph, out_dir: Path, stem: str) -> tuple[Path, Path, Path]:
    """<stem>_atoms.csv (row, col), <stem>_bonds.csv (i, j, length_px, angle_mod60_deg), summary JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atoms_csv, bonds_csv = out_dir / f"{stem}_atoms.csv", out_dir / f"{stem}_bonds.csv"
    np.savetxt(atoms_csv, graph.atoms, fmt="%.3f", delimiter=",", header="row,col", comments="")
    lengths = np.linalg.norm(graph.atoms[graph.bonds[:, 1]] - graph.atoms[graph.bonds[:, 0]], axis=1) \
        if len(graph.bonds) else np.zeros(0)
    table = np.column_stack([graph.bonds, lengths, graph.angles]) if len(graph.bonds) else np.zeros((0, 4))
    np.savetxt(bonds_csv, table, fmt=["%d", "%d", "%.3f", "%.2f"], delimiter=",",
               header="i,j,length_px,angle_mod60_deg", comments="")
    summary = out_dir / f"{stem}_atoms.json"
    summary.write_text(json.dumps({"atoms": len(graph.atoms), "bonds": len(graph.bonds), "contrast": graph.contrast,
                                   "bond_px": graph.bond_px,
                                   "mean_bond_px": float(lengths.mean()) if len(lengths) else None}, indent=1))
    return atoms_csv, bonds_csv, summary


def plot_graph(image: np.ndarray, graph: AtomGraph, mask: np.ndarray | None, path: Path) -> Path:
    """Figure 5 of the paper: bonds coloured by angle mod 60 degrees, contamination shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    fig, ax = plt.subplots(figsize=(7, 7))
    ax.imshow(preprocess(image), cmap="gray", interpolation="nearest")
    if mask is not None and mask.any():
        ax.imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.35, interpolation="nearest")
    if len(graph.bonds):
        segments = graph.atoms[graph.bonds][:, :, ::-1]  # (row, col) -> (x, y)
        lines = LineCollection(segments, cmap="hsv", norm=plt.Normalize(0, 60), linewidths=1.5)
        lines.set_array(graph.angles)
        ax.add_collection(lines)
        fig.colorbar(lines, ax=ax, fraction=0.046, label="bond angle mod 60 (degrees)")
    ax.set_title(f"{len(graph.atoms)} atoms, {len(graph.bonds)} bonds ({graph.contrast}-atom contrast)")
    ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

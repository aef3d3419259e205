"""Labels from the atomic model, rasterised on the image grid with the image's own geometry.

Image pixel [i, j] (abTEM's [x, y] order) samples the point ((margin + i) * p, (margin + j) * p) of
the cell, p the pixel size. Contamination = every pixel within `atom_radius` A plus `margin_px` image
pixels of an amorphous-carbon atom: how far a label reaches beyond the atoms is a config value,
chosen by cross-validation against hand labels (benchmarks/bench_margin.py).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .structures import Structure

LATTICE, CONTAMINATION, VACUUM, BOUNDARY = 0, 1, 2, 3
CLASS_NAMES = ("lattice", "contamination", "vacuum", "grain_boundary")


def pixel_centres(image_px: int, margin_px: int, pixel_size: float) -> np.ndarray:
    """(image_px, image_px, 2) cell coordinates (A) of the image pixels."""
    c = (margin_px + np.arange(image_px)) * pixel_size
    return np.stack(np.meshgrid(c, c, indexing="ij"), -1)


def contamination_mask(structure: Structure, xy: np.ndarray, reach: float) -> np.ndarray:
    """True where an amorphous atom lies within `reach` A (projected, periodic)."""
    atoms = structure.atoms.positions[structure.amorphous, :2]
    if len(atoms) == 0:
        return np.zeros(xy.shape[:-1], dtype=bool)
    tree = cKDTree(np.mod(atoms, structure.extent), boxsize=structure.extent)
    dist, _ = tree.query(np.mod(xy.reshape(-1, 2), structure.extent), distance_upper_bound=reach)
    return np.isfinite(dist).reshape(xy.shape[:-1])


def make_labels(structure: Structure, image_px: int, margin_px: int, cfg) -> tuple[np.ndarray, np.ndarray]:
    """(mask uint8: 1 = contamination, classes uint8: 0 lattice, 1 contamination, 2 vacuum, 3 boundary)."""
    pixel_size = structure.extent / (image_px + 2 * margin_px)
    xy = pixel_centres(image_px, margin_px, pixel_size)
    mask = contamination_mask(structure, xy, cfg.atom_radius + cfg.margin_px * pixel_size)
    classes = np.full(mask.shape, LATTICE, dtype=np.uint8)
    classes[structure.boundary_distance(xy) < cfg.boundary_width] = BOUNDARY
    classes[structure.in_hole(xy)] = VACUUM
    classes[mask] = CONTAMINATION
    return mask.astype(np.uint8), classes

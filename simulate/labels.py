"""Labels from the atomic model, rasterised on the image grid with the image's own geometry.

Image pixel [i, j] (abTEM's [x, y] order) samples the point ((margin + i) * p, (margin + j) * p) of
the cell, p the pixel size. Contamination = every pixel within `atom_radius` A plus `margin_px` image
pixels of an amorphous-carbon atom: how far a label reaches beyond the atoms is a config value,
chosen by cross-validation against hand labels (benchmarks/bench_margin.py). The atom map is
a Gaussian of peak 1 and width `atom_sigma` A at every projected carbon atom of the graphene sheet
(not the amorphous overlay, not adatoms): the target of the atom-finding network.
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


def atom_map(structure: Structure, xy: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 (255 = on an atom): Gaussian of width `sigma` A around the nearest sheet carbon atom
    (projected, periodic); the maximum over atoms, so that the peaks stay 1 (255) apart."""
    sheet = ~structure.amorphous & (structure.atoms.numbers == 6)
    if not sheet.any():
        return np.zeros(xy.shape[:-1], dtype=np.uint8)
    tree = cKDTree(np.mod(structure.atoms.positions[sheet, :2], structure.extent), boxsize=structure.extent)
    dist, _ = tree.query(np.mod(xy.reshape(-1, 2), structure.extent), distance_upper_bound=4 * sigma)
    value = np.exp(-np.minimum(dist, 4 * sigma) ** 2 / (2 * sigma**2))  # beyond 4 sigma: 3e-4, i.e. 0
    return np.round(255 * value).astype(np.uint8).reshape(xy.shape[:-1])


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

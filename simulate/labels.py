"""Labels from the atomic model, rasterised on the image grid with the image's own geometry.

Image pixel [i, j] (abTEM's [x, y] order) samples the point ((margin + i) * p, (margin + j) * p) of
the cell, p the pixel size. Contamination = every pixel within `atom_radius` A plus `margin_px` image
pixels of an amorphous-carbon atom: how far a label reaches beyond the atoms is a config value,
chosen by cross-validation against hand labels (benchmarks/bench_margin.py). The atom map is
a Gaussian of peak 1 and width `atom_sigma` A at every projected carbon atom of the graphene sheet
(not the amorphous overlay, not adatoms): the target of the atom-finding network.
"""
from __future__ import annotations

import numba
import numpy as np
from scipy.spatial import cKDTree

from grapheneseg.classes import BOUNDARY, CONTAMINATION, LATTICE, VACUUM

from .structures import Structure


def pixel_centres(image_px: int, margin_px: int, pixel_size: float) -> np.ndarray:
    """(image_px, image_px, 2) cell coordinates (A) of the image pixels."""
    c = (margin_px + np.arange(image_px)) * pixel_size
    return np.stack(np.meshgrid(c, c, indexing="ij"), -1)


def contamination_mask(structure: Structure, xy: np.ndarray, reach: float) -> np.ndarray:
    """True where an amorphous atom lies within `reach` A (projected, periodic)."""
    atoms = structure.atoms.positions[structure.amorphous, :2]
    if len(atoms) == 0:
        return np.zeros(xy.shape[:-1], dtype=bool)
    return np.isfinite(nearest_distance(np.mod(atoms, structure.extent), xy, structure.extent, reach))


def atom_map(structure: Structure, xy: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 (255 = on an atom): Gaussian of width `sigma` A around the nearest sheet carbon atom
    (projected, periodic); the maximum over atoms, so that the peaks stay 1 (255) apart."""
    sheet = ~structure.amorphous & (structure.atoms.numbers == 6)
    if not sheet.any():
        return np.zeros(xy.shape[:-1], dtype=np.uint8)
    dist = nearest_distance(np.mod(structure.atoms.positions[sheet, :2], structure.extent), xy, structure.extent, 4 * sigma)
    value = np.exp(-np.minimum(dist, 4 * sigma) ** 2 / (2 * sigma**2))  # beyond 4 sigma: 3e-4, i.e. 0
    return np.round(255 * value).astype(np.uint8)


def nearest_distance(points: np.ndarray, xy: np.ndarray, extent: float, reach: float) -> np.ndarray:
    """Distance (A) from each pixel of the grid `xy` (H, W, 2) to the nearest of `points` (N, 2, in
    [0, extent)), periodic, inf where none is closer than `reach`: what the periodic cKDTree query
    with distance_upper_bound=reach returns, computed by visiting only the pixels around each point.

    The arithmetic is the tree's (x - y wrapped by one period beyond half of it, squares summed,
    compared with reach**2, square root), so the distances are the same to the bit
    (tests/simulate/test_simulate_exact.py); a grid that is not a product of increasing axes goes to the tree.
    """
    flat = np.mod(xy.reshape(-1, 2), extent)
    xs, ys = np.ascontiguousarray(flat[:: xy.shape[1], 0]), np.ascontiguousarray(flat[: xy.shape[1], 1])
    grid = np.stack(np.broadcast_arrays(xs[:, None], ys[None, :]), -1).reshape(-1, 2)
    if not (np.array_equal(grid, flat) and (np.diff(xs) > 0).all() and (np.diff(ys) > 0).all()):
        dist, _ = cKDTree(points, boxsize=extent).query(flat, distance_upper_bound=reach)
        return dist.reshape(xy.shape[:-1])
    d2 = _nearest_squared(np.ascontiguousarray(points, dtype=np.float64), xs, ys, float(extent), float(reach))
    return np.sqrt(d2)


@numba.njit(cache=True)
def _nearest_squared(points, xs, ys, extent, reach):  # pragma: no cover (compiled)
    """Smallest squared periodic distance per pixel among the points closer than `reach` (else inf)."""
    half, bound = 0.5 * extent, reach * reach
    out = np.full((len(xs), len(ys)), np.inf)
    for n in range(len(points)):
        px, py = points[n, 0], points[n, 1]
        for sx in (-extent, 0.0, extent):
            i0 = max(np.searchsorted(xs, px + sx - reach) - 1, 0)
            i1 = min(np.searchsorted(xs, px + sx + reach) + 1, len(xs))
            for i in range(i0, i1):
                wx = xs[i] - px
                if wx < -half:
                    wx = extent + wx
                elif wx > half:
                    wx = wx - extent
                if abs(wx) >= reach:
                    continue
                for sy in (-extent, 0.0, extent):
                    j0 = max(np.searchsorted(ys, py + sy - reach) - 1, 0)
                    j1 = min(np.searchsorted(ys, py + sy + reach) + 1, len(ys))
                    for j in range(j0, j1):
                        wy = ys[j] - py
                        if wy < -half:
                            wy = extent + wy
                        elif wy > half:
                            wy = wy - extent
                        r = 0.0
                        r += wx * wx
                        r += wy * wy
                        if r < bound and r < out[i, j]:
                            out[i, j] = r
    return out


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

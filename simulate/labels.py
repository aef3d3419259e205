"""Labels from the atomic model, rasterised on the image grid with the image's own geometry.

Image pixel [i, j] (abTEM's [x, y] order) samples the point ((margin + i) * p, (margin + j) * p) of
the cell, p the pixel size. Contamination = every pixel within `atom_radius` A plus `margin_px` image
pixels of an amorphous-carbon atom: how far a label reaches beyond the atoms is a config value,
chosen by cross-validation against hand labels (benchmarks/bench_margin.py). The atom map is
a Gaussian of peak 1 and width `atom_sigma` A at every projected carbon atom of the graphene sheet
(not the amorphous overlay, not adatoms): the target of the atom-finding network.

The structure truth (`grain_truth`, a `StructureTruth`) is what `evaluate structure` measures,
known exactly: the grain of every pixel (the connected pieces of each Voronoi cell inside the field
of view, numbered 1..n in raster order of their first pixel; 0 in a hole), each grain's lattice
orientation in `evaluate.analysis.orientation`'s convention (degrees mod 60 of the {100} reflections
in the image's (row, column) frame: the negative of the cell-frame angle the builder drew, mod 60),
every boundary segment (two grains meeting along a straight Voronoi edge: its end points in pixels
on the true bisector) and the sheet's non-hexagonal rings in the field (centre in pixels, size).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.ndimage
from scipy.spatial import cKDTree

from grapheneseg.classes import BOUNDARY, CONTAMINATION, LATTICE, VACUUM

from .structures import Structure, _wrap


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


@dataclass
class StructureTruth:
    """The true grains, boundaries and rings of one image (module doc), in its pixels (row, column).

    `grains` int16 (H, W): 0 = no grain (a hole), 1..n; contamination keeps the grain beneath it.
    Grain g is row g - 1 of `orientation` (degrees mod 60, evaluate.analysis.orientation's
    convention), `cell_grain` (the builder's Voronoi cell: pieces of one cell cut apart by the field's
    edge share it and their orientation) and `area_px`. Boundary b separates grains
    `boundary_grains[b]` along the segment `boundaries[b]` = (r0, c0, r1, c1) px on the exact
    bisector. `rings` (K, 2) px and `ring_sizes` (K,): the intact rings other than hexagons."""

    grains: np.ndarray
    orientation: np.ndarray
    cell_grain: np.ndarray
    area_px: np.ndarray
    boundaries: np.ndarray
    boundary_grains: np.ndarray
    rings: np.ndarray
    ring_sizes: np.ndarray
    pixel_size: float

    @property
    def n_grains(self) -> int:
        return len(self.orientation)

    @property
    def misorientation(self) -> np.ndarray:
        """(B,) degrees 0-30 between the two grains of each boundary."""
        if len(self.boundary_grains) == 0:
            return np.zeros(0)
        d = np.abs(self.orientation[self.boundary_grains[:, 0] - 1] - self.orientation[self.boundary_grains[:, 1] - 1]) % 60.0
        return np.minimum(d, 60.0 - d)

    def boundary_lines(self) -> np.ndarray:
        """bool (H, W): the 1-px lines where two grains meet, by evaluate.analysis.orientation.grains_of's
        rule (a pixel whose lower or right neighbour belongs to another grain, neither 0)."""
        return boundary_lines(self.grains)


def boundary_lines(labels: np.ndarray) -> np.ndarray:
    """bool map: pixels whose lower or right neighbour carries another non-zero label (both non-zero)."""
    line = np.zeros(labels.shape, bool)
    line[:-1] |= (labels[:-1] > 0) & (labels[1:] > 0) & (labels[:-1] != labels[1:])
    line[:, :-1] |= (labels[:, :-1] > 0) & (labels[:, 1:] > 0) & (labels[:, :-1] != labels[:, 1:])
    return line


def nearest_seed(xy: np.ndarray, seeds: np.ndarray, extent: float) -> np.ndarray:
    """Index of the nearest seed (periodic) of each point: the Voronoi cell it lies in."""
    if len(seeds) < 2:
        return np.zeros(xy.shape[:-1], int)
    best = np.full(xy.shape[:-1], np.inf)
    out = np.zeros(xy.shape[:-1], int)
    for g, seed in enumerate(seeds):
        r = (_wrap(xy - seed, extent) ** 2).sum(-1)
        closer = r < best
        out[closer], best[closer] = g, r[closer]
    return out


def grain_truth(structure: Structure, image_px: int, margin_px: int) -> StructureTruth:
    """The `StructureTruth` of the image of `structure` (image_px square, `margin_px` border)."""
    pixel_size = structure.extent / (image_px + 2 * margin_px)
    xy = pixel_centres(image_px, margin_px, pixel_size)
    cell = nearest_seed(xy, structure.seeds, structure.extent)
    pieces = np.zeros(cell.shape, np.int64)
    count = 0
    for g in range(len(structure.seeds)):
        lab, n = scipy.ndimage.label(cell == g)
        pieces[lab > 0] = lab[lab > 0] + count
        count += n
    pieces[structure.in_hole(xy)] = 0
    present, first = np.unique(pieces.ravel(), return_index=True)  # a piece wholly inside a hole is no grain
    order = present[np.argsort(first)]
    order = order[order > 0]
    relabel = np.zeros(count + 1, np.int64)
    relabel[order] = np.arange(1, len(order) + 1)
    grains = relabel[pieces].astype(np.int16)
    n = len(order)
    cell_grain = np.zeros(n, np.int64)
    cell_grain[grains[grains > 0] - 1] = cell[grains > 0]
    orientation = (-np.asarray(structure.angles, float)[cell_grain]) % 60.0
    area = np.bincount(grains.ravel(), minlength=n + 1)[1:]
    boundaries, pairs = _segments(grains, cell_grain, structure.seeds, structure.extent, pixel_size, margin_px)
    rings = structure.ring_centres / pixel_size - margin_px
    inside = ((rings > -0.5) & (rings < image_px - 0.5)).all(1) if len(rings) else np.zeros(0, bool)
    return StructureTruth(grains, orientation, cell_grain, area, boundaries, pairs,
                          rings[inside].reshape(-1, 2), np.asarray(structure.ring_sizes, int)[inside], float(pixel_size))


def _segments(grains: np.ndarray, cell_grain: np.ndarray, seeds: np.ndarray, extent: float, pixel_size: float,
              margin_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, 4) segments (r0, c0, r1, c1) px and (B, 2) grain pairs: per pair of touching grains, per
    connected piece of their contact, the bisector of the two cells' seeds (the nearest periodic
    images) between the projections of the contact's extreme pixel-edge midpoints."""
    mids: dict[tuple[int, int], list[np.ndarray]] = {}
    for axis in (0, 1):
        a, b = (grains[:-1], grains[1:]) if axis == 0 else (grains[:, :-1], grains[:, 1:])
        meet = (a > 0) & (b > 0) & (a != b)
        r, c = np.nonzero(meet)
        mid = np.column_stack([r + 0.5 * (axis == 0), c + 0.5 * (axis == 1)])
        lo, hi = np.minimum(a[meet], b[meet]), np.maximum(a[meet], b[meet])
        for key in set(zip(lo.tolist(), hi.tolist())):
            sel = (lo == key[0]) & (hi == key[1])
            mids.setdefault(key, []).append(mid[sel])
    period = extent / pixel_size
    seeds_px = np.asarray(seeds, float) / pixel_size - margin_px
    segments, pairs = [], []
    for key in sorted(mids):
        points = np.concatenate(mids[key])
        a, b = seeds_px[cell_grain[key[0] - 1]], seeds_px[cell_grain[key[1] - 1]]
        # one straight edge per pair of periodic images of the two seeds (two cells of a small
        # periodic cell can meet along two edges), per connected piece (midpoints 1.5 px apart chain)
        images = np.round((points - b) / period) - np.round((points - a) / period)
        lab = np.zeros(len(points), int) - 1
        tree = cKDTree(points)
        for start in range(len(points)):
            if lab[start] >= 0:
                continue
            lab[start] = start
            stack = [start]
            while stack:
                for j in tree.query_ball_point(points[stack.pop()], 1.5):
                    if lab[j] < 0 and (images[j] == images[start]).all():
                        lab[j] = start
                        stack.append(j)
        for piece in np.unique(lab):
            pts = points[lab == piece]
            centre = pts[np.argmin(np.hypot(*(pts - pts.mean(0)).T))]
            sa, sb = centre - _wrap(centre - a, period), centre - _wrap(centre - b, period)
            middle, normal = (sa + sb) / 2, sb - sa
            tangent = np.array([-normal[1], normal[0]]) / max(np.hypot(*normal), 1e-12)
            t = (pts - middle) @ tangent
            segments.append(np.r_[middle + t.min() * tangent, middle + t.max() * tangent])
            pairs.append(key)
    return np.array(segments, float).reshape(-1, 4), np.array(pairs, np.int64).reshape(-1, 2)

"""Amorphous-carbon contamination: blobs of a random carbon network on both faces of the sheet.

The blobs' footprint is a thresholded smooth random field (`smooth_field`, which also draws the
illumination patches of `simulate.imaging`), biased towards grain boundaries, with a thickness per
blob that tapers at its edge and lumps inside; the atoms fill it by random sequential addition with
a minimum distance (`random_network`), at a density drawn in g/cm3 (`carbon_number_density`).
Apart from `simulate.structures` (the crystalline sheet, its holes and adatoms, which
`build_structure` assembles with this overlay) because it is a model of its own: it needs of the
structure only its cell, grain seeds and holes.
"""
from __future__ import annotations

import functools

import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.spatial import cKDTree

AVOGADRO = 6.02214076e23
CARBON_MASS = 12.011  # g/mol


def carbon_number_density(grams_per_cm3: float) -> float:
    """Atoms per A^3 of carbon at a mass density in g/cm3 (2.2 g/cm3 -> 0.110 /A^3)."""
    return grams_per_cm3 * AVOGADRO / CARBON_MASS / 1e24


@functools.lru_cache(maxsize=8)
def _frequencies_squared(n: int) -> np.ndarray:
    """|k|^2 (cycles/px) on the rfft2 grid of an n x n field (read-only, shared between calls)."""
    ky, kx = np.fft.fftfreq(n), np.fft.rfftfreq(n)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    k2.flags.writeable = False
    return k2


def smooth_field(rng: np.random.Generator, n: int, sigma_px: float) -> np.ndarray:
    """Periodic Gaussian-correlated random field on an n x n grid, zero mean and unit std."""
    spectrum = scipy.fft.rfft2(rng.standard_normal((n, n))) * np.exp(-2 * (np.pi * sigma_px) ** 2 * _frequencies_squared(n))
    out = scipy.fft.irfft2(spectrum, s=(n, n))
    return (out - out.mean()) / (out.std() + 1e-12)


def random_network(
    rng: np.random.Generator,
    n_target: int,
    sample: "callable",
    extent: float,
    min_distance: float,
    fixed: np.ndarray | None = None,
    rounds: int = 8,
) -> np.ndarray:
    """Random sequential addition: up to `n_target` points from `sample(m) -> (m, 3)`, no two (and
    none near `fixed`) closer than `min_distance`; x, y periodic in `extent`."""
    box = np.array([extent, extent, 1e6])
    fixed_tree = cKDTree(fixed + [0, 0, 1e5], boxsize=box) if fixed is not None and len(fixed) else None
    points = np.zeros((0, 3))
    for _ in range(rounds):
        missing = n_target - len(points)
        if missing <= 0:
            break
        cand = sample(int(missing * 1.3) + 8)
        if len(cand) == 0:
            continue
        shifted = cand + [0, 0, 1e5]
        ok = np.ones(len(cand), dtype=bool)
        if len(points):
            ok &= np.isinf(cKDTree(points + [0, 0, 1e5], boxsize=box).query(shifted, distance_upper_bound=min_distance)[0])
        if fixed_tree is not None:
            ok &= np.isinf(fixed_tree.query(shifted, distance_upper_bound=min_distance)[0])
        cand = cand[ok]
        pairs = cKDTree(cand + [0, 0, 1e5], boxsize=box).query_pairs(min_distance, output_type="ndarray")
        cand = np.delete(cand, np.unique(pairs[:, 1]) if len(pairs) else [], axis=0)
        points = np.concatenate([points, cand[: max(missing, 0)]])
    return points


def _uniform(rng: np.random.Generator, bounds) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def amorphous_carbon(rng: np.random.Generator, structure, graphene: np.ndarray, cfg) -> tuple[np.ndarray, dict]:
    """Amorphous-carbon blobs on both faces of the sheet; returns (N, 3) positions and draws.
    `structure` is the `simulate.structures.Structure` being built (its extent, grain seeds and
    holes; not imported here: `build_structure` calls this, so that import would be a cycle)."""
    extent = structure.extent
    coverage = 0.0
    if rng.random() >= cfg.clean_probability:
        coverage = float(np.clip(cfg.coverage_median * np.exp(cfg.coverage_sigma * rng.standard_normal()), *cfg.coverage))
    density = _uniform(rng, cfg.density)
    info = {"coverage_target": coverage, "amorphous_density": density, "amorphous_thickness": 0.0}
    if coverage <= 0:
        return np.zeros((0, 3)), info

    step = 1.0  # A per footprint-grid cell
    n = int(np.ceil(extent / step))
    step = extent / n
    field = smooth_field(rng, n, _uniform(rng, cfg.correlation_length) / step)
    centers = (np.arange(n) + 0.5) * step
    grid = np.stack(np.meshgrid(centers, centers, indexing="ij"), -1)
    if len(structure.seeds) > 1 and cfg.boundary_bias > 0:
        dist = structure.boundary_distance(grid)
        field = field + cfg.boundary_bias * np.exp(-0.5 * (dist / cfg.boundary_width) ** 2) * 2
    threshold = np.quantile(field, 1 - coverage)
    footprint = field > threshold
    blobs, n_blobs = ndimage.label(footprint)
    # thickness: per blob, tapering to a thin fringe at the footprint edge
    blob_thickness = rng.uniform(cfg.thickness[0], cfg.thickness[1], n_blobs + 1)
    blob_top = rng.random(n_blobs + 1) < cfg.top_probability
    taper = np.clip((field - threshold) / max(cfg.edge_taper, 1e-6), 0.15, 1.0)
    # mass-thickness varies inside a blob too (lumps and thin spots), on a shorter length scale
    lumps = 1 + cfg.thickness_variation * smooth_field(rng, n, _uniform(rng, cfg.correlation_length) / (3 * step))
    thickness = np.where(footprint, blob_thickness[blobs] * taper * np.clip(lumps, 0.2, None), 0.0)
    top = blob_top[blobs]
    gap = _uniform(rng, cfg.gap)
    t_max = float(thickness.max())

    volume = float(thickness.sum() * step**2)
    acceptance = volume / (extent**2 * t_max)

    def sample(m: int) -> np.ndarray:
        m = int(m / acceptance) + 16
        xy = rng.uniform(0, extent, (m, 2))
        cell = np.minimum((xy / step).astype(int), n - 1)
        depth = rng.uniform(0, t_max, m)
        keep = depth < thickness[cell[:, 0], cell[:, 1]]
        sign = np.where(top[cell[:, 0], cell[:, 1]], 1.0, -1.0)
        z = sign * (gap + depth)
        pts = np.column_stack([xy, z])[keep]
        return pts[~structure.in_hole(pts[:, :2])] if structure.holes else pts

    n_target = int(rng.poisson(volume * carbon_number_density(density)))
    points = random_network(rng, n_target, sample, extent, cfg.min_distance, fixed=graphene)
    info["amorphous_thickness"] = float(thickness[footprint].mean())
    return points, info

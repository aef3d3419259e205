"""The measures that set the two grain-boundary detectors of bench_grgb.py side by side: agreement
(pixels of one within a tolerance of the other, pooled over micrographs), distances and ring
densities near a boundary, and the patch tilt test (the lattice orientation either side of a
boundary point, independent of the orientation map). Plain arrays in, numbers out: kept apart
from the script's model runs, figures and timing so that each reads on its own.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage

from evaluate.analysis.orientation import misorientation
from grapheneseg import GRAPHENE_D100

TOL_A = 3.0  # agreement tolerance
PATCH_A = 20.0  # patch side
GAP_A = 2.0  # patch edge's distance from the boundary point
TILT_DEG = 5.0  # a tilt boundary: sides differ by more than this
MAX_OFF = 0.25  # a side counts with at most this share of contamination or vacuum
MIN_CONTRAST = 2.0  # ... and its {100} ring at least this much above the power beside it
NEAR_A = 20.0  # network boundary pixels 3-20 A from a line: "near a line", farther: "off the lines"

# the network's boundary pixels by their distance to the orientation map's lines
GROUPS = {"network on a line": (0.0, TOL_A), "network near a line": (TOL_A, NEAR_A),
          "network off the lines": (NEAR_A, np.inf)}


# ---- agreement, distances, rings ----------------------------------------------------------------

def near(a: np.ndarray, b: np.ndarray, px: float) -> tuple[int, int]:
    """(pixels of `a` within `px` of `b`, pixels of `a`)."""
    if not a.any():
        return 0, 0
    if not b.any():
        return 0, int(a.sum())
    return int((scipy.ndimage.distance_transform_edt(~b)[a] <= px).sum()), int(a.sum())


def pooled(rows: list[dict], key: str) -> dict:
    tot = {k: sum(r[key][k] for r in rows) for k in rows[0][key]}
    return {**tot, "network_near_lines_share": tot["network_near_lines"] / max(tot["network_px"], 1),
            "lines_near_network_share": tot["lines_near_network"] / max(tot["line_px"], 1)}


def distance_A(region: np.ndarray, pixel_size: float) -> np.ndarray:
    """Distance (A) of every pixel to `region` (inf everywhere when it is empty)."""
    if not region.any():
        return np.full(region.shape, np.inf)
    return scipy.ndimage.distance_transform_edt(~region) * pixel_size


def ring_density(rings, region: np.ndarray, pixel_size: float) -> list:
    """[non-hexagonal rings centred in `region`, region area nm2]."""
    area = float(region.sum()) * (pixel_size / 10) ** 2
    if rings is None or not len(rings.sizes):
        return [0, area]
    rc = np.clip(np.round(rings.centres).astype(int), 0, np.array(region.shape) - 1)
    inside = region[rc[:, 0], rc[:, 1]]
    return [int(np.sum(inside & (rings.sizes != 6))), area]


# ---- the tilt test ------------------------------------------------------------------------------

def patch_orientation(pre: np.ndarray, centre: np.ndarray, size: int, pixel_size: float):
    """(orientation deg mod 60, ring contrast) of the square patch of side `size` px at `centre`
    (row, col) from its Hann-windowed power spectrum; None when the patch leaves the image."""
    r0, c0 = (np.round(centre) - size // 2).astype(int)
    if r0 < 0 or c0 < 0 or r0 + size > pre.shape[0] or c0 + size > pre.shape[1]:
        return None
    patch = pre[r0:r0 + size, c0:c0 + size].astype(float)
    patch = (patch - patch.mean()) * np.outer(np.hanning(size), np.hanning(size))
    n = 2 * size
    power = np.abs(np.fft.fft2(patch, (n, n))) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")
    q, phi = np.hypot(fy, fx), np.arctan2(fy, fx)
    q100 = pixel_size / GRAPHENE_D100
    width = max(0.08 * q100, 1.5 / size)
    ring = np.abs(q - q100) < width
    beside = (np.abs(q - q100) > 2 * width) & (np.abs(q - q100) < 4 * width)
    psi = np.sum(power[ring] * np.exp(6j * phi[ring]))
    angle = (np.degrees(np.angle(psi)) / 6.0) % 60.0
    return float(angle), float(power[ring].mean() / max(power[beside].mean(), 1e-30))


def sample_points(boundary: np.ndarray, spacing: float) -> np.ndarray:
    """Points of `boundary` at least `spacing` px apart (greedy, in raster order)."""
    kept: list[np.ndarray] = []
    for p in np.argwhere(boundary):
        if not kept or np.min(np.hypot(*(np.array(kept) - p).T)) >= spacing:
            kept.append(p)
    return np.array(kept).reshape(-1, 2)


def normal_at(boundary: np.ndarray, p: np.ndarray, radius: float) -> np.ndarray:
    """Unit normal (row, col) of the boundary pixels within `radius` of `p` (their minor axis)."""
    pts = np.argwhere(boundary)
    pts = pts[np.hypot(*(pts - p).T) <= radius].astype(float)
    if len(pts) < 3:
        return np.array([1.0, 0.0])
    vals, vecs = np.linalg.eigh(np.cov((pts - pts.mean(0)).T))
    return vecs[:, 0]


def side_test(pre, off, p, normal, pixel_size) -> dict:
    """Orientation of the patches either side of `p` along `normal` (module doc); when a side does
    not count, why: "image edge", "contamination or vacuum" or "weak lattice"."""
    size = int(round(PATCH_A / pixel_size))
    d = size / 2 + GAP_A / pixel_size
    sides = []
    for sign in (-1, 1):
        c = p + sign * d * normal
        got = patch_orientation(pre, c, size, pixel_size)
        if got is None:
            return {"decided": False, "why": "image edge"}
        r0, c0 = (np.round(c) - size // 2).astype(int)
        if off[r0:r0 + size, c0:c0 + size].mean() > MAX_OFF:
            return {"decided": False, "why": "contamination or vacuum"}
        if got[1] < MIN_CONTRAST:
            return {"decided": False, "why": "weak lattice"}
        sides.append(got[0])
    mis = float(misorientation(sides[0], sides[1]))
    return {"decided": True, "misorientation": mis, "tilt": mis > TILT_DEG}


def tilt_summary(tests: list[dict]) -> dict:
    decided = [t for t in tests if t["decided"]]
    why = [t["why"] for t in tests if not t["decided"]]
    return {"points": len(tests), "decided": len(decided), "tilt": int(sum(t["tilt"] for t in decided)),
            "undecided": {w: why.count(w) for w in ("image edge", "contamination or vacuum", "weak lattice")}}

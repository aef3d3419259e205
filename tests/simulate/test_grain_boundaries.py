"""Grain boundaries are stitched into 5-7 (rarely 4-8) rings: every atom three bonds, no close pairs."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from grapheneseg.config import load_config
from simulate.structures import build_structure

SHEET_ONLY = ["grid=tiny", "structure.holes.probability=0", "structure.amorphous.clean_probability=1",
              "structure.adatoms.probability=0", "structure.single_grain_probability=0"]


def sheet(seed: int, grains: int, extent: float = 60.0):
    cfg = load_config("simulate", SHEET_ONLY + [f"structure.grains=[{grains},{grains}]"])
    s = build_structure(np.random.default_rng(seed), extent, cfg.structure)
    return s, s.atoms.positions[~s.amorphous, :2]


def rings(pos: np.ndarray, extent: float, cutoff: float = 1.75) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Faces of the periodic planar bond graph (bonds: pairs closer than `cutoff`), traced by always
    turning to the next neighbour clockwise: (ring sizes, ring centres, bonds per atom)."""
    pairs = cKDTree(pos, boxsize=extent).query_pairs(cutoff, output_type="ndarray")
    neighbours = [[] for _ in pos]
    for i, j in pairs:
        neighbours[i].append(j)
        neighbours[j].append(i)

    def step(u, v):
        return (pos[v] - pos[u] + extent / 2) % extent - extent / 2

    order = {}
    for v, nb in enumerate(neighbours):
        angles = [np.arctan2(*step(v, w)[::-1]) for w in nb]
        order[v] = [nb[k] for k in np.argsort(angles)]
    seen, sizes, centres = set(), [], []
    for u, nb in enumerate(neighbours):
        for v in nb:
            if (u, v) in seen:
                continue
            walk, a, b, path = 0, u, v, np.zeros(2)
            points = []
            while (a, b) not in seen:
                seen.add((a, b))
                path = path + step(a, b)
                points.append(path.copy())
                ring = order[b]
                a, b = b, ring[(ring.index(a) - 1) % len(ring)]  # next edge clockwise around b
                walk += 1
            sizes.append(walk)
            centres.append((pos[u] + np.mean(points, axis=0)) % extent)
    return sizes, np.array(centres), np.array([len(nb) for nb in neighbours])


@pytest.mark.parametrize("seed", range(3))
def test_boundary_rings_are_five_and_seven(seed):
    s, pos = sheet(seed, 2)
    assert abs(s.angles[0] - s.angles[1]) % 60 > 3  # a real misorientation
    sizes, centres, degree = rings(pos, s.extent)
    sizes = np.array(sizes)
    assert (degree == 3).all()  # no dangling bonds, no over-coordinated atoms
    distances = cKDTree(pos, boxsize=s.extent).query(pos, k=4)[0]
    assert distances[:, 1].min() >= 1.38 and distances[:, 3].max() <= 1.62  # three bonds, 1.42 A stretched <= 14 %
    second = cKDTree(pos, boxsize=s.extent).query(pos, k=5)[0][:, 4]
    assert second.min() >= 1.8  # no non-bonded pair at bond distance
    assert np.sum(6 - sizes) == 0  # Euler on a torus: every 5 has its 7 (a 4 two 7s, an 8 two 5s)
    defects = sizes != 6
    assert set(sizes[defects]) <= {4, 5, 7, 8}
    assert (sizes == 5).sum() >= 4 and (sizes == 7).sum() >= 4
    near = s.boundary_distance(centres) < 5.0  # the stitched line wanders about the Voronoi bisector
    seam = (np.minimum(centres, s.extent - centres) < 5.0).any(1)  # the cell's periodic seam is a boundary too
    assert (~defects[~near & ~seam]).all()  # away from boundaries: only hexagons
    assert defects[near].any()


def test_single_grain_is_perfect_away_from_the_seam():
    cfg = load_config("simulate", SHEET_ONLY + ["structure.single_grain_probability=1"])
    s = build_structure(np.random.default_rng(4), 50.0, cfg.structure)
    sizes, centres, degree = rings(s.atoms.positions[:, :2], s.extent)
    inner = (np.minimum(centres, s.extent - centres) > 4.0).all(1)
    assert (degree == 3).all() and (np.array(sizes)[inner] == 6).all()

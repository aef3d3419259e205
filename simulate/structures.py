"""Atomic models: polycrystalline graphene with holes, amorphous-carbon contamination and adatoms.

A structure is a periodic square cell (x, y) of side `extent` holding

- graphene grains: periodic Voronoi cells, each filled with a randomly rotated and shifted sheet.
  The sheet is built from its hexagon centres (a triangular lattice per grain): the carbon atoms
  are the centroids of the periodic Delaunay triangles of all centres and the bonds join
  neighbouring triangles. Inside a grain that is exactly graphene; along a boundary (and the
  periodic seam) it closes every ring, so a centre with 5 or 7 (rarely 4 or 8) neighbours becomes
  a 5- or 7-membered ring, every atom keeps three bonds, and a spring relaxation of the bonds near
  the defects (to 1.42 A) removes the strain of the stitching;
- holes: star-shaped regions with randomly perturbed edges where all atoms are removed;
- amorphous carbon (`simulate.amorphous`): a random network (random sequential addition with a
  minimum distance, at a density drawn in g/cm3) filling blobs whose footprint is a thresholded
  smooth random field, biased towards grain boundaries, with a thickness per blob that tapers at
  the blob's edge;
- optional heavy adatoms (Si by default) sitting on the lattice; they are not contamination.

The `Structure` keeps what the labels need (which atoms are amorphous, grain seeds and angles,
holes, and the rings of the sheet that are not hexagons: their centres and sizes, as the stitching
made them), so the labels and the structure truth (simulate.labels.grain_truth) come from the model
itself and never from the image.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
from ase import Atoms
from scipy.spatial import Delaunay, cKDTree

from .amorphous import _uniform, amorphous_carbon

RING_GAP = 0.7  # of the lattice constant: the closest two hexagon centres of different grains may come
RING_SPACING_MAX = 2.46 * 1.5  # A: Delaunay padding unit (no ring centre is further from its neighbours)
RELAX_SHELLS, RELAX_STEPS, RELAX_RATE, RELAX_MOMENTUM = 3, 60, 0.3, 0.7  # bonds around defects relaxed; steps


@dataclass
class Hole:
    """A star-shaped hole: radius(phi) = radius * (1 + sum_k a_k cos(k phi + p_k))."""

    center: np.ndarray
    radius: float
    amplitudes: np.ndarray
    phases: np.ndarray

    def contains(self, xy: np.ndarray, extent: float) -> np.ndarray:
        d = _wrap(xy - self.center, extent)
        phi = np.arctan2(d[..., 1], d[..., 0])
        k = np.arange(2, 2 + len(self.amplitudes))
        edge = self.radius * (1 + np.cos(phi[..., None] * k + self.phases) @ self.amplitudes)
        return np.hypot(d[..., 0], d[..., 1]) < edge


@dataclass
class Structure:
    """An atomic model plus the geometry the labels are made from."""

    atoms: Atoms
    extent: float
    amorphous: np.ndarray  # bool per atom: amorphous-carbon contamination
    seeds: np.ndarray  # (G, 2) Voronoi seeds of the grains
    angles: np.ndarray  # (G,) in-plane orientation of each grain, degrees in [0, 60)
    holes: list[Hole] = field(default_factory=list)
    info: dict[str, float] = field(default_factory=dict)
    ring_centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (K, 2) A: rings other than 6
    ring_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (K,) their sizes (5, 7, rarely 4, 8)

    def in_hole(self, xy: np.ndarray) -> np.ndarray:
        inside = np.zeros(xy.shape[:-1], dtype=bool)
        for hole in self.holes:
            inside |= hole.contains(xy, self.extent)
        return inside

    def boundary_distance(self, xy: np.ndarray) -> np.ndarray:
        """Distance (A) from points to the nearest grain boundary (inf for a single grain)."""
        return boundary_distance(xy, self.seeds, self.extent)


def _wrap(d: np.ndarray, extent: float) -> np.ndarray:
    """Minimum-image displacement in a periodic square cell."""
    return d - extent * np.round(d / extent)


def boundary_distance(xy: np.ndarray, seeds: np.ndarray, extent: float) -> np.ndarray:
    """Exact distance to the edge of the periodic Voronoi cell each point lies in: the nearest of
    the bisectors between its own (nearest) seed and every other, (|dg|^2 - |d1|^2) / (2 |d1 - dg|)
    with d1 and dg the minimum-image offsets to those seeds. (Near a triple junction the nearest
    edge need not be the one shared with the second-nearest seed.)"""
    if len(seeds) < 2:
        return np.full(xy.shape[:-1], np.inf)
    flat = np.ascontiguousarray(xy.reshape(-1, 2), dtype=np.float64)
    return _boundary_distance(flat, np.ascontiguousarray(seeds, dtype=np.float64), float(extent)).reshape(xy.shape[:-1])


@numba.njit(cache=True)
def _boundary_distance(xy, seeds, extent):  # pragma: no cover (compiled)
    """Per point, in NumPy's operations: d = xy - seed - extent * round((xy - seed) / extent), the
    seed of smallest |d|^2 (the first of equals), then the nearest bisector with any other seed."""
    out = np.empty(len(xy))
    d = np.empty((len(seeds), 2))
    r = np.empty(len(seeds))
    for n in range(len(xy)):
        own, best = -1, np.inf
        for g in range(len(seeds)):
            for k in range(2):
                v = xy[n, k] - seeds[g, k]
                d[g, k] = v - extent * np.rint(v / extent)
            r[g] = d[g, 0] ** 2 + d[g, 1] ** 2
            if r[g] < best:
                own, best = g, r[g]
        nearest = np.inf
        for g in range(len(seeds)):
            if g == own:
                continue
            e0, e1 = d[own, 0] - d[g, 0], d[own, 1] - d[g, 1]
            separation = np.sqrt(e0 * e0 + e1 * e1)
            nearest = min(nearest, (r[g] - best) / (2 * max(separation, 1e-9)))
        out[n] = nearest
    return out


def ring_centres(extent: float, seeds: np.ndarray, angles: np.ndarray, shifts: np.ndarray, a: float) -> np.ndarray:
    """(M, 2) hexagon centres: per grain a rotated, shifted triangular lattice (spacing a) kept
    inside the grain's periodic Voronoi cell; of two centres closer than RING_GAP * a (across a
    boundary or the seam) the later one is dropped."""
    n = int(np.ceil(extent * np.sqrt(2) / a * 1.2)) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    lattice = np.column_stack([(i + j / 2).ravel() * a, j.ravel() * a * np.sqrt(3) / 2])
    parts = []
    for g, (angle, shift) in enumerate(zip(np.deg2rad(angles), shifts)):
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pos = lattice @ rot.T + extent / 2 + shift
        pos = pos[((pos >= 0) & (pos < extent)).all(1)]
        if len(seeds) > 1:
            pos = pos[(_wrap(pos[:, None, :] - seeds, extent) ** 2).sum(-1).argmin(1) == g]
        parts.append(pos)
    centres = np.concatenate(parts)
    pairs = cKDTree(centres, boxsize=extent).query_pairs(RING_GAP * a, output_type="ndarray")
    taken, drop = np.zeros(len(centres), bool), []
    for p, q in pairs[np.lexsort(pairs.T[::-1])]:  # greedy, in a fixed order
        if not (taken[p] or taken[q]):
            taken[p] = taken[q] = True
            drop.append(q)
    return np.delete(centres, drop, axis=0)


def honeycomb(centres: np.ndarray, extent: float, centre_ids: bool = False):
    """Atoms (N, 2) at the centroids of the periodic Delaunay triangles of the ring centres, bonds
    (B, 2) between triangles sharing an edge, and the sizes (N, 3) of the three rings at each atom
    (a ring's size is the number of triangles around its centre); with `centre_ids` also the
    indices (N, 3) into `centres` of those three rings."""
    pad = 4 * RING_SPACING_MAX
    shifts = np.array([(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]) * extent
    tiled = (centres[None] + shifts[:, None]).reshape(-1, 2)
    ids = np.tile(np.arange(len(centres)), len(shifts))
    near = ((tiled > -pad) & (tiled < extent + pad)).all(1)
    tiled, ids = tiled[near], ids[near]
    tri = Delaunay(tiled)
    centroid = tiled[tri.simplices].mean(1)
    own = ((centroid >= 0) & (centroid < extent)).all(1)  # one copy of every periodic triangle
    atoms = centroid[own]
    neighbours = tri.neighbors[own].ravel()
    if (neighbours < 0).any():
        raise RuntimeError("periodic Delaunay triangulation of the ring centres did not close")
    index = _periodic_images(ids[tri.simplices], own, neighbours, len(centres))
    if index is None or (np.abs(_wrap(centroid[neighbours] - atoms[index], extent)) > 1e-6).any():
        # not one own triangle per ring-centre triple: the atom at the neighbour's centroid instead
        dist, index = cKDTree(atoms, boxsize=extent).query(np.mod(centroid[neighbours], extent), distance_upper_bound=1e-6)
        if np.isinf(dist).any():
            raise RuntimeError("periodic Delaunay triangulation of the ring centres did not close")
    pairs = np.column_stack([np.repeat(np.arange(len(atoms)), 3), index])
    bonds = pairs[pairs[:, 0] < pairs[:, 1]]  # each bond once (it is seen from both ends)
    size = np.bincount(ids[tri.simplices[own]].ravel(), minlength=len(centres))
    if centre_ids:
        return atoms, bonds, size[ids[tri.simplices[own]]], ids[tri.simplices[own]]
    return atoms, bonds, size[ids[tri.simplices[own]]]


def _periodic_images(triples: np.ndarray, own: np.ndarray, wanted: np.ndarray, n: int) -> np.ndarray | None:
    """For each triangle in `wanted`, the index among the `own` triangles of the one with the same
    three ring centres (its periodic image); None unless every such triple is unique and found."""
    key = np.sort(triples, axis=1).astype(np.int64)
    key = (key[:, 0] * n + key[:, 1]) * n + key[:, 2]
    own_key = key[own]
    order = np.argsort(own_key, kind="stable")
    sorted_keys = own_key[order]
    if (sorted_keys[1:] == sorted_keys[:-1]).any():
        return None
    at = np.minimum(np.searchsorted(sorted_keys, key[wanted]), len(order) - 1)
    return order[at] if (sorted_keys[at] == key[wanted]).all() else None


def relax_bonds(pos: np.ndarray, bonds: np.ndarray, extent: float, movable: np.ndarray, length: float) -> np.ndarray:
    """Move the `movable` atoms down the gradient of harmonic bond springs of rest length `length`
    (the rest stay fixed; heavy-ball momentum): spreads the stitching strain near a defect."""
    sel = movable[bonds[:, 0]] | movable[bonds[:, 1]]
    local, inverse = np.unique(bonds[sel], return_inverse=True)  # the movable atoms and their neighbours
    i, j = inverse.reshape(-1, 2).T
    x = pos[local].copy()
    _relax_steps(x, np.ascontiguousarray(i), np.ascontiguousarray(j), movable[local], float(extent), float(length),
                 RELAX_STEPS, RELAX_RATE, RELAX_MOMENTUM)
    pos = pos.copy()
    pos[local] = x
    return np.mod(pos, extent)


@numba.njit(cache=True)
def _relax_steps(x, i, j, free, extent, length, steps, rate, momentum):  # pragma: no cover (compiled)
    """`steps` heavy-ball steps on the bond springs, in place; the arithmetic of the NumPy form
    (d = minimum image of x[j] - x[i], f = (r - length) / r * d, pull = bincount(i, f) - bincount(j, f),
    v = momentum * v + rate * pull * free) operation for operation, in the same order."""
    velocity = np.zeros_like(x)
    pull_i, pull_j = np.empty_like(x), np.empty_like(x)
    for _ in range(steps):
        pull_i[:] = 0.0
        pull_j[:] = 0.0
        for b in range(len(i)):
            d0 = x[j[b], 0] - x[i[b], 0]
            d1 = x[j[b], 1] - x[i[b], 1]
            d0 = d0 - extent * np.rint(d0 / extent)
            d1 = d1 - extent * np.rint(d1 / extent)
            r = np.sqrt(d0 * d0 + d1 * d1)
            s = (r - length) / max(r, 1e-9)
            f0, f1 = s * d0, s * d1
            pull_i[i[b], 0] += f0
            pull_i[i[b], 1] += f1
            pull_j[j[b], 0] += f0
            pull_j[j[b], 1] += f1
        for a in range(len(x)):
            for k in range(2):
                velocity[a, k] = momentum * velocity[a, k] + rate * (pull_i[a, k] - pull_j[a, k]) * (1.0 if free[a] else 0.0)
                x[a, k] += velocity[a, k]


@dataclass
class DefectRings:
    """The rings of a sheet that are not hexagons: centres (K, 2) A (the mean of their relaxed
    atoms), sizes (K,), and their atoms' positions (M, 2) with the ring each belongs to (M,)."""

    centres: np.ndarray
    sizes: np.ndarray
    member_xy: np.ndarray
    member_ring: np.ndarray

    def intact(self, sheet: np.ndarray, extent: float) -> np.ndarray:
        """(K,) bool: every atom of the ring is still in `sheet` (N, 2) (holes and pruning remove some)."""
        if len(self.sizes) == 0 or len(sheet) == 0:
            return np.zeros(len(self.sizes), bool)
        dist, _ = cKDTree(np.mod(sheet, extent), boxsize=extent).query(np.mod(self.member_xy, extent))
        lost = np.bincount(self.member_ring, dist > 1e-6, minlength=len(self.sizes))
        return lost == 0


def defect_rings(atoms: np.ndarray, ids: np.ndarray, n_centres: int, centres: np.ndarray, extent: float) -> DefectRings:
    """The non-hexagonal rings of the sheet `atoms` (N, 2), whose three rings per atom are `ids`
    (N, 3; honeycomb(..., centre_ids=True)): each ring's atoms and their periodic mean."""
    size = np.bincount(ids.ravel(), minlength=n_centres)
    atom = np.repeat(np.arange(len(atoms)), 3)
    ring = ids.ravel()
    sel = size[ring] != 6
    atom, ring = atom[sel], ring[sel]
    defects, member_ring = np.unique(ring, return_inverse=True)
    offset = _wrap(atoms[atom] - centres[ring], extent)
    count = np.bincount(member_ring, minlength=len(defects))
    mean = np.column_stack([np.bincount(member_ring, offset[:, k], len(defects)) for k in (0, 1)]) / np.maximum(count, 1)[:, None]
    return DefectRings(np.mod(centres[defects] + mean, extent), size[defects], atoms[atom], member_ring.reshape(-1))


def graphene_sheet(extent: float, seeds: np.ndarray, angles: np.ndarray, shifts: np.ndarray, a: float,
                   min_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """(atoms (N, 2), bonds (B, 2)) of a periodic polycrystalline sheet, boundaries of 5-7 rings;
    should relaxation leave two atoms closer than `min_distance` (not seen so far), one is removed."""
    return sheet_and_defects(extent, seeds, angles, shifts, a, min_distance)[:2]


def sheet_and_defects(extent: float, seeds: np.ndarray, angles: np.ndarray, shifts: np.ndarray, a: float,
                      min_distance: float) -> tuple[np.ndarray, np.ndarray, DefectRings]:
    """`graphene_sheet` and its non-hexagonal rings (`defect_rings`, on the relaxed atoms)."""
    centres = ring_centres(extent, seeds, angles, shifts, a)
    atoms, bonds, rings, ids = honeycomb(centres, extent, centre_ids=True)
    length = a / np.sqrt(3)
    r = np.linalg.norm(_wrap(atoms[bonds[:, 1]] - atoms[bonds[:, 0]], extent), axis=1)
    defect = (rings != 6).any(1)
    defect[bonds[np.abs(r - length) > 0.02].ravel()] = True
    for _ in range(RELAX_SHELLS):
        grown = defect.copy()
        grown[bonds[:, 0][defect[bonds[:, 1]]]] = True
        grown[bonds[:, 1][defect[bonds[:, 0]]]] = True
        defect = grown
    atoms = relax_bonds(atoms, bonds, extent, defect, length)
    defects = defect_rings(atoms, ids, len(centres), centres, extent)
    keep = np.ones(len(atoms), bool)
    keep[cKDTree(atoms, boxsize=extent).query_pairs(min_distance, output_type="ndarray")[:, 1]] = False
    return (*(prune_dangling(atoms, bonds, keep) if not keep.all() else (atoms, bonds)), defects)


def prune_dangling(pos: np.ndarray, bonds: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the atoms in `keep`, then drop, repeatedly, atoms left with fewer than two bonds."""
    while True:
        alive = keep[bonds].all(1)
        degree = np.bincount(bonds[alive].ravel(), minlength=len(pos))
        if not (keep & (degree < 2)).any():
            break
        keep = keep & (degree >= 2)
    index = np.cumsum(keep) - 1
    return pos[keep], index[bonds[keep[bonds].all(1)]]


def prune_close(pos: np.ndarray, extent: float, min_distance: float) -> np.ndarray:
    """Drop the second atom of every pair closer than `min_distance` until none is left."""
    while True:
        pairs = cKDTree(pos, boxsize=extent).query_pairs(min_distance, output_type="ndarray")
        if len(pairs) == 0:
            return pos
        pos = np.delete(pos, np.unique(pairs[:, 1]), axis=0)


def build_structure(rng: np.random.Generator, extent: float, cfg) -> Structure:
    """Draw one structure in a periodic `extent` x `extent` A cell from the `structure` config."""
    a = float(cfg.lattice_constant)
    n_grains = 1 if rng.random() < cfg.single_grain_probability else int(rng.integers(cfg.grains[0], cfg.grains[1] + 1))
    seeds = rng.uniform(0, extent, (n_grains, 2))
    angles = rng.uniform(0, 60, n_grains)
    sheet, bonds, defects = sheet_and_defects(extent, seeds, angles, rng.uniform(-a, a, (n_grains, 2)), a, float(cfg.min_distance))

    holes = []
    if rng.random() < cfg.holes.probability:
        for _ in range(int(rng.integers(cfg.holes.count[0], cfg.holes.count[1] + 1))):
            holes.append(
                Hole(
                    rng.uniform(0, extent, 2),
                    _uniform(rng, cfg.holes.radius),
                    rng.normal(0, cfg.holes.roughness / 2, 5) / np.arange(1, 6) ** 0.5,
                    rng.uniform(0, 2 * np.pi, 5),
                )
            )
    structure = Structure(Atoms(), extent, np.zeros(0, bool), seeds, angles, holes)
    if holes:
        sheet, bonds = prune_dangling(sheet, bonds, ~structure.in_hole(sheet))
    intact = defects.intact(sheet, extent)  # rings that lost an atom to a hole are no rings
    structure.ring_centres, structure.ring_sizes = defects.centres[intact], defects.sizes[intact]
    z0 = 0.0
    graphene = np.column_stack([sheet, np.full(len(sheet), z0)])

    amorphous, info = amorphous_carbon(rng, structure, graphene, cfg.amorphous)
    adatoms = np.zeros((0, 3))
    if rng.random() < cfg.adatoms.probability and len(sheet):
        count = int(rng.integers(cfg.adatoms.count[0], cfg.adatoms.count[1] + 1))
        xy = sheet[rng.choice(len(sheet), size=min(count, len(sheet)), replace=False)]
        adatoms = np.column_stack([xy, np.full(len(xy), z0 + cfg.adatoms.height)])
        adatoms = prune_close(adatoms[:, :2], extent, 3.0)
        adatoms = np.column_stack([adatoms, np.full(len(adatoms), z0 + cfg.adatoms.height)])
        if len(amorphous):  # an adatom buried in contamination would be contamination: keep clear
            far = np.isinf(cKDTree(amorphous[:, :2], boxsize=extent).query(adatoms[:, :2], distance_upper_bound=2.0)[0])
            adatoms = adatoms[far]

    positions = np.concatenate([graphene, amorphous, adatoms])
    symbols = ["C"] * (len(graphene) + len(amorphous)) + [str(cfg.adatoms.symbol)] * len(adatoms)
    zmin, zmax = positions[:, 2].min(), positions[:, 2].max()
    positions[:, 2] += 1.0 - zmin
    structure.atoms = Atoms(symbols, positions=positions, cell=[extent, extent, zmax - zmin + 2.0], pbc=True)
    structure.amorphous = np.r_[np.zeros(len(graphene), bool), np.ones(len(amorphous), bool), np.zeros(len(adatoms), bool)]
    structure.info = {
        "n_grains": n_grains,
        "n_holes": len(holes),
        "n_adatoms": len(adatoms),
        "n_atoms": len(positions),
        "n_amorphous": len(amorphous),
        **info,
    }
    return structure

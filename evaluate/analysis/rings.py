"""Rings of the atom graph: the census of 4- to 9-membered carbon rings and the 5/7 rings that mark
grain boundaries (issue 23, item 4).

The bond graph of `evaluate atoms` (evaluate.apply.atoms.AtomGraph) is drawn in the plane, so its
rings are its faces: walking each bond in both directions and turning, at every atom, to the next
bond clockwise (in the image's row, column frame) traces every face exactly once. Rings are the
faces traced one way round (the outer face of each connected piece, around its border, runs the
other way) that visit no atom twice (a dangling bond doubles back) and have `min_size` to
`max_size` atoms; larger faces are holes, contamination or the field's edge, and are not rings.
Pristine graphene has only 6-rings; a grain boundary is a line of 5-7 pairs (and some 4-, 8-rings).
Counts are meaningful only where the atoms sit on the honeycomb: `evaluate.apply.structure` counts
only images whose registration check is `ok`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_RING, MAX_RING = 4, 9


@dataclass
class Rings:
    """Rings of a bond graph: their sizes (K,), centres (K, 2) as (row, col) px, atom indices."""

    sizes: np.ndarray
    centres: np.ndarray
    members: list[list[int]]

    def counts(self, min_size: int = MIN_RING, max_size: int = MAX_RING) -> dict[int, int]:
        """{size: number of rings} for every size from min_size to max_size."""
        return {n: int(np.sum(self.sizes == n)) for n in range(min_size, max_size + 1)}

    def defects(self) -> np.ndarray:
        """Centres (row, col) of the rings that are not 6-rings: where the lattice is broken."""
        return self.centres[self.sizes != 6]


def faces(atoms: np.ndarray, bonds: np.ndarray) -> list[list[int]]:
    """Every face of the plane graph (atoms (N, 2) as row, col; bonds (M, 2) atom indices) as its
    atom cycle, each traced with the same turning rule (module doc)."""
    atoms = np.asarray(atoms, float).reshape(-1, 2)
    neighbours: dict[int, list[int]] = {}
    for i, j in np.asarray(bonds, int).reshape(-1, 2):
        if i != j:
            neighbours.setdefault(int(i), []).append(int(j))
            neighbours.setdefault(int(j), []).append(int(i))
    order: dict[int, list[int]] = {}
    position: dict[tuple[int, int], int] = {}
    for v, ns in neighbours.items():
        ns = sorted(set(ns), key=lambda u: np.arctan2(atoms[u, 0] - atoms[v, 0], atoms[u, 1] - atoms[v, 1]))
        order[v] = ns
        for k, u in enumerate(ns):
            position[(v, u)] = k
    seen: set[tuple[int, int]] = set()
    out = []
    for v, ns in order.items():
        for u in ns:
            if (v, u) in seen:
                continue
            cycle, a, b = [], v, u
            while (a, b) not in seen:
                seen.add((a, b))
                cycle.append(a)
                around = order[b]
                nxt = around[(position[(b, a)] - 1) % len(around)]  # the next bond clockwise at b
                a, b = b, nxt
            out.append(cycle)
    return out


def ring_census(atoms: np.ndarray, bonds: np.ndarray, min_size: int = MIN_RING,
                max_size: int = MAX_RING) -> Rings:
    """The rings (module doc) of a bond graph."""
    atoms = np.asarray(atoms, float).reshape(-1, 2)
    kept = []
    for cycle in faces(atoms, bonds):
        if not min_size <= len(cycle) <= max_size or len(set(cycle)) != len(cycle):
            continue
        r, c = atoms[cycle, 0], atoms[cycle, 1]
        area = 0.5 * np.sum(c * np.roll(r, -1) - np.roll(c, -1) * r)  # shoelace in (x=col, y=row)
        if area < 0:  # traced the outer way round: a border, not a ring
            continue
        kept.append(cycle)
    sizes = np.array([len(k) for k in kept], int)
    centres = np.array([atoms[k].mean(axis=0) for k in kept]).reshape(-1, 2)
    return Rings(sizes, centres, kept)

"""Ring census of the atom graph (evaluate.analysis.rings; issue 23, item 4)."""
from __future__ import annotations

import numpy as np
import pytest

from evaluate.apply.atoms import bond_graph
from evaluate.analysis.rings import ring_census

BOND_PX = 6.0


def honeycomb(n: int = 12, bond: float = BOND_PX, turn: float = 0.3) -> np.ndarray:
    """(row, col) of a patch of graphene: n x n cells of two atoms, turned by `turn` radians."""
    a1, a2 = np.array([1.5, np.sqrt(3) / 2]) * bond, np.array([1.5, -np.sqrt(3) / 2]) * bond
    points = [i * a1 + j * a2 + d for i in range(n) for j in range(n) for d in (np.zeros(2), np.array([bond, 0.0]))]
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    return np.array(points) @ rot.T + 200.0


def test_pristine_honeycomb_has_only_six_rings() -> None:
    graph = bond_graph(honeycomb(), None, BOND_PX, 1.3, "white")
    rings = ring_census(graph.atoms, graph.bonds)
    counts = rings.counts()
    assert counts[6] == (12 - 1) ** 2 and sum(counts.values()) == counts[6]
    assert len(rings.defects()) == 0


def test_stone_wales_defect_gives_two_5_and_two_7_rings_where_it_is() -> None:
    """A bond turned by 90 degrees about its middle (the Stone-Wales defect, 5-7-7-5): the four
    hexagons around it become two pentagons and two heptagons, centred next to the turned bond."""
    atoms = honeycomb()
    graph = bond_graph(atoms, None, BOND_PX, 1.3, "white")
    centre = atoms.mean(axis=0)
    middles = atoms[graph.bonds].mean(axis=1)
    i, j = graph.bonds[np.argmin(np.linalg.norm(middles - centre, axis=1))]
    mid = (atoms[i] + atoms[j]) / 2
    turned = atoms.copy()
    for k in (i, j):
        d = atoms[k] - mid
        turned[k] = mid + np.array([-d[1], d[0]])
    # rebond: each turned atom keeps one old neighbour and takes one of its partner's
    bonds = {tuple(sorted(b)) for b in graph.bonds.tolist()}
    ni = sorted((b[0] if b[1] == i else b[1] for b in bonds if i in b and j not in b),
                key=lambda n: np.linalg.norm(atoms[n] - turned[i]))
    nj = sorted((b[0] if b[1] == j else b[1] for b in bonds if j in b and i not in b),
                key=lambda n: np.linalg.norm(atoms[n] - turned[j]))
    bonds -= {tuple(sorted((i, ni[1]))), tuple(sorted((j, nj[1])))}
    # the far neighbour of each turned atom now bonds to the other turned atom
    bonds |= {tuple(sorted((j, ni[1]))), tuple(sorted((i, nj[1])))}
    rings = ring_census(turned, np.array(sorted(bonds)))
    counts = rings.counts()
    assert counts[5] == 2 and counts[7] == 2 and counts[6] == (12 - 1) ** 2 - 4
    assert counts[4] == counts[8] == counts[9] == 0
    assert np.linalg.norm(rings.defects() - mid, axis=1).max() < 2.5 * BOND_PX


def test_dangling_bonds_and_holes_are_not_rings() -> None:
    atoms = honeycomb(8)
    centre = atoms.mean(axis=0)
    holed = atoms[np.linalg.norm(atoms - centre, axis=1) > 2.2 * BOND_PX]  # a hole of ~ 3 rings
    graph = bond_graph(holed, None, BOND_PX, 1.3, "white")
    counts = ring_census(graph.atoms, graph.bonds).counts()
    assert set(k for k, v in counts.items() if v) == {6}
    assert counts[6] < (8 - 1) ** 2
    assert ring_census(np.zeros((0, 2)), np.zeros((0, 2), int)).counts()[6] == 0
    # an adatom inside a hexagon bonded to one corner: that face visits the corner twice (8 steps)
    rings = ring_census(graph.atoms, graph.bonds)
    first = rings.members[0]
    inside = graph.atoms[first].mean(axis=0) * 0.6 + graph.atoms[first[0]] * 0.4
    atoms = np.vstack([graph.atoms, inside])
    bonds = np.vstack([graph.bonds, [[first[0], len(atoms) - 1]]])
    counts = ring_census(atoms, bonds).counts()
    assert counts[8] == 0 and counts[6] == len(rings.sizes) - 1


@pytest.mark.parametrize("turn", [0.0, 1.0])
def test_any_orientation(turn: float) -> None:
    graph = bond_graph(honeycomb(6, turn=turn), None, BOND_PX, 1.3, "white")
    assert ring_census(graph.atoms, graph.bonds).counts()[6] == 25

"""Atom finding on an analytic honeycomb with known atom positions, both contrasts."""
import numpy as np
import pytest

from evaluate.apply.atoms import find_atoms, match_atoms

PIXEL = 0.35  # A/px


def honeycomb(size: int = 128, white: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image of Gaussian atoms on a rotated graphene lattice and the true positions (row, col) px."""
    rng = np.random.default_rng(seed)
    a = 2.46 / PIXEL
    theta = rng.uniform(0, np.pi / 3)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    a1, a2 = rot @ np.array([a, 0.0]), rot @ np.array([a / 2, a * np.sqrt(3) / 2])
    basis = [np.zeros(2), (a1 + a2) / 3]
    n = int(size / a) + 4
    pts = np.array([i * a1 + j * a2 + b for i in range(-2 * n, 2 * n) for j in range(-2 * n, 2 * n) for b in basis])
    pts = pts[(pts.min(1) > -3) & (pts.max(1) < size + 3)]
    y, x = np.mgrid[:size, :size].astype(float)
    image = np.zeros((size, size))
    for py, px in pts:
        image += np.exp(-((y - py) ** 2 + (x - px) ** 2) / (2 * (0.45 / PIXEL) ** 2))
    image = 100 + (20 if white else -20) * image + rng.normal(0, 1, image.shape)
    inside = (pts.min(1) > 2) & (pts.max(1) < size - 3)
    return image, pts[inside]


@pytest.mark.parametrize("white", [True, False])
def test_atoms_found_with_either_contrast(white: bool) -> None:
    image, truth = honeycomb(white=white)
    graph = find_atoms(image)
    assert graph.contrast == ("white" if white else "black")
    assert graph.bond_px == pytest.approx(1.42 / PIXEL, rel=0.05)
    found = graph.atoms[(graph.atoms.min(1) > 2) & (graph.atoms.max(1) < 128 - 3)]
    precision, recall = match_atoms(found, truth, tolerance=0.5 / PIXEL)
    assert precision > 0.95 and recall > 0.95
    # honeycomb: interior atoms have 3 bonds, and bond angles mod 60 agree within a few degrees
    assert abs(len(graph.bonds) / len(graph.atoms) - 1.5) < 0.2
    spread = np.angle(np.exp(1j * np.radians(graph.angles * 6))).std()
    assert np.degrees(spread) / 6 < 3


def test_atoms_inside_contamination_are_removed() -> None:
    image, _ = honeycomb()
    mask = np.zeros(image.shape, bool)
    mask[:, :64] = True
    graph = find_atoms(image, mask=mask, pixel_size=PIXEL)
    assert len(graph.atoms) and graph.atoms[:, 1].min() >= 63.5


def test_match_atoms_edge_cases() -> None:
    assert match_atoms(np.zeros((0, 2)), np.zeros((0, 2)), 1.0) == (1.0, 1.0)
    assert match_atoms(np.zeros((0, 2)), np.ones((3, 2)), 1.0) == (1.0, 0.0)
    p, r = match_atoms(np.array([[0.0, 0.0], [10.0, 10.0]]), np.array([[0.2, 0.0]]), 1.0)
    assert (p, r) == (0.5, 1.0)

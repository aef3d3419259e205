"""Lattice orientation, grains and boundaries (evaluate.analysis.orientation; issue 23, item 3)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from evaluate.analysis.orientation import grains_of, lattice_and_vacuum, misorientation, orientation_map


def lattice_image(pixel: float, shape: tuple[int, int], theta, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    """Graphene's lattice image at `pixel` A/px: cosines at the {100}, {110} and {200} reciprocal
    vectors turned by `theta` (radians, an array over the grid: one value per grain), plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:shape[0], :shape[1]].astype(float)
    image = np.zeros(shape)
    for amp, order, turn in zip((1.0, 0.6, 0.3), (1.0, np.sqrt(3.0), 2.0), (0.0, np.pi / 6, 0.0)):
        q = 2 * np.pi * pixel / 2.13 * order
        for j in range(3):
            a = theta + turn + j * np.pi / 3
            image += amp * np.cos(q * (np.sin(a) * y + np.cos(a) * x))
    return 100 + 5 * (image + rng.normal(0, noise, shape))


def two_grains_and_a_hole(pixel: float = 0.3, first: float = 7.0, second: float = 24.0):
    """Two grains meeting along the slanted line col + 0.3 row = 170, a round hole (flat, noise
    only) of radius 35 px inside the second."""
    shape = (256, 320)
    y, x = np.mgrid[:shape[0], :shape[1]]
    line = x + 0.3 * y - 170
    image = lattice_image(pixel, shape, np.where(line < 0, np.radians(first), np.radians(second)))
    hole = np.hypot(y - 60, x - 250) < 35
    image[hole] = 100 + 5 * np.random.default_rng(1).normal(0, 0.5, hole.sum())
    return image, line / np.hypot(1, 0.3), hole


@pytest.mark.parametrize("first, second", [(7.0, 24.0), (50.0, 7.0)])
def test_two_grains_their_misorientation_and_the_boundary(first: float, second: float) -> None:
    """17 degrees apart (the second pair across the 60-degree wrap: 50 and 67 = 7 mod 60): two
    grains, each orientation and the misorientation within 1 degree, the boundary line within 5 px
    (1.5 A) of the true one along its whole length; the hole is vacuum, no grain."""
    image, distance, hole = two_grains_and_a_hole(first=first, second=second)
    omap = orientation_map(image, 0.3)
    lattice, vacuum = lattice_and_vacuum(omap)
    grains = grains_of(omap, lattice)
    assert len(grains.area) == 2
    found = sorted(grains.orientation.values())
    assert found == pytest.approx(sorted([first % 60, second % 60]), abs=1.0)
    (pair, info), = grains.pairs.items()
    assert info["misorientation"] == pytest.approx(17.0, abs=1.0)
    rows, cols = np.nonzero(grains.boundary)
    off = np.abs(distance[rows, cols])
    assert off.max() <= 5.0 and np.median(off) <= 1.5  # 1.5 A at most: the issue asks 3 A
    assert len(np.unique(rows)) >= 0.95 * image.shape[0]  # the line runs the whole height
    true_length = image.shape[0] * np.hypot(1, 0.3)
    assert info["length_px"] == pytest.approx(true_length, rel=0.3)
    # the hole: vacuum at its core, no grain there; no vacuum a window beyond it
    core = hole & (np.hypot(*(np.mgrid[:256, :320] - np.array([60, 250])[:, None, None])) < 20)
    assert vacuum[core].all() and (grains.labels[core] == 0).all()
    assert not vacuum[~hole].any()
    assert not grains.boundary[hole].any()


def test_one_grain_has_no_boundary_and_contamination_is_no_grain() -> None:
    image = lattice_image(0.385, (192, 192), np.full((192, 192), np.radians(41.0)), seed=3)
    omap = orientation_map(image, 0.385)
    mask = np.zeros(image.shape, bool)
    mask[:, :40] = True
    lattice, vacuum = lattice_and_vacuum(omap, mask)
    grains = grains_of(omap, lattice)
    assert list(grains.orientation.values()) == pytest.approx([41.0], abs=1.0)
    assert not grains.boundary.any() and not grains.pairs
    assert not (lattice | vacuum)[mask].any() and (grains.labels[mask] == 0).all()
    assert np.median(omap.confidence[~mask]) > 0.8


def test_misorientation_is_hexagonal() -> None:
    assert misorientation(59.0, 1.0) == pytest.approx(2.0)
    assert misorientation(0.0, 30.0) == pytest.approx(30.0)
    assert misorientation(np.array([10.0, 40.0]), 25.0) == pytest.approx([15.0, 15.0])


def test_a_hole_is_vacuum_to_its_edge() -> None:
    """The window blurs the hole's edge into the lattice's power, so the threshold crossing lies
    inside the hole; vacuum is grown back (`grow_A`) to cover the hole, not the lattice around it
    (IoU 0.83 without the growth, 0.90 with it, on the 1-period map `evaluate structure` reads)."""
    image, _, hole = two_grains_and_a_hole()
    omap = orientation_map(image, 0.3, window_periods=1.0)
    _, vacuum = lattice_and_vacuum(omap)
    assert (vacuum & hole).sum() / (vacuum | hole).sum() >= 0.88
    far = scipy.ndimage.distance_transform_edt(~hole) * 0.3 > 3.0  # A beyond the hole's edge
    assert not vacuum[far].any()


def test_a_weakly_imaged_grain_beside_unmasked_amorphous_power_stays_lattice() -> None:
    """A grain imaged at half the contrast of its neighbour, with a strip of strong isotropic power
    at the {100} ring (an amorphous edge the mask left out): the lattice level is read where the
    lattice is resolved, so neither the weak grain nor the strip is vacuum (read from the power's
    90th percentile, the strip set the level and the weak grain became vacuum)."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[:256, :256]
    weak, strip = x >= 120, y > 200
    image = lattice_image(0.3, (256, 256), np.where(weak, np.radians(35.0), np.radians(10.0)), noise=0.0)
    image = 100 + (image - 100) * np.where(weak, 0.5, 1.0)
    ky, kx = np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256), indexing="ij")
    ring = np.exp(-0.5 * ((np.hypot(ky, kx) - 0.3 / 2.13) / 0.01) ** 2)
    amorphous = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(256, 256))) * ring))
    image += np.where(strip, 15 * amorphous / amorphous.std(), 0) + 2.5 * rng.normal(size=(256, 256))
    omap = orientation_map(image, 0.3, window_periods=1.0)
    assert np.percentile(omap.strength, 90) * 0.15 > np.median(omap.strength[weak & ~strip])  # the trap
    _, vacuum = lattice_and_vacuum(omap)
    assert not vacuum.any()

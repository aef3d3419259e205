"""The lattice-scale reader on synthetic graphene from 0.02 to 1.0 A/px (issue 13, deliver 1)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from evaluate.apply.atoms import BOND, bond_length_px
from grapheneseg.lattice import read_pixel_size


def graphene(pixel: float, size: int, amplitudes=(1.0, 0.6, 0.3), noise: float = 1.0, grains: int = 1,
             seed: int = 0) -> np.ndarray:
    """Graphene's lattice image at `pixel` A/px, sampled point-wise (outer rings alias, as on a
    detector): cosines at the {100}, {110} and {200} reciprocal vectors of `grains` rotated sheets
    side by side, on a tilted background, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(size, dtype=np.float64)
    image = np.zeros((size, size))
    stripes = np.array_split(np.arange(size), grains)
    for rows in stripes:
        theta = rng.uniform(0, np.pi / 3)
        for amp, order, turn in zip(amplitudes, (1.0, np.sqrt(3.0), 2.0), (0.0, np.pi / 6, 0.0)):
            q = 2 * np.pi * pixel / 2.13 * order
            for j in range(3):
                a = theta + turn + j * np.pi / 3
                # cos(u x + v y) from outer products: fast even at 2048 px
                u, v = q * np.cos(a), q * np.sin(a)
                image[rows] += amp * (np.outer(np.cos(v * y[rows]), np.cos(u * y))
                                      - np.outer(np.sin(v * y[rows]), np.sin(u * y)))
    image += rng.normal(0, noise, image.shape)
    return 100 + 5 * image * (1 + 0.3 * y / size)[None, :]


@pytest.mark.parametrize("pixel, size", [(0.02, 2048), (0.035, 1024), (0.06, 1024), (0.1, 512), (0.2, 256),
                                         (0.3, 256), (0.385, 256), (0.47, 256), (0.6, 256), (0.7, 128),
                                         (0.8, 256), (0.9, 256), (1.0, 256)])
def test_reads_any_scale(pixel: float, size: int) -> None:
    """Right within 2 % over the whole range: {100}, {110} and {200} visible up to ~0.5 A/px, {110}
    aliased beyond ~0.6 A/px (the {100} ring alone must do), ring at ~0.01 1/px at 0.02 A/px."""
    assert read_pixel_size(graphene(pixel, size, seed=int(pixel * 1000))) == pytest.approx(pixel, rel=0.02)


@pytest.mark.parametrize("pixel", [0.1, 0.3, 0.45])
def test_missing_100_ring_reads_from_110_and_200(pixel: float) -> None:
    """A CTF zero at 2.13 A: the {110} + {200} pair (ratio 2/sqrt 3) confirms the reading."""
    image = graphene(pixel, 512 if pixel < 0.2 else 256, amplitudes=(0.0, 1.0, 0.6), seed=3)
    assert read_pixel_size(image) == pytest.approx(pixel, rel=0.02)


def test_lone_ring_is_100_and_grains_merge() -> None:
    assert read_pixel_size(graphene(0.5, 256, amplitudes=(1.0, 0.0, 0.0))) == pytest.approx(0.5, rel=0.02)
    assert read_pixel_size(graphene(0.25, 384, grains=3, seed=5)) == pytest.approx(0.25, rel=0.02)


def test_no_lattice_gives_none() -> None:
    rng = np.random.default_rng(0)
    amorphous = scipy.ndimage.gaussian_filter(rng.normal(size=(256, 256)), 1.5)
    assert read_pixel_size(100 + 10 * amorphous + rng.normal(0, 1, (256, 256))) is None
    assert read_pixel_size(np.full((128, 128), 7.0)) is None
    # a lattice only 2 periods across cannot be measured: no ring away from the centre
    assert read_pixel_size(graphene(0.02, 256)) is None


def test_atoms_use_the_same_reader() -> None:
    image = graphene(0.7, 256, seed=7)
    assert bond_length_px(image) == pytest.approx(BOND / 0.7, rel=0.02)
    assert bond_length_px(image, pixel_size=0.5) == pytest.approx(BOND / 0.5)
    with pytest.raises(ValueError, match="no graphene lattice"):
        bond_length_px(np.random.default_rng(0).normal(size=(64, 64)))


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_interpolated_upsampling_replicas_are_ignored(factor: int) -> None:
    """A spline-upsampled micrograph carries faint replicas of its spectrum beyond the old Nyquist
    (and axis-aligned artefacts); they must not be read as lattice rings."""
    image = graphene(0.4, 96, amplitudes=(1.0, 0.6, 0.3), seed=11)
    assert read_pixel_size(scipy.ndimage.zoom(image, factor, order=3)) == pytest.approx(0.4 / factor, rel=0.02)


def test_suppressed_100_ring_is_flagged_or_read_right() -> None:
    """Issue 23: a micrograph whose {100} ring is suppressed (a CTF zero) shows {110} alone; read
    as {100} it gives sqrt 3 x the pixel size. At 0.3 A/px on 256 px (the real case: {100} at 36,
    {110} at 62 Fourier pixels) the reading must say it is ambiguous and name the right rival;
    with a faint {100} ring (too faint for a ring of its own) it must read right."""
    from grapheneseg.lattice import read_lattice

    lone_110 = read_lattice(graphene(0.3, 256, amplitudes=(0.0, 1.0, 0.0), seed=3))
    assert lone_110.pixel_size == pytest.approx(0.3, rel=0.02) or lone_110.ambiguous
    assert lone_110.ambiguous and lone_110.rival == pytest.approx(0.3, rel=0.02)
    assert "give the pixel size" in lone_110.reason
    for pixel, seed in ((0.2, 3), (0.3, 3), (0.3, 4), (0.385, 3), (0.385, 4)):
        # {100} at 7 % of {110}'s amplitude: no ring of its own (step 1), its spots are there
        faint_100 = read_lattice(graphene(pixel, 256 if pixel > 0.25 else 512, amplitudes=(0.07, 1.0, 0.0), seed=seed))
        assert faint_100.pixel_size == pytest.approx(pixel, rel=0.02) and not faint_100.ambiguous


def test_confirmed_readings_are_not_ambiguous() -> None:
    """Rings of two orders at their ratio, or a lone {100} ring whose {110} lies beyond Nyquist,
    leave no sqrt 3 doubt; a lone ring whose predicted {110} and {200} are absent inside the band
    does (it may be {110} at a {100} CTF zero)."""
    from grapheneseg.lattice import read_lattice

    for pixel in (0.1, 0.3, 0.6):
        reading = read_lattice(graphene(pixel, 512 if pixel < 0.2 else 256, seed=2))
        assert reading.pixel_size == pytest.approx(pixel, rel=0.02) and not reading.ambiguous
    assert not read_lattice(graphene(0.7, 256, amplitudes=(1.0, 0.0, 0.0))).ambiguous
    lone_100 = read_lattice(graphene(0.3, 256, amplitudes=(1.0, 0.0, 0.0)))
    assert lone_100.pixel_size == pytest.approx(0.3, rel=0.02)
    assert lone_100.ambiguous and lone_100.rival == pytest.approx(0.3 / np.sqrt(3), rel=0.02)
    assert read_lattice(np.full((64, 64), 3.0)).pixel_size is None

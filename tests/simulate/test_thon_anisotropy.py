"""The Thon-ring anisotropy that fitted the simulator's astigmatism range (benchmarks/bench_astigmatism.py)."""
from __future__ import annotations

import numpy as np
import pytest

from simulate.report import thon_anisotropy

WAVELENGTH = 0.0418  # A at 80 kV


def amorphous_image(astigmatism: float, seed: int, pixel_size: float = 0.4, defocus: float = 100.0,
                    angle: float = 0.6, n: int = 256) -> np.ndarray:
    """A weak-phase image of white-noise 'amorphous carbon' under defocus and two-fold astigmatism."""
    phase = np.random.default_rng(seed).normal(size=(n, n))
    ky, kx = np.meshgrid(*(np.fft.fftfreq(n, pixel_size),) * 2, indexing="ij")
    k2, theta = kx ** 2 + ky ** 2, np.arctan2(ky, kx)
    chi = np.pi * WAVELENGTH * k2 * (defocus + astigmatism * np.cos(2 * (theta - angle)))
    return 1 + 0.05 * np.real(np.fft.ifft2(np.fft.fft2(phase) * 2 * np.sin(chi)))


def test_elliptical_rings_score_higher_than_round_ones() -> None:
    mask = np.zeros((256, 256), bool)
    mask[:, :160] = True  # the amorphous region: most of the image, with an edge
    round_, elliptical = ([thon_anisotropy(amorphous_image(a, s), mask, 0.4) for s in range(3)] for a in (0.0, 10.0))
    assert max(round_) < 0.1 and min(elliptical) > 0.15  # (it saturates once the rings shift by their width)
    # the gain of the detector does not matter
    assert thon_anisotropy(7 * amorphous_image(10.0, 0) + 3, mask, 0.4) == pytest.approx(elliptical[0], rel=1e-6)


def test_too_little_amorphous_carbon_gives_nan() -> None:
    mask = np.zeros((256, 256), bool)
    mask[:10, :10] = True
    assert np.isnan(thon_anisotropy(amorphous_image(30.0, 0), mask, 0.4))

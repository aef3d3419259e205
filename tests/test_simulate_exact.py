"""The simulator's fast paths equal the plain implementations they replace, to the bit."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from abtem.core.energy import energy2wavelength

from grapheneseg.config import load_config
from simulate.imaging import AngularGrid, ctf_kernel, draw_optics, make_ctf

CFG = load_config("simulate")


@pytest.mark.parametrize("zero", [None, "astigmatism", "cs", "focal_spread", "angular_spread"])
def test_ctf_kernel_is_abtems_ctf(zero):
    energy, cutoff = CFG.optics.energy, CFG.optics.semiangle_cutoff
    rng = np.random.default_rng(7)
    k = np.fft.fftfreq(300, 0.4)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    alpha = np.hypot(kx, ky) * energy2wavelength(energy)
    inside = alpha < 1.05 * cutoff * 1e-3
    grid = AngularGrid(alpha[inside].astype(np.float32), np.arctan2(ky, kx)[inside].astype(np.float32), cutoff)
    for _ in range(5):
        optics = draw_optics(rng, CFG.optics)
        if zero:
            optics = dataclasses.replace(optics, **{zero: 0.0})
        expected = make_ctf(optics, energy, cutoff)._evaluate_from_angular_grid(grid.alpha, grid.phi)
        got = ctf_kernel(optics, energy, grid)
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()

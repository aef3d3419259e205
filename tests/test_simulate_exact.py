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


def _relax_numpy(pos, bonds, extent, movable, length):
    """relax_bonds as plain NumPy (the form the compiled steps follow)."""
    from simulate.structures import RELAX_MOMENTUM, RELAX_RATE, RELAX_STEPS, _wrap

    sel = movable[bonds[:, 0]] | movable[bonds[:, 1]]
    local, inverse = np.unique(bonds[sel], return_inverse=True)
    i, j = inverse.reshape(-1, 2).T
    x, free = pos[local].copy(), movable[local, None]
    velocity = np.zeros_like(x)
    for _ in range(RELAX_STEPS):
        d = _wrap(x[j] - x[i], extent)
        r = np.sqrt((d * d).sum(1))
        f = ((r - length) / np.maximum(r, 1e-9))[:, None] * d
        pull = np.column_stack([np.bincount(i, f[:, k], len(x)) - np.bincount(j, f[:, k], len(x)) for k in (0, 1)])
        velocity = RELAX_MOMENTUM * velocity + RELAX_RATE * pull * free
        x += velocity
    pos = pos.copy()
    pos[local] = x
    return np.mod(pos, extent)


@pytest.mark.parametrize("seed", range(3))
def test_sheet_relaxation_and_bonds_match_the_plain_forms(seed, monkeypatch):
    """The compiled relaxation equals the NumPy steps; the bonds found from ring-centre triples equal
    those found by matching centroids in a periodic KD-tree."""

    from simulate import structures

    calls = []
    real_relax = structures.relax_bonds

    def relax(*args):
        out = real_relax(*args)
        calls.append(out.tobytes() == _relax_numpy(*args).tobytes())
        return out

    monkeypatch.setattr(structures, "relax_bonds", relax)
    monkeypatch.setattr(structures, "_periodic_images", lambda *a: None)  # force the KD-tree path
    rng = np.random.default_rng(seed)
    extent, n = 90.0, 4
    args = (extent, rng.uniform(0, extent, (n, 2)), rng.uniform(0, 60, n), rng.uniform(-2.46, 2.46, (n, 2)), 2.46)
    centres = structures.ring_centres(*args)
    kd_atoms, kd_bonds, kd_rings = structures.honeycomb(centres, extent)
    monkeypatch.undo()
    monkeypatch.setattr(structures, "relax_bonds", relax)
    atoms, bonds, rings = structures.honeycomb(centres, extent)
    assert atoms.tobytes() == kd_atoms.tobytes() and bonds.tobytes() == kd_bonds.tobytes() and rings.tobytes() == kd_rings.tobytes()
    structures.graphene_sheet(*args, 1.3)
    assert calls == [True]

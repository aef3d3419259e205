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


def _boundary_distance_numpy(xy, seeds, extent):
    from simulate.structures import _wrap

    d = _wrap(xy[..., None, :] - seeds, extent)
    dist2 = (d**2).sum(-1)
    own = np.argmin(dist2, axis=-1)
    d_own = np.take_along_axis(d, own[..., None, None], -2)
    r_own = np.take_along_axis(dist2, own[..., None], -1)
    spread = np.sqrt(((d_own - d) ** 2).sum(-1))
    dist = (dist2 - r_own) / (2 * np.maximum(spread, 1e-9))
    np.put_along_axis(dist, own[..., None], np.inf, -1)
    return dist.min(-1)


@pytest.mark.parametrize("grains", [2, 3, 6])
def test_boundary_distance_matches_the_numpy_form(grains):
    from simulate.structures import boundary_distance

    rng = np.random.default_rng(grains)
    extent = 97.3
    seeds = rng.uniform(0, extent, (grains, 2))
    for xy in (rng.uniform(-extent, 2 * extent, (4000, 2)), np.stack(np.meshgrid(*[np.linspace(0, extent, 70)] * 2, indexing="ij"), -1)):
        assert boundary_distance(xy, seeds, extent).tobytes() == _boundary_distance_numpy(xy, seeds, extent).tobytes()


@pytest.mark.parametrize("seed", range(3))
def test_nearest_distance_is_the_periodic_kdtree_query(seed):
    from scipy.spatial import cKDTree

    from simulate.labels import nearest_distance, pixel_centres

    rng = np.random.default_rng(seed)
    pixel_size, image_px, margin = rng.uniform(0.3, 0.62), 96, 20
    extent = (image_px + 2 * margin) * pixel_size
    points = np.mod(rng.uniform(-5, extent + 5, (3000, 2)), extent)
    points[:20, 0] = extent - rng.uniform(0, 0.5, 20)  # across the periodic seam
    for reach in (0.9, 1.4, 3.0):
        for xy in (pixel_centres(image_px, margin, pixel_size), pixel_centres(image_px, 0, pixel_size)):
            expected, _ = cKDTree(points, boxsize=extent).query(np.mod(xy.reshape(-1, 2), extent), distance_upper_bound=reach)
            assert nearest_distance(points, xy, extent, reach).tobytes() == expected.reshape(xy.shape[:-1]).tobytes()

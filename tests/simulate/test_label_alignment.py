"""The simulated image and its label line up: a point-symmetric amorphous-carbon blob in one
quadrant of the cell is imaged (weak-phase contrast through abTEM and the CTF, both even in
the frequencies, keep the symmetry), so the centre of the image's change and the centre of the
label must both be the blob's centre, to a small fraction of a pixel. A transposed, mirrored or
half-pixel-shifted label fails, as would an image grid offset from the label grid.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ase import Atoms
from scipy import ndimage
from scipy.spatial import cKDTree

from grapheneseg.config import load_config
from simulate.imaging import Optics, VariantImager, exit_wave
from simulate.labels import make_labels
from simulate.structures import build_structure

IMAGE_PX, MARGIN_PX, PIXEL = 64, 8, 0.4
OPTICS = Optics(defocus=-60.0, cs=0.0, astigmatism=0.0, astigmatism_angle=0.0, focal_spread=10.0,
                angular_spread=0.1, dose=1e9, mtf_c2=1.0, mtf_c3=0.5, mtf_c4=2.0, blur=0.0, gradient=0.0,
                gradient_angle=0.0, gradient_curvature=0.0, patchiness=0.0, patch_scale=20.0)


def symmetric_blob(rng: np.random.Generator, centre: np.ndarray, radius: float, z0: float,
                   thickness: float) -> np.ndarray:
    """Random carbon positions (>= 1.4 A apart) in a cylinder, in pairs c + d and c - d (same z):
    a crude amorphous blob whose projection is point-symmetric about `centre`."""
    kept: list[np.ndarray] = []
    for _ in range(3000):
        r, phi = radius * np.sqrt(rng.random()), 2 * np.pi * rng.random()
        d = np.array([r * np.cos(phi), r * np.sin(phi), 0.0])
        z = np.array([centre[0], centre[1], z0 + thickness * rng.random()])
        pair = [z + d, z - d]
        if r > 0.7 and (not kept or cKDTree(kept).query(pair)[0].min() >= 1.4):
            kept += pair
    return np.array(kept)


def weighted_centre(weights: np.ndarray) -> np.ndarray:
    i, j = np.indices(weights.shape)
    return np.array([(weights * i).sum(), (weights * j).sum()]) / weights.sum()


@pytest.fixture(scope="module")
def imaged() -> tuple[np.ndarray, np.ndarray]:
    """(image change made by the blob, label) on the 64 px grid; the blob centred on image pixel
    (16, 47): row 16 is x, column 47 is y (abTEM's [x, y] order)."""
    cfg = load_config("simulate", ["grid=tiny"])
    extent = (IMAGE_PX + 2 * MARGIN_PX) * PIXEL
    sheet = build_structure(np.random.default_rng(5), extent, cfg.structure)  # for its cell and grain data
    carbon = symmetric_blob(np.random.default_rng(6), (MARGIN_PX + np.array([16.0, 47.0])) * PIXEL, 3.0, 10.0, 6.0)
    blob = dataclasses.replace(sheet, atoms=Atoms(f"C{len(carbon)}", positions=carbon, cell=sheet.atoms.cell, pbc=True),
                               amorphous=np.ones(len(carbon), bool), holes=[])
    wave = exit_wave(blob, 0.1, 2.0, 4.0, 80e3)
    image = VariantImager(wave, extent, 80e3, IMAGE_PX, MARGIN_PX, 1.5, 45.0).noiseless(OPTICS)
    mask = make_labels(blob, IMAGE_PX, MARGIN_PX, cfg.label)[0].astype(bool)
    return ndimage.gaussian_filter((image - image[-16:, :16].mean()) ** 2, 1.0), mask


def test_blob_contrast_sits_under_its_label(imaged):
    change, mask = imaged
    assert mask.sum() > 50 and mask[:32, 32:].sum() == mask.sum()  # one blob, in the quadrant rows < 32, columns >= 32
    seen, labelled = weighted_centre(change), weighted_centre(mask.astype(float))
    assert np.abs(labelled - [16, 47]).max() < 0.05
    assert np.abs(seen - labelled).max() < 0.1, (seen, labelled)
    # the blob's contrast falls under its (dilated) label
    assert change[ndimage.binary_dilation(mask, iterations=3)].sum() > 0.9 * change.sum()

"""Is a honeycomb found in a micrograph the sheet itself, or the sheet shifted by half a lattice
vector? Under two-fold astigmatism the three {100} reflection pairs can be transferred with CTFs of
different signs, and the lattice image is then also that of the shifted sheet. Two array-to-result
checks: `reflection_balance` (from the spectrum alone: how much weaker the weakest {100} pair is)
and `ring_signs` (given atoms: whether the {100} reflections' CTF signs agree).
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage

from grapheneseg import GRAPHENE_D100 as D100
from grapheneseg.lattice import RING_TOL, lattice_spectrum, lattice_spots
from grapheneseg.spectrum import frequencies, hann, windowed_fft


def reflection_balance(image: np.ndarray, pixel_size: float) -> float | None:
    """Amplitude of the weakest of the three {100} reflection pairs of the strongest grain over
    the strongest one's (peak power over the {100} ring's median, square root), 0-1; None without
    a {100} spot.

    Where two-fold astigmatism gives those pairs CTFs of different signs, the lattice image is
    also that of the sheet shifted by half a lattice vector (README, "Atoms by a network trained
    on simulation"); such images nearly always have one weak pair, so a low balance marks an
    atom registration that may be half a bond off."""
    image = np.asarray(image, dtype=np.float32)
    spectrum = lattice_spectrum(image)
    radius, angle, strength, _ = lattice_spots(image, spectrum)
    q100 = pixel_size / D100
    on = np.abs(radius - q100) <= RING_TOL * q100 + 0.75 / min(image.shape)
    if not on.any():
        return None
    power, _, fy, fx = spectrum
    h = image.shape[0]
    ring = np.abs(np.hypot(fy, fx) - q100) < 2.0 / h
    excess = np.maximum(power - np.median(power[ring]), 0.0)  # over the ring's background (spots are few)
    theta = np.radians(angle[on][np.argmax(strength[on])] + np.array([0.0, 60.0, 120.0]))
    amplitudes = []
    for qy, qx in zip(q100 * np.sin(theta), q100 * np.cos(theta)):
        if qx < 0:  # the half plane holds the symmetric mate
            qy, qx = -qy, -qx
        row, col = int(round(qy * h)) + h // 2, int(round(qx * image.shape[1]))
        patch = excess[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2]
        amplitudes.append(np.sqrt(patch.max()) if patch.size else 0.0)
    return float(min(amplitudes) / max(amplitudes)) if max(amplitudes) > 0 else None


def ring_signs(image: np.ndarray, atoms: np.ndarray, pixel_size: float) -> str | None:
    """"uniform" or "mixed": the CTF signs at the three {100} reflection pairs of the image's
    strongest grain, each the sign of Re I(g) / V(g) with V(g) the structure factor of the known
    `atoms` ((N, 2) row, column in px; image and atoms under the same Hann window); None when the
    image shows fewer than three pairs of that grain. Mixed signs make the lattice image also that
    of the sheet shifted by half a lattice vector (`reflection_balance` flags it without the atoms;
    benchmarks/bench_atoms.py measures both)."""
    from grapheneseg.preprocessing import preprocess

    h, w = image.shape
    spectrum = windowed_fft(preprocess(image), half=False)
    fy, fx = frequencies(image.shape, half=False)
    power = scipy.ndimage.gaussian_filter(np.abs(spectrum) ** 2, 1.0, mode="wrap")
    band = np.abs(np.hypot(fy, fx) / pixel_size * D100 - 1.0) < 0.1
    rows, cols = np.nonzero(band & (power == scipy.ndimage.maximum_filter(power, size=5, mode="wrap")))
    if len(rows) < 3 or len(atoms) == 0:
        return None
    spots = np.stack([fy[rows, cols], fx[rows, cols]], axis=1)
    first = spots[np.argmax(power[rows, cols])]
    window = hann((h, w))
    weights = window[np.clip(np.round(atoms[:, 0]).astype(int), 0, h - 1),
                     np.clip(np.round(atoms[:, 1]).astype(int), 0, w - 1)]
    signs = []
    for turn in np.radians([0.0, 60.0, 120.0]):
        target = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]) @ first
        miss = np.minimum(np.linalg.norm(spots - target, axis=1), np.linalg.norm(spots + target, axis=1))
        j = int(np.argmin(miss))
        if miss[j] > 0.1 * np.linalg.norm(first):
            return None
        structure = (weights * np.exp(-2j * np.pi * atoms @ spots[j])).sum()
        signs.append(np.sign((spectrum[rows[j], cols[j]] / structure).real))
    return "uniform" if len(set(signs)) == 1 else "mixed"

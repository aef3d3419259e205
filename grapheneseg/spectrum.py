"""The Hann-windowed Fourier spectrum that every spectral measure of the project reads.

The lattice reader (grapheneseg.lattice), the out-of-distribution noise level
(evaluate.apply.ood), the features of `evaluate suggest` and the simulated-vs-real spectra of
`simulate compare` all start from |FFT(image x Hann window)|^2 on one of two grids: the rfft2 half
plane (`half=True`: rows qy in FFT order, columns qx >= 0) or the full fft2 plane. Frequencies are
in cycles per pixel (1/px), in FFT order; nothing here is shifted.
"""
from __future__ import annotations

import numpy as np
import scipy.fft


def hann(shape: tuple[int, int]) -> np.ndarray:
    """2-D Hann window (float32) of `shape`: the taper that keeps the image edges out of the spectrum."""
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)


def windowed_fft(image: np.ndarray, half: bool = True) -> np.ndarray:
    """FFT of `image` x `hann`: the rfft2 half plane (`half`) or the full fft2 plane."""
    fft = scipy.fft.rfft2 if half else scipy.fft.fft2
    return fft(image * hann(image.shape), workers=-1)


def power_spectrum(image: np.ndarray, half: bool = True, normalise: bool = False) -> np.ndarray:
    """|`windowed_fft`|^2; `normalise`: divided by the window's energy sum(w^2), so that white
    noise of std s has mean power s^2 at every frequency."""
    power = np.abs(windowed_fft(image, half)) ** 2
    if normalise:
        power = power / float(np.sum(hann(image.shape).astype(np.float64) ** 2))
    return power


def frequencies(shape: tuple[int, int], half: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(qy, qx) in 1/px on the grid of `windowed_fft` for an image of `shape`, broadcast to 2-D."""
    qx = np.fft.rfftfreq(shape[1]) if half else np.fft.fftfreq(shape[1])
    return tuple(np.meshgrid(np.fft.fftfreq(shape[0]), qx, indexing="ij"))


def band_means(power: np.ndarray, bands: np.ndarray, n_bands: int) -> np.ndarray:
    """Mean of `power` over the pixels of each integer band 0 .. n_bands - 1 of `bands` (the same
    shape; 0 for an empty band): radial profiles and band powers."""
    total = np.bincount(bands.ravel(), power.ravel(), n_bands)[:n_bands]
    return total / np.maximum(np.bincount(bands.ravel(), None, n_bands)[:n_bands], 1)

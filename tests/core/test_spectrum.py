"""The shared windowed spectrum (grapheneseg.spectrum) and bootstrap (grapheneseg.stats)."""
from __future__ import annotations

import numpy as np

from grapheneseg.spectrum import band_means, frequencies, power_spectrum
from grapheneseg.stats import bootstrap_indices, interval, paired_bootstrap


def test_normalised_power_of_white_noise_is_its_variance():
    noise = np.random.default_rng(0).normal(0, 0.3, (128, 96)).astype(np.float32)
    for half in (True, False):
        power = power_spectrum(noise, half=half, normalise=True)
        qy, qx = frequencies(noise.shape, half=half)
        assert power.shape == qy.shape == qx.shape
        assert abs(np.median(power[np.hypot(qy, qx) > 0.25]) / np.log(2) - 0.09) < 0.01


def test_a_plane_wave_peaks_at_its_frequency():
    y, x = np.mgrid[:64, :64]
    wave = np.cos(2 * np.pi * (5 * y + 3 * x) / 64)
    qy, qx = frequencies(wave.shape)
    peak = np.unravel_index(np.argmax(power_spectrum(wave)), qy.shape)
    assert (qy[peak] * 64, qx[peak] * 64) in ((5.0, 3.0), (-5.0, 3.0)) and abs(qy[peak] * 64) == 5


def test_band_means_average_each_band_and_leave_empty_ones_at_zero():
    bands = np.array([[0, 0, 2], [2, 2, 0]])
    values = np.array([[1.0, 3.0, 4.0], [6.0, 8.0, 5.0]])
    assert np.allclose(band_means(values, bands, 4), [3.0, 0.0, 6.0, 0.0])


def test_paired_bootstrap_resamples_images_as_the_one_index_scheme():
    a = {f"im{i}": 0.8 + 0.01 * i for i in range(20)}
    b = {n: v - 0.05 for n, v in a.items()}
    result = paired_bootstrap(a, b, n_boot=500, seed=3)
    assert abs(result["mean"] - 0.05) < 1e-12 and result["excludes_zero"]
    idx = bootstrap_indices(20, 500, seed=3)
    assert idx.shape == (500, 20) and np.array_equal(idx, bootstrap_indices(20, 500, seed=3))
    assert np.allclose(interval(np.array([np.nan, *range(101)])), (2.5, 97.5))

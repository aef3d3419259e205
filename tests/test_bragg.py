"""The Bragg filter finds lattice spots, removes the lattice and segments what is left."""
from pathlib import Path

import numpy as np
import pytest

from evaluate.benchmark import bragg
from grapheneseg.micrographs import load_labelled
from grapheneseg.preprocessing import preprocess
from grapheneseg.splits import kfold_splits
from tests.conftest import synthetic_micrograph


def test_peaks_are_the_lattice_spots_in_symmetric_pairs() -> None:
    image, _ = synthetic_micrograph(np.random.default_rng(3), size=128)
    peaks = bragg.find_peaks(preprocess(image), bragg.BraggParams(g_thresh=3.0, max_peaks=6))
    assert len(peaks) == 6
    np.testing.assert_allclose(peaks[:3], -peaks[3:])
    np.testing.assert_allclose(np.hypot(*peaks.T), 0.2, atol=1.5 / 128)  # the lattice frequency


def test_peak_count_is_capped_and_thresholded() -> None:
    image, _ = synthetic_micrograph(np.random.default_rng(3), size=128)
    pre = preprocess(image)
    assert len(bragg.find_peaks(pre, bragg.BraggParams(g_thresh=0.5, max_peaks=24))) == 24
    assert len(bragg.find_peaks(pre, bragg.BraggParams(g_thresh=1e9))) == 0


def test_mask_is_symmetric_and_clipped() -> None:
    peaks = np.array([[0.1, 0.2], [0.1, 0.2], [-0.1, -0.2], [-0.1, -0.2]])  # duplicates overlap
    m = bragg.bragg_mask((64, 64), peaks, sigma=0.02)
    assert m.shape == (64, 33) and m.max() == pytest.approx(1.0) and m.min() >= 0
    assert m[round(0.1 * 64), round(0.2 * 64)] == pytest.approx(1.0)


def test_residual_is_low_on_lattice_and_high_on_contamination() -> None:
    image, mask = synthetic_micrograph(np.random.default_rng(5), size=96)
    res = bragg.residual_map(image, bragg.BraggParams(sigma=0.01, g_thresh=3.0))
    assert res.shape == image.shape
    assert res[mask].mean() > 2 * res[~mask].mean()


def test_fit_and_cross_validation_on_synthetic_set(real_dir: Path) -> None:
    data = load_labelled(real_dir)
    base = bragg.BraggParams(pad=8)
    splits = kfold_splits(data.names, folds=3)
    results = bragg.cross_validate(data.images, data.masks, data.names, splits, base,
                                   sigmas=[0.005, 0.01], g_threshs=[2.0, 4.0])
    assert len(results) == 3
    for r in results:
        assert r["params"]["sigma"] in (0.005, 0.01) and r["params"]["m_thresh"] > 0
        assert r["pooled"]["jaccard"] > 0.5
        assert set(r["per_image"]) == set(splits[r["fold"]]["test"])


def test_best_threshold_is_exact_on_separable_histograms() -> None:
    hist = np.zeros((2, bragg.HIST_BINS), np.int64)
    hist[0, :100] = 10  # negatives below 0.1
    hist[1, 200:300] = 5  # positives between 0.2 and 0.3
    thresh, jac = bragg.best_threshold(hist)
    assert jac == 1.0 and 0.1 <= thresh <= 0.2

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


def test_bragg_cv_folds_hold_whole_series_and_say_so(tmp_path: Path) -> None:
    """`evaluate bragg` makes its splits.json as every arm does: whole focal series per fold by
    default (recorded in the file and in bragg_cv.json); a folder made so refuses image-wise folds."""
    import json

    from grapheneseg.config import load_config, override
    from grapheneseg.splits import straddling
    from tests.conftest import write_labelled_folder

    real = write_labelled_folder(tmp_path / "real", n=7)
    names = ["A_layer_0001", "A_layer_0002", "A_layer_0003", "B_layer_0001", "B_layer_0002", "C", "D_layer_0001"]
    for i, name in enumerate(names):
        (real / f"img{i:02d}.png").rename(real / f"{name}.png")
        (real / f"img{i:02d}_LABEL.png").rename(real / f"{name}_LABEL.png")
    small = [override("data.real_dir", real), "cv.folds=3", "cv.repeats=2", "bragg.pad=8",
             "bragg.fit.sigma_grid=[0.005]", "bragg.fit.g_thresh_grid=[2.0]"]
    summary = bragg.run_bragg_cv(load_config("evaluate", small), tmp_path / "out", progress=False)
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())
    assert summary["grouping"] == "series" and len(splits) == 6 and straddling(splits) == []
    with pytest.raises(ValueError, match="image-wise"):
        bragg.run_bragg_cv(load_config("evaluate", [*small, "cv.grouping=image"]), tmp_path / "out", progress=False)

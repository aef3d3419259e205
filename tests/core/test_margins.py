"""The label margin (grapheneseg.margins, run by benchmarks/bench_margin.py): mask shifts by a
distance threshold and the per-fold choice."""
from __future__ import annotations

import numpy as np
import scipy.ndimage

from grapheneseg import margins


def _disk(radius: float, size: int = 64) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - size // 2
    return np.hypot(x, y) <= radius


def test_shift_grows_and_shrinks_by_the_distance():
    mask = _disk(10)
    grown, shrunk = margins.shift_mask(mask, 3), margins.shift_mask(mask, -3)
    assert (grown >= mask).all() and (shrunk <= mask).all()
    assert np.array_equal(grown, scipy.ndimage.distance_transform_edt(~mask) <= 3)
    # a disk of radius 10 grown by 3 is close to a disk of 13, shrunk by 3 close to one of 7
    assert abs(grown.sum() - _disk(13).sum()) < 0.05 * _disk(13).sum()
    assert abs(shrunk.sum() - _disk(7).sum()) < 0.1 * _disk(7).sum()
    assert np.array_equal(margins.shift_mask(mask, 0), mask)
    assert not margins.shift_mask(np.zeros((8, 8), bool), 2).any()


def test_cross_validation_finds_a_planted_overreach():
    """Predictions that reach 2 px too far: every fold must choose -2 and then score (near) 1."""
    rng = np.random.default_rng(0)
    truths = [_disk(r) for r in rng.uniform(6, 14, 10)]
    preds = [margins.shift_mask(t, 2) for t in truths]
    shifts = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0]
    counts = margins.shift_counts(preds, truths, shifts)
    names = [f"im{i}" for i in range(10)]
    cv = margins.cross_validate(counts, names, shifts, folds=5, seed=12345)
    assert [r["shift"] for r in cv["folds"]] == [-2.0] * 5
    assert cv["cv_pooled"] > 0.97 > cv["zero_pooled"]
    assert cv["per_image_cv_minus_zero"]["excludes_zero"]

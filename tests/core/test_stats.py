"""Paired bootstrap of pooled Jaccard: resampling whole focal series instead of images."""
import numpy as np
import pytest

from grapheneseg.splits import series_of
from grapheneseg.stats import paired_bootstrap, paired_pooled_bootstrap


def _counts(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tp = rng.integers(500, 2000, n)
    a = np.stack([tp, rng.integers(0, 400, n), rng.integers(0, 400, n), np.full(n, 60000)], axis=1)
    b = a + np.stack([-rng.integers(0, 200, n), rng.integers(0, 100, n), rng.integers(0, 200, n), np.zeros(n, int)], axis=1)
    return a, b


def test_grouped_bootstrap_counts_near_copies_once():
    a, b = _counts(0, 20)
    alone = paired_pooled_bootstrap(a, b, 500, 3)
    # every micrograph three times over (three frames of one focal series, the same picture)
    a3, b3 = np.repeat(a, 3, axis=0), np.repeat(b, 3, axis=0)
    series = np.repeat([f"s{i:02d}" for i in range(20)], 3)
    grouped = paired_pooled_bootstrap(a3, b3, 500, 3, groups=series)
    assert grouped["n_groups"] == 20 and grouped["n_images"] == 60
    assert grouped["difference"] == pytest.approx(alone["difference"])
    assert (grouped["low"], grouped["high"]) == pytest.approx((alone["low"], alone["high"]))
    # resampled as independent images, the copies make the interval too narrow
    naive = paired_pooled_bootstrap(a3, b3, 500, 3)
    assert naive["high"] - naive["low"] < 0.75 * (grouped["high"] - grouped["low"])


def test_grouped_bootstrap_needs_one_label_per_image():
    a, b = _counts(1, 5)
    with pytest.raises(ValueError, match="4 group labels for 5 images"):
        paired_pooled_bootstrap(a, b, 10, groups=["x"] * 4)


def test_per_image_mean_resamples_series_when_asked():
    rng = np.random.default_rng(2)
    base = {f"s{i:02d}_layer_{f:04d}": float(rng.normal(0.02, 0.05)) for i in range(15) for f in (0,)}
    # each micrograph three frames of its series, each frame the same difference
    a = {name.replace("_0000", f"_{f:04d}"): v for name, v in base.items() for f in range(3)}
    zero = dict.fromkeys(a, 0.0)
    alone = paired_bootstrap(base, dict.fromkeys(base, 0.0), 500, 1)
    grouped = paired_bootstrap(a, zero, 500, 1, group_of=series_of)
    naive = paired_bootstrap(a, zero, 500, 1)
    assert grouped["n_groups"] == 15 and grouped["resampled"] == "series"
    assert grouped["mean"] == pytest.approx(alone["mean"])
    assert (grouped["low"], grouped["high"]) == pytest.approx((alone["low"], alone["high"]))
    assert naive["high"] - naive["low"] < 0.75 * (grouped["high"] - grouped["low"])

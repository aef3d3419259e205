"""Confusion counts, the six metrics, pooled vs per-image reductions and their edge cases."""
import numpy as np
import pytest

from grapheneseg.metrics import METRICS, confusion, per_image, pooled, scores


def test_counts_and_scores_by_hand() -> None:
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    pred = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    counts = confusion(pred, truth)
    assert counts.tolist() == [2, 1, 1, 4]
    s = scores(counts)
    assert s["accuracy"] == pytest.approx(6 / 8)
    assert s["jaccard"] == pytest.approx(2 / 4)
    assert s["f1"] == pytest.approx(4 / 6)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_pooled_differs_from_per_image_mean() -> None:
    big = confusion(np.ones(100, bool), np.ones(100, bool))  # perfect, 100 positives
    small = confusion(np.zeros(4, bool), np.ones(4, bool))  # all 4 positives missed
    assert pooled([big, small])["jaccard"] == pytest.approx(100 / 104)
    assert per_image([big, small])["jaccard"]["mean"] == pytest.approx(0.5)
    assert per_image([big, small])["jaccard"]["std"] == pytest.approx(0.5)


def test_no_positives_anywhere_is_perfect() -> None:
    s = scores(confusion(np.zeros(10, bool), np.zeros(10, bool)))
    assert all(s[m] == 1.0 for m in METRICS)


def test_false_alarm_on_clean_image() -> None:
    pred = np.zeros(10, bool)
    pred[0] = True
    s = scores(confusion(pred, np.zeros(10, bool)))
    assert s["jaccard"] == 0.0 and s["f1"] == 0.0 and s["precision"] == 0.0
    assert s["recall"] == 0.0  # nothing to find, but something false was found
    assert s["balanced_accuracy"] == pytest.approx(0.9)  # only the true-negative rate is defined


def test_missed_contamination_has_zero_precision_and_recall() -> None:
    s = scores(confusion(np.zeros(10, bool), np.ones(10, bool)))
    assert s["precision"] == 0.0 and s["recall"] == 0.0 and s["jaccard"] == 0.0
    assert s["balanced_accuracy"] == 0.0


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        confusion(np.zeros(3, bool), np.zeros(4, bool))

"""Segmentation metrics for the contamination class, in two steps (as segmentation_models_pytorch).

1. `confusion(pred, truth)` counts [tp, fp, fn, tn] for one image.
2. `scores(counts)` turns counts into the six metrics of the paper's Table 1.

Reductions are explicit: `pooled` sums counts over all pixels of a test set first (the paper's
way, "micro"); `per_image` scores each image and reports mean and standard deviation.

Edge cases (a ratio whose denominator is zero): the score is 1.0 when nothing was to be found and
nothing was found, else 0.0. So an image with no contamination in truth or prediction has Jaccard,
F1, precision and recall 1.0; an empty prediction on contaminated truth has precision 0.0;
balanced accuracy averages only the rates that are defined.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

METRICS = ("accuracy", "balanced_accuracy", "jaccard", "f1", "precision", "recall")


def confusion(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[tp, fp, fn, tn] (int64) of boolean `pred` against boolean `truth` (same shape)."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return np.array([tp, fp, fn, pred.size - tp - fp - fn], dtype=np.int64)


def _ratio(num: float, den: float, empty: bool) -> float:
    """num/den, or 1.0/0.0 when den == 0 depending on whether that is a success (`empty`)."""
    return float(num / den) if den > 0 else (1.0 if empty else 0.0)


def scores(counts: np.ndarray) -> dict[str, float]:
    """The six Table-1 metrics from [tp, fp, fn, tn] counts."""
    tp, fp, fn, tn = (float(c) for c in counts)
    no_truth, no_pred = tp + fn == 0, tp + fp == 0
    recall = _ratio(tp, tp + fn, empty=fp == 0)
    precision = _ratio(tp, tp + fp, empty=fn == 0)
    rates = [r for r, den in ((tp / max(tp + fn, 1), tp + fn), (tn / max(tn + fp, 1), tn + fp)) if den]
    return {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, empty=True),
        "balanced_accuracy": float(np.mean(rates)) if rates else 1.0,
        "jaccard": _ratio(tp, tp + fp + fn, empty=no_truth and no_pred),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, empty=no_truth and no_pred),
        "precision": precision,
        "recall": recall,
    }


def pooled(counts: Iterable[np.ndarray]) -> dict[str, float]:
    """Metrics of the summed counts (all pixels of a test set together)."""
    total = np.sum(np.stack(list(counts)), axis=0)
    return scores(total)


def per_image(counts: Iterable[np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over images of each metric."""
    table = [scores(c) for c in counts]
    return {
        m: {"mean": float(np.mean([t[m] for t in table])), "std": float(np.std([t[m] for t in table]))}
        for m in METRICS
    }


def mean_and_spread(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of pooled metrics over folds/repeats."""
    return {
        m: {"mean": float(np.mean([r[m] for r in runs])), "std": float(np.std([r[m] for r in runs]))}
        for m in METRICS
    }

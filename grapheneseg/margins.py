"""The label margin: predicted masks grown or shrunk by d px, and the shift that agrees best with
hand labels chosen by cross-validation (on each fold's training images, scored on its test images;
benchmarks/bench_margin.py runs it on the 105). Pixel distances are Euclidean (a distance
transform), so |d| < 1 changes nothing and -2.5 removes the pixels within 2.24 px of the background."""
from __future__ import annotations

import numpy as np
import scipy.ndimage

from grapheneseg.metrics import confusion, scores
from grapheneseg.splits import SERIES_PATTERN, kfold_splits
from grapheneseg.stats import paired_bootstrap


def shift_mask(mask: np.ndarray, d: float) -> np.ndarray:
    """`mask` grown (d > 0) or shrunk (d < 0) by d px: a threshold on the Euclidean distance."""
    mask = np.asarray(mask, dtype=bool)
    if d == 0 or not mask.any() or mask.all():
        return mask.copy()
    if d > 0:
        return scipy.ndimage.distance_transform_edt(~mask) <= d
    return scipy.ndimage.distance_transform_edt(mask) > -d


def shift_counts(masks: list[np.ndarray], truths: list[np.ndarray], shifts: list[float]) -> np.ndarray:
    """Confusion counts (images, shifts, 4) of every predicted mask shifted by every d."""
    return np.array([[confusion(shift_mask(m, d), t) for d in shifts] for m, t in zip(masks, truths)])


def jaccard(counts: np.ndarray) -> float:
    """Pooled Jaccard of counts (..., 4) summed over every leading axis."""
    return scores(counts.reshape(-1, 4).sum(axis=0))["jaccard"]


def per_image_jaccard(counts: np.ndarray, names: list[str]) -> dict[str, float]:
    """{name: Jaccard} of per-image counts (images, 4)."""
    return {n: scores(c)["jaccard"] for n, c in zip(names, counts)}


def cross_validate(counts: np.ndarray, names: list[str], shifts: list[float], folds: int, seed: int,
                   grouping: str = "series", pattern: str = SERIES_PATTERN) -> dict:
    """Choose the shift on each fold's training images, score it on its test images (folds of
    whole focal series unless `grouping` is "image"; grapheneseg.splits)."""
    index = {n: i for i, n in enumerate(names)}
    zero = shifts.index(0.0)
    rows, chosen_counts, zero_counts, chosen_per_image = [], [], [], {}
    for split in kfold_splits(names, folds, 1, seed, grouping, pattern):
        train = [index[n] for n in split["train"]]
        test = [index[n] for n in split["test"]]
        curve = [jaccard(counts[train, k]) for k in range(len(shifts))]
        best = max(range(len(shifts)), key=lambda k: (curve[k], -abs(shifts[k])))  # ties: the smaller |d|
        rows.append({"fold": split["fold"], "shift": shifts[best], "train_jaccard": curve[best],
                     "test_jaccard": jaccard(counts[test, best]), "test_jaccard_zero": jaccard(counts[test, zero])})
        chosen_counts.append(counts[test, best])
        zero_counts.append(counts[test, zero])
        chosen_per_image.update(per_image_jaccard(counts[test, best], [names[i] for i in test]))
    zero_per_image = per_image_jaccard(counts[:, zero], names)
    return {
        "grouping": grouping,
        "folds": rows,
        "cv_pooled": jaccard(np.concatenate(chosen_counts)),
        "zero_pooled": jaccard(np.concatenate(zero_counts)),
        "cv_fold_mean": float(np.mean([r["test_jaccard"] for r in rows])),
        "zero_fold_mean": float(np.mean([r["test_jaccard_zero"] for r in rows])),
        "per_image_cv_minus_zero": paired_bootstrap(chosen_per_image, zero_per_image),
    }

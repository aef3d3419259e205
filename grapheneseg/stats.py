"""Bootstrap intervals over images: the one resampling scheme behind every interval the project
reports (paired differences of two arms, correlations of a score with the error, ranges
fitted to real micrographs). Images are the unit resampled, with replacement, seeded; or whole
focal series, where frames of one series would otherwise count as independent images."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) indices of `n_boot` resamples with replacement of `n` items (seeded)."""
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap `values` (NaN resamples left out)."""
    low, high = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def paired_bootstrap(a: dict[str, float], b: dict[str, float], n_boot: int = 4000, seed: int = 0,
                     group_of: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Mean over images of the per-image difference a - b and its paired bootstrap 95% interval
    (images resampled with replacement, both arms together). Keys "NAME@repeatR" of repeated CV
    are averaged per image first, so the unit resampled is the micrograph. With `group_of` (a
    name's focal series, e.g. grapheneseg.splits.series_of), whole series are resampled instead
    and the mean stays one over images: near-copies do not count as independent evidence."""
    def per_image(values: dict[str, float]) -> dict[str, float]:
        groups: dict[str, list[float]] = {}
        for key, value in values.items():
            groups.setdefault(key.split("@")[0], []).append(value)
        return {name: float(np.mean(v)) for name, v in groups.items()}

    a, b = per_image(a), per_image(b)
    names = sorted(set(a) & set(b))
    if set(a) != set(b) or not names:
        raise ValueError(f"paired bootstrap needs the same images in both arms ({len(a)} vs {len(b)}, "
                         f"{len(names)} shared)")
    diff = np.array([a[n] - b[n] for n in names])
    labels = np.unique([group_of(n) for n in names] if group_of else names, return_inverse=True)[1]
    sums, counts = np.bincount(labels, diff), np.bincount(labels)
    idx = bootstrap_indices(len(sums), n_boot, seed)
    low, high = interval(sums[idx].sum(axis=1) / counts[idx].sum(axis=1))
    return {"mean": float(diff.mean()), "low": low, "high": high, "n_images": len(names),
            "n_groups": len(sums), "resampled": "series" if group_of else "images",
            "excludes_zero": bool(low > 0 or high < 0)}


def _pooled_jaccard(counts: np.ndarray) -> np.ndarray:
    """Jaccard of [..., 4] counts [tp, fp, fn, tn] (1.0 where nothing was to be found and nothing
    was found, as grapheneseg.metrics.scores)."""
    tp, den = counts[..., 0], counts[..., 0] + counts[..., 1] + counts[..., 2]
    return np.where(den > 0, tp / np.maximum(den, 1), 1.0)


def paired_pooled_bootstrap(a: Any, b: Any, n_boot: int = 4000, seed: int = 0, level: float = 0.95,
                            groups: Sequence[str] | None = None) -> dict[str, Any]:
    """Pooled Jaccard of per-image counts `a` ([[tp, fp, fn, tn], ...]) minus that of `b` (the same
    images in the same order), and its paired bootstrap interval at `level`: images resampled
    with replacement, both arms together, counts pooled per resample (the statistic the fine-
    tuning guard chooses by, so one large image weighs as its pixels do). With `groups` (one label
    per image, e.g. its focal series), whole groups are resampled instead: frames of one series are
    near-copies, and counting them as independent images makes the interval too narrow."""
    a, b = np.asarray(a, dtype=float).reshape(-1, 4), np.asarray(b, dtype=float).reshape(-1, 4)
    if a.shape != b.shape or not len(a):
        raise ValueError(f"paired bootstrap needs per-image counts of the same images in both arms "
                         f"({len(a)} vs {len(b)})")
    units_a, units_b = a, b
    if groups is not None:
        if len(groups) != len(a):
            raise ValueError(f"paired bootstrap: {len(groups)} group labels for {len(a)} images")
        labels, index = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        units_a, units_b = np.zeros((len(labels), 4)), np.zeros((len(labels), 4))
        np.add.at(units_a, index, a)
        np.add.at(units_b, index, b)
    idx = bootstrap_indices(len(units_a), int(n_boot), seed)
    low, high = interval(_pooled_jaccard(units_a[idx].sum(axis=1)) - _pooled_jaccard(units_b[idx].sum(axis=1)), level)
    return {"difference": float(_pooled_jaccard(a.sum(axis=0)) - _pooled_jaccard(b.sum(axis=0))),
            "low": low, "high": high, "level": float(level), "n_images": len(a), "n_boot": int(n_boot),
            "n_groups": len(units_a), "excludes_zero": bool(low > 0 or high < 0)}

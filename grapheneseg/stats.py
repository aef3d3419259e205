"""Bootstrap intervals over images: the one resampling scheme behind every interval the project
reports (paired differences of two arms, correlations of a score with the error, ranges
fitted to real micrographs). Images are the unit resampled, with replacement, seeded."""
from __future__ import annotations

from typing import Any

import numpy as np


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) indices of `n_boot` resamples with replacement of `n` items (seeded)."""
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap `values` (NaN resamples left out)."""
    low, high = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def paired_bootstrap(a: dict[str, float], b: dict[str, float], n_boot: int = 4000, seed: int = 0) -> dict[str, Any]:
    """Mean over images of the per-image difference a - b and its paired bootstrap 95% interval
    (images resampled with replacement, both arms together). Keys "NAME@repeatR" of repeated CV
    are averaged per image first, so the unit resampled is the micrograph."""
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
    low, high = interval(diff[bootstrap_indices(len(diff), n_boot, seed)].mean(axis=1))
    return {"mean": float(diff.mean()), "low": low, "high": high, "n_images": len(names),
            "excludes_zero": bool(low > 0 or high < 0)}

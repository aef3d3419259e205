"""Per-pixel uncertainty of the contamination probability, and its per-image summary.

Each ensemble member (one checkpoint, or every fold of a CV run folder) sees the image under each
of the 8 dihedral symmetries of the square (train.models.runtime.DIHEDRAL, via evaluate.apply.predictor), and each prediction is
mapped back: members x 8 samples per pixel. Their mean is the probability (the same as
`predict --tta`); their standard deviation is the uncertainty (at most 0.5 for values in [0, 1]).
With one checkpoint the std measures test-time-augmentation disagreement only; with a fold
ensemble, also the disagreement of models trained on different images.

Two per-image scores summarise the maps. The Jaccard disagreement (`jaccard_disagreement`; the
`uncertainty` column of `predict`) is the mean over the samples (members x symmetries) of
1 - Jaccard between the sample's mask and the mask of their mean, the prediction given. It was
defined before it was measured: the error to predict is 1 - Jaccard of that prediction against
the truth; if the truth lay among the samples like one more of them, the samples' Jaccard
distance to the prediction would estimate it, in the same units, normalised by the predicted
area as the error is, and with the same rule for empty masks (a clean image whose samples mark
nothing scores 0; one where some mark a speck scores high, as its error would be). The band std
(`image_uncertainty`: the mean std over the pixels with BAND[0] < mean p < BAND[1]) is what
`suggest` ranks by. On the 105 (benchmarks/bench_uncertainty.py, README) the disagreement ranks
the error with Spearman 0.60-0.84, the band std with 0.26-0.49 (the same five set-ups).

How well these scores rank the error under cross-validation is measured by
evaluate.benchmark.uncertainty_study.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

BAND = (0.1, 0.9)  # mean probabilities counted as hesitant by the per-image score
MAX_STD = 0.5  # the largest std of values in [0, 1]: every map shares this colour scale
CMAP = "magma"


def probability_and_std(samples: Iterable[np.ndarray], shape: tuple[int, int], threshold: float
                        ) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, std, disagreement) over the probability `samples` (members x symmetries, each of
    `shape`, see module doc; evaluate.apply.predictor makes them): float32 maps and the
    `jaccard_disagreement` of the samples' masks at `threshold`. Accumulated as sums (two float64
    maps) and bit-packed masks, not members x 8 float maps: a 2048 px image stays small."""
    total = np.zeros(shape, np.float64)
    squares = np.zeros(shape, np.float64)
    packed = []
    for p in samples:
        total += p
        squares += np.square(p, dtype=np.float64)
        packed.append(np.packbits(p > threshold))
    mean = total / len(packed)
    consensus = mean > threshold
    size = int(np.prod(shape))
    disagreement = float(np.mean([jaccard_disagreement(
        np.unpackbits(m, count=size).reshape(1, *shape).astype(bool), consensus) for m in packed]))
    std = np.sqrt(np.maximum(squares / len(packed) - mean**2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32), disagreement


def image_uncertainty(std: np.ndarray, probability: np.ndarray) -> float:
    """The per-image score: mean std over pixels with BAND[0] < probability < BAND[1], 0 when none
    (see module doc)."""
    band = (probability > BAND[0]) & (probability < BAND[1])
    return float(std[band].mean()) if band.any() else 0.0


def uncertainty_rgb(image: np.ndarray, std: np.ndarray) -> np.ndarray:
    """RGB float in [0, 1]: the grey micrograph blended with the std in `CMAP` (alpha = std / 0.5)."""
    lo, hi = np.percentile(image, [1, 99])
    grey = np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1)[..., None].repeat(3, axis=2)
    from matplotlib import colormaps

    colour = colormaps[CMAP](np.clip(std / MAX_STD, 0, 1))[..., :3]
    alpha = np.clip(std / MAX_STD * 2, 0, 1)[..., None]  # half the maximum std is fully coloured
    return np.clip((1 - alpha) * grey + alpha * colour, 0.0, 1.0)


def plot_uncertainty(seg: Any, path: Path) -> Path:
    """<stem>_uncertainty.png: the std map in `CMAP` on the fixed scale 0-0.5, with a colorbar,
    beside the micrograph with the uncertainty overlaid."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.4, 4))
    axes = fig.subplots(1, 2)
    axes[0].imshow(uncertainty_rgb(seg.micrograph.image, seg.uncertainty), interpolation="lanczos")
    axes[0].set_title(seg.micrograph.path.name, fontsize=8)
    shown = axes[1].imshow(seg.uncertainty, cmap=CMAP, vmin=0, vmax=MAX_STD, interpolation="nearest")
    axes[1].set_title(f"std of P(contamination); Jaccard disagreement {seg.disagreement:.3f}, "
                      f"band std {image_uncertainty(seg.uncertainty, seg.probability):.3f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04, label="std over members x symmetries")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def jaccard_disagreement(masks: np.ndarray, consensus: np.ndarray) -> float:
    """Mean over samples of 1 - Jaccard(sample mask, consensus mask), (S, H, W) and (H, W) booleans;
    two empty masks agree (Jaccard 1), as in grapheneseg.metrics. The members' scatter around the
    prediction, measured in the units of the error it stands in for (see module doc)."""
    inter = (masks & consensus).sum(axis=(1, 2))
    union = (masks | consensus).sum(axis=(1, 2))
    return float(np.mean(np.where(union > 0, 1.0 - inter / np.maximum(union, 1), 0.0)))

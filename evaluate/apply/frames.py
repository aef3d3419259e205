"""Stacks and focal series: the frames of one file, registered to its first frame.

A microscope often records a series (a focal series, a time series) in one file; the public
labelled micrographs are frames of focal series themselves. The frames drift by a few pixels, so
anything combined across frames is first registered to the first frame by phase correlation
(skimage.registration.phase_cross_correlation on the preprocessed frames, sub-pixel):

- `registered_mean`: one micrograph, the mean of the registered frames (more dose: a cleaner
  image where the frames share a defocus; across a focal series the mean mixes contrasts);
- `consensus`: the mean of the frames' registered probability maps, its mask, and how well each
  frame's mask agrees with it (mean Jaccard); below `min_agreement` a notice says the frames
  disagree (a frame hit by a burst of dose, a drifted field of view, a model unsure of the place).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import scipy.ndimage

from grapheneseg.formats import Micrograph
from grapheneseg.metrics import confusion, scores
from grapheneseg.preprocessing import preprocess

from .segment import Notice, Segmentation

MIN_AGREEMENT = 0.8  # mean Jaccard of the frames' masks with their consensus below which they "disagree"


def drift(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """(dy, dx) px that, applied to `moving` (scipy.ndimage.shift), lays it on `reference`."""
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(preprocess(reference), preprocess(moving), upsample_factor=10)
    return np.asarray(shift, dtype=float)


def registered(array: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """`array` moved by `shift` (edges filled with their nearest values)."""
    if not np.any(shift):
        return array
    return scipy.ndimage.shift(array, shift, order=1, mode="nearest")


def registered_mean(frames: Sequence[Micrograph]) -> Micrograph:
    """The mean of `frames` (one file's), each registered to the first; on the first frame's grid."""
    first = frames[0]
    total = first.image.astype(np.float64)
    for frame in frames[1:]:
        total += registered(frame.image, drift(first.image, frame.image))
    return replace(first, image=(total / len(frames)).astype(np.float32), frame=None, reading="mean")


def consensus(segmentations: Sequence[Segmentation], mask_of: Callable[[np.ndarray], np.ndarray],
              min_agreement: float = MIN_AGREEMENT) -> Segmentation:
    """The series' answer on the first frame's grid: the mean of the frames' registered
    probabilities and its mask (`mask_of`, the Predictor's); `frame_agreement` is the mean Jaccard
    of each frame's registered mask with it, with a notice below `min_agreement`."""
    first = segmentations[0]
    shifts = [np.zeros(2)] + [drift(first.micrograph.image, s.micrograph.image) for s in segmentations[1:]]
    probabilities = [registered(s.probability, shift) for s, shift in zip(segmentations, shifts)]
    probability = np.mean(probabilities, axis=0).astype(np.float32)
    mask = mask_of(probability)
    agreement = float(np.mean([scores(confusion(mask_of(p), mask))["jaccard"] for p in probabilities]))
    name = str(first.micrograph.path)
    notices = []
    if agreement < min_agreement:
        notices.append(Notice("frames", f"{name}: its {len(segmentations)} frames disagree (mean Jaccard "
                                        f"{agreement:.2f} of each frame's mask with their consensus, below "
                                        f"{min_agreement}): look at the frames' masks"))
    largest = max(float(np.hypot(*s)) for s in shifts)
    micrograph = replace(first.micrograph, frame=None, reading="consensus")
    return Segmentation(micrograph, probability, mask, first.scale, sum(s.seconds for s in segmentations),
                        ood=sorted({f for s in segmentations for f in s.ood}), notices=notices,
                        stem=first.stem.rsplit("_frame", 1)[0] + "_consensus", provenance=first.provenance,
                        frame_agreement=agreement, drift_px=largest)

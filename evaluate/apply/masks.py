"""From a contamination probability to a mask drawn as the human labels are: the threshold, then
a closing by a small disc and enclosed pinholes filled (the labels are smooth outlines without
holes; the network's masks are jagged and holed), optionally a margin, in physical units so that
the same choice holds at any pixel size. The defaults (configs/apply/default.yaml: `close_A`,
`fill_holes_nm2`) were chosen by nested series-grouped cross-validation on the public labelled
micrographs (benchmarks/bench_nested_choices.py); 0 turns a step off.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage


def _dilate(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """Dilation by a disc, through the distance transform (fast at any radius)."""
    return scipy.ndimage.distance_transform_edt(~mask) <= radius_px


def mask_of(probability: np.ndarray, threshold: float, pixel_size: float, close_a: float = 0.0,
            fill_nm2: float = 0.0, margin_a: float = 0.0) -> np.ndarray:
    """The mask `probability > threshold`, closed by a disc of radius `close_a` (A; never losing a
    pixel the threshold found, nor eroded by the image's edge), enclosed holes up to `fill_nm2`
    (nm^2) filled, then dilated by `margin_a` (A); lengths at `pixel_size` A/px."""
    mask = np.asarray(probability) > threshold
    if close_a and mask.any():
        r = close_a / pixel_size
        pad = int(np.ceil(r)) + 1
        closed = scipy.ndimage.distance_transform_edt(np.pad(_dilate(mask, r), pad)) > r
        mask = mask | closed[pad:-pad, pad:-pad]
    if fill_nm2 and not mask.all():
        holes, n = scipy.ndimage.label(~mask)
        small = np.bincount(holes.ravel(), minlength=n + 1) * (pixel_size / 10) ** 2 <= fill_nm2
        small[np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))] = False  # open to the edge
        small[0] = False
        mask |= small[holes]
    if margin_a and mask.any():
        mask = _dilate(mask, margin_a / pixel_size)
    return mask

"""`apply.segment` resamples a micrograph outside the trained pixel range and resamples the mask
back: the mask must land where the contamination is, not shifted or scaled by the round trip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evaluate.apply.segment import segment
from grapheneseg.config import load_config
from grapheneseg.formats import Micrograph


class Pointwise(torch.nn.Module):
    """A 'network' whose contamination logit at a pixel is that pixel's preprocessed value."""

    depth = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x], dim=1)


def block_centre(probability: np.ndarray) -> np.ndarray:
    """Probability-weighted centre (row, col) within the block's quadrant: sub-pixel, unlike a mask's."""
    weight = np.zeros_like(probability)
    weight[:200, 200:] = probability[:200, 200:]
    rows, cols = np.indices(weight.shape)
    return np.array([(weight * rows).sum(), (weight * cols).sum()]) / weight.sum()


@pytest.mark.parametrize("pixel_size", [0.1, 0.9])  # model sees it 3.9x smaller / 2.3x larger
def test_resampled_mask_lands_on_the_contamination(pixel_size: float) -> None:
    cfg = load_config("evaluate").apply
    y, x = np.mgrid[:403, :397]
    image = (1.0 + 2.0 * ((y >= 61) & (y < 141) & (x >= 251) & (x < 361))).astype(np.float32)  # off-centre block
    native = segment([Pointwise()], Micrograph(Path("native.tif"), image, 0.385), cfg)  # in range: not resampled
    resampled = segment([Pointwise()], Micrograph(Path("scaled.tif"), image, pixel_size), cfg)
    assert native.mask.shape == resampled.mask.shape == image.shape
    assert native.mask[61:141, 251:361].all()
    shift = block_centre(resampled.probability) - block_centre(native.probability)
    assert np.abs(shift).max() < 0.2, shift  # input pixels; one model pixel is 2.3-3.9 of them
    block = np.zeros(image.shape, bool)
    block[:200, 200:] = True
    overlap = (native.mask & resampled.mask & block).sum() / ((native.mask | resampled.mask) & block).sum()
    assert overlap > 0.9

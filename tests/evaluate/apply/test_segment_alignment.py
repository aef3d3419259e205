"""The Predictor (evaluate.apply.predictor) resamples a micrograph outside the trained pixel range and resamples the mask
back: the mask must land where the contamination is, not shifted or scaled by the round trip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate.apply.predictor
from evaluate.apply.predictor import FALLBACK_RANGE, Predictor
from grapheneseg.config import load_config
from grapheneseg.formats import Micrograph
from train.models.checkpoints import save_checkpoint
from train.models.unet import architecture, build_model


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
def test_resampled_mask_lands_on_the_contamination(pixel_size: float, tmp_path: Path, monkeypatch) -> None:
    arch = architecture({"depth": 2, "features": 4, "batch_norm": False})  # a checkpoint with no pixel range
    ckpt = save_checkpoint(tmp_path / "m.ckpt", build_model(arch), arch, {}, epoch=0)
    monkeypatch.setattr(evaluate.apply.predictor, "load_models", lambda *a, **k: [Pointwise()])
    predictor = Predictor(ckpt, load_config("evaluate").apply, "cpu")
    assert predictor.cfg.pixel_range[0] == FALLBACK_RANGE[0] and isinstance(predictor.models[0], Pointwise)
    y, x = np.mgrid[:403, :397]
    image = (1.0 + 2.0 * ((y >= 61) & (y < 141) & (x >= 251) & (x < 361))).astype(np.float32)  # off-centre block
    native = predictor.segment(Micrograph(Path("native.tif"), image, 0.385))  # in range: not resampled
    resampled = predictor.segment(Micrograph(Path("scaled.tif"), image, pixel_size))
    assert resampled.pixel_size == pixel_size and resampled.pixel_size_source == "file"
    assert native.mask.shape == resampled.mask.shape == image.shape
    assert native.mask[61:141, 251:361].all()
    shift = block_centre(resampled.probability) - block_centre(native.probability)
    assert np.abs(shift).max() < 0.2, shift  # input pixels; one model pixel is 2.3-3.9 of them
    block = np.zeros(image.shape, bool)
    block[:200, 200:] = True
    overlap = (native.mask & resampled.mask & block).sum() / ((native.mask | resampled.mask) & block).sum()
    assert overlap > 0.9

"""The mask drawn as the labels are (evaluate/apply/masks.py): closing, pinholes filled, margin, in
physical units; and the Predictor's masks go through it."""
from __future__ import annotations

import numpy as np

from evaluate.apply.masks import mask_of


def blob_with_a_pinhole_and_a_notch() -> np.ndarray:
    prob = np.zeros((80, 80), np.float32)
    prob[20:60, 20:60] = 0.9
    prob[38:41, 38:41] = 0.1  # a 3x3 px pinhole inside
    prob[20:23, 45:47] = 0.1  # a notch in the outline, 2 px wide
    prob[0:10, 70:80] = 0.9  # a patch at the corner: the edge does not erode its closing
    return prob


def test_the_bare_threshold():
    prob = blob_with_a_pinhole_and_a_notch()
    assert np.array_equal(mask_of(prob, 0.5, 0.4), prob > 0.5)


def test_pinholes_fill_by_area_in_nm2():
    prob = blob_with_a_pinhole_and_a_notch()
    filled = mask_of(prob, 0.5, 0.4, fill_nm2=1.0)  # 9 px at 0.4 A/px = 0.0144 nm2
    assert filled[38:41, 38:41].all() and not filled[20:23, 45:47].any()  # the notch is open to the outside
    assert not mask_of(prob, 0.5, 0.4, fill_nm2=0.01)[39, 39]  # 0.0144 nm2 > 0.01 nm2: kept
    assert filled.sum() - (prob > 0.5).sum() == 9


def test_closing_smooths_the_outline_without_losing_or_eroding():
    prob = blob_with_a_pinhole_and_a_notch()
    closed = mask_of(prob, 0.5, 0.4, close_a=2.0)  # 5 px radius
    bare = prob > 0.5
    assert (closed >= bare).all()  # never loses a pixel the threshold found
    assert closed[21:23, 45:47].all()  # the 2 px notch is closed (its mouth, on the outline, in part)
    assert np.array_equal(closed[0:10, 70:80], bare[0:10, 70:80])  # nothing grows at the image edge
    assert closed.sum() - bare.sum() < 40  # a closing, not a dilation
    # the same radius in A at twice the pixel size is half the pixels: the notch (2 px) still closes
    assert mask_of(prob, 0.5, 0.8, close_a=2.0)[21:23, 45:47].all()
    assert not mask_of(prob, 0.5, 4.0, close_a=2.0)[20:23, 45:47].any()  # 0.5 px: nothing to close


def test_a_margin_grows_the_mask_by_its_length():
    prob = blob_with_a_pinhole_and_a_notch()
    grown = mask_of(prob, 0.5, 0.5, margin_a=1.0)  # 2 px
    assert grown[18, 40] and not grown[17, 40]


def test_the_predictor_draws_its_masks_so(tmp_path):
    from grapheneseg.config import load_config
    from grapheneseg.formats import Micrograph
    from evaluate.apply.predictor import Predictor
    from evaluate.apply.scale import Scale, ScaleSource
    from tests.conftest import synthetic_micrograph

    image = synthetic_micrograph(np.random.default_rng(2), 96)[0].astype(np.float32)
    micrograph, scale = Micrograph("x.tif", image, 0.38), Scale(0.38, ScaleSource.FILE)
    default = Predictor(None, load_config("evaluate").apply, "cpu")
    bare = default.configured(load_config("evaluate", ["apply.close_A=0", "apply.fill_holes_nm2=0"]).apply)
    seg, plain = default.segment(micrograph, scale), bare.segment(micrograph, scale)
    assert np.array_equal(plain.mask, plain.probability > 0.5)
    assert np.array_equal(seg.mask, mask_of(seg.probability, 0.5, 0.38, 5.0, 1.0))

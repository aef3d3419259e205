"""evaluate.apply.tiff: ImageJ TIFFs whose resolution and unit are the micrograph's pixel size, read
back by tifffile (as Fiji and napari read them) and by the tool's own reader (RosettaSciIO)."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from evaluate.apply.tiff import read_tiff_scale, write_tiff
from grapheneseg.formats import read_micrograph

from tests.evaluate.test_api import DM3, needs_formats


def test_round_trip_of_each_kind_of_map(tmp_path):
    rng = np.random.default_rng(0)
    prob = rng.random((40, 50))
    mask = prob > 0.5
    classes = rng.integers(0, 4, (40, 50))
    back, size = read_tiff_scale(write_tiff(tmp_path / "p.tif", prob, 0.385))
    assert back.dtype == np.float32 and size == pytest.approx(0.385, rel=1e-9)
    np.testing.assert_array_equal(back, prob.astype(np.float32))
    back, size = read_tiff_scale(write_tiff(tmp_path / "m.tif", mask, 0.385))
    assert back.dtype == np.uint8 and set(np.unique(back)) == {0, 255}
    np.testing.assert_array_equal(back == 255, mask)
    back, _ = read_tiff_scale(write_tiff(tmp_path / "c.tif", classes, 0.385))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, classes)


def test_what_fiji_reads(tmp_path):
    """ImageJ reads pixels per unit from XResolution/YResolution and the unit from the description."""
    path = write_tiff(tmp_path / "p.tif", np.zeros((8, 8), np.float32), 0.4)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "nm"
        for tag in ("XResolution", "YResolution"):
            num, den = tif.pages[0].tags[tag].value
            assert num / den == pytest.approx(1 / 0.04)  # px per nm


def test_the_tool_reads_its_own_tiffs_at_their_scale(tmp_path):
    path = write_tiff(tmp_path / "p.tif", np.random.default_rng(1).random((40, 50)), 0.0817)
    assert read_micrograph(path).pixel_size == pytest.approx(0.0817, rel=1e-6)


def test_without_a_pixel_size_no_calibration(tmp_path):
    path = write_tiff(tmp_path / "m.tif", np.zeros((8, 8), bool), None)
    assert read_tiff_scale(path)[1] is None
    assert read_micrograph(path).pixel_size is None


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="0-255"):
        write_tiff(tmp_path / "c.tif", np.full((4, 4), 300), 0.4)
    with pytest.raises(ValueError, match="2-D"):
        write_tiff(tmp_path / "c.tif", np.zeros((2, 4, 4)), 0.4)
    with pytest.raises(ValueError, match="unit"):
        write_tiff(tmp_path / "c.tif", np.zeros((4, 4)), 0.4, unit="furlong")


@needs_formats
def test_a_mask_at_a_dm3_samples_pixel_size_reads_back_with_it(tmp_path):
    micrograph = read_micrograph(DM3)
    path = write_tiff(tmp_path / "mask.tif", micrograph.image > np.median(micrograph.image), micrograph.pixel_size)
    with tifffile.TiffFile(path) as tif:
        num, den = tif.pages[0].tags["XResolution"].value
        assert tif.imagej_metadata["unit"] == "nm"
        assert den / num * 10 == pytest.approx(micrograph.pixel_size, rel=1e-6)  # nm/px -> A/px
    assert read_tiff_scale(path)[1] == pytest.approx(micrograph.pixel_size, rel=1e-6)
    assert read_micrograph(path).pixel_size == pytest.approx(micrograph.pixel_size, rel=1e-6)

"""evaluate.api, the notebook interface: arrays, files and HyperSpy signals in; the maps and the
metadata of `evaluate predict` out, equal to what the library gives the CLI."""
from __future__ import annotations


import numpy as np
import pytest

from evaluate import api
from evaluate.apply.predictor import Predictor
from evaluate.apply.scale import Scale, ScaleSource, decide_scale
from train.models.registry import packaged
from grapheneseg.formats import read_micrograph

from tests.conftest import synthetic_micrograph


from tests.conftest import FORMATS
DM3 = FORMATS / "test_dm_image_um_unit.dm3" if FORMATS else None
needs_formats = pytest.mark.skipif(DM3 is None or not DM3.is_file(), reason="sample files not present")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return synthetic_micrograph(np.random.default_rng(3), 96)[0].astype(np.float32)


def test_array_with_pixel_size_equals_the_library(image):
    result = api.segment(image, pixel_size=0.38, device="cpu")
    assert result.pixel_size == 0.38 and result.pixel_size_source == "given"
    assert result.probability.shape == image.shape and result.mask.dtype == bool
    assert result.contamination_fraction == pytest.approx(result.mask.mean())
    assert result.graphene_fraction == pytest.approx(1 - result.mask.mean())
    meta = result.metadata
    assert set(meta) == {"file", "pixel_size_A", "pixel_size_source", "height", "width", "contamination_fraction",
                         "graphene_fraction", "seconds", "uncertainty", "ood", "note"}
    assert meta["pixel_size_A"] == 0.38 and meta["height"] == 96
    # the same numbers as the library call the CLI makes
    micrograph = api.as_micrograph(image)[0]
    ref = Predictor(packaged("contamination"), api.apply_config()[0], "cpu").segment(
        micrograph, decide_scale(micrograph, 0.38))
    assert ref.scale == Scale(0.38, ScaleSource.GIVEN)
    np.testing.assert_array_equal(result.probability, ref.probability)


def test_models_are_cached_per_path_and_device(image):
    api.clear_cache()
    api.segment(image, pixel_size=0.38, device="cpu")
    api.segment(image, pixel_size=0.38, device="cpu", tta=True)
    info = api._loaded.cache_info()
    assert info.misses == 1 and info.hits == 1


def test_uncertainty_and_threshold(image):
    result = api.segment(image, pixel_size=0.38, device="cpu", uncertainty=True, threshold=0.9)
    assert result.uncertainty.shape == image.shape and 0 <= result.uncertainty.max() <= 0.5
    assert result.disagreement is not None
    from evaluate.apply.masks import mask_of

    np.testing.assert_array_equal(result.mask, mask_of(result.probability, 0.9, 0.38, 5.0, 1.0))
    bare = api.segment(image, pixel_size=0.38, device="cpu", threshold=0.9, config={"close_A": 0, "fill_holes_nm2": 0})
    np.testing.assert_array_equal(bare.mask, bare.probability > 0.9)


def test_bad_inputs_are_refused_clearly(image):
    with pytest.raises(ValueError, match="2-D"):
        api.segment(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="non-finite"):
        api.segment(np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="unknown apply option"):
        api.segment(image, pixel_size=0.38, config={"tiles": 3})


def test_sort_is_cleanest_first(image):
    clean = synthetic_micrograph(np.random.default_rng(4), 96)[0].astype(np.float32)
    ranked = api.sort([image, clean, image[::-1]], pixel_size=0.38, device="cpu")
    fractions = [r.graphene_fraction for r in ranked]
    assert fractions == sorted(fractions, reverse=True)
    assert {r.file for r in ranked} == {"<array>#0", "<array>#1", "<array>#2"}
    assert len(api.table(ranked)) == 3


def test_atoms_extrema_on_array(image):
    found = api.atoms(image, pixel_size=0.38, method="extrema", device="cpu")
    assert found.atoms.ndim == 2 and found.atoms.shape[1] == 2
    assert found.bond_px == pytest.approx(1.42 / 0.38)
    assert found.atoms_nm is not None and np.allclose(found.atoms_nm, found.atoms * 0.038)
    assert found.registration["registration"] in ("ok", "uncertain", "unknown")


@needs_formats
def test_dm3_sample_scale_is_the_files_and_an_overview_is_refused():
    """The um-calibrated DM3 sample (169 nm/px, not graphene) is refused before any work, naming
    the scale read from the file; api.scale gives the pixel size `evaluate predict` uses."""
    micrograph = read_micrograph(DM3)
    assert api.scale(DM3) == decide_scale(micrograph) == Scale(micrograph.pixel_size, ScaleSource.FILE)
    assert micrograph.pixel_size == pytest.approx(1686.7469, rel=1e-6)
    with pytest.raises(ValueError, match=r"169 nm/px \(file\)"):  # evaluate.apply.segment.Refused
        api.segment(DM3, device="cpu")


def test_a_calibrated_file_through_the_api_keeps_its_scale(tmp_path, image):
    """A micrograph in a calibrated file (an ImageJ TIFF at 0.38 A/px): the result's scale is the file's."""
    from evaluate.apply.tiff import write_tiff

    path = write_tiff(tmp_path / "scan.tif", image, 0.38)
    result = api.segment(path, device="cpu", pixel_size=0.5)  # the file's calibration wins, as in the CLI
    assert result.pixel_size == pytest.approx(read_micrograph(path).pixel_size) == pytest.approx(0.38)
    assert result.pixel_size_source == "file" and result.file == str(path)
    np.testing.assert_array_equal(result.probability, api.segment(image, 0.38, device="cpu").probability)


def test_hyperspy_signal_from_a_file_in_signals_out(tmp_path, image):
    hs = pytest.importorskip("hyperspy.api")
    from evaluate.apply.tiff import write_tiff

    path = write_tiff(tmp_path / "scan.tif", image, 0.38)
    signal = hs.load(str(path))
    result = api.segment(signal, device="cpu")
    by_file = api.segment(path, device="cpu")
    assert result.pixel_size == pytest.approx(by_file.pixel_size) and result.pixel_size_source == "signal"
    for out in (result.probability, result.mask):
        assert isinstance(out, hs.signals.Signal2D)
        for a, b in zip(out.axes_manager.signal_axes, signal.axes_manager.signal_axes):
            assert (a.scale, a.units, a.offset, a.size) == (b.scale, b.units, b.offset, b.size)
    np.testing.assert_array_equal(result.probability.data, by_file.probability)


def test_hyperspy_signal_of_an_array_with_nm_axes(image):
    hs = pytest.importorskip("hyperspy.api")
    signal = hs.signals.Signal2D(image)
    for axis in signal.axes_manager.signal_axes:
        axis.scale, axis.units = 0.038, "nm"
    result = api.segment(signal, device="cpu")
    assert result.pixel_size == pytest.approx(0.38) and result.pixel_size_source == "signal"
    assert result.probability.axes_manager.signal_axes[0].scale == 0.038
    with pytest.raises(ValueError, match="inav"):
        api.segment(hs.signals.Signal2D(np.stack([image, image])), device="cpu")


def test_structure_is_evaluate_structures_map() -> None:
    """api.structure: the contamination of api.segment, then structure_of at its scale."""
    from evaluate.apply.structure import structure_of
    from tests.evaluate.analysis.test_orientation import two_grains_and_a_hole

    image = two_grains_and_a_hole()[0].astype(np.float32)
    found = api.structure(image, pixel_size=0.3, device="cpu")
    seg = found.segmentation.segmentation
    again = structure_of(image, seg.mask, seg.scale)
    assert np.array_equal(found.classes, again.classes) and found.summary["grains"] == 2
    assert np.isnan(found.orientation[found.classes == 2]).all() and len(found.grain_table) == 2
    assert found.grains.max() == 2 and found.summary["pixel_size_source"] == "given"

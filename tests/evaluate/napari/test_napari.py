"""The napari plugin's logic without napari or Qt (evaluate.napari.reader, .layers, .sample): the
reader gives the pixel size `evaluate predict` uses, and every layer made from an image lies on
that image's scale."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from evaluate import api
from evaluate.apply.scale import Scale, ScaleSource, decide_scale
from evaluate.apply.tiff import write_tiff
from evaluate.napari.layers import Source, image_kwargs, run_steps, segmentation_layers, suggest_steps
from evaluate.napari.reader import get_reader, read_layers
from grapheneseg.formats import SUPPORTED, read_micrograph
from grapheneseg.micrographs import DataError

from tests.conftest import synthetic_micrograph
from tests.evaluate.test_api import FORMATS, needs_formats


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return synthetic_micrograph(np.random.default_rng(5), 96)[0].astype(np.float32)


def test_the_core_imports_without_napari_magicgui_or_qt(tmp_path, image):
    path = write_tiff(tmp_path / "scan.tif", image, 0.38)
    code = textwrap.dedent(f"""
        import sys
        for name in ("napari", "magicgui", "qtpy", "PyQt5", "PySide2", "PySide6", "superqt", "vispy"):
            sys.modules[name] = None  # any import of them fails
        import evaluate.napari, evaluate.napari.layers, evaluate.napari.reader, evaluate.napari.sample
        (data, kwargs, kind), = evaluate.napari.reader.read_layers({str(path)!r})
        assert kind == "image" and abs(kwargs["scale"][0] - 0.038) < 1e-9, kwargs
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_get_reader_takes_the_tools_formats_only():
    assert get_reader("a.dm4") is read_layers and get_reader(["a.ser", "b.tif"]) is read_layers
    assert get_reader("a.h5") is None and get_reader(["a.dm3", "b.txt"]) is None and get_reader([]) is None
    assert {".dm3", ".dm4", ".emd", ".ser", ".tif", ".png"} <= set(SUPPORTED)


def test_reader_scale_in_nm_and_source(tmp_path, image):
    path = write_tiff(tmp_path / "scan.tif", image, 0.38)
    (data, kwargs, kind), = read_layers(str(path))
    assert kind == "image" and data.shape == image.shape
    assert kwargs["scale"] == pytest.approx((0.038, 0.038)) and kwargs["units"] == ("nm", "nm")
    assert kwargs["metadata"]["pixel_size_A"] == pytest.approx(0.38)
    assert kwargs["metadata"]["pixel_size_source"] == "file" and kwargs["metadata"]["path"] == str(path)


@needs_formats
def test_reader_gives_the_pixel_size_of_evaluate_predict_on_the_rosettasciio_samples():
    files = sorted(p for p in FORMATS.iterdir() if p.suffix.lower() in SUPPORTED)
    assert len(files) >= 6
    compared = 0
    for path in files:
        micrograph = read_micrograph(path)
        (data, kwargs, _), = read_layers(str(path))
        meta = kwargs["metadata"]
        expected = decide_scale(micrograph)  # a few pixels: no lattice reading, unknown
        assert meta["scale"] == expected, path.name
        assert (meta["pixel_size_A"], meta["pixel_size_source"]) == (expected.pixel_size, str(expected.source)), path.name
        size = expected.pixel_size / 10 if expected.pixel_size else 1.0
        assert kwargs["scale"] == pytest.approx((size, size)), path.name
        np.testing.assert_array_equal(data, micrograph.image)
        compared += expected.pixel_size is not None
    assert compared >= 4  # .ser, Velox .emd, DM3 in um, DM's TIFF


@needs_formats
def test_reader_refuses_the_emi_header_clearly():
    with pytest.raises(DataError, match=".ser"):
        read_layers(str(FORMATS / "64x64_TEM_images_acquire.emi"))


def test_a_layers_pixel_size_comes_from_metadata_then_its_scale():
    read = Scale(0.38, ScaleSource.FILE)
    meta = image_kwargs("a", read)
    source = Source("a", np.zeros((4, 4)), meta["scale"], (0, 0), meta["units"], meta["metadata"])
    assert source.decided_scale() == read
    assert source.decided_scale(0.4) == Scale(0.4, ScaleSource.GIVEN)  # a given pixel size wins
    rescaled = Source("a", np.zeros((4, 4)), (0.05, 0.05), (0, 0), ("nm", "nm"), meta["metadata"])
    changed = rescaled.decided_scale()  # the user changed the scale
    assert changed.pixel_size == pytest.approx(0.5) and changed.source is ScaleSource.LAYER
    assert str(changed.source) == "layer scale"
    assert Source("a", np.zeros((4, 4))).decided_scale() is None  # unknown: the Predictor reads the lattice
    with pytest.raises(ValueError, match="2-D grey"):
        Source("rgb", np.zeros((4, 4, 3))).image()


def test_segmentation_layers_lie_on_the_images_scale_and_use_its_pixel_size(image):
    """Fails when the maps get another scale or translation than the image, or when the pixel size
    the network sees is not the layer's."""
    kwargs = image_kwargs("scan", Scale(0.38, ScaleSource.FILE))
    source = Source("scan", image, kwargs["scale"], (1.5, -2.0), kwargs["units"], kwargs["metadata"])
    layers = segmentation_layers(source, device="cpu", uncertainty=True)
    assert [kind for *_, kind in layers] == ["labels", "image", "image"]
    for data, kw, _ in layers:
        assert data.shape == image.shape
        assert kw["scale"] == pytest.approx((0.038, 0.038)) and kw["translate"] == (1.5, -2.0)
        assert kw["units"] == ("nm", "nm")
        assert kw["metadata"]["pixel_size_A"] == pytest.approx(0.38)
        assert kw["metadata"]["pixel_size_source"] == "file"
    mask = layers[0][0]
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(layers[1][0], api.segment(image, 0.38, device="cpu", uncertainty=True).probability)


def test_suggest_over_layers(image):
    rng = np.random.default_rng(9)
    sources = [Source(f"img{i}", synthetic_micrograph(rng, 64)[0].astype(np.float32), (0.038, 0.038),
                      units=("nm", "nm")) for i in range(4)]
    overview = Source("overview", np.ones((80, 80), np.float32), (16.9, 16.9), units=("nm", "nm"))  # refused
    steps = suggest_steps(sources + [overview], n=2, coverage_every=0, device="cpu")
    assert next(steps) == (1, 5)
    picks, skipped = run_steps(steps)
    assert [p.rank for p in picks] == [1, 2] and len({p.layer for p in picks}) == 2
    assert all(p.layer.startswith("img") for p in picks)
    assert list(skipped) == ["overview"] and "layer 'overview'" in skipped["overview"]
    assert "an overview image" in skipped["overview"] and "layer scale" in skipped["overview"]


def test_sample_is_a_simulated_micrograph_at_its_scale():
    (image, kwargs, kind), (truth, truth_kwargs, truth_kind) = __import__(
        "evaluate.napari.sample", fromlist=["x"]).simulated_micrograph(size=64)
    assert kind == "image" and truth_kind == "labels" and image.shape == truth.shape == (64, 64)
    size = kwargs["metadata"]["pixel_size_A"]
    assert 0.30 <= size <= 0.47 and kwargs["scale"] == pytest.approx((size / 10, size / 10))
    assert truth_kwargs["scale"] == kwargs["scale"] and kwargs["metadata"]["pixel_size_source"] == "simulated"

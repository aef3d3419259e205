"""The napari widgets under offscreen Qt on a `napari.components.ViewerModel` (no OpenGL canvas):
layers from the reader, work in a worker thread, results added on the image's scale. Skipped
without the `napari` extra; test_real_window.py drives the same widgets in a real window."""
from __future__ import annotations

import importlib
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("napari")
pytest.importorskip("magicgui")
pytest.importorskip("pytestqt")

from napari.components import ViewerModel  # noqa: E402
from napari.layers import Image, Labels, Layer, Points, Vectors  # noqa: E402

from evaluate.apply.tiff import write_tiff  # noqa: E402
from evaluate.napari.reader import read_layers  # noqa: E402
from evaluate.napari.widgets import AtomsWidget, SegmentWidget, SuggestWidget  # noqa: E402

from tests.conftest import synthetic_micrograph  # noqa: E402
from tests.conftest import ROOT

ROOT = ROOT
MANIFEST = ROOT / "evaluate" / "napari" / "napari.yaml"


def _open(viewer: ViewerModel, path: Path) -> Layer:
    (data, kwargs, kind), = read_layers(str(path))
    return viewer.add_layer(Layer.create(data, kwargs, kind))


@pytest.fixture
def viewer(tmp_path) -> ViewerModel:
    viewer = ViewerModel()
    rng = np.random.default_rng(11)
    for i in range(3):
        _open(viewer, write_tiff(tmp_path / f"scan{i}.tif", synthetic_micrograph(rng, 80)[0].astype(np.float32), 0.38))
    return viewer


def _run(qtbot, widget) -> None:
    worker = widget.start()
    assert worker is not None, widget.status.value
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=5_000)
    assert not widget.status.value.startswith("error"), widget.status.value


def test_manifest_is_valid_and_names_real_callables():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "grapheneseg"
    for command in manifest.contributions.commands:
        module, name = command.python_name.split(":")
        assert callable(getattr(importlib.import_module(module), name)), command.python_name
    assert {"*.dm3", "*.dm4", "*.emd", "*.ser", "*.tif", "*.png"} <= set(manifest.contributions.readers[0].filename_patterns)


def test_segment_widget_adds_maps_on_the_images_scale(qtbot, viewer):
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget.native)
    image = viewer.layers["scan1"]
    widget.image.value = image
    widget.device.value = "cpu"
    widget.uncertainty.value = True
    _run(qtbot, widget)
    labels = viewer.layers["scan1 contamination"]
    prob = viewer.layers["scan1 P(contamination)"]
    unc = viewer.layers["scan1 uncertainty"]
    assert isinstance(labels, Labels) and isinstance(prob, Image) and isinstance(unc, Image)
    for layer in (labels, prob, unc):
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.scale, [0.038, 0.038])
        assert tuple(str(u) for u in layer.units) == tuple(str(u) for u in image.units)
        np.testing.assert_allclose(layer.extent.world, image.extent.world)
    assert labels.metadata["pixel_size_A"] == pytest.approx(0.38) and labels.metadata["pixel_size_source"] == "file"
    assert "contamination at 0.38 Å/px (file)" in widget.status.value


def test_segment_widget_follows_the_layer_list(qtbot, viewer):
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget.native)
    assert [c.name for c in widget.image.choices] == ["scan0", "scan1", "scan2"]
    viewer.layers.remove("scan0")
    assert [c.name for c in widget.image.choices] == ["scan1", "scan2"]
    empty = SegmentWidget(ViewerModel())
    assert empty.start() is None and "open a micrograph" in empty.status.value


def test_atoms_widget_points_and_bonds_on_the_images_scale(qtbot, viewer):
    widget = AtomsWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.image.value = viewer.layers["scan2"]
    widget.method.value = "extrema"
    widget.device.value = "cpu"
    _run(qtbot, widget)
    points, bonds = viewer.layers["scan2 atoms"], viewer.layers["scan2 bonds"]
    assert isinstance(points, Points) and isinstance(bonds, Vectors) and len(points.data) > 10
    for layer in (points, bonds):
        np.testing.assert_allclose(layer.scale, viewer.layers["scan2"].scale)
    assert points.metadata["bond_px"] == pytest.approx(1.42 / 0.38)


def test_suggest_widget_ranks_the_open_images(qtbot, viewer):
    widget = SuggestWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.n.value, widget.coverage_every.value, widget.device.value = 2, 0, "cpu"
    _run(qtbot, widget)
    table = widget.table.to_dict("list")
    assert table["rank"] == [1, 2] and set(table["layer"]) <= {"scan0", "scan1", "scan2"}
    ranked = sorted((layer.metadata["label_next_rank"], layer.name) for layer in viewer.layers
                    if "label_next_rank" in layer.metadata)
    assert [r for r, _ in ranked] == [1, 2]
    assert widget.status.value.startswith("label these 2 next")


def test_widgets_render(qtbot, viewer, tmp_path):
    for cls in (SegmentWidget, AtomsWidget, SuggestWidget):
        widget = cls(viewer)
        qtbot.addWidget(widget.native)
        path = tmp_path / f"{cls.__name__}.png"
        assert widget.native.grab().save(str(path)) and path.stat().st_size > 1000


def test_a_refused_image_is_a_message_naming_the_file(qtbot, tmp_path):
    """The 169 nm/px overview: the error handler is connected before the worker starts, so the
    refusal is a wrapped status line naming the file and where its scale came from; no re-raise
    (a re-raise would fail this test through pytest-qt's exception capture)."""
    viewer = ViewerModel()
    layer = _open(viewer, write_tiff(tmp_path / "overview.tif", np.ones((80, 80), np.float32), 1690.0))
    widget = SegmentWidget(viewer)
    widget.image.value, widget.device.value = layer, "cpu"
    worker = widget.start()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=5_000)
    assert widget.status.value.startswith("error: ") and "overview.tif" in widget.status.value
    assert "169 nm/px (file)" in widget.status.value and "<array>" not in widget.status.value
    assert widget.status.native.wordWrap()
    assert [la.name for la in viewer.layers] == ["overview"]


def test_a_rerun_replaces_its_layers(qtbot, viewer):
    widget = SegmentWidget(viewer)
    widget.image.value, widget.device.value = viewer.layers["scan0"], "cpu"
    _run(qtbot, widget)
    names = [la.name for la in viewer.layers]
    _run(qtbot, widget)
    assert [la.name for la in viewer.layers] == names and not any("[1]" in n for n in names)
    assert viewer.layers.selection.active.name == "scan0 contamination"


def test_the_error_handler_is_connected_before_the_thread_starts(viewer, monkeypatch):
    """The worker is created with every handler in `_connect` and not started by create_worker:
    superqt then installs no re-raising handler of its own."""
    import napari.qt.threading

    seen = {}

    def spy(func, *args, _connect=None, _start_thread=None, **kwargs):
        seen.update(connect=dict(_connect or {}), start=_start_thread)
        raise RuntimeError("stop here")

    monkeypatch.setattr(napari.qt.threading, "create_worker", spy)
    widget = SegmentWidget(viewer)
    widget.image.value = viewer.layers["scan0"]
    with pytest.raises(RuntimeError, match="stop here"):
        widget.start()
    assert seen["connect"]["errored"] == widget._failed and seen["start"] is False


def test_structure_widget_maps_a_two_grain_image(qtbot, tmp_path):
    """The four classes as Labels in the paper's colours with the lattice clear, the orientation
    (NaN off the lattice) and the grains on the image's scale; the grains table filled."""
    from evaluate.apply.structure import COLOURS
    from evaluate.napari.widgets import StructureWidget
    from tests.evaluate.analysis.test_orientation import two_grains_and_a_hole

    image = two_grains_and_a_hole()[0].astype(np.float32)
    viewer = ViewerModel()
    layer = _open(viewer, write_tiff(tmp_path / "gb.tif", image, 0.3))
    widget = StructureWidget(viewer)
    widget.image.value, widget.device.value = layer, "cpu"
    _run(qtbot, widget)
    classes, orientation, grains = (viewer.layers[f"gb {n}"] for n in ("classes", "orientation (deg mod 60)", "grains"))
    assert all(la.scale == pytest.approx(layer.scale) for la in (classes, orientation, grains))
    assert set(np.unique(classes.data)) <= {0, 1, 2, 3} and (classes.data == 3).any()
    assert classes.colormap.map(np.array([0]))[0][3] == 0  # the lattice untinted
    assert np.allclose(classes.colormap.map(np.array([3]))[0][:3], np.array(COLOURS[3]) / 255)
    assert np.isnan(orientation.data[classes.data == 2]).all() and not grains.visible
    assert widget.table.shape[0] == 2 and "2 grain(s)" in widget.status.value, widget.status.value


def test_save_layer_writes_its_scale(tmp_path):
    """napari's Save Layer through the plugin's writer: an ImageJ TIFF the reader opens at the same scale."""
    from evaluate.napari.writer import write_tiff_layer

    viewer = ViewerModel()
    layer = _open(viewer, write_tiff(tmp_path / "scan.tif", np.random.default_rng(0).random((40, 40), np.float32), 0.38))
    data, meta, _ = layer.as_layer_data_tuple()
    written, = write_tiff_layer(str(tmp_path / "saved.tif"), data, meta)
    (again, kwargs, _), = read_layers(written)
    assert kwargs["scale"] == pytest.approx(layer.scale) and np.allclose(again, data)
    labels = np.zeros((40, 40), np.uint16)
    labels[5:9, 5:9] = 300  # beyond 8 bits: written as float32, values kept
    written, = write_tiff_layer(str(tmp_path / "labels.tif"), labels, {**meta, "name": "labels"})
    assert read_layers(written)[0][0].max() == 300


def test_finetune_widget_saves_pairs_trains_and_cancels(qtbot, viewer, tmp_path, monkeypatch):
    """Save a corrected mask as a pair, fine-tune on the folder (a short schedule) with the image
    re-segmented by the result; a second run cancelled at its first step writes no model."""
    import evaluate.napari.widgets as widgets
    from evaluate.napari import layers
    from evaluate.napari.widgets import FineTuneWidget
    from tests.conftest import TINY_BATCH

    segment = SegmentWidget(viewer)
    segment.image.value, segment.device.value = viewer.layers["scan0"], "cpu"
    _run(qtbot, segment)
    widget = FineTuneWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.image.value, widget.device.value = viewer.layers["scan0"], "cpu"
    assert [c.name for c in widget.mask.choices] == ["scan0 contamination"]
    widget.mask.value = viewer.layers["scan0 contamination"]
    widget.folder.value, widget.out.value = tmp_path / "pairs", tmp_path / "mine.ckpt"
    assert widget.start() is None and "no saved pairs yet" in widget.status.value
    saved = widget.save()
    assert saved.image == tmp_path / "pairs" / "scan0.png" and "1 pair(s)" in widget.status.value
    overrides = ["finetune.epochs=1", "select.enabled=false", *TINY_BATCH]
    monkeypatch.setattr(widgets, "finetune_layers", lambda *a: layers.finetune_layers(*a, overrides=overrides))
    _run(qtbot, widget)
    assert "re-segmented with it" in widget.status.value and (tmp_path / "mine.ckpt").exists()
    assert viewer.layers["scan0 contamination"].metadata["model"] == str(tmp_path / "mine.ckpt")

    overrides[0] = "finetune.epochs=200"
    widget.out.value = tmp_path / "stopped.ckpt"
    worker = widget.start()
    qtbot.waitUntil(lambda: widget._step_seen is not None, timeout=60_000)
    widget.cancel()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=5_000)
    assert widget.status.value.startswith("cancelled: no model written") and not (tmp_path / "stopped.ckpt").exists()

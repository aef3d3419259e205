"""The plugin in a real napari window (an X display: Xvfb + Mesa in CI, `.ci/run`), driven as a
user drives it: files opened through the plugin's reader, widgets docked from the plugin menu,
buttons clicked, results looked at on the rendered canvas. Skipped without a display (then the
headless tests of test_napari_widgets.py still run). An exception in a Qt slot or a worker's
re-raise fails the test (pytest-qt's exception capture)."""
from __future__ import annotations

import os

import numpy as np
import pytest

REAL_DISPLAY = bool(os.environ.get("DISPLAY")) and os.environ.get("QT_QPA_PLATFORM", "xcb") == "xcb"
pytestmark = [pytest.mark.skipif(not REAL_DISPLAY, reason="no X display (QT_QPA_PLATFORM=xcb and DISPLAY): .ci/run "
                                                          "starts Xvfb"), pytest.mark.slow]
pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from evaluate.apply.tiff import write_tiff  # noqa: E402
from tests.conftest import TINY_BATCH, synthetic_micrograph  # noqa: E402

WAIT_MS = 120_000


@pytest.fixture
def viewer(qtbot):
    """A shown napari Viewer (the real Qt window and its OpenGL canvas), closed afterwards."""
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    yield viewer
    viewer.close()


def scan(tmp_path, name="scan", seed=1, size=128, pixel_size=0.38):
    image = synthetic_micrograph(np.random.default_rng(seed), size)[0].astype(np.float32)
    return write_tiff(tmp_path / f"{name}.tif", image, pixel_size)


def dock(viewer, title):
    _, widget = viewer.window.add_plugin_dock_widget("grapheneseg", title)
    if hasattr(widget, "device"):
        widget.device.value = "cpu"
    return widget


def click_and_wait(qtbot, widget, button=None):
    """Click the widget's button as a user does and wait until its work has ended."""
    (button or widget.run_button).native.click()
    qtbot.waitUntil(lambda: widget.run_button.enabled and widget.status.value != "working...", timeout=WAIT_MS)


def test_segment_draws_the_mask_on_the_canvas(viewer, qtbot, tmp_path):
    viewer.open(str(scan(tmp_path)), plugin="grapheneseg")
    widget = dock(viewer, "Segment contamination")
    click_and_wait(qtbot, widget)
    mask = viewer.layers["scan contamination"]
    assert widget.status.value.startswith(f"{mask.data.mean():.1%} contamination at 0.38 Å/px (file)")
    assert 0.05 < mask.data.mean() < 0.5, widget.status.value
    assert viewer.layers.selection.active is mask and not viewer.layers["scan P(contamination)"].visible
    with_mask = viewer.screenshot(canvas_only=True)
    mask.visible = False
    without = viewer.screenshot(canvas_only=True)
    assert np.abs(with_mask.astype(int) - without).mean() > 1.0  # the mask is drawn over the micrograph
    mask.visible = True
    click_and_wait(qtbot, widget)  # a re-run replaces its layers
    assert [layer.name for layer in viewer.layers] == ["scan", "scan contamination", "scan P(contamination)"]


def test_a_refusal_and_a_failing_worker_are_wrapped_messages(viewer, qtbot, tmp_path, monkeypatch):
    """The 169 nm/px overview is refused with the file and its scale's source named, in a status
    line that wraps (the dock does not widen); a worker that fails is a message too, not a traceback."""
    import evaluate.napari.widgets as widgets

    viewer.open(str(write_tiff(tmp_path / "overview.tif", np.ones((80, 80), np.float32), 1690.0)), plugin="grapheneseg")
    widget = dock(viewer, "Segment contamination")
    width = widget.native.width()
    click_and_wait(qtbot, widget)
    assert widget.status.value.startswith("error: ") and "overview.tif" in widget.status.value
    assert "169 nm/px (file)" in widget.status.value
    qtbot.wait(100)
    assert widget.native.width() <= max(width, 500)
    monkeypatch.setattr(widgets, "segmentation_layers", lambda *a: (_ for _ in ()).throw(RuntimeError("disk full")))
    click_and_wait(qtbot, widget)
    assert widget.status.value == "error: disk full"
    assert [layer.name for layer in viewer.layers] == ["overview"]


def test_which_to_label_next_skips_a_refused_layer(viewer, qtbot, tmp_path):
    for i in range(3):
        viewer.open(str(scan(tmp_path, f"scan{i}", seed=i)), plugin="grapheneseg")
    viewer.open(str(write_tiff(tmp_path / "overview.tif", np.ones((80, 80), np.float32), 1690.0)), plugin="grapheneseg")
    widget = dock(viewer, "Which to label next")
    widget.n.value, widget.coverage_every.value = 2, 0
    click_and_wait(qtbot, widget)
    table = widget.table.to_dict("list")
    assert table["rank"] == [1, 2] and set(table["layer"]) <= {"scan0", "scan1", "scan2"}
    assert "skipped layer 'overview'" in widget.status.value


def test_structure_map_of_two_grains(viewer, qtbot, tmp_path):
    from tests.evaluate.analysis.test_orientation import two_grains_and_a_hole

    viewer.open(str(write_tiff(tmp_path / "gb.tif", two_grains_and_a_hole()[0].astype(np.float32), 0.3)),
                plugin="grapheneseg")
    widget = dock(viewer, "Structure map")
    click_and_wait(qtbot, widget)
    assert "2 grain(s)" in widget.status.value and widget.table.shape[0] == 2, widget.status.value
    assert viewer.layers["gb classes"].visible and not viewer.layers["gb orientation (deg mod 60)"].visible


def test_correct_save_and_finetune_in_the_viewer(viewer, qtbot, tmp_path, monkeypatch):
    """A user segments, paints a correction with the brush, saves the pair, fine-tunes (a short
    schedule here) and sees the image re-segmented by the new model; a second save of a changed
    mask under the same name is refused, not overwritten."""
    import evaluate.napari.widgets as widgets
    from evaluate.napari import layers

    viewer.open(str(scan(tmp_path)), plugin="grapheneseg")
    segment = dock(viewer, "Segment contamination")
    click_and_wait(qtbot, segment)
    mask = viewer.layers["scan contamination"]
    mask.paint((10, 10), 1)  # the brush (size 10 px) adds contamination
    assert mask.data[8:12, 8:12].all()
    tune = dock(viewer, "Fine-tune on your corrections")
    tune.mask.value = mask
    tune.folder.value, tune.out.value = tmp_path / "pairs", tmp_path / "mine.ckpt"
    tune.save_button.native.click()
    assert tune.status.value.startswith("scan.png + scan_LABEL.png saved, 128 x 128 px; 1 pair(s)"), tune.status.value
    mask.paint((100, 100), 1)
    tune.save_button.native.click()
    assert tune.status.value.startswith("error: ") and "exists" in tune.status.value
    tiny = ["finetune.epochs=1", "select.enabled=false", *TINY_BATCH]
    monkeypatch.setattr(widgets, "finetune_layers", lambda *a: layers.finetune_layers(*a, overrides=tiny))
    click_and_wait(qtbot, tune)
    assert tune.status.value.startswith(f"{tmp_path / 'mine.ckpt'}: ") and "re-segmented" in tune.status.value
    assert (tmp_path / "mine.ckpt").exists()
    assert viewer.layers["scan contamination"].metadata["model"] == str(tmp_path / "mine.ckpt")


def test_save_layer_writes_an_imagej_tiff_at_its_scale(viewer, tmp_path):
    """File > Save Selected Layer(s) through the plugin's writer keeps the layer's nm scale, for an
    image and for a labels layer (one writer entry per layer type: npe2 reads a list of types as
    "all of them at once", which matched neither)."""
    from evaluate.napari.reader import read_layers

    image = viewer.open(str(scan(tmp_path)), plugin="grapheneseg")[0]
    labels = viewer.add_labels(np.eye(128, dtype=np.uint8), scale=image.scale, units=image.units, name="marks")
    for layer in (image, labels):
        viewer.layers.selection = {layer}
        written = viewer.layers.save(str(tmp_path / f"saved {layer.name}.tif"), selected=True, plugin="grapheneseg")
        assert written == [str(tmp_path / f"saved {layer.name}.tif")]
        (data, kwargs, _), = read_layers(written[0])
        assert kwargs["scale"] == pytest.approx((0.038, 0.038)) and kwargs["units"] == ("nm", "nm")
        assert np.array_equal(data, layer.data)

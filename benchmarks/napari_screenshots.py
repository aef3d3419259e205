"""Screenshots of the napari plugin in a real window, each widget run as a user runs it, for
docs/how-to/napari.md. Needs an X display (a desktop, or `Xvfb :99 &` with DISPLAY=:99
QT_QPA_PLATFORM=xcb LIBGL_ALWAYS_SOFTWARE=1).

    python benchmarks/napari_screenshots.py --real path/to/images --out docs/images/napari
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

SEGMENT = "2014_0823_Gr_FS_001_layer_0005"  # contamination and clean lattice
GRAIN = "2015_0111_GrGB_FSD05_002_layer_0006"  # a tilt boundary through the field
OTHERS = ("2013_0611_GrGB_TS_001_layer_0003", "2014_0105_Gr_FS_023_layer_0002", "2015_0310_Gr_D5_FS_002_layer_0011")


def wait(widget, timeout: float = 300.0) -> None:
    """Process events until the widget's work has ended."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.time() + timeout
    while time.time() < end:
        app.processEvents()
        if widget.run_button.enabled and widget.status.value != "working...":
            return
        time.sleep(0.05)
    raise TimeoutError(widget.status.value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="folder of the public labelled micrographs")
    parser.add_argument("--out", default="docs/images/napari", help="folder for the PNGs")
    args = parser.parse_args()
    import napari
    from qtpy.QtWidgets import QApplication
    from PIL import Image

    from evaluate.apply.tiff import write_tiff

    real, out = Path(args.real), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pick = {name: real / f"{name}.png" for name in (SEGMENT, GRAIN, *OTHERS)}
    missing = [str(p) for p in pick.values() if not p.exists()]
    if missing:
        raise SystemExit(f"not in --real: {missing}")

    def shot(viewer, name: str) -> None:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()  # napari's "PyQt5 backend is deprecated" notice would cover the canvas
        for _ in range(20):
            QApplication.instance().processEvents()
            time.sleep(0.02)
        image = viewer.screenshot(canvas_only=False)
        Image.fromarray(image).convert("RGB").save(out / name, optimize=True)
        print(out / name, image.shape)

    def fresh(paths, widget_title):
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1500, 900)
        for path in paths:
            viewer.open(str(path), plugin="grapheneseg")
        _, widget = viewer.window.add_plugin_dock_widget("grapheneseg", widget_title)
        if hasattr(widget, "device"):
            widget.device.value = "cpu"
        return viewer, widget

    viewer, widget = fresh([pick[SEGMENT]], "Segment contamination")
    widget.run_button.native.click()
    wait(widget)
    shot(viewer, "segment.png")
    _, atoms = viewer.window.add_plugin_dock_widget("grapheneseg", "Find atoms")
    atoms.device.value = "cpu"
    atoms.run_button.native.click()
    wait(atoms)
    viewer.camera.zoom *= 3  # the honeycomb is finer than a screen pixel at the whole-field zoom
    shot(viewer, "atoms.png")
    viewer.close()

    viewer, widget = fresh([pick[GRAIN]], "Structure map")
    widget.run_button.native.click()
    wait(widget)
    shot(viewer, "structure.png")
    viewer.close()

    viewer, widget = fresh([pick[n] for n in OTHERS], "Which to label next")
    overview = write_tiff(out.parent / "overview_169nm.tif", np.ones((80, 80), np.float32), 1690.0)
    viewer.open(str(overview), plugin="grapheneseg")
    widget.n.value, widget.coverage_every.value = 2, 0
    widget.run_button.native.click()
    wait(widget)
    viewer.layers.remove("overview_169nm")  # skipped (the status says so); at 169 nm/px it would fill the canvas
    viewer.reset_view()
    shot(viewer, "suggest.png")
    viewer.close()

    viewer, widget = fresh([overview], "Segment contamination")
    widget.run_button.native.click()
    wait(widget)
    shot(viewer, "refused.png")
    viewer.close()
    overview.unlink()

    viewer, widget = fresh([pick[SEGMENT]], "Segment contamination")
    widget.run_button.native.click()
    wait(widget)
    _, tune = viewer.window.add_plugin_dock_widget("grapheneseg", "Fine-tune on your corrections")
    mask = viewer.layers[f"{SEGMENT} contamination"]
    tune.mask.value = mask
    pairs = Path(tempfile.mkdtemp()) / "corrections"
    tune.folder.value = pairs
    mask.mode, mask.brush_size, mask.selected_label = "paint", 12, 1
    mask.paint((40, 200), 1)  # a correction a user painted with the brush
    tune.save_button.native.click()
    shot(viewer, "finetune.png")
    viewer.close()
    shutil.rmtree(pairs.parent)


if __name__ == "__main__":
    main()

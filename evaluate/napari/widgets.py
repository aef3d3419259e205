"""napari widgets (magicgui): thin wrappers over evaluate.napari.layers, which calls evaluate.api.

Each widget picks among the viewer's 2-D image layers, runs the work in a worker thread (napari's
`create_worker`: the viewer never freezes; progress in the widget and napari's activity dock) and
adds the resulting layers on the image's own scale. Errors are shown in the widget and as a napari
notification, never as a traceback.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import (CheckBox, ComboBox, Container, FloatSpinBox, Label, LineEdit, ProgressBar, PushButton,
                              SpinBox, Table)

from .layers import Source, atom_layers, segmentation_layers, structure_layers, suggest_steps

DEVICES = ("auto", "cpu", "cuda")
MODEL_HELP = "empty: the packaged simulation-only model; else a .ckpt file or a run folder (fold ensemble)"


def _image_layers(viewer: Any) -> list:
    from napari.layers import Image

    return [layer for layer in viewer.layers if isinstance(layer, Image) and layer.ndim == 2 and not layer.rgb]


def _add(viewer: Any, layer_data: list[tuple]) -> list:
    """Add the layers, each replacing an earlier layer of its name (a re-run updates its maps
    instead of adding "... [1]" copies); the first one is left selected."""
    from napari.layers import Layer

    added = []
    for data, kwargs, kind in layer_data:
        name = kwargs.get("name")
        if name in viewer.layers:
            viewer.layers.remove(name)
        added.append(viewer.add_layer(Layer.create(data, kwargs, kind)))
    if added:
        viewer.layers.selection.active = added[0]
    return added


class _Base(Container):
    """An image chooser kept in step with the viewer's layers, a run button, a progress bar and a
    status line."""

    title = ""

    def __init__(self, napari_viewer: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.viewer = napari_viewer
        self.status = Label(value="")
        if hasattr(self.status.native, "setWordWrap"):  # long messages wrap instead of widening the dock
            self.status.native.setWordWrap(True)
        self.progress = ProgressBar(value=0, min=0, max=1, visible=False, label="progress")
        self.run_button = PushButton(text=self.title)
        self.run_button.changed.connect(self.start)
        self.worker = None
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh)

    def _refresh(self, *_: Any) -> None:
        for widget in self:
            if isinstance(widget, ComboBox) and callable(getattr(widget, "_default_choices", None)):
                widget.reset_choices()

    def _image_choice(self, label: str = "image") -> ComboBox:
        return ComboBox(label=label, choices=lambda _w: [(layer.name, layer) for layer in _image_layers(self.viewer)])

    # the work, in a thread
    def job(self) -> tuple[Callable, tuple]:  # pragma: no cover - each widget defines it
        raise NotImplementedError

    def done(self, value: Any) -> None:  # pragma: no cover
        raise NotImplementedError

    def start(self, *_: Any) -> Any:
        """Start the work in a worker thread; returns the worker (tests wait on it). Every handler,
        the error handler first, is connected before the thread starts (`_connect`): an error is
        then a message in the widget, never superqt's re-raise into the main thread (a traceback,
        or an abort outside napari's event loop)."""
        import inspect

        from napari.qt.threading import create_worker

        try:
            func, args = self.job()
        except ValueError as err:
            self._failed(err)
            return None
        self.run_button.enabled = False
        self.progress.visible, self.progress.value = True, 0
        self.status.value = "working..."
        connect = {"errored": self._failed, "returned": self._finished, "finished": self._idle}
        if inspect.isgeneratorfunction(func):
            connect["yielded"] = self._step
        self.worker = create_worker(func, *args, _progress={"desc": self.title}, _connect=connect,
                                    _start_thread=False)
        self.worker.start()
        return self.worker

    def _step(self, value: tuple[int, int]) -> None:
        done, total = value
        self.progress.max, self.progress.value = total, done
        self.status.value = f"{done} of {total}"

    def _finished(self, value: Any) -> None:
        self.progress.max = self.progress.value = 1
        self.done(value)

    def _failed(self, err: BaseException) -> None:
        self.status.value = f"error: {err}"
        try:
            from napari.utils.notifications import show_error

            show_error(f"{self.title}: {err}")
        except Exception:  # no notification manager (headless): the status line says it
            pass

    def _idle(self) -> None:
        self.run_button.enabled = True


class SegmentWidget(_Base):
    """Contamination mask (Labels), probability and, optionally, uncertainty (Images) of an image."""

    title = "Segment contamination"

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        self.image = self._image_choice()
        self.model = LineEdit(label="model", value="", tooltip=MODEL_HELP)
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.tta = CheckBox(label="TTA (8 symmetries)", value=False)
        self.uncertainty = CheckBox(label="uncertainty", value=False)
        self.pixel_size = FloatSpinBox(label="pixel size (Å/px)", value=0.0, min=0.0, max=100.0, step=0.01,
                                       tooltip="0: the layer's (from the file), else read from the lattice")
        self.threshold = FloatSpinBox(label="threshold", value=0.5, min=0.0, max=1.0, step=0.05)
        self.extend([self.image, self.model, self.device, self.tta, self.uncertainty, self.pixel_size,
                     self.threshold, self.run_button, self.progress, self.status])

    def job(self) -> tuple[Callable, tuple]:
        if self.image.value is None:
            raise ValueError("open a micrograph first (File > Open, or File > Open Sample)")
        return segmentation_layers, (Source.of(self.image.value), self.model.value, self.device.value,
                                     self.tta.value, self.uncertainty.value, self.pixel_size.value or None,
                                     self.threshold.value)

    def done(self, value: list[tuple]) -> None:
        _add(self.viewer, value)
        meta = value[0][1]["metadata"]
        size = meta["pixel_size_A"]
        self.status.value = (f"{meta['contamination_fraction']:.1%} contamination at "
                             + (f"{size:.4g} Å/px ({meta['pixel_size_source']})" if size else "native scale (unknown)")
                             + (f"; out of range: {', '.join(meta['ood'])}" if meta["ood"] else ""))


class AtomsWidget(_Base):
    """Atoms (Points) and bonds (Vectors coloured by angle mod 60 degrees) outside the contamination."""

    title = "Find atoms"

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        self.image = self._image_choice()
        self.method = ComboBox(label="method", choices=("network", "extrema"), value="network")
        self.model = LineEdit(label="model", value="", tooltip=MODEL_HELP)
        self.atom_model = LineEdit(label="atom model", value="",
                                   tooltip="empty: the packaged atom-map model; else a .ckpt (train pretrain --task atoms)")
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.pixel_size = FloatSpinBox(label="pixel size (Å/px)", value=0.0, min=0.0, max=100.0, step=0.01)
        self.extend([self.image, self.method, self.model, self.atom_model, self.device, self.pixel_size,
                     self.run_button, self.progress, self.status])

    def job(self) -> tuple[Callable, tuple]:
        if self.image.value is None:
            raise ValueError("open a micrograph first")
        return atom_layers, (Source.of(self.image.value), self.method.value, self.model.value,
                             self.atom_model.value, self.device.value, self.pixel_size.value or None)

    def done(self, value: list[tuple]) -> None:
        _add(self.viewer, value)
        meta = value[0][1]["metadata"]
        self.status.value = f"{meta['atoms']} atoms, {meta['bonds']} bonds; registration {meta['registration']}"


class StructureWidget(_Base):
    """The four classes (Labels), the lattice orientation (Image, hue 0-60 degrees) and the grains
    (Labels, with their table) of an image, as `evaluate structure` maps them."""

    title = "Structure map"

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        self.image = self._image_choice()
        self.model = LineEdit(label="model", value="", tooltip=MODEL_HELP)
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.pixel_size = FloatSpinBox(label="pixel size (Å/px)", value=0.0, min=0.0, max=100.0, step=0.01,
                                       tooltip="0: the layer's (from the file), else read from the lattice")
        self.table = Table(value={"grain": [], "area (nm²)": [], "orientation (°)": [], "misorientation (°)": []})
        self.extend([self.image, self.model, self.device, self.pixel_size, self.run_button, self.progress,
                     self.status, self.table])

    def job(self) -> tuple[Callable, tuple]:
        if self.image.value is None:
            raise ValueError("open a micrograph first")
        return structure_layers, (Source.of(self.image.value), self.model.value, self.device.value,
                                  self.pixel_size.value or None)

    def done(self, value: list[tuple]) -> None:
        _add(self.viewer, value)
        meta = value[0][1]["metadata"]
        row, grains = meta["summary"], meta["grains"]
        self.table.value = {"grain": [g["grain"] for g in grains], "area (nm²)": [g["area_nm2"] for g in grains],
                            "orientation (°)": [g["orientation_deg"] for g in grains],
                            "misorientation (°)": [g["misorientation_deg"] for g in grains]}
        self.status.value = (f"{row['grains']} grain(s), boundaries {row['boundary_length_nm']} nm; contamination "
                             f"{float(row['contamination_fraction']):.1%}, vacuum {float(row['vacuum_fraction']):.1%}; "
                             f"lattice check {row['lattice_check']}" if row["pixel_size_A"] != "unknown" else
                             "no pixel size and no lattice read: no orientation or grains (give the pixel size)")


class SuggestWidget(_Base):
    """Which of the open micrographs to label next (uncertainty with diversity, `evaluate suggest`)."""

    title = "Which to label next"

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        self.n = SpinBox(label="how many", value=5, min=1, max=1000)
        self.coverage_every = SpinBox(label="coverage pick every", value=5, min=0, max=1000,
                                      tooltip="every N-th pick by predicted coverage, so clean images are not all "
                                              "passed over (0: never)")
        self.model = LineEdit(label="model", value="", tooltip=MODEL_HELP + "; a fold ensemble ranks best")
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.table = Table(value={"rank": [], "layer": [], "score": [], "why": []})
        self.extend([self.n, self.coverage_every, self.model, self.device, self.run_button, self.progress,
                     self.status, self.table])

    def job(self) -> tuple[Callable, tuple]:
        sources = [Source.of(layer) for layer in _image_layers(self.viewer)
                   if "pixel_size_source" in layer.metadata or "contamination" not in layer.name]
        sources = [s for s in sources if "image_layer" not in s.metadata]  # not the maps this plugin made
        if len(sources) < 2:
            raise ValueError("open at least two micrographs to choose among")
        return suggest_steps, (sources, self.n.value, self.coverage_every.value, self.model.value, self.device.value)

    def done(self, found: tuple[list, dict[str, str]]) -> None:
        picks, skipped = found
        self.table.value = {"rank": [p.rank for p in picks], "layer": [p.layer for p in picks],
                            "score": [f"{p.score:.3f}" for p in picks], "why": [p.why for p in picks]}
        for layer in self.viewer.layers:
            layer.metadata.pop("label_next_rank", None)
        for pick in picks:
            if pick.layer in self.viewer.layers:
                self.viewer.layers[pick.layer].metadata["label_next_rank"] = pick.rank
        self.status.value = (f"label these {len(picks)} next: " + ", ".join(p.layer for p in picks)
                             + "".join(f"; skipped {why}" for why in skipped.values()))

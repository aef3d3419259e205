"""napari widgets (magicgui): thin wrappers over evaluate.napari.layers, which calls evaluate.api.

Each widget picks among the viewer's 2-D image layers, runs the work in a worker thread (napari's
`create_worker`: the viewer never freezes; progress in the widget and napari's activity dock) and
adds the resulting layers on the image's own scale. Errors are shown in the widget and as a napari
notification, never as a traceback.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, ProgressBar,
                              PushButton, SpinBox, Table)

from .layers import (Source, atom_layers, finetune_layers, save_correction, segmentation_layers, structure_layers,
                     suggest_steps)

DEVICES = ("auto", "cpu", "cuda")
MODEL_HELP = "empty: the packaged simulation-only model; else a .ckpt file or a run folder (fold ensemble)"


class Cancelled(Exception):
    """The user stopped the work (raised in the worker at its next step)."""


def _labels_layers(viewer: Any) -> list:
    from napari.layers import Labels

    return [layer for layer in viewer.layers if isinstance(layer, Labels) and layer.ndim == 2]


def _image_layers(viewer: Any) -> list:
    from napari.layers import Image

    return [layer for layer in viewer.layers if isinstance(layer, Image) and layer.ndim == 2 and not layer.rgb]


def _table(columns: Sequence[str]) -> Table:
    """A read-only table that shows its cells' text as given (magicgui's default delegate rewrites
    numbers, so 0.089 became 8.900e-02 beside 0.1600)."""
    from qtpy.QtWidgets import QAbstractItemView, QStyledItemDelegate

    table = Table(value={c: [] for c in columns})
    table.native.setItemDelegate(QStyledItemDelegate(table.native))
    table.native.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    return table


def _fill(table: Table, columns: dict[str, list]) -> None:
    table.value = columns
    table.native.resizeColumnsToContents()


def _number(value: Any, digits: int = 1) -> str:
    """A table cell: the number to `digits` decimals, empty when there is none."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if number != number else f"{number:.{digits}f}"


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
        if isinstance(err, Cancelled):
            self.status.value = f"cancelled: {err}"
            return
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
        self.table = _table(["grain", "area (nm²)", "orientation (°)", "misorientation (°)"])
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
        _fill(self.table, {"grain": [g["grain"] for g in grains],
                           "area (nm²)": [_number(g["area_nm2"]) for g in grains],
                           "orientation (°)": [_number(g["orientation_deg"]) for g in grains],
                           "misorientation (°)": [_number(g["misorientation_deg"]) for g in grains]})
        self.status.value = (f"{row['grains']} grain(s), boundaries {row['boundary_length_nm']} nm; contamination "
                             f"{float(row['contamination_fraction']):.1%}, "
                             f"{_vacuum_text(row)}; "
                             f"lattice check {row['lattice_check']}" if row["pixel_size_A"] != "unknown" else
                             "no pixel size and no lattice read: no orientation or grains (give the pixel size)")


def _vacuum_text(row: dict) -> str:
    """The vacuum share of a structure row, or why none was called (evaluate.apply.structure)."""
    check = row.get("vacuum_check", "ok")
    return f"vacuum {float(row['vacuum_fraction']):.1%}" if check == "ok" else f"vacuum {check}"


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
        self.table = _table(["rank", "layer", "score", "why"])
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
        _fill(self.table, {"rank": [p.rank for p in picks], "layer": [p.layer for p in picks],
                           "score": [_number(p.score, 3) for p in picks], "why": [p.why for p in picks]})
        for layer in self.viewer.layers:
            layer.metadata.pop("label_next_rank", None)
        for pick in picks:
            if pick.layer in self.viewer.layers:
                self.viewer.layers[pick.layer].metadata["label_next_rank"] = pick.rank
        self.status.value = (f"label these {len(picks)} next: " + ", ".join(p.layer for p in picks)
                             + "".join(f"; skipped {why}" for why in skipped.values()))


class FineTuneWidget(_Base):
    """Teach the model your corrections: paint the contamination Labels of a segmented image
    (napari's brush: label 1 adds contamination, the eraser removes it), save image and labels as a
    pair, then fine-tune on the folder of pairs (guarded as `train finetune`: the pretrained model
    is kept unless fine-tuning beats it on held-out pairs beyond noise), in a worker with progress
    and Cancel; the image is re-segmented with the new checkpoint."""

    title = "Fine-tune"

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        from qtpy.QtCore import QTimer

        self.image = self._image_choice()
        self.mask = ComboBox(label="corrected mask",
                             choices=lambda _w: [(layer.name, layer) for layer in _labels_layers(self.viewer)],
                             tooltip="the image's contamination Labels layer, painted with your corrections")
        self.folder = FileEdit(label="pairs folder", mode="d", value="corrections",
                               tooltip="NAME.png + NAME_LABEL.png pairs; `train finetune --real` reads the same")
        self.overwrite = CheckBox(label="replace a pair of that name", value=False)
        self.save_button = PushButton(text="Save pair")
        self.save_button.changed.connect(self.save)
        self.model = LineEdit(label="start from", value="", tooltip=MODEL_HELP)
        self.out = FileEdit(label="new model", mode="w", value="mine.ckpt", filter="*.ckpt",
                            tooltip="the fine-tuned checkpoint to write (an existing file is not overwritten)")
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.cancel_button.changed.connect(self.cancel)
        self._step_seen: tuple[str, int, int] | None = None
        self._cancel = False
        self._timer = QTimer()
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._show_step)
        self.extend([self.image, self.mask, self.folder, self.overwrite, self.save_button, self.model, self.out,
                     self.device, self.run_button, self.cancel_button, self.progress, self.status])

    def save(self, *_: Any) -> Any:
        """Save the chosen image and corrected mask as a pair (quick: no worker)."""
        try:
            if self.image.value is None or self.mask.value is None:
                raise ValueError("open a micrograph and segment it first; then paint its contamination layer")
            saved = save_correction(Source.of(self.image.value), self.mask.value.data, self.folder.value,
                                    self.model.value, overwrite=self.overwrite.value)
        except (ValueError, OSError) as err:
            self._failed(err)
            return None
        pairs = len(list(saved.image.parent.glob("*_LABEL.png")))
        self.status.value = (f"{saved.image.name} + {saved.label.name} "
                             + ("unchanged" if saved.unchanged else f"saved, {saved.shape[1]} x {saved.shape[0]} px")
                             + f"; {pairs} pair(s) in {saved.image.parent}")
        return saved

    def job(self) -> tuple[Callable, tuple]:
        from pathlib import Path

        folder = Path(self.folder.value).expanduser()
        if not folder.is_dir() or not any(folder.glob("*_LABEL.png")):
            raise ValueError(f"{folder}: no saved pairs yet (Save pair first)")
        self._cancel, self._step_seen = False, None
        self.cancel_button.enabled = True
        self._timer.start()
        source = None if self.image.value is None else Source.of(self.image.value)
        return finetune_layers, (folder, self.out.value, self.model.value, self.device.value, source, self._observe)

    def _observe(self, desc: str, done: int, total: int) -> None:
        """Called in the worker after every training step: remember it (the timer shows it), stop if asked."""
        self._step_seen = (desc, done, total)
        if self._cancel:
            raise Cancelled("no model written; the saved pairs are kept")

    def _show_step(self) -> None:
        if self._step_seen:
            desc, done, total = self._step_seen
            self.progress.max, self.progress.value = total, done
            self.status.value = f"{desc.replace('all images', 'training')}: step {done} of {total}"

    def cancel(self, *_: Any) -> None:
        self._cancel = True
        self.status.value = "cancelling at the next step..."

    def _stop_showing_steps(self) -> None:
        """Stop the progress timer before the final message, which a late tick would overwrite."""
        self._timer.stop()
        self._step_seen = None

    def _failed(self, err: BaseException) -> None:
        self._stop_showing_steps()
        super()._failed(err)

    def _idle(self) -> None:
        self._stop_showing_steps()
        self.cancel_button.enabled = False
        super()._idle()

    def done(self, value: tuple[dict, list[tuple]]) -> None:
        self._stop_showing_steps()
        summary, layers = value
        _add(self.viewer, layers)
        again = f"; {layers[0][1]['name']} re-segmented with it" if layers else ""
        self.status.value = f"{summary['out']}: {summary['message']}{again}"

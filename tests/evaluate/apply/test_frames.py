"""Stacks and focal series through `evaluate predict --frames first|all|mean`: every frame answered
(a row and outputs each) with their drift-registered consensus, or the first frame only, or the
registered mean; frames read in full (`grapheneseg.formats.read_frames`)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage

from evaluate.apply.frames import drift, registered_mean
from evaluate.cli import main
from grapheneseg.formats import read_frames, read_micrograph
from tests.conftest import synthetic_micrograph
from tests.evaluate.apply.test_archive import tiny_model

SHIFTS = [(0.0, 0.0), (2.0, -3.0), (-1.5, 1.0)]


def write_stack(path: Path) -> list[np.ndarray]:
    """A 3-frame ImageJ TIFF: one micrograph drifting by SHIFTS, the last frame holding a second blob."""
    import tifffile

    image, _ = synthetic_micrograph(np.random.default_rng(0), 96)
    frames = [scipy.ndimage.shift(image.astype(np.float32), s, order=1, mode="nearest") for s in SHIFTS]
    other, _ = synthetic_micrograph(np.random.default_rng(5), 96)
    frames[2][:48, :48] = other[:48, :48]  # a different field in one corner: the frames disagree there
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.stack(frames), imagej=True, resolution=(1 / 0.04, 1 / 0.04), metadata={"unit": "nm"})
    return frames


def test_every_frame_is_read(tmp_path: Path) -> None:
    frames = write_stack(tmp_path / "series.tif")
    read = read_frames(tmp_path / "series.tif")
    assert [m.frame for m in read] == [0, 1, 2] and all(m.frames == 3 for m in read)
    assert all(np.allclose(m.image, f) for m, f in zip(read, frames))
    assert read[1].note == "frame 2 of 3" and read[0].pixel_size == pytest.approx(0.4)
    first = read_micrograph(tmp_path / "series.tif")
    assert first.frames == 3 and "first frame is used" in first.note


def test_drift_is_found_and_undone(tmp_path: Path) -> None:
    frames = write_stack(tmp_path / "series.tif")
    assert drift(frames[0], frames[1]) == pytest.approx([-2.0, 3.0], abs=0.3)
    mean = registered_mean(read_frames(tmp_path / "series.tif")[:2])
    assert mean.reading == "mean" and mean.frame is None
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(mean.image - frames[0])[inner].mean() < 0.1 * np.abs(frames[1] - frames[0])[inner].mean()


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "predictions.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("mode, frames, outputs", [
    ("all", ["1", "2", "3", "consensus"], ["series_frame001", "series_frame002", "series_frame003", "series_consensus"]),
    ("first", ["1"], ["series"]),
    ("mean", ["mean"], ["series"]),
])
def test_predict_frames(tmp_path: Path, mode: str, frames: list[str], outputs: list[str]) -> None:
    write_stack(tmp_path / "in" / "series.tif")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tiny_model(tmp_path / "m.ckpt")), "--input", str(tmp_path / "in"),
                 "--out", str(out), "--quiet", "--frames", mode]) == 0
    table = rows(out)
    assert [r["frame"] for r in table] == frames and [r["outputs"] for r in table] == outputs
    assert all((out / f"{o}_mask.png").exists() for o in outputs)
    if mode == "all":  # each frame its own answer: frame 3's different corner changes its probability
        assert table[-1]["frame_agreement"] and not (out / "series_mask.png").exists()
        from PIL import Image

        first, third = (np.asarray(Image.open(out / f"series_frame00{k}_overlay.png")) for k in (1, 3))
        assert not np.array_equal(first, third)

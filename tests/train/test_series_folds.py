"""Cross-validation on frames of focal series (train/crossval.py): the outer folds and every fold's
inner validation hold out whole series, cv_metrics.json says so, and a run folder made with another
grouping is refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from grapheneseg.config import load_config
from grapheneseg.splits import series_of, straddling
from tests.conftest import TINY_BATCH, TINY_NET, write_labelled_folder
from train.crossval import cross_validate

TINY = [*TINY_NET, *TINY_BATCH, "model.batch_norm=true", "loop.epochs=1", "loop.crops_per_image=1",
        "loop.val_every=1", "cv.folds=3", "select.few=20"]
FRAMES = {"A": 3, "B": 2, "C": 1, "D": 2, "E": 1, "F": 1}  # 10 images in 6 series


def series_folder(folder: Path) -> Path:
    """A labelled folder whose names are frames of focal series (NAME_layer_NNNN)."""
    write_labelled_folder(folder, n=sum(FRAMES.values()))
    names = [f"{s}_layer_{i:04d}" for s, n in FRAMES.items() for i in range(1, n + 1)]
    for i, name in enumerate(names):
        (folder / f"img{i:02d}.png").rename(folder / f"{name}.png")
        (folder / f"img{i:02d}_LABEL.png").rename(folder / f"{name}_LABEL.png")
    return folder


def test_outer_and_inner_splits_keep_every_series_on_one_side(tmp_path):
    real = series_folder(tmp_path / "real")
    run = tmp_path / "run"
    summary = cross_validate(load_config("train", TINY), real, run)
    splits = json.loads((run / "splits.json").read_text())
    assert straddling(splits) == [] and {s["grouping"] for s in splits} == {"series"}
    assert (summary["grouping"], summary["series"], summary["straddling_series"]) == ("series", 6, 0)
    for split in splits:
        inner = sorted((run / f"fold_{split['fold']}").glob("inner_*/curve.json"))
        assert inner, "no inner validation ran"
        for path in inner:
            curve = json.loads(path.read_text())
            both = {series_of(n) for n in curve["train"]} & {series_of(n) for n in curve["held_out"]}
            assert not both, f"{path}: series {both} both trained on and held out"
            assert not set(curve["held_out"]) & set(split["test"])
    with pytest.raises(ValueError, match="grouped by series"):  # the folder's folds were made another way
        cross_validate(load_config("train", [*TINY, "cv.grouping=image"]), real, run, resume=True)


def test_image_wise_folds_stay_available(tmp_path):
    real = series_folder(tmp_path / "real")
    summary = cross_validate(load_config("train", [*TINY, "cv.grouping=image", "select.enabled=false"]), real,
                             tmp_path / "run")
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert summary["grouping"] == "image" and {s["grouping"] for s in splits} == {"image"}
    assert summary["straddling_series"] == len(straddling(splits))

"""`cv.only_folds`: a CV run that trains and tests some folds of the saved splits (a costly
preset measured on two folds), on the same splits as a full run, and refuses folds that do not exist."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from grapheneseg.config import load_config
from grapheneseg.splits import kfold_splits
from tests.conftest import TINY_BATCH, TINY_NET, write_labelled_folder
from train.crossval import chosen_folds, cross_validate, train_all

TINY = [*TINY_NET, *TINY_BATCH, "model.batch_norm=true", "loop.epochs=1", "loop.crops_per_image=1",
        "loop.checkpoint_every=100", "select.enabled=false"]
NAMES = [f"img{i:02d}" for i in range(6)]


def test_chosen_folds_keeps_only_the_named_folds_of_every_repeat() -> None:
    splits = kfold_splits(NAMES, 3, 2, 12345)
    assert chosen_folds(splits, None) == splits
    kept = chosen_folds(splits, [2, 0])
    assert [(s["repeat"], s["fold"]) for s in kept] == [(0, 0), (0, 2), (1, 0), (1, 2)]
    assert all(s in splits for s in kept)  # the same splits, not new ones
    with pytest.raises(ValueError, match=r"folds \[3\] do not exist"):
        chosen_folds(splits, [0, 3])
    with pytest.raises(ValueError, match="none given"):
        chosen_folds(splits, [])


def test_a_two_fold_run_scores_those_folds_of_the_full_splits(tmp_path: Path) -> None:
    real = write_labelled_folder(tmp_path / "real", n=6)
    run = tmp_path / "run"
    summary = cross_validate(load_config("train", [*TINY, "cv.folds=3", "cv.only_folds=[0,2]"]), real, run)
    splits = json.loads((run / "splits.json").read_text())
    assert splits == kfold_splits(NAMES, 3, 1, 12345)  # every fold saved, as a full run would
    assert sorted(p.name for p in run.glob("fold_*")) == ["fold_0", "fold_2"]
    tested = sorted(splits[0]["test"] + splits[2]["test"])
    assert sorted(summary["per_image"]) == tested and summary["test_images"] == len(tested) == 4
    assert summary["only_folds"] == [0, 2] and [f["fold"] for f in summary["per_fold"]] == [0, 2]

    with pytest.raises(ValueError, match="only_folds"):
        cross_validate(load_config("train", [*TINY, "cv.folds=3", "cv.only_folds=[5]"]), real, tmp_path / "bad")
    with pytest.raises(ValueError, match="only_folds"):
        train_all(load_config("train", [*TINY, "cv.only_folds=[0]"]), real, tmp_path / "all.ckpt")

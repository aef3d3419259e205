"""Cross-validation repeated with new shuffles (cv.repeats > 1): every repeat tests every image
once, on other folds; results of repeats are kept apart and pooled together."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluate.benchmark.report import arm_from_train_cv
from grapheneseg.config import load_config
from grapheneseg.metrics import pooled
from tests.conftest import TINY_BATCH, TINY_NET, write_labelled_folder
from train.crossval import cross_validate

TINY = [*TINY_NET, *TINY_BATCH, "model.batch_norm=true", "loop.epochs=1", "loop.crops_per_image=1",
        "loop.val_every=1"]


def test_two_repeats_of_three_folds(tmp_path: Path) -> None:
    real = write_labelled_folder(tmp_path / "real", n=6)
    run = tmp_path / "run"
    summary = cross_validate(load_config("train", [*TINY, "cv.folds=3", "cv.repeats=2"]), real, run)
    names = [f"img{i:02d}" for i in range(6)]
    splits = json.loads((run / "splits.json").read_text())
    partitions = []
    for repeat in (0, 1):
        tests = [sorted(s["test"]) for s in splits if s["repeat"] == repeat]
        assert len(tests) == 3 and sorted(sum(tests, [])) == names  # each image tested once per repeat
        partitions.append(sorted(tests))
    assert partitions[0] != partitions[1]  # a new shuffle, not the same folds again

    counts = []
    for split in splits:
        folder = run / (f"fold_{split['fold']}" + ("_repeat_1" if split["repeat"] else ""))
        fold = json.loads((folder / "metrics.json").read_text())
        assert (fold["repeat"], fold["fold"]) == (split["repeat"], split["fold"])
        assert sorted(fold["counts"]) == sorted(split["test"]) and (folder / "model.ckpt").exists()
        counts += [np.array(c) for c in fold["counts"].values()]
    assert len(counts) == 12
    assert summary["pooled"] == pooled(counts)  # both repeats' test pixels, pooled
    assert sorted(summary["per_image"]) == sorted(names + [f"{n}@repeat1" for n in names])
    assert len(summary["per_fold"]) == 6 and summary["repeats"] == 2

    arm = arm_from_train_cv(run, "U-Net")
    assert len(arm.per_fold) == 6 and len(arm.counts) == 12 and arm.pooled_all == summary["pooled"]

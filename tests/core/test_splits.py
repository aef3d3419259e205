"""Cross-validation folds (grapheneseg/splits.py): whole focal series per fold by default, the
paper's image-wise folds on request, and a splits.json that says how it was made."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from grapheneseg.splits import (adopt_splits, groups_of, kfold_splits, load_or_make_splits, series_of,
                                straddling)

# 9 series of 1-3 frames (16 images), as the public set's names: NAME_layer_NNNN
SERIES = {"A": 3, "B": 2, "C": 1, "D": 2, "E": 1, "F": 3, "G": 1, "H": 2, "I": 1}
NAMES = [f"{s}_layer_{i:04d}" for s, n in SERIES.items() for i in range(1, n + 1)]


def test_a_series_is_the_name_less_its_frame_suffix():
    assert series_of("2013_1114_Gr_FS_003_layer_0008") == "2013_1114_Gr_FS_003"
    assert series_of("2013_1113_Gr_134") == "2013_1113_Gr_134"  # no suffix: a series of one
    assert series_of("scan-f07", r"-f\d+$") == "scan"
    assert groups_of(["B_layer_0002", "A_layer_0001", "B_layer_0001"]) == [["A_layer_0001"],
                                                                         ["B_layer_0001", "B_layer_0002"]]
    assert groups_of(["B_layer_0002", "A_layer_0001"], "image") == [["A_layer_0001"], ["B_layer_0002"]]
    with pytest.raises(ValueError, match="cv.grouping"):
        groups_of(NAMES, "frame")


@pytest.mark.parametrize("folds", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_no_series_on_both_sides_of_a_fold(folds, seed):
    splits = kfold_splits(NAMES, folds, repeats=2, seed=seed)
    for split in splits:  # planted bug: a fold that takes frames without their series
        train, test = {series_of(n) for n in split["train"]}, {series_of(n) for n in split["test"]}
        assert not train & test, f"series {train & test} on both sides of fold {split['fold']}"
        assert sorted(split["train"] + split["test"]) == sorted(NAMES) and split["test"]
        assert split["grouping"] == "series" and split["series_pattern"] == r"_layer_\d+$"
    for repeat in (0, 1):  # every image tested once per repeat; folds balanced up to a series
        tested = [n for s in splits if s["repeat"] == repeat for n in s["test"]]
        assert sorted(tested) == sorted(NAMES)
        sizes = [len(s["test"]) for s in splits if s["repeat"] == repeat]
        assert max(sizes) - min(sizes) <= max(SERIES.values())
    assert straddling(splits) == []


def test_image_wise_folds_put_series_on_both_sides_and_the_check_sees_it():
    both = [straddling(kfold_splits(NAMES, 4, 1, seed, grouping="image")) for seed in range(5)]
    assert any(both)  # the paper's protocol: frames of one series in training and test
    assert all(s in SERIES for found in both for _, s in found)


def test_one_image_per_series_gives_the_image_wise_folds():
    names = [f"img{i:02d}" for i in range(13)]
    for folds in (2, 3, 5):
        image_wise = kfold_splits(names, folds, 2, 7, "image")
        assert kfold_splits(names, folds, 2, 7) == [
            {**s, "grouping": "series", "series_pattern": r"_layer_\d+$"} for s in image_wise]
        sizes = [len(s["test"]) for s in kfold_splits(names, folds, 1, 7)]
        assert sizes == [len(p) for p in np.array_split(np.arange(13), folds)]


def test_the_pattern_is_configurable():
    names = [f"scan{s}-f{i}" for s in range(6) for i in range(2)]
    splits = kfold_splits(names, 3, 1, 0, pattern=r"-f\d+$")
    assert straddling(splits, r"-f\d+$") == [] and all(len(s["test"]) == 4 for s in splits)
    assert straddling(kfold_splits(names, 3, 1, 0, pattern=r"_layer_\d+$"), r"-f\d+$")  # wrong pattern: no groups


def test_more_folds_than_series_is_an_error():
    with pytest.raises(ValueError, match="number of series"):
        kfold_splits(NAMES, 10)
    assert len(kfold_splits(NAMES, 10, grouping="image")) == 10


def test_splits_json_records_its_grouping_and_refuses_another(tmp_path):
    path = tmp_path / "splits.json"
    made = load_or_make_splits(path, NAMES, 3, 1, 5)
    assert all(s["grouping"] == "series" for s in json.loads(path.read_text()))
    assert load_or_make_splits(path, NAMES, 3, 1, 5) == made
    with pytest.raises(ValueError, match="grouped by series.*image-wise"):
        load_or_make_splits(path, NAMES, 3, 1, 5, grouping="image")
    # a file from before the grouping was recorded: image-wise, reused only as such
    old = tmp_path / "old" / "splits.json"
    old.parent.mkdir()
    legacy = [{k: v for k, v in s.items() if k not in ("grouping", "series_pattern")}
              for s in kfold_splits(NAMES, 3, 1, 5, "image")]
    old.write_text(json.dumps(legacy))
    assert load_or_make_splits(old, NAMES, 3, 1, 5, grouping="image") == legacy
    with pytest.raises(ValueError, match="image-wise .before splits.json recorded"):
        load_or_make_splits(old, NAMES, 3, 1, 5)


def test_handed_over_splits_that_claim_series_but_split_one_are_refused(tmp_path):
    splits = kfold_splits(NAMES, 3, 1, 5)
    bad = json.loads(json.dumps(splits))
    # planted bug: one frame of a series tested in fold 0 moved to fold 1's test part
    moved = next(n for n in bad[0]["test"] if SERIES[series_of(n)] > 1)
    bad[0]["test"].remove(moved)
    bad[0]["train"] = sorted(bad[0]["train"] + [moved])
    bad[1]["train"].remove(moved)
    bad[1]["test"] = sorted(bad[1]["test"] + [moved])
    assert straddling(bad) == [(0, series_of(moved))]
    with pytest.raises(ValueError, match="both sides"):
        adopt_splits(tmp_path / "arm" / "splits.json", bad, NAMES)
    assert adopt_splits(tmp_path / "arm" / "splits.json", splits, NAMES) == splits
    with pytest.raises(ValueError, match=r"grouping series, handed over: image"):
        adopt_splits(tmp_path / "arm" / "splits.json", kfold_splits(NAMES, 3, 1, 5, "image"), NAMES)


REAL = Path(os.environ.get("GRAPHENESEG_REAL_DIR", "/nonexistent"))


@pytest.mark.skipif(not (REAL / "2015_0310_Gr_D4_FS_001_layer_0027.png").is_file(),
                    reason="the public labelled micrographs are not here")
def test_the_public_set_default_folds_keep_series_together():
    """The 105 are 89 series; today's default (5 folds, split seed 12345) split image-wise put 11 of
    them on both sides of a fold, grouped none, with 21 images per fold either way."""
    from grapheneseg.micrographs import find_pairs

    names = [n for n, _, _ in find_pairs(REAL)]
    assert len(names) == 105 and len(groups_of(names)) == 89
    assert len(straddling(kfold_splits(names, 5, 1, 12345, "image"))) == 11
    grouped = kfold_splits(names, 5, 1, 12345)
    assert straddling(grouped) == [] and [len(s["test"]) for s in grouped] == [21] * 5

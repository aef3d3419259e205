"""The report's best / median / worst error examples are chosen among contaminated images."""
from __future__ import annotations

import pytest

from evaluate.benchmark.report import Arm, error_example_names


def test_examples_skip_images_without_contamination() -> None:
    counts = {  # [tp, fp, fn, tn]
        "clean": [0, 0, 0, 4096],  # empty label, empty prediction: Jaccard 1.0 by definition
        "good": [90, 5, 5, 3996],
        "fair": [50, 25, 25, 3996],
        "poor": [10, 45, 45, 3996],
        "good@repeat1": [100, 0, 0, 3996],  # a second repeat's copy of an image: not shown twice
    }
    arm = Arm("U-Net", [], counts)
    assert error_example_names(arm) == [("worst", "poor"), ("median", "fair"), ("best", "good")]
    with pytest.raises(ValueError, match="no test image holds contamination"):
        error_example_names(Arm("U-Net", [], {"clean": [0, 3, 0, 4093]}))

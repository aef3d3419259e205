"""`suggest` reserves every N-th pick for predicted coverage (issue 15), so clean micrographs,
which have no hesitant pixels and score about 0 by uncertainty, are not all passed over."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluate.apply.scale import Scale, ScaleSource
from evaluate.apply.segment import Segmentation
from evaluate.cli import main
from evaluate.apply.suggest import choose
from grapheneseg.formats import Micrograph

SIZE = 64


def _seg(name: str, seed: int, coverage: float, u: float) -> Segmentation:
    """A micrograph whose mean probability is 0.95 on the first `coverage` of its rows, 0.5 (hesitant,
    std `u`) on the next 4 rows when `u` > 0, and 0.01 elsewhere."""
    rng = np.random.default_rng(seed)
    prob = np.full((SIZE, SIZE), 0.01, np.float32)
    rows = int(round(coverage * SIZE))
    prob[:rows] = 0.95
    if u > 0:
        prob[rows:rows + 4] = 0.5
    image = (100 + 10 * rng.normal(size=(SIZE, SIZE))).astype(np.float32)
    return Segmentation(Micrograph(Path(name), image, None), prob, prob > 0.5, Scale(None, ScaleSource.UNKNOWN), 0.0,
                        np.full((SIZE, SIZE), u, np.float32), [], 0.0)


def _candidates() -> list[Segmentation]:
    dirty = [_seg(f"dirty{i}.png", i, 0.2 + 0.04 * i, 0.10 + 0.01 * i) for i in range(8)]
    return dirty + [_seg("clean0.png", 20, 0.0, 0.0), _seg("clean1.png", 21, 0.0, 0.0)]


def _names(picks) -> list[str]:
    return [p.segmentation.micrograph.path.name for p in picks]


def test_every_fifth_pick_goes_to_the_widest_coverage_gap() -> None:
    plain = _names(choose(_candidates(), 5, coverage_every=0))
    assert not any(n.startswith("clean") for n in plain)  # by uncertainty alone, clean images never come up
    picks = choose(_candidates(), 5, coverage_every=5)
    names = _names(picks)
    assert names[:4] == plain[:4] and names[4].startswith("clean")
    assert picks[4].why.startswith("coverage pick") and "coverage pick" not in picks[3].why
    ten = _names(choose(_candidates(), 10, coverage_every=5))
    assert ten[:5] == names and len(set(ten)) == 10  # nested, distinct


def test_coverage_every_one_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="coverage_every"):
        choose(_candidates(), 3, coverage_every=1)
    assert main(["suggest", "--input", str(tmp_path), "--out", str(tmp_path / "o"), "--coverage-every", "1"]) == 1
    assert "--coverage-every must be 0" in capsys.readouterr().err

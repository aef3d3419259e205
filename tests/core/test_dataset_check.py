"""The labelled-folder check lists every broken pair at once, and reports non-binary labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grapheneseg.micrographs import DataError, load_labelled


def test_every_broken_pair_is_listed(real_dir: Path) -> None:
    (real_dir / "img01_LABEL.png").unlink()
    (real_dir / "img02.png").unlink()
    (real_dir / "img03.png").write_text("hello")
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(real_dir / "img04_LABEL.png")
    with pytest.raises(DataError) as caught:
        load_labelled(real_dir)
    message = str(caught.value)
    assert "2 broken pairs" in message  # unpaired files are found before any file is read
    assert "img01.png: image without label" in message and "img02_LABEL.png: label without image" in message
    (real_dir / "img01.png").unlink()
    (real_dir / "img02_LABEL.png").unlink()
    with pytest.raises(DataError) as caught:
        load_labelled(real_dir)
    message = str(caught.value)
    assert "2 broken pairs" in message
    assert "img03.png: unreadable" in message and "img04_LABEL.png: size (64, 32) does not match" in message


def test_nonbinary_labels_are_reported_in_a_warning(real_dir: Path) -> None:
    label = np.zeros((64, 64), np.uint8)
    label[:10], label[10:12] = 255, 128  # an interpolated edge
    Image.fromarray(label).save(real_dir / "img00_LABEL.png")
    with pytest.warns(UserWarning, match=r"1 of 6 labels are not strictly binary \(most: img00_LABEL\.png, 3\.1 %"):
        data = load_labelled(real_dir)
    assert data.masks[0].sum() == 12 * 64

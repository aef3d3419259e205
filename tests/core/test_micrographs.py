"""Loading labelled folders, and a clear error naming the file for every kind of bad input."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grapheneseg.micrographs import DataError, load_labelled, read_image


def test_loads_every_pair_in_name_order(real_dir: Path) -> None:
    data = load_labelled(real_dir)
    assert data.names == [f"img{i:02d}" for i in range(6)]
    assert all(im.shape == (64, 64) and im.dtype == np.float32 for im in data.images)
    assert all(m.dtype == bool and 0 < m.mean() < 0.5 for m in data.masks)


def test_image_without_label(real_dir: Path) -> None:
    (real_dir / "img03_LABEL.png").unlink()
    with pytest.raises(DataError, match=r"img03\.png: image without label"):
        load_labelled(real_dir)


def test_label_without_image(real_dir: Path) -> None:
    (real_dir / "img02.png").unlink()
    with pytest.raises(DataError, match=r"img02_LABEL\.png: label without image"):
        load_labelled(real_dir)


def test_size_mismatch(real_dir: Path) -> None:
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(real_dir / "img01_LABEL.png")
    with pytest.raises(DataError, match=r"img01_LABEL\.png: size \(64, 32\) does not match"):
        load_labelled(real_dir)


def test_truncated_png(real_dir: Path) -> None:
    path = real_dir / "img04.png"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"img04\.png: unreadable or truncated"):
        load_labelled(real_dir)


def test_not_a_png(real_dir: Path) -> None:
    (real_dir / "img05.png").write_text("hello")
    with pytest.raises(DataError, match=r"img05\.png: unreadable"):
        load_labelled(real_dir)


def test_non_finite_pixels(tmp_path: Path) -> None:
    path = tmp_path / "nan.tif"
    Image.fromarray(np.array([[1.0, np.nan], [0.0, 2.0]], dtype=np.float32)).save(path)
    with pytest.raises(DataError, match=r"nan\.tif: contains non-finite"):
        read_image(path)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty folder"):
        load_labelled(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        load_labelled(tmp_path / "nope")


def test_nonbinary_labels_are_binarised_and_reported(real_dir: Path) -> None:
    label = np.zeros((64, 64), np.uint8)
    label[:10] = 255
    label[10:12] = 128  # interpolated edge: counts as contamination
    Image.fromarray(label).save(real_dir / "img00_LABEL.png")
    data = load_labelled(real_dir)
    assert data.masks[0].sum() == 12 * 64
    assert data.nonbinary["img00"] == pytest.approx(2 * 64 / 64**2)

"""`simulate calibrate` on micrographs as a lab has them: any size, format and pixel size, brought
to the simulated scale (binned or upsampled by a power of two, then tiled), and the figure."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage
import tifffile
from PIL import Image

from grapheneseg.lattice import read_pixel_size
from grapheneseg.micrographs import DataError
from simulate.calibration import measure, summary
from simulate.cli import main
from simulate.real_micrographs import load_real, micrograph_files, rescale, scale_exponents, tiles
from tests.conftest import TINY_GRID
from tests.simulate.test_calibration import honeycomb

PX = 64  # the tiny grid's image_px
RANGE = (0.30, 0.47)  # the tiny grid's pixel_size


def save_png(folder, name, image, mask=None):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.astype(np.uint8)).save(folder / f"{name}.png")
    if mask is not None:
        Image.fromarray((mask * 255).astype(np.uint8)).save(folder / f"{name}_LABEL.png")


def save_tiff(folder, name, image, pixel_size, mask=None):
    """An ImageJ TIFF with its pixel size (nm) in the resolution tags, as Fiji writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    size = pixel_size / 10
    tifffile.imwrite(folder / f"{name}.tif", image.astype(np.float32), imagej=True,
                     resolution=(1 / size, 1 / size), metadata={"unit": "nm"})
    if mask is not None:
        Image.fromarray((mask * 255).astype(np.uint8)).save(folder / f"{name}_LABEL.png")


def upsample(array, factor):
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def test_micrographs_at_image_px_and_the_simulated_scale_are_used_exactly_as_before(tmp_path):
    """The former path: image_px PNG pairs at the simulated scale are their own single tiles, bit
    for bit, with the lattice reading as pixel size; one without a lattice is kept (with a warning)."""
    folder = tmp_path / "lab"
    pairs = [honeycomb(p, size=PX, seed=i) for i, p in enumerate((0.32, 0.40, 0.45))]
    for i, (image, mask) in enumerate(pairs):
        save_png(folder, f"g{i}", image, mask)
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 255, (PX, PX)).astype(np.uint8)
    save_png(folder, "g3", noise, noise > 128)
    with pytest.warns(UserWarning, match=r"g3\.png: no pixel size in the file and no graphene lattice"):
        real = load_real(folder, True, PX, RANGE)
    raw = [p[0].astype(np.float32) for p in pairs] + [noise.astype(np.float32)]
    masks = [p[1] for p in pairs] + [noise > 128]
    assert len(real.images) == 4 and all(np.array_equal(a, b) for a, b in zip(real.images, raw))
    assert all(np.array_equal(a, b) for a, b in zip(real.masks, masks))
    assert [u["bin"] for u in real.used] == [1, 1, 1, 1] and real.skipped == []
    # the statistics are those of the images as they are (the former `measure(images, masks)`)
    old, new = measure(raw, masks), measure(real.images, real.masks, real.pixel_sizes)
    for field in ("spots", "pixel_sizes", "spectrum", "hist", "fractions", "contrast"):
        assert np.array_equal(getattr(old, field), getattr(new, field), equal_nan=True), field
    assert np.isnan(new.pixel_sizes[3]) and new.pixel_sizes[1] == read_pixel_size(raw[1])


@pytest.mark.parametrize("factor", [2, 4])
def test_finer_micrographs_are_binned_back_to_the_simulated_scale(tmp_path, factor):
    """A micrograph sampled 2x or 4x finer comes back at the simulated scale: a TIFF with its pixel
    size as the very image and mask; a PNG without one by its lattice reading (upsampled linearly:
    the lattice reader misreads pixel-replicated 4x images by their strong replica rings)."""
    image, mask = honeycomb(0.40, size=PX, seed=1)
    save_tiff(tmp_path / "tiff", "fine", upsample(image, factor), 0.40 / factor, upsample(mask, factor))
    real = load_real(tmp_path / "tiff", True, PX, RANGE)
    assert len(real.images) == 1 and real.used[0]["bin"] == factor and real.used[0]["source"] == "file"
    assert np.array_equal(real.images[0], image.astype(np.float32)) and np.array_equal(real.masks[0], mask)
    assert real.pixel_sizes.tolist() == [0.40]
    smooth = scipy.ndimage.zoom(image.astype(float), factor, order=1, grid_mode=True, mode="grid-mirror")
    save_png(tmp_path / "png", "fine", np.round(smooth), upsample(mask, factor))
    real = load_real(tmp_path / "png", True, PX, RANGE)
    assert len(real.images) == 1 and real.used[0]["bin"] == factor and real.used[0]["source"] == "lattice"
    assert real.pixel_sizes[0] == pytest.approx(0.40, rel=0.02) and np.array_equal(real.masks[0], mask)
    assert np.corrcoef(real.images[0].ravel(), image.ravel())[0, 1] > 0.9


def test_a_large_micrograph_is_cut_into_centred_tiles(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (150, 200)).astype(np.float32)
    mask = rng.random((150, 200)) > 0.7
    save_tiff(tmp_path / "big", "big", image, 0.40, mask)
    real = load_real(tmp_path / "big", True, PX, RANGE)
    assert len(real.images) == 2 * 3 and real.used[0] == {"file": str(tmp_path / "big" / "big.tif"),
                                                          "pixel_size": 0.4, "source": "file", "bin": 1.0, "tiles": 6}
    y0, x0 = (150 - 128) // 2, (200 - 192) // 2
    assert np.array_equal(real.images[0], image[y0:y0 + PX, x0:x0 + PX])
    assert np.array_equal(real.images[5], image[y0 + PX:y0 + 2 * PX, x0 + 2 * PX:x0 + 3 * PX])
    assert np.array_equal(real.masks[4], mask[y0 + PX:y0 + 2 * PX, x0 + PX:x0 + 2 * PX])
    assert np.all(real.pixel_sizes == 0.40)
    assert tiles(np.zeros((PX, PX)), PX) == [(slice(0, PX), slice(0, PX))]


def test_rescale_bins_and_upsamples_images_and_masks_alike():
    image = np.arange(36, dtype=np.float32).reshape(6, 6)
    mask = np.zeros((6, 6), bool)
    mask[3, 3] = mask[0, 4] = True  # the pixel at each bin's centre (its lower right of four) decides
    binned, small = rescale(image, 1, mask)
    assert binned.shape == (3, 3) and binned[0, 0] == np.mean([0, 1, 6, 7])
    assert small.tolist() == [[False, False, False], [False, True, False], [False, False, False]]
    binned, small = rescale(np.ones((7, 9), np.float32), 1, np.ones((7, 9), bool))  # a ragged edge is trimmed
    assert binned.shape == small.shape == (3, 4)
    up, big = rescale(image, -1, mask)
    assert up.shape == big.shape == (12, 12) and big.sum() == 4 * mask.sum()
    assert up.mean() == pytest.approx(image.mean(), rel=0.01)


def test_scale_exponents_keep_a_folder_at_one_magnification_together():
    public = [0.299, 0.34, 0.44, 0.46, 0.60, 0.74]  # the public set's range of lattice readings
    full = (0.302, 0.617)
    assert scale_exponents(public, full) == (0, [0] * 6)  # already at the simulated scale: untouched
    assert scale_exponents([p / 2 for p in public], full) == (1, [1] * 6)  # 0.15 and 0.37 alike: binned 2x2
    assert scale_exponents([p / 4 for p in public], full) == (2, [2] * 6)
    # a micrograph far from the folder's magnification gets its own power of two; unknown ones none
    common, each = scale_exponents([0.40, 0.42, 0.05, None, 0.9], full)
    assert common == 0 and each == [0, 0, 3, None, -1]


def test_micrographs_that_cannot_be_brought_to_scale_are_named(tmp_path):
    folder = tmp_path / "lab"
    good, _ = honeycomb(0.40, size=PX, seed=0)
    save_png(folder, "good", good)
    rng = np.random.default_rng(1)
    save_png(folder, "noscale", rng.integers(0, 255, (100, 100)))  # no pixel size, no lattice, not one tile
    save_tiff(folder, "overview", rng.random((PX, PX)), 5.0)  # 5 A/px: no lattice at that scale
    save_tiff(folder, "small", rng.random((100, 100)), 0.1)  # binned 4x4 to 25 px: under one tile
    with pytest.warns(UserWarning) as caught:
        real = load_real(folder, False, PX, RANGE)
    messages = " | ".join(str(w.message) for w in caught)
    assert "noscale.png: left out of the calibration: 100 x 100 px with no pixel size" in messages
    assert "overview.tif: left out of the calibration: 5 \u00c5/px (file): too coarse" in messages
    assert "small.tif: left out of the calibration: 100 x 100 px at 0.1 \u00c5/px (file) is 25 x 25 px" in messages
    assert [u["file"].rsplit("/", 1)[1] for u in real.used] == ["good.png"] and len(real.skipped) == 3
    for path in (folder / "good.png",):
        path.unlink()
    with pytest.raises(DataError, match="no micrograph could be brought to the simulated scale"), \
            pytest.warns(UserWarning):
        load_real(folder, False, PX, RANGE)


def test_labelled_pairs_of_any_format_and_broken_pairs(tmp_path):
    image, mask = honeycomb(0.40, size=PX, seed=0)
    save_tiff(tmp_path / "ok", "a", image, 0.40, mask)
    save_png(tmp_path / "ok", "b", image, mask)
    assert [(i.name, m.name) for i, m in micrograph_files(tmp_path / "ok", True)] == [
        ("a.tif", "a_LABEL.png"), ("b.png", "b_LABEL.png")]
    save_tiff(tmp_path / "bad", "a", image, 0.40)
    save_png(tmp_path / "bad", "a", image, mask)  # a.png and a.tif share one label
    save_png(tmp_path / "bad", "c", image)  # no label
    with pytest.raises(DataError, match=r"(?s)2 broken pairs.*2 micrographs named a.*c\.png: micrograph without label"):
        micrograph_files(tmp_path / "bad", True)


def test_calibrate_a_finer_tiff_writes_the_yaml_and_the_figure(tmp_path, capsys):
    folder = tmp_path / "lab"
    for i in range(3):
        image, mask = honeycomb(0.40, size=PX, seed=i)
        save_tiff(folder, f"m{i}", upsample(image, 2), 0.20, upsample(mask, 2))
    out = tmp_path / "cal" / "scope.yaml"
    assert main(["calibrate", "--real", str(folder), "--out", str(out), "--labelled", "--structures", "2",
                 "--variants", "1", "--json", *TINY_GRID]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "statistics" not in result and result["n_real"] == 3 and result["n_tiles"] == 3
    assert [u["bin"] for u in result["micrographs"]] == [2, 2, 2]
    lo, hi = result["ranges"]["pixel_size"]["after"]
    assert 0.399 <= lo <= hi <= 0.401
    assert set(result["ranges"]) == {"pixel_size", "dose", "blur", "defocus", "coverage_median"}
    assert "3 tiles of 64 px" in out.read_text() and "binned (bin < 1: upsampled) by 2" in out.read_text()
    figure = out.with_suffix(".png")
    assert figure.stat().st_size > 20_000 and Image.open(figure).size[0] > 1000


def test_summary_drops_only_the_statistics():
    assert summary({"a": 1, "statistics": object(), "after": {}}) == {"a": 1, "after": {}}

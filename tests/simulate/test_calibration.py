"""`simulate calibrate`: statistics, the fitted ranges, the YAML round trip into `simulate generate`."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from omegaconf import OmegaConf

from PIL import Image

from grapheneseg.config import ConfigError, load_config
from simulate.calibration import calibrate, distances, measure, read_calibration, write_calibration
from simulate.cli import main
from tests.conftest import TINY_GRID

TINY = [*TINY_GRID, "variants_per_structure=2"]


def honeycomb(pixel_size: float, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A graphene-like image ({100} and {110} fringes at the given pixel size, a random rotation,
    one amorphous blob, noise) and the blob's mask."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size].astype(float)
    angle = rng.uniform(0, np.pi / 3)
    image = np.zeros((size, size))
    for d, offset in ((2.13, 0.0), (1.23, np.pi / 6)):
        for j in range(3):
            t = angle + offset + j * np.pi / 3
            image += np.cos(2 * np.pi * pixel_size / d * (x * np.cos(t) + y * np.sin(t)))
    mask = (x - rng.uniform(16, 48)) ** 2 + (y - rng.uniform(16, 48)) ** 2 < rng.uniform(8, 14) ** 2
    blob = rng.normal(0, 1, (size, size))
    image = 120 + 10 * np.where(mask, 0.2 * image + 2 * blob, image) + rng.normal(0, 2, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8), mask


@pytest.fixture
def graphene_dir(tmp_path):
    folder = tmp_path / "graphene"
    folder.mkdir()
    for i in range(5):
        image, mask = honeycomb(0.40, seed=i)
        Image.fromarray(image).save(folder / f"g{i}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(folder / f"g{i}_LABEL.png")
    return folder


def test_distances_are_zero_for_the_same_set_and_grow_with_noise(real_dir):
    from grapheneseg.micrographs import load_labelled

    data = load_labelled(real_dir)
    same = distances(measure(data.images, data.masks), measure(data.images, data.masks))
    assert all(value == 0 for key, value in same.items() if key != "contrast") and same["contrast"] == 0
    rng = np.random.default_rng(0)
    noisy = [im + rng.normal(0, 20, im.shape) for im in data.images]
    worse = distances(measure(noisy, data.masks), measure(data.images, data.masks))
    assert worse["high_frequency"] > 0.1 and worse["total"] > 0.1


@pytest.mark.parametrize("pixel_size", [0.25, 0.32, 0.40, 0.47, 0.60])
def test_measured_pixel_size_is_the_lattice_reading(pixel_size):
    image, _ = honeycomb(pixel_size, size=256, seed=1)
    assert measure([image.astype(np.float32)]).pixel_sizes[0] == pytest.approx(pixel_size, rel=0.02)


def test_calibrate_and_generate_with_the_result(graphene_dir, tmp_path, capsys):
    cfg = load_config("simulate", TINY)
    result = calibrate(cfg, graphene_dir, labelled=True, structures=2, variants=2, log=lambda *_: None)
    lo, hi = result["overrides"]["grid"]["pixel_size"]
    assert 0.38 <= lo <= hi <= 0.42
    assert set(result["before"]) == set(result["after"]) >= {"spot_radius", "spectrum", "histogram", "label_fraction", "total"}
    path = write_calibration(result, tmp_path / "scope.yaml")
    assert "distances before" in path.read_text()
    overrides = read_calibration(path)
    assert any(o.startswith("grid.pixel_size=") for o in overrides) and any(o.startswith("optics.dose=") for o in overrides)
    out = tmp_path / "cal.h5"
    assert main(["generate", "--n", "2", "--out", str(out), "--quiet", "--calibration", str(path), *TINY, "seed=3"]) == 0
    with h5py.File(out, "r") as f:
        stored = OmegaConf.create(str(f.attrs["config"]))
        assert list(stored.grid.pixel_size) == [lo, hi] and stored.seed == 3
        assert list(stored.optics.dose) == result["overrides"]["optics"]["dose"]
        assert ((f["meta"]["pixel_size"] >= lo) & (f["meta"]["pixel_size"] <= hi)).all()


def test_bad_calibration_files_name_themselves(tmp_path, real_dir, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optics:\n  no_such_key: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        read_calibration(bad)
    with pytest.raises(ConfigError, match="not found"):
        read_calibration(tmp_path / "missing.yaml")
    assert main(["generate", "--n", "1", "--out", str(tmp_path / "x.h5"), "--calibration", str(bad), *TINY]) == 1
    assert "bad.yaml" in capsys.readouterr().err and not (tmp_path / "x.h5").exists()
    assert main(["calibrate", "--real", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.yaml"), *TINY]) == 1
    assert "nowhere" in capsys.readouterr().err

"""`simulate calibrate`: statistics, the fitted ranges, the YAML round trip into `simulate generate`."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from omegaconf import OmegaConf

from grapheneseg.config import ConfigError, load_config
from simulate.calibration import calibrate, distances, measure, pixel_range, read_calibration, write_calibration
from simulate.cli import main

TINY = ["grid=tiny", "variants_per_structure=2", "workers=1"]


def test_distances_are_zero_for_the_same_set_and_grow_with_noise(real_dir):
    from grapheneseg.micrographs import load_labelled

    data = load_labelled(real_dir)
    same = distances(measure(data.images, data.masks), measure(data.images, data.masks))
    assert all(value == 0 for key, value in same.items() if key != "contrast") and same["contrast"] == 0
    rng = np.random.default_rng(0)
    noisy = [im + rng.normal(0, 20, im.shape) for im in data.images]
    worse = distances(measure(noisy, data.masks), measure(data.images, data.masks))
    assert worse["high_frequency"] > 0.1 and worse["total"] > 0.1


def test_pixel_range_from_spot_radii():
    # a 256 px image at 0.30 and 0.47 A/px puts the {100} spots at 36 and 56.5
    assert pixel_range(np.array([36.0] * 5 + [56.5] * 5), 256) == pytest.approx([0.30, 0.47], abs=0.005)


def test_calibrate_and_generate_with_the_result(real_dir, tmp_path, capsys):
    cfg = load_config("simulate", TINY)
    result = calibrate(cfg, real_dir, labelled=True, structures=2, variants=2, log=lambda *_: None)
    # the synthetic lattice has 0.2 cycles/px: {100} spots at 12.8 / 64 px^-1, i.e. 0.426 A/px
    lo, hi = result["overrides"]["grid"]["pixel_size"]
    assert lo <= 0.426 + 0.02 and hi >= 0.426 - 0.02 and hi - lo < 0.1
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

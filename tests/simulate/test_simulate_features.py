"""`simulate preview` without a dataset and `simulate compare`, on tiny 64 px simulations."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grapheneseg.config import load_config
from simulate import driver
from simulate.cli import main
from simulate.dataset import open_dataset

TINY = ["grid=tiny", "variants_per_structure=2", "structure.amorphous.clean_probability=0"]


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory) -> Path:
    """Images 0-3: structures 0 and 1, variants 0 and 1."""
    out = tmp_path_factory.mktemp("sim") / "sim.h5"
    driver.generate(load_config("simulate", [*TINY, "n=4", "workers=1"]), out, progress=False)
    return out


def test_preview_simulates_the_images_generate_writes(sim_file: Path, tmp_path: Path) -> None:
    """Without --from, preview simulates structure 0's variants 0 and 1 itself: the very images
    0 and 1 of the file, so both contact sheets are the same picture, byte for byte."""
    simulated, read = tmp_path / "simulated.png", tmp_path / "read.png"
    assert main(["preview", "--n", "2", "--out", str(simulated), *TINY]) == 0
    assert main(["preview", "--n", "2", "--out", str(read), "--from", str(sim_file), *TINY]) == 0
    assert (tmp_path / "simulated.yaml").exists()
    assert np.array_equal(np.asarray(Image.open(simulated)), np.asarray(Image.open(read)))
    assert main(["preview", "--n", "0", "--out", str(tmp_path / "none.png"), *TINY]) == 1


def test_compare_a_simulation_with_itself(sim_file: Path, tmp_path: Path, capsys) -> None:
    """The simulated images written as a labelled PNG folder: every statistic must agree."""
    real = tmp_path / "as real"
    real.mkdir()
    with open_dataset(sim_file) as f:
        images, masks = f["images"][:], f["masks"][:]
    for i, (image, mask) in enumerate(zip(images, masks)):
        scaled = (image - image.min()) / (image.max() - image.min()) * 250 + 2  # any gain: preprocessing divides it out
        Image.fromarray(scaled.round().astype(np.uint8)).save(real / f"im{i}.png")
        Image.fromarray(mask * 255).save(real / f"im{i}_LABEL.png")
    out = tmp_path / "compare"
    assert main(["compare", "--sim", str(sim_file), "--real", str(real), "--out", str(out), "--json", *TINY]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result == json.loads((out / "compare.json").read_text())
    assert result["n_sim"] == result["n_real"] == 4
    assert result["contamination_fraction"]["sim"] == result["contamination_fraction"]["real"]
    assert result["contamination_fraction"]["sim"]["mean"] == pytest.approx(masks.mean())
    # the spot radius is an argmax over spectrum bins; on these 64 px images no lattice ring stands
    # out, so 8-bit rounding may move an image's peak by a bin: its summary agrees within one
    sim_spots, real_spots = result["spot_radius"]["sim"], result["spot_radius"]["real"]
    assert sim_spots["n"] == real_spots["n"] == 4
    assert all(abs(sim_spots[k] - real_spots[k]) <= 1.0 for k in sim_spots)
    # Thon rings: measured where the contamination covers >= 5 %; these 64 px images have no lattice the
    # reader finds, so the "real" copies have no scale and are left out
    assert result["thon_anisotropy"]["sim"]["n"] >= 1 and result["thon_anisotropy"]["real"] == {"n": 0}
    assert result["histogram_overlap"] > 0.97 and result["spectrum_log10_ratio"]["mean_abs"] < 0.03  # 8-bit rounding; 0.022 with the GPU machine's numpy 2.5 + torch 2.11
    assert (out / "compare.png").stat().st_size > 10_000 and (out / "config.yaml").exists()
    # images of another size cannot be compared: a clear error, non-zero exit
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(small / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(small / "a_LABEL.png")
    assert main(["compare", "--sim", str(sim_file), "--real", str(small), "--out", str(tmp_path / "c2")]) == 1
    assert "differs from the real" in capsys.readouterr().err

"""Simulator: structure invariants, labels, tiny 64 px simulations, HDF5 files, CLI and determinism."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy.spatial import cKDTree

from grapheneseg.config import ConfigError, load_config
from simulate import driver
from simulate.amorphous import carbon_number_density
from simulate.cli import main
from simulate.dataset import SCHEMA_VERSION, DatasetError, open_dataset
from simulate.labels import make_labels, pixel_centres
from simulate.pipeline import META_DTYPE, simulate_structure
from simulate.report import inspect_dataset
from simulate.structures import build_structure
from tests.conftest import ROOT, TINY_GRID

TINY = [*TINY_GRID, "variants_per_structure=3", "n=6", "structure.amorphous.clean_probability=0"]
REPO = ROOT


def tiny_cfg(*extra: str):
    return load_config("simulate", TINY + list(extra))


def periodic_min_distance(points: np.ndarray, extent: float) -> float:
    box = [extent, extent] + [1e6] * (points.shape[1] - 2)
    d, _ = cKDTree(np.mod(points, box), boxsize=box).query(np.mod(points, box), k=2)
    return float(d[:, 1].min())


@pytest.mark.parametrize("seed", range(4))
def test_structure_minimum_distances(seed):
    cfg = tiny_cfg("structure.grains=[3,5]", "structure.single_grain_probability=0", "structure.holes.probability=1")
    s = build_structure(np.random.default_rng(seed), 40.0, cfg.structure)
    pos = s.atoms.positions
    sheet = pos[~s.amorphous & (s.atoms.numbers == 6)]
    assert s.info["n_grains"] >= 3
    assert periodic_min_distance(sheet[:, :2], s.extent) >= cfg.structure.min_distance - 1e-9
    if s.amorphous.sum() > 1:
        assert periodic_min_distance(pos[s.amorphous], s.extent) >= cfg.structure.amorphous.min_distance - 1e-9
    assert (pos[:, 2] > 0).all() and (pos[:, 2] < s.atoms.cell[2, 2]).all()
    # no dangling atoms; away from the (many, in this small cell) boundaries, graphene's three bonds
    neighbours = cKDTree(sheet[:, :2], boxsize=s.extent).query_ball_point(sheet[:, :2], 1.6, return_length=True) - 1
    assert neighbours.min() >= 2 and np.mean(neighbours == 3) > 0.5


def test_single_grain_orientation():
    cfg = tiny_cfg("structure.single_grain_probability=1", "structure.holes.probability=0", "structure.amorphous.clean_probability=1")
    s = build_structure(np.random.default_rng(3), 40.0, cfg.structure)
    pos = s.atoms.positions[s.atoms.numbers == 6, :2]  # carbon: adatoms sit above lattice sites
    pos = pos[((pos > 9) & (pos < s.extent - 9)).all(1)]  # away from the periodic seam (a relaxed 5-7 line)
    pairs = cKDTree(pos).query_pairs(1.5, output_type="ndarray")
    d = pos[pairs[:, 1]] - pos[pairs[:, 0]]
    bond_angles = np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 60
    expected = (s.angles[0] + 30) % 60
    delta = (bond_angles - expected + 30) % 60 - 30
    assert np.abs(delta).max() < 0.01
    assert np.allclose(np.linalg.norm(d, axis=1), 2.46 / np.sqrt(3), atol=1e-6)


def test_amorphous_density_and_coverage():
    cfg = tiny_cfg(
        "structure.amorphous.coverage=[0.4,0.4]", "structure.amorphous.thickness=[10,10]",
        "structure.amorphous.density=[2.0,2.0]", "structure.amorphous.edge_taper=0.000001", "structure.amorphous.thickness_variation=0",
        "structure.holes.probability=0", "structure.adatoms.probability=0",
    )
    s = build_structure(np.random.default_rng(1), 60.0, cfg.structure)
    volume = 0.4 * 60.0**2 * 10.0
    density = s.amorphous.sum() / volume
    assert density == pytest.approx(carbon_number_density(2.0), rel=0.08)
    assert carbon_number_density(2.2) == pytest.approx(0.110, abs=0.001)
    z = s.atoms.positions[:, 2]
    sheet_z = np.median(z[~s.amorphous])
    thickness = np.abs(z[s.amorphous] - sheet_z)
    assert thickness.min() >= 2.5 - 1e-9 and thickness.max() <= 3.4 + 10.0 + 1e-9


def test_labels_follow_the_amorphous_footprint():
    cfg = tiny_cfg("structure.holes.probability=0")
    s = build_structure(np.random.default_rng(2), 80 * 0.4, cfg.structure)
    atoms = s.atoms.positions[s.amorphous, :2]
    assert len(atoms) > 0
    xy = pixel_centres(64, 8, 0.4)
    dist = cKDTree(np.mod(atoms, s.extent), boxsize=s.extent).query(np.mod(xy.reshape(-1, 2), s.extent))[0].reshape(64, 64)
    for margin in (0.0, 3.0):
        mask, classes = make_labels(s, 64, 8, load_config("simulate", [f"label.margin_px={margin}"]).label)
        reach = cfg.label.atom_radius + margin * 0.4
        assert np.array_equal(mask.astype(bool), dist <= reach)
        assert np.array_equal(classes == 1, mask.astype(bool))
    small, _ = make_labels(s, 64, 8, load_config("simulate", ["label.margin_px=0"]).label)
    large, _ = make_labels(s, 64, 8, load_config("simulate", ["label.margin_px=3"]).label)
    assert large.sum() > small.sum() and (large >= small).all()


def test_holes_are_vacuum_in_the_class_map():
    cfg = tiny_cfg("structure.holes.probability=1", "structure.amorphous.clean_probability=1")
    s = build_structure(np.random.default_rng(0), 80 * 0.4, cfg.structure)
    _, classes = make_labels(s, 64, 8, cfg.label)
    xy = pixel_centres(64, 8, 0.4)
    assert np.array_equal(classes == 2, s.in_hole(xy))
    assert not s.in_hole(s.atoms.positions[:, :2]).any()


def test_tiny_simulation():
    cfg = tiny_cfg()
    driver.init_worker(OmegaConf.to_yaml(driver.physics_config(cfg)), "cpu")
    samples, timing = simulate_structure(cfg, 7, 2, [0, 2])
    assert [s.index for s in samples] == [6, 8]
    for s in samples:
        assert s.image.shape == (64, 64) and s.image.dtype == np.float32 and np.isfinite(s.image).all()
        assert 0.8 < s.image.mean() < 1.2
        assert s.mask.dtype == np.uint8 and set(np.unique(s.mask)) <= {0, 1}
        assert s.meta.dtype == META_DTYPE and s.meta["structure"] == 2 and s.meta["seed"] == 7
        assert 0.30 <= s.meta["pixel_size"] <= 0.47
    assert samples[0].meta["defocus"] != samples[1].meta["defocus"]
    assert np.array_equal(samples[0].mask, samples[1].mask)  # variants share the structure
    assert set(timing) == {"structure", "exit_wave", "labels", "ctf", "noise"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Uninterrupted 6-image run, one worker."""
    out = tmp_path_factory.mktemp("sim") / "ref.h5"
    stats = driver.generate(tiny_cfg(), out, progress=False)
    assert stats.images == 6 and stats.structures == 2
    return out


def read_all(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {name: f[name][:] for name in ("images", "masks", "classes", "meta", "atoms")}


def assert_same(a: Path, b: Path) -> None:
    da, db = read_all(a), read_all(b)
    for name in da:
        assert np.array_equal(da[name], db[name]), name
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert dict(fa.attrs) == dict(fb.attrs)


def test_hdf5_schema(reference):
    with open_dataset(reference) as f:
        assert f["images"].shape == (6, 64, 64) and f["images"].dtype == np.float32
        assert f["masks"].dtype == np.uint8 and f["classes"].dtype == np.uint8
        assert f["images"].chunks == (1, 64, 64) and f["images"].compression == "gzip"
        assert f["meta"].dtype == META_DTYPE
        assert list(f["meta"]["index"]) == list(range(6)) and list(f["meta"]["structure"]) == [0, 0, 0, 1, 1, 1]
        assert f.attrs["schema_version"] == SCHEMA_VERSION == 3 and f.attrs["complete"] and f.attrs["n_target"] == 6
        assert f["atoms"].shape == (6, 64, 64) and f["atoms"].dtype == np.uint8 and f["atoms"][:].max() == 255
        cfg = OmegaConf.create(str(f.attrs["config"]))
        assert cfg.grid.image_px == 64 and "workers" not in cfg
        assert np.array_equal(f["classes"][:] == 1, f["masks"][:] == 1)
        assert np.allclose(f["meta"]["contamination_fraction"], f["masks"][:].mean(axis=(1, 2)))
    summary = inspect_dataset(reference)
    assert summary["images"] == 6 and summary["structures"] == 2 and summary["complete"]
    assert 0.30 <= summary["ranges"]["pixel_size"][0] <= summary["ranges"]["pixel_size"][1] <= 0.47


def test_same_images_with_two_workers(reference, tmp_path):
    out = tmp_path / "two.h5"
    driver.generate(tiny_cfg("workers=2"), out, progress=False)
    assert_same(reference, out)
    assert out.read_bytes() == reference.read_bytes()


def test_resume_after_interruption(reference, tmp_path, monkeypatch):
    out = tmp_path / "resumed.h5"
    real_results = driver._results

    def interrupted(*args):
        for k, result in enumerate(real_results(*args)):
            if k == 1:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(driver, "_results", interrupted)
    with pytest.raises(KeyboardInterrupt):
        driver.generate(tiny_cfg(), out, progress=False)
    with open_dataset(out) as f:  # a valid file holding the finished structure
        assert f["images"].shape[0] == 3 and not f.attrs["complete"]
    monkeypatch.setattr(driver, "_results", real_results)
    with pytest.raises(DatasetError, match="already exists"):
        driver.generate(tiny_cfg(), out, progress=False)
    with pytest.raises(DatasetError, match="cannot resume"):
        driver.generate(tiny_cfg("seed=1"), out, resume=True, progress=False)
    stats = driver.generate(tiny_cfg(), out, resume=True, progress=False)
    assert stats.images == 3
    assert_same(reference, out)
    assert out.read_bytes() == reference.read_bytes()


@pytest.mark.parametrize(
    "override, message",
    [
        ("optics.dose=[-10,100]", "optics.dose"),
        ("n=0", "n ="),
        ("grid.pixel_size=[0.05,0.4]", "grid.pixel_size"),
        ("structure.amorphous.coverage=[0.5,0.2]", "low must not exceed high"),
        ("workers=0", "workers"),
    ],
)
def test_bad_config_values_write_nothing(tmp_path, override, message):
    out = tmp_path / "bad.h5"
    with pytest.raises(ConfigError, match=message):
        driver.generate(tiny_cfg(override), out, progress=False)
    assert not out.exists()


def test_bad_paths_and_keys(tmp_path, reference):
    with pytest.raises(ConfigError):
        tiny_cfg("no_such_key=1")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DatasetError, match="cannot create output folder"):
        driver.generate(tiny_cfg(), blocker / "sub" / "out.h5", progress=False)
    before = reference.read_bytes()
    with pytest.raises(DatasetError, match="already exists"):
        driver.generate(tiny_cfg(), reference, progress=False)
    assert reference.read_bytes() == before
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        open_dataset(blocker)


def test_cli_generate_inspect_and_errors(tmp_path, capsys):
    out = tmp_path / "cli.h5"
    args = ["generate", "--n", "2", "--out", str(out), "--workers", "1", "--quiet", "--json", "grid=tiny", "variants_per_structure=2"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images"] == 2 and result["structures"] == 1
    assert (tmp_path / "cli.yaml").exists()  # resolved config beside the output
    assert main(["inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 2
    assert main(args) == 1
    assert "error:" in capsys.readouterr().err
    assert main(["generate", "--n", "-3", "--out", str(tmp_path / "x.h5"), "grid=tiny"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: n = -3") and "Traceback" not in err
    assert main(["generate", "--out", str(tmp_path / "y.h5"), "bogus.key=3"]) == 1
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()


def test_default_output_path():
    assert driver.default_out(load_config("simulate", ["n=5000"])) == Path("data/sim/sim_5000_seed0.h5")


def test_installed_command_imports_this_project(tmp_path, reference):
    script = Path(sys.executable).parent / "simulate"
    assert script.exists(), "console script `simulate` is not installed in this environment"
    located = subprocess.run([sys.executable, "-c", "import simulate.cli; print(simulate.cli.__file__)"],
                             cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(located.stdout.strip()).resolve() == (REPO / "simulate" / "cli.py").resolve()
    run = subprocess.run([str(script), "inspect", str(reference), "--json"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["images"] == 6


def test_preview_sheet_from_a_dataset(reference, tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["preview", "--n", "4", "--from", str(reference), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000 and (tmp_path / "sheet.yaml").exists()
    assert main(["inspect", str(reference)]) == 0
    assert "6 / 6 images (complete)" in capsys.readouterr().out

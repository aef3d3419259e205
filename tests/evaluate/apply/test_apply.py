"""Applying a model to files of every format and size: predict, sort, atoms, tiling, failures."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluate.apply.scale import resample
from train.models.runtime import tiled_probability
from grapheneseg.lattice import read_pixel_size
from evaluate.cli import main
from grapheneseg.formats import read_micrograph
from grapheneseg.micrographs import DataError
from tests.conftest import synthetic_micrograph
from tests.evaluate.apply.test_atoms import honeycomb
from train.models.checkpoints import save_checkpoint
from train.models.unet import architecture, build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny U-Net checkpoint: enough to exercise every file path."""
    torch.manual_seed(0)
    arch = architecture({"depth": 2, "features": 4, "batch_norm": False})
    path = tmp_path_factory.mktemp("model") / "model.ckpt"
    return save_checkpoint(path, build_model(arch), arch, {"note": "test"}, epoch=0)


def _signal(data: np.ndarray, scale_nm: float) -> dict:
    axes = [{"name": n, "size": s, "scale": scale_nm, "offset": 0.0, "units": "nm", "navigate": False}
            for n, s in zip(("y", "x"), data.shape)]
    return {"data": data, "axes": axes, "metadata": {"General": {"title": "t"}, "Signal": {}}, "original_metadata": {}}


def test_formats_carry_pixel_size(tmp_path: Path) -> None:
    import rsciio.emd
    import rsciio.tiff

    data = np.random.default_rng(0).random((48, 40)).astype(np.float32)
    rsciio.tiff.file_writer(str(tmp_path / "a.tif"), _signal(data, 0.04))
    rsciio.emd.file_writer(str(tmp_path / "a.emd"), _signal(data, 0.04))
    Image.fromarray((data * 255).astype(np.uint8)).save(tmp_path / "a.png")
    for name in ("a.tif", "a.emd"):
        m = read_micrograph(tmp_path / name)
        np.testing.assert_allclose(m.image, data)
        assert m.pixel_size == pytest.approx(0.4)  # 0.04 nm = 0.4 A
    assert read_micrograph(tmp_path / "a.png").pixel_size is None
    (tmp_path / "bad.dm4").write_bytes(b"not a dm4 file at all")
    with pytest.raises(DataError, match=r"bad\.dm4: unreadable \.dm4"):
        read_micrograph(tmp_path / "bad.dm4")
    with pytest.raises(DataError, match=r"x\.xyz: unsupported format"):
        read_micrograph(tmp_path / "x.xyz")


class Pointwise(torch.nn.Module):
    """A 'network' whose output at a pixel depends on that pixel only: tiles must reproduce it."""

    depth = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x], dim=1)


def test_tiles_blend_without_seams() -> None:
    image = np.random.default_rng(1).normal(size=(300, 410)).astype(np.float32)
    whole = tiled_probability([Pointwise()], image, tile=512, overlap=32, batch_size=4)
    tiled = tiled_probability([Pointwise()], image, tile=128, overlap=32, batch_size=4)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
    np.testing.assert_allclose(whole, 1 / (1 + np.exp(-image)), atol=1e-6)


def test_lattice_pixel_size_and_resampling() -> None:
    image, _ = honeycomb(size=128)  # drawn at 0.35 A/px
    assert read_pixel_size(image) == pytest.approx(0.35, rel=0.05)
    assert resample(image, (64, 64)).shape == (64, 64)
    assert resample(image, (300, 200)).shape == (300, 200)


def test_predict_every_format_and_report_failures(checkpoint: Path, tmp_path: Path) -> None:
    import rsciio.tiff

    inputs = tmp_path / "in"
    inputs.mkdir()
    image, _ = synthetic_micrograph(np.random.default_rng(0), size=64)
    Image.fromarray(image).save(inputs / "a.png")
    Image.fromarray(image).save(inputs / "a_LABEL.png")  # a label: skipped, not segmented
    big = np.tile(image.astype(np.float32), (10, 10))  # 640 px at 0.04 A/px: resampled to ~66 px
    rsciio.tiff.file_writer(str(inputs / "big.tif"), _signal(big, 0.004))
    (inputs / "broken.tif").write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(checkpoint), "--input", str(inputs), "--out", str(out), "--quiet"])
    assert rc == 1  # one file failed, the others finished
    rows = {Path(r["file"]).name: r for r in csv.DictReader((out / "predictions.csv").open())}
    assert {n: r["status"] for n, r in rows.items()} == {"a.png": "segmented", "big.tif": "segmented",
                                                         "broken.tif": "failed"}
    assert rows["broken.tif"]["note"].endswith("broken.tif: no 2-D real-valued image found in the file")
    assert float(rows["big.tif"]["pixel_size_A"]) == pytest.approx(0.04) and rows["big.tif"]["pixel_size_source"] == "file"
    for name, shape in (("a", (64, 64)), ("big", (640, 640))):
        mask = np.asarray(Image.open(out / f"{name}_mask.png"))
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
        assert (out / f"{name}_overlay.png").exists()
        frac = float(rows[f"{name}.png" if name == "a" else "big.tif"]["contamination_fraction"])
        assert frac == pytest.approx((mask > 0).mean(), abs=1e-4)
    assert (out / "config.yaml").exists()
    assert main(["predict", "--model", str(checkpoint), "--input", str(inputs / "a.png"), "--out", str(out),
                 "--quiet"]) == 0


def test_sort_ranks_by_graphene_fraction(checkpoint: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(2)
    for i in range(4):
        Image.fromarray(synthetic_micrograph(rng, size=64)[0]).save(inputs / f"m{i}.png")
    out = tmp_path / "sorted"
    assert main(["sort", "--model", str(checkpoint), "--input", str(inputs), "--out", str(out), "--best", "2",
                 "--quiet", "apply.threshold=0.5"]) == 0
    rows = list(csv.DictReader((out / "ranking.csv").open()))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    fractions = [float(r["graphene_fraction"]) for r in rows]
    assert fractions == sorted(fractions, reverse=True)
    assert sorted(p.name for p in (out / "best").iterdir()) == sorted(Path(r["file"]).name for r in rows[:2])
    assert (out / "contact_sheet.png").stat().st_size > 1000


def test_atoms_command_writes_figure_and_tables(checkpoint: Path, tmp_path: Path) -> None:
    image, truth = honeycomb(size=96)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(tmp_path / "g.png")
    out = tmp_path / "atoms"
    assert main(["atoms", "--model", str(checkpoint), "--input", str(tmp_path / "g.png"), "--out", str(out),
                 "--quiet", "apply.threshold=1.0"]) == 0  # threshold 1: nothing masked
    atoms = np.loadtxt(out / "g_atoms.csv", delimiter=",", skiprows=1)
    assert abs(len(atoms) - len(truth)) < 0.15 * len(truth)
    assert (out / "g_bonds.png").exists() and (out / "g_bonds.csv").exists()

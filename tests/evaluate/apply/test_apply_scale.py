"""predict reads the scale from the lattice, and says so when it cannot (issue 13)."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluate.cli import main
from tests.core.test_lattice import graphene
from train.models.checkpoints import save_checkpoint
from train.models.unet import architecture, build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    arch = architecture({"depth": 2, "features": 4, "batch_norm": False})
    return save_checkpoint(tmp_path_factory.mktemp("model") / "model.ckpt", build_model(arch), arch, {}, epoch=0)


def _png(path: Path, image: np.ndarray) -> Path:
    lo, hi = image.min(), image.max()
    Image.fromarray(((image - lo) / (hi - lo) * 255).astype(np.uint8)).save(path)
    return path


def test_lattice_scale_and_unknown_scale(checkpoint: Path, tmp_path: Path, capsys) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    _png(inputs / "fine.png", graphene(0.1, 512))
    _png(inputs / "noise.png", np.random.default_rng(0).normal(size=(96, 96)))
    out = tmp_path / "out"
    assert main(["predict", "--model", str(checkpoint), "--input", str(inputs), "--out", str(out),
                 "--quiet"]) == 0
    err = capsys.readouterr().err  # the CLI prints the library's scale notice as a warning line
    assert re.search(r"^warning: .*noise\.png: no pixel size", err, re.M)
    assert "fine.png" not in err  # a lattice read unambiguously needs no warning
    rows = {Path(r["file"]).name: r for r in csv.DictReader((out / "predictions.csv").open())}
    assert rows["fine.png"]["pixel_size_source"] == "lattice"
    assert float(rows["fine.png"]["pixel_size_A"]) == pytest.approx(0.1, rel=0.02)
    assert rows["noise.png"]["pixel_size_source"] == "unknown" and rows["noise.png"]["pixel_size_A"] == ""
    assert np.asarray(Image.open(out / "noise_mask.png")).shape == (96, 96)
    assert np.asarray(Image.open(out / "fine_mask.png")).shape == (512, 512)
    # a given pixel size wins over the lattice
    assert main(["predict", "--model", str(checkpoint), "--input", str(inputs / "fine.png"), "--out", str(out),
                 "--quiet", "--pixel-size", "0.2"]) == 0
    row = next(csv.DictReader((out / "predictions.csv").open()))
    assert row["pixel_size_source"] == "given" and float(row["pixel_size_A"]) == pytest.approx(0.2)

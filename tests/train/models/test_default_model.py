"""The packaged default model: shipped, loadable as plain data, used when --model is left out (issue 13)."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluate.cli import main
from tests.conftest import write_labelled_folder
from tests.core.test_lattice import graphene
from train.models import registry


def test_default_model_is_a_plain_data_checkpoint_with_a_card() -> None:
    path = registry.packaged("contamination")
    assert path.name == "sim_default.ckpt" and path.stat().st_size < 5 * 2**20
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    assert ckpt["state_dict"] and ckpt["architecture"]["depth"] >= 2
    card = path.with_suffix(".md").read_text()
    for needed in ("simulate generate", "train pretrain", "evaluate score", "commit", "zero human labels"):
        assert needed in card


def test_commands_use_the_default_model_and_say_so(tmp_path: Path, capsys) -> None:
    Image.fromarray(np.clip(graphene(0.35, 128) * 2 - 100, 0, 255).astype(np.uint8)).save(tmp_path / "one.png")
    assert main(["predict", "--input", str(tmp_path / "one.png"), "--out", str(tmp_path / "masks"), "--quiet"]) == 0
    assert "no model given: using the default simulation-only contamination model" in capsys.readouterr().err
    assert (tmp_path / "masks" / "one_mask.png").exists()
    row = next(csv.DictReader((tmp_path / "masks" / "predictions.csv").open()))
    assert row["pixel_size_source"] == "lattice" and float(row["pixel_size_A"]) == pytest.approx(0.35, rel=0.02)
    real = write_labelled_folder(tmp_path / "real", n=2)
    assert main(["score", "--test", str(real), "--json", "--device", "cpu"]) == 0
    assert "no model given: using the default simulation-only contamination model" in capsys.readouterr().err
    assert main(["score", "--test", str(real), "--method", "bragg", "--model", "x.ckpt"]) == 1


def test_missing_default_model_is_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(registry.PACKAGED, "contamination",
                        dataclasses.replace(registry.PACKAGED["contamination"], file="absent.ckpt"))
    assert main(["sort", "--input", str(tmp_path), "--out", str(tmp_path / "s"), "--quiet"]) == 1
    assert "absent.ckpt: the default simulation-only contamination model (zero human labels) is missing from this " \
           "installation; give --model" in capsys.readouterr().err

"""A tiny end-to-end `evaluate report`: four arms on identical folds, files, figures, reuse."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from evaluate.cli import main
from tests.conftest import write_labelled_folder
from train.checkpoints import save_checkpoint
from train.model import architecture, build_model

TINY = ["report.folds=2", "report.repeats=1", "report.ks=[3]", "report.train=[]",
        "bragg.fit.sigma_grid=[0.01]", "bragg.fit.g_thresh_grid=[2.0]", "bragg.pad=8",
        "train.model.depth=2", "train.model.features=4", "train.model.batch_norm=false",
        "train.loop.epochs=1", "train.loop.min_steps=2", "train.loop.crop=32", "train.loop.batch_size=4",
        "train.loop.crops_per_image=1", "train.finetune.epochs=1", "train.threads=1"]


def test_tiny_report_end_to_end(tmp_path: Path, capsys) -> None:
    real = write_labelled_folder(tmp_path / "real", n=8)
    torch.manual_seed(0)
    arch = architecture({"depth": 2, "features": 4, "batch_norm": False})
    ckpt = save_checkpoint(tmp_path / "sim.ckpt", build_model(arch), arch, {"note": "tiny"}, epoch=0)
    out = tmp_path / "report"
    args = ["report", "--real", str(real), "--pretrained", str(ckpt), "--out", str(out), "--quiet", *TINY]
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    arms = [r["arm"] for r in metrics["table1"]]
    assert arms == ["Bragg filter", "U-Net real-only", "U-Net sim-only", "U-Net sim-pretrained + fine-tuned"]
    assert all(r["folds"] == 2 for r in metrics["table1"])
    # identical folds: every arm scored exactly the same test images
    images = {a: set(v) for a, v in metrics["per_image_jaccard"].items()}
    assert len({frozenset(v) for v in images.values()}) == 1 and len(images["Bragg filter"]) == 8
    assert set(metrics["data_efficiency"]["U-Net real-only"]) == {"3", "4"}
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert metrics["provenance"]["sim_checkpoint"]["sha256"]
    # a second run reuses every finished arm (no new run folders)
    before = sorted(p.name for p in (out / "arms").iterdir())
    assert main(args) == 0
    assert sorted(p.name for p in (out / "arms").iterdir()) == before


def test_tiny_report_on_a_test_folder(tmp_path: Path, capsys) -> None:
    real = write_labelled_folder(tmp_path / "real", n=6)
    test = write_labelled_folder(tmp_path / "test", n=3, seed=9)
    arch = architecture({"depth": 2, "features": 4, "batch_norm": False})
    ckpt = save_checkpoint(tmp_path / "sim.ckpt", build_model(arch), arch, {"note": "tiny"}, epoch=0)
    out = tmp_path / "report"
    assert main(["report", "--real", str(real), "--pretrained", str(ckpt), "--test-dir", str(test),
                 "--out", str(out), "--quiet", *TINY]) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["table1"]) == 4 and all(r["folds"] == 1 for r in metrics["table1"])
    assert all(set(v) == {"img00", "img01", "img02"} for v in metrics["per_image_jaccard"].values())

"""A tiny end-to-end `evaluate report`: four arms on identical folds, files, figures, reuse."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from evaluate.cli import main
from tests.conftest import write_labelled_folder
from train.models.checkpoints import save_checkpoint
from train.models.unet import architecture, build_model

TINY = ["report.folds=2", "report.repeats=1", "report.ks=[3]", "report.train=[]",
        "bragg.fit.sigma_grid=[0.01]", "bragg.fit.g_thresh_grid=[2.0]", "bragg.pad=8",
        "train.model.depth=2", "train.model.features=4", "train.model.batch_norm=false",
        "train.loop.epochs=1", "train.loop.min_steps=2", "train.loop.crop=32", "train.loop.batch_size=4",
        "train.loop.crops_per_image=1", "train.finetune.epochs=1", "train.threads=1"]


@pytest.mark.slow
def test_tiny_report_end_to_end(tmp_path: Path, capsys) -> None:
    real = write_labelled_folder(tmp_path / "real", n=8)
    torch.manual_seed(0)
    arch = architecture({"depth": 2, "features": 4, "batch_norm": False})
    ckpt = save_checkpoint(tmp_path / "sim.ckpt", build_model(arch), arch, {"note": "tiny"}, epoch=0)
    out = tmp_path / "report"
    args = ["report", "--real", str(real), "--pretrained", str(ckpt), "--out", str(out), "--quiet", *TINY]
    assert main(args) == 0, capsys.readouterr().err
    assert "step/s" not in capsys.readouterr().err  # --quiet reaches every arm's training
    metrics = json.loads((out / "metrics.json").read_text())
    arms = [r["arm"] for r in metrics["table1"]]
    assert arms == ["Bragg filter", "U-Net real-only", "U-Net sim-only", "U-Net sim-pretrained + fine-tuned"]
    assert all(r["folds"] == 2 for r in metrics["table1"])
    # identical folds: every arm tested each fold on exactly the images splits.json puts in it
    splits = {(s["repeat"], s["fold"]): sorted(s["test"]) for s in json.loads((out / "splits.json").read_text())}
    assert len(splits) == 2 and sorted(sum(splits.values(), [])) == [f"img{i:02d}" for i in range(8)]
    bragg = json.loads(Path(metrics["sources"]["Bragg filter"]).read_text())["splits"]
    assert {(s["repeat"], s["fold"]): sorted(s["per_image"]) for s in bragg} == splits
    trained = [r["folder"] for r in metrics["provenance"]["runs"].values() if "folder" in r and "arms/bragg" not in r["folder"]]
    assert len(trained) == 4  # real-only and fine-tuned, at K = 3 and on all training images
    for run in trained:
        folds = [json.loads(p.read_text()) for p in Path(run).glob("fold_*/metrics.json")]
        assert {(f["repeat"], f["fold"]): sorted(f["counts"]) for f in folds} == splits, run
    assert set(metrics["data_efficiency"]["U-Net real-only"]) == {"3", "4"}
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and (out / "structure_maps.png").stat().st_size > 10_000
    assert metrics["provenance"]["sim_checkpoint"]["sha256"]
    overrides = metrics["provenance"]["overrides"]  # each by the config it went to, whatever the entry point
    assert "loop.epochs=1" in overrides["train"] and "cv.grouping=series" in overrides["train"]
    assert "report.folds=2" in overrides["evaluate"] and overrides["pretrain"] == []
    # a second run reuses every finished arm: nothing is trained or fitted again
    import evaluate.benchmark.bragg
    import train.crossval

    def refuse(*args, **kwargs):
        raise AssertionError("a finished arm was run again")
    models = {p: p.stat().st_mtime_ns for p in (out / "arms").rglob("*.ckpt")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train.crossval, "fit", refuse)
        patch.setattr(evaluate.benchmark.bragg, "run_bragg_cv", refuse)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main(args) == 0, capsys.readouterr().err
        assert not [w for w in seen if "another config" in str(w.message)]  # the same config: nothing replaced
        assert json.loads((out / "metrics.json").read_text())["table1"] == metrics["table1"]
        assert {p: p.stat().st_mtime_ns for p in (out / "arms").rglob("*.ckpt")} == models
        # ... and a changed training config is not served from the old runs
        with pytest.raises(AssertionError, match="a finished arm was run again"):
            main([*args, "train.loop.epochs=2"])
    # a rerun with another report config says that it replaces the report, and keeps the Bragg fit
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate.benchmark.bragg, "run_bragg_cv", refuse)
        with pytest.warns(UserWarning, match=r"another config \(report.extend_capped: 2 -> 0\)"):
            assert main([*args, "report.extend_capped=0"]) == 0
        # ... while a Bragg setting refits it
        with pytest.raises(AssertionError, match="a finished arm was run again"):
            main([*args, "bragg.lowpass=4.0"])

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

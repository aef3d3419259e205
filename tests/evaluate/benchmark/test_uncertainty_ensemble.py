"""The held-out fold ensemble's uncertainty (issue 15): its per-image score, which fold models may
judge an image under CV, and `--model` given several times."""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluate.cli import main
from evaluate.apply.uncertainty import jaccard_disagreement
from evaluate.benchmark.uncertainty_study import held_out_members, mutual_information, uncertainty_vs_error
from grapheneseg.config import load_config
from grapheneseg.micrographs import load_labelled
from tests.conftest import write_labelled_folder
from train.models.checkpoints import save_checkpoint
from train.models.unet import architecture, build_model

ARCH = architecture({"depth": 2, "features": 4, "batch_norm": False})


def _checkpoint(path: Path, seed: int, train_images: list[str] = ()) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(path, build_model(ARCH), ARCH, {"note": "tiny"}, epoch=0, train_images=train_images)


def test_jaccard_disagreement_known_answers() -> None:
    consensus = np.zeros((4, 4), bool)
    consensus[:2, :2] = True  # 4 pixels
    same, wider, empty = consensus.copy(), consensus.copy(), np.zeros_like(consensus)
    wider[:2, :3] = True  # 6 pixels: Jaccard 4 / 6
    got = jaccard_disagreement(np.stack([same, wider, empty]), consensus)
    assert got == pytest.approx((0 + (1 - 4 / 6) + 1) / 3)
    # two empty masks agree, a speck against an empty prediction is a full disagreement
    speck = empty.copy()
    speck[3, 3] = True
    assert jaccard_disagreement(np.stack([empty, empty]), empty) == 0.0
    assert jaccard_disagreement(np.stack([empty, speck]), empty) == pytest.approx(0.5)


def test_mutual_information_is_disagreement_only() -> None:
    """Samples that agree on 0.5 carry no mutual information; 0 and 1 half and half carry 1 bit."""
    assert mutual_information(np.full((4, 3, 3), 0.5)) == pytest.approx(0.0, abs=1e-6)
    split = np.concatenate([np.zeros((2, 3, 3)), np.ones((2, 3, 3))])
    assert mutual_information(split) == pytest.approx(1.0, abs=1e-4)


def test_held_out_members() -> None:
    seen = [{"a", "b"}, {"c"}, {"x", "a"}, set()]
    assert held_out_members(seen, 0, "x") == [0, 1, 3]
    assert held_out_members(seen, 1, "a") == [1, 3]  # folds 0 and 2 trained on "a"
    assert held_out_members(seen, 3, "q") == [3, 0, 1, 2]


def test_uncertainty_vs_error_uses_only_models_that_never_saw_the_image(tmp_path: Path) -> None:
    real = write_labelled_folder(tmp_path / "real", n=6, size=64)
    data = load_labelled(real)
    names = data.names
    splits = [{"repeat": 0, "fold": 0, "train": names[3:], "test": names[:3]},
              {"repeat": 0, "fold": 1, "train": names[:3], "test": names[3:]}]
    run = tmp_path / "run"
    _checkpoint(run / "fold_0" / "model.ckpt", 0, names[3:5])  # never trained on img05
    _checkpoint(run / "fold_1" / "model.ckpt", 1, names[:3])  # trained on all of fold 0's test images
    cfg = load_config("evaluate", ["apply.tile=256", "apply.overlap=0", "apply.batch_size=2",
                                   "apply.threshold=0.5"]).apply
    result = uncertainty_vs_error(run, data, splits, cfg, n_boot=50)
    members = {r["name"]: r["members"] for r in result["images"]}
    assert members == {**{n: [0] for n in names[:3]}, names[3]: [1], names[4]: [1], names[5]: [1, 0]}
    rows = {r["name"]: r for r in result["images"]}
    for name in names[:5]:  # a one-model ensemble equals the fold model
        assert rows[name]["ensemble"]["disagreement"] == pytest.approx(rows[name]["disagreement"])
    assert rows[names[5]]["ensemble"]["mean_std"] != pytest.approx(rows[names[5]]["mean_std"])
    table = result["ensemble"]["by_ensemble_error"]
    assert set(table) == {"disagreement", "band_std", "mean_std", "mutual_information", "coverage"}
    assert table["disagreement"]["minus_disagreement_ci95"] == [0.0, 0.0]
    assert result["n_images"] == 6 and result["ensemble"]["members_mean"] == pytest.approx(7 / 6)


def _predict(tmp_path: Path, out: str, models: list[str], images: Path) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", "--model", *models, "--input", str(images), "--out", str(tmp_path / out),
                     "--uncertainty", "--quiet", "--device", "cpu"]) == 0
    return {Path(r["file"]).name: float(r["uncertainty"])
            for r in csv.DictReader((tmp_path / out / "predictions.csv").open())}


def test_predict_with_several_models_is_their_ensemble(tmp_path: Path, capsys) -> None:
    """`--model a.ckpt b.ckpt` is the ensemble of both: the same as a run folder holding them as
    its folds, and not the first model alone; a file given twice is an error naming it."""
    images = write_labelled_folder(tmp_path / "in", n=3, size=64)
    a, b = _checkpoint(tmp_path / "a.ckpt", 0), _checkpoint(tmp_path / "b.ckpt", 1)
    run = tmp_path / "run"
    for fold, ckpt in enumerate((a, b)):
        (run / f"fold_{fold}").mkdir(parents=True)
        (run / f"fold_{fold}" / "model.ckpt").write_bytes(ckpt.read_bytes())
    both = _predict(tmp_path, "both", [str(a), str(b)], images)
    assert both == pytest.approx(_predict(tmp_path, "run", [str(run)], images), abs=1e-5)
    assert both != pytest.approx(_predict(tmp_path, "a", [str(a)], images), abs=1e-3)
    capsys.readouterr()
    assert main(["predict", "--model", str(a), str(a), "--input", str(images), "--out", str(tmp_path / "x"),
                 "--quiet", "--device", "cpu"]) != 0
    assert f"{a}: given more than once" in capsys.readouterr().err

"""Scoring a network against a known answer: a U-Net whose weights make it a pixel threshold.

A depth-1, 1-feature U-Net with centre-only 3x3 kernels computes relu(relu(x)) = relu(x) of the
preprocessed image x; a head with class-1 weight w and bias -w t makes its contamination
probability sigmoid(w (relu(x) - t)), so its mask is exactly `preprocess(image) > t`. Every count
`Predictor.score` and `evaluate score --model` report can then be checked pixel by pixel (on the CPU:
CUDA's bfloat16 autocast moves pixels within about 1e-2 of the threshold; tests/train/models/test_device.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from evaluate.apply.predictor import Predictor
from evaluate.cli import main
from grapheneseg.config import load_config
from grapheneseg.metrics import confusion, pooled
from grapheneseg.micrographs import load_labelled
from grapheneseg.preprocessing import preprocess
from tests.conftest import write_labelled_folder
from train.models.checkpoints import save_checkpoint
from train.models.unet import architecture, build_model


def threshold_checkpoint(path: Path, t: float, w: float = 1.0) -> Path:
    """A checkpoint of a U-Net that predicts contamination where the preprocessed image > t."""
    arch = architecture({"depth": 1, "features": 1, "batch_norm": False})
    model = build_model(arch)
    with torch.no_grad():
        for conv in (model.down[0][0], model.down[0][2]):
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1.0
            conv.bias.zero_()
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.weight[1, 0] = w
        model.head.bias[1] = -w * t
    return save_checkpoint(path, model, arch, {"model": arch}, epoch=0)


BARE = ["apply.close_A=0", "apply.fill_holes_nm2=0"]  # the mask is the threshold alone (no label-style closing)


def score_model(model: Path, test: Path) -> dict:
    """The scores of `evaluate score --model` on the CPU (the default apply config, bare threshold)."""
    return Predictor(model, load_config("evaluate", BARE).apply, "cpu").score(test)


def expected_counts(folder: Path, t: float) -> dict[str, list[int]]:
    data = load_labelled(folder)
    return {n: confusion(preprocess(im) > t, m).tolist() for n, im, m in zip(data.names, data.images, data.masks)}


def test_score_model_counts_every_pixel(tmp_path: Path) -> None:
    test = write_labelled_folder(tmp_path / "test", n=4)
    result = score_model(threshold_checkpoint(tmp_path / "t.ckpt", 0.7), test)
    expected = expected_counts(test, 0.7)
    assert {"pooled", "per_image", "scores", "counts", "n_images", "n_models", "model", "test", "tta", "scales",
            "notices"} <= set(result) and set(result["scales"]) == set(expected)
    assert result["counts"] == expected
    assert result["pooled"] == pooled(np.array(c) for c in expected.values())
    # the contamination of the synthetic images is the high-variance region: the threshold finds part of it
    assert 0.05 < result["pooled"]["jaccard"] < 0.95


def test_fold_ensemble_is_the_mean_softmax(tmp_path: Path) -> None:
    """fold_0: sigmoid(r - 0.5), fold_1: sigmoid(4 r - 4); their mean exceeds 1/2 exactly where
    (r - 0.5) + (4 r - 4) > 0, i.e. r > 0.9."""
    test = write_labelled_folder(tmp_path / "test", n=3, seed=4)
    threshold_checkpoint(tmp_path / "run" / "fold_0" / "model.ckpt", 0.5)
    threshold_checkpoint(tmp_path / "run" / "fold_1" / "model.ckpt", 1.0, w=4.0)
    result = score_model(tmp_path / "run", test)
    assert result["n_models"] == 2 and result["counts"] == expected_counts(test, 0.9)


def test_evaluate_score_model_cli(tmp_path: Path, capsys) -> None:
    test = write_labelled_folder(tmp_path / "my test=1", n=3, seed=2)
    ckpt = threshold_checkpoint(tmp_path / "t.ckpt", 0.7)
    out = tmp_path / "scores" / "t.json"
    assert main(["score", "--model", str(ckpt), "--test", str(test), "--json", "--out", str(out), "--device", "cpu",
                 *BARE]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = expected_counts(test, 0.7)
    assert printed == pooled(np.array(c) for c in expected.values())
    saved = json.loads(out.read_text())
    assert saved["counts"] == expected and saved["n_models"] == 1
    assert (out.parent / "t.config.yaml").exists()
    # a file that is not a model is refused by name, with a non-zero exit
    bad = tmp_path / "notes.ckpt"
    bad.write_text("not a checkpoint")
    assert main(["score", "--model", str(bad), "--test", str(test)]) == 1
    assert "notes.ckpt" in capsys.readouterr().err

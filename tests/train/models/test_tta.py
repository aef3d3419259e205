"""Test-time augmentation over the 8 dihedral symmetries: the output transforms as the input does."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from evaluate.cli import main as evaluate_main
from tests.conftest import write_labelled_folder
from train.models.checkpoints import save_checkpoint
from train.models.runtime import for_inference, predict_probability
from train.models.unet import architecture, build_model

ARCH = architecture({"depth": 3, "features": 4, "batch_norm": True})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_model(ARCH)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return for_inference(net.eval())


@pytest.mark.parametrize("transform", [np.fliplr, np.flipud, np.rot90, lambda a: np.rot90(a, 3).T])
def test_tta_output_follows_flips_and_rotations(model, transform):
    image = np.random.default_rng(1).normal(size=(60, 44)).astype(np.float32)  # not square, not a multiple of 4
    seen = transform(image).copy()
    tta = predict_probability([model], image[None], tta=True)[0]
    assert np.allclose(predict_probability([model], seen[None], tta=True)[0], transform(tta), atol=1e-5)
    # without TTA a random network is not equivariant: the test above would catch an ignored flag
    plain = predict_probability([model], image[None])[0]
    assert not np.allclose(predict_probability([model], seen[None])[0], transform(plain), atol=1e-3)
    assert not np.allclose(plain, tta, atol=1e-3)


def test_tta_flags_on_score_and_predict(model, tmp_path, capsys):
    real = write_labelled_folder(tmp_path / "real", n=3)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", build_model(ARCH), ARCH, {}, epoch=0)
    assert evaluate_main(["score", "--model", str(ckpt), "--test", str(real), "--tta",
                          "--out", str(tmp_path / "s.json"), "--json"]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["tta"] is True
    masks = {}
    for flag in ([], ["--tta"]):
        out = tmp_path / f"pred{len(flag)}"
        assert evaluate_main(["predict", "--model", str(ckpt), "--input", str(real), "--out", str(out),
                              "--pixel-size", "0.38", "--quiet", "--threshold", "0.4", *flag]) == 0
        masks[bool(flag)] = np.array(Image.open(out / "img00_mask.png"))
        assert ("tta: true" in (out / "config.yaml").read_text()) == bool(flag)
    assert masks[True].shape == masks[False].shape == (64, 64)

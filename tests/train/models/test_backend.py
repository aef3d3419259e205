"""The ONNX Runtime inference backend (train.models.runtime.load_models(backend="onnx"), `--backend onnx`):
the same probabilities as the TorchScript backend, the same masks from `evaluate predict`, an
optional dependency with a clear error when it is missing, and CPU only."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluate.cli import main
from tests.conftest import write_labelled_folder
from train.models.checkpoints import save_checkpoint
from train.models.onnx import OnnxModel
from train.models.runtime import load_models, predict_probability, probability_samples, tiled_probability
from train.models.unet import architecture, build_model

ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
needs_ort = pytest.mark.skipif(not ORT, reason="onnxruntime/onnx not installed (pip install -e '.[export]')")


def tiny_checkpoint(path: Path, seed: int = 0, classes: int | None = None) -> Path:
    """A random depth-2 U-Net with batch norm (non-trivial running statistics)."""
    torch.manual_seed(seed)
    cfg = {"depth": 2, "features": 4, "batch_norm": True}
    model = build_model(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(path, model.eval(), architecture(cfg), {"model": cfg}, 1)


@needs_ort
def test_onnx_and_torchscript_probabilities_agree(tmp_path):
    path = tiny_checkpoint(tmp_path / "m.ckpt")
    scripted, onnx = load_models(path, "cpu"), load_models(path, "cpu", backend="onnx")
    assert isinstance(onnx[0], OnnxModel) and onnx[0].depth == scripted[0].depth and onnx[0].device.type == "cpu"
    rng = np.random.default_rng(0)
    for shape in [(3, 64, 64), (2, 50, 60)]:  # 50 x 60: not a multiple of the pooling, padded and cropped
        x = rng.normal(size=shape).astype(np.float32)
        for batch in (1, 2):
            a, b = predict_probability(scripted, x, batch), predict_probability(onnx, x, batch)
            assert b.shape == shape and np.abs(a - b).max() < 1e-4
    x = rng.normal(size=(300, 300)).astype(np.float32)  # tiled: 3 x 3 tiles of 128 px
    a, b = tiled_probability(scripted, x, 128, 16, 2), tiled_probability(onnx, x, 128, 16, 2)
    assert b.shape == (300, 300) and np.abs(a - b).max() < 1e-4
    small = x[:64, :64]
    for sa, sb in zip(probability_samples(scripted, small, 128, 16, 2), probability_samples(onnx, small, 128, 16, 2)):
        assert np.abs(sa - sb).max() < 1e-4


@needs_ort
def test_onnx_backend_runs_an_ensemble(tmp_path):
    for k in range(2):
        tiny_checkpoint(tmp_path / "run" / f"fold_{k}" / "model.ckpt", seed=k)
    x = np.random.default_rng(1).normal(size=(2, 64, 64)).astype(np.float32)
    onnx = load_models(tmp_path / "run", "cpu", backend="onnx")
    assert len(onnx) == 2
    assert np.abs(predict_probability(onnx, x) - predict_probability(load_models(tmp_path / "run", "cpu"), x)).max() < 1e-4


@needs_ort
def test_onnx_session_follows_the_thread_setting(tmp_path):
    path = tiny_checkpoint(tmp_path / "m.ckpt")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        session = load_models(path, "cpu", backend="onnx")[0].session
        assert session.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)


@needs_ort
def test_predict_backend_onnx_writes_the_same_masks(tmp_path):
    from evaluate import api

    path = tiny_checkpoint(tmp_path / "m.ckpt")
    folder = write_labelled_folder(tmp_path / "in", n=4)
    # the API with either backend; its median probability as the threshold, so the masks are not blank
    probs = [api.segment(folder / "img00.png", 0.4, path, "cpu", backend=b).probability for b in ("torchscript", "onnx")]
    assert np.abs(probs[0] - probs[1]).max() < 1e-4
    threshold = f"{np.median(probs[0]):.4f}"
    outs = {}
    for backend in ("torchscript", "onnx"):
        outs[backend] = tmp_path / backend
        assert main(["predict", "--model", str(path), "--input", str(folder), "--out", str(outs[backend]),
                     "--pixel-size", "0.4", "--device", "cpu", "--threshold", threshold, "--backend", backend,
                     "--quiet"]) == 0
    masks = sorted(p.name for p in outs["torchscript"].glob("*_mask.png"))
    assert len(masks) == 4 and masks == sorted(p.name for p in outs["onnx"].glob("*_mask.png"))
    for name in masks:
        mask = np.asarray(Image.open(outs["torchscript"] / name))
        assert 0 < (mask > 0).mean() < 1, name
        assert np.array_equal(mask, np.asarray(Image.open(outs["onnx"] / name)))


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch, capsys):
    path = tiny_checkpoint(tmp_path / "m.ckpt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(ValueError, match=r"pip install -e '\.\[export\]'"):
        load_models(path, "cpu", backend="onnx")
    folder = write_labelled_folder(tmp_path / "in", n=1)
    assert main(["predict", "--model", str(path), "--input", str(folder), "--out", str(tmp_path / "out"),
                 "--pixel-size", "0.4", "--device", "cpu", "--backend", "onnx", "--quiet"]) == 1
    assert "pip install -e '.[export]'" in capsys.readouterr().err


def test_unknown_backend_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of torchscript, onnx"):
        load_models(tiny_checkpoint(tmp_path / "m.ckpt"), "cpu", backend="tensorrt")


@needs_ort
def test_onnx_backend_is_cpu_only(tmp_path, monkeypatch):
    """--device cuda with --backend onnx is an error; auto on a CUDA machine runs on the CPU with a warning."""
    path = tiny_checkpoint(tmp_path / "m.ckpt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="CPU only"):
        load_models(path, "cuda", backend="onnx")
    with pytest.warns(UserWarning, match="CUDA device is not used"):
        models = load_models(path, "auto", backend="onnx")
    assert models[0].device.type == "cpu"

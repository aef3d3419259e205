"""--device on every command that runs a network: the CPU path, the eager path, and a clear error
for cuda without CUDA (issue 13). The GPU itself is exercised by benchmarks/bench_inference.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evaluate.cli import main
from tests.conftest import write_labelled_folder
from train.models.checkpoints import load_model, save_checkpoint
from train.models.runtime import for_device, inference_device, load_models, predict_probability
from train.loops import choose_device
from train.models.unet import architecture, build_model

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the error raised without CUDA")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    arch = architecture({"depth": 2, "features": 4, "batch_norm": True})
    return save_checkpoint(tmp_path_factory.mktemp("model") / "model.ckpt", build_model(arch), arch, {}, epoch=0)


def test_cpu_keeps_frozen_torchscript_and_eager_path_agrees(checkpoint: Path) -> None:
    (frozen,) = load_models(checkpoint, "cpu")
    assert isinstance(frozen.net, torch.jit.ScriptModule) and frozen.device.type == "cpu"
    eager = for_device(load_model(checkpoint)[0], torch.device("cpu"))  # what CUDA runs, here on the CPU
    assert not isinstance(eager.net, torch.jit.ScriptModule)
    images = np.random.default_rng(0).normal(size=(3, 40, 56)).astype(np.float32)
    np.testing.assert_allclose(predict_probability([eager], images), predict_probability([frozen], images),
                               atol=1e-4)
    assert inference_device("cpu").type == "cpu"
    assert inference_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        inference_device("tpu")


@NO_CUDA
def test_cuda_without_cuda_is_a_clear_error(checkpoint: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="no CUDA device"):
        inference_device("cuda")
    real = write_labelled_folder(tmp_path / "real", n=2)
    for argv in (["predict", "--input", str(real), "--out", str(tmp_path / "o")],
                 ["sort", "--input", str(real), "--out", str(tmp_path / "s")],
                 ["atoms", "--input", str(real), "--out", str(tmp_path / "a")],
                 ["score", "--test", str(real)]):
        assert main([*argv, "--model", str(checkpoint), "--device", "cuda", "--quiet"]) == 1
        assert "--device cuda: no CUDA device is available" in capsys.readouterr().err
    assert main(["predict", "--input", str(real), "--out", str(tmp_path / "o"), "--model", str(checkpoint),
                 "--device", "cpu", "--quiet"]) == 0


@NO_CUDA
def test_report_checks_the_device_first(tmp_path: Path, capsys) -> None:
    real = write_labelled_folder(tmp_path / "real", n=2)
    assert main(["report", "--real", str(real), "--pretrained", "x.ckpt", "--out", str(tmp_path / "r"),
                 "--device", "cuda", "--quiet"]) == 1
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch) -> None:
    """torchrun with more processes per node than GPUs: named, not a CUDA 'invalid device ordinal'."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="needs CUDA device 1, but torch sees 1.*--device cpu"):
        choose_device("auto")
    assert choose_device("cpu").type == "cpu"  # and training on the CPU stays possible (Gloo)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert choose_device("auto") == torch.device("cuda", 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_agrees_with_the_cpu_within_bfloat16(checkpoint: Path) -> None:
    images = np.random.default_rng(0).normal(size=(5, 64, 64)).astype(np.float32)
    cpu = predict_probability(load_models(checkpoint, "cpu"), images)
    gpu = predict_probability(load_models(checkpoint, "cuda"), images)
    assert np.abs(gpu - cpu).max() < 2e-2 and ((gpu > 0.5) == (cpu > 0.5)).mean() > 0.99

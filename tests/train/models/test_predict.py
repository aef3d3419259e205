"""Inference library (train.models.runtime): checkpoints and run folders, ensembles.
(Scores against a known answer: tests/evaluate/apply/test_scoring_known_answer.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train.models.runtime import checkpoint_paths, for_inference, load_models, predict_probability
from train.models.checkpoints import CheckpointError, save_checkpoint
from train.models.unet import architecture, build_model


def save_model(path, seed, depth=2, batch_norm=True):
    torch.manual_seed(seed)
    cfg = {"depth": depth, "features": 4, "batch_norm": batch_norm}
    model = build_model(cfg)
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding them is tested
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(path, model.eval(), architecture(cfg), {"model": cfg}, 1), model.eval()


def test_inference_model_matches_training_model(tmp_path):
    path, model = save_model(tmp_path / "m.ckpt", 0)
    x = np.random.default_rng(0).normal(size=(3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        reference = torch.softmax(model(torch.from_numpy(x)[:, None]), 1)[:, 1].numpy()
    for batch in (1, 2, 8):
        prob = predict_probability(load_models(path, "cpu"), x, batch_size=batch)  # exact on the CPU
        assert prob.shape == (3, 64, 64) and np.allclose(prob, reference, atol=1e-5)
    # sizes not divisible by the pooling are reflect-padded and cropped back
    assert predict_probability([for_inference(model)], x[:, :50, :60]).shape == (3, 50, 60)


def test_run_folder_is_an_ensemble_of_folds(tmp_path):
    paths = [save_model(tmp_path / "run" / f"fold_{k}" / "model.ckpt", k)[0] for k in range(2)]
    assert checkpoint_paths(tmp_path / "run") == paths
    x = np.random.default_rng(0).normal(size=(2, 64, 64)).astype(np.float32)
    single = [predict_probability(load_models(p, "cpu"), x) for p in paths]
    assert np.allclose(predict_probability(load_models(tmp_path / "run", "cpu"), x), np.mean(single, 0), atol=1e-6)
    with pytest.raises(CheckpointError, match="empty"):
        checkpoint_paths((tmp_path / "empty").mkdir() or tmp_path / "empty")


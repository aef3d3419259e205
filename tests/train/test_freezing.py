"""Fine-tuning with a frozen encoder: nothing of the encoder moves while frozen (weights and
batch-norm statistics), and all of it trains once the freezing ends."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import train.loops
from grapheneseg.config import load_config, to_plain
from tests.conftest import write_labelled_folder
from train.datasets import real_pairs
from train.loops import fit
from train.models.unet import build_model

MODEL = {"depth": 2, "features": 4, "batch_norm": True}


def snapshots(monkeypatch) -> dict[int, dict[str, torch.Tensor]]:
    """The model's state at every checkpoint `fit` writes, by epoch."""
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def record(path, model, arch, config, epoch, *args, **kwargs):
        seen[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(train.loops, "save_checkpoint", record)
    return seen


def encoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("down.")}


@pytest.fixture
def setup(tmp_path: Path):
    config = to_plain(load_config("train", [
        "model.depth=2", "model.features=4", "model.batch_norm=true", "loop.epochs=3", "loop.batch_size=4",
        "loop.crop=32", "loop.min_steps=0", "loop.checkpoint_every=1", "loop.crops_per_image=2",
        "threads=1", "device=cpu"]))
    torch.manual_seed(1)
    pretrained = build_model(MODEL)
    with torch.no_grad():  # pretrained statistics unlike those of the new images
        for m in pretrained.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(0.3)
                m.running_var.fill_(2.0)
    train_set = real_pairs(write_labelled_folder(tmp_path / "real", n=4), augment=config["augment"],
                           crop=32, crops_per_image=2, seed=0)
    return config, pretrained.state_dict(), train_set


def test_frozen_encoder_keeps_weights_and_batch_norm_statistics(setup, tmp_path, monkeypatch):
    config, init, train_set = setup
    config["loop"]["freeze_encoder_epochs"] = 1
    seen = snapshots(monkeypatch)
    fit(config, train_set, None, tmp_path / "run", init=init)
    assert sorted(seen) == [1, 2, 3]
    frozen, thawed = encoder(seen[1]), encoder(seen[3])
    assert any("running_mean" in k for k in frozen)
    for key, value in encoder(init).items():
        assert torch.equal(frozen[key], value), f"{key} changed while the encoder was frozen"
    # freezing ends after its epochs: every encoder weight and statistic trains from then on
    changed = [k for k, v in encoder(init).items() if not torch.equal(thawed[k], v)]
    assert set(changed) == set(encoder(init)), set(encoder(init)) - set(changed)
    assert not torch.equal(seen[1]["head.weight"], init["head.weight"])  # the decoder trained from the start

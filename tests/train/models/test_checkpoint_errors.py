"""A file that is not one of our checkpoints is refused by name, without PyTorch's advice to
unpickle it unsafely."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from train.models.checkpoints import CheckpointError, read_checkpoint


def test_pickled_objects_are_not_a_checkpoint_of_this_tool(tmp_path: Path) -> None:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "where": Path("/somewhere")}, path)  # a Python object, not plain data
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a grapheneseg-unet checkpoint of this tool")
    assert "weights_only" not in message


def test_other_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "notes.ckpt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.ckpt: not a readable checkpoint"):
        read_checkpoint(tmp_path / "notes.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match=r"plain\.ckpt: not a grapheneseg-unet checkpoint \(no "):
        read_checkpoint(tmp_path / "plain.ckpt")


def test_a_checkpoint_for_other_preprocessing_is_refused_before_fine_tuning(tmp_path: Path) -> None:
    """The pretrained model's preprocessing is checked once, where every checkpoint is read."""
    from grapheneseg.config import load_config, to_plain
    from train.models.checkpoints import save_checkpoint
    from train.crossval import finetune_setup
    from train.models.unet import architecture, build_model

    config = to_plain(load_config("train", ["model.features=4", "model.depth=2"]))
    path = tmp_path / "sim.ckpt"
    save_checkpoint(path, build_model(config["model"]), architecture(config["model"]), config, epoch=1)
    payload = torch.load(path, weights_only=True)
    payload["preprocessing"] = "something else"
    torch.save(payload, path)
    config["finetune"]["pretrained"] = str(path)
    with pytest.raises(CheckpointError, match=r"sim\.ckpt: model expects preprocessing 'something else'"):
        finetune_setup(config)

"""The four-class structure network (issue 23, items 1-2): `train pretrain --task classes` on the
simulator's class maps, the partial-label loss on contamination-only labels, and a classes model
serving wherever a contamination model does."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grapheneseg.config import load_config
from simulate.dataset import DatasetWriter
from simulate.pipeline import META_DTYPE
from tests.conftest import TINY_BATCH, TINY_NET, write_labelled_folder
from tests.evaluate.apply.test_atoms import PIXEL, honeycomb
from train.loops import ce_dice_loss, classes_loss, loss_function, marginal_loss
from train.pretrain import pretrain

TINY = [*TINY_NET, *TINY_BATCH, "model.batch_norm=true", "loop.epochs=2", "loop.samples_per_epoch=8",
        "sim.val_fraction=0.3"]


@pytest.mark.parametrize("dice", [0.0, 1.0])
def test_the_partial_label_loss_is_the_binary_loss_for_two_classes(dice):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 16, 16, generator=g)
    target = (torch.rand(3, 16, 16, generator=g) > 0.7).long()
    assert torch.allclose(marginal_loss(logits, target, dice), ce_dice_loss(logits, target, dice), atol=1e-6)


def test_not_contamination_is_the_sum_of_the_other_classes():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = (torch.rand(2, 8, 8, generator=g) > 0.5).long()
    collapsed = torch.stack([torch.logsumexp(logits[:, [0, 2, 3]], 1), logits[:, 1]], 1)
    assert torch.allclose(marginal_loss(logits, target, 0.0), F.cross_entropy(collapsed, target), atol=1e-6)
    # moving probability between the "not" classes changes nothing; moving it into class 1 does
    shuffled = logits[:, [2, 1, 3, 0]]
    assert torch.allclose(marginal_loss(shuffled, target, 1.0), marginal_loss(logits, target, 1.0), atol=1e-6)


def test_the_thin_boundary_class_cannot_vanish():
    """A prediction that never says "boundary" loses more than cross-entropy alone charges it."""
    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[0, :, 15:17] = 3  # a 2 px boundary line: 6 % of the pixels
    good = F.one_hot(target, 4).permute(0, 3, 1, 2).float() * 8
    missing = good.clone()
    missing[:, 3] = -8
    missing[:, 0] = torch.maximum(missing[:, 0], torch.full_like(missing[:, 0], 8.0))
    ce_gap = F.cross_entropy(missing, target) - F.cross_entropy(good, target)
    assert classes_loss(missing, target) - classes_loss(good, target) > ce_gap + 0.2


def test_the_loss_follows_targets_and_network():
    cfg = {"loop": {"dice_weight": 1.0}, "model": {"depth": 2, "features": 4, "classes": 4}}
    logits, target = torch.randn(1, 4, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long)
    assert torch.equal(loss_function(cfg, "masks")(logits, target), marginal_loss(logits, target))
    assert torch.equal(loss_function(cfg, "classes")(logits, target), classes_loss(logits, target))
    two = {**cfg, "model": {**cfg["model"], "classes": 2}}
    assert torch.equal(loss_function(two, "masks")(logits[:, :2], target), ce_dice_loss(logits[:, :2], target))


def class_file(path: Path, n: int = 12) -> Path:
    """Honeycombs with a contaminated corner, a vacuum strip and a boundary line, as the simulator labels them."""
    writer = DatasetWriter(path, n, 64, {"config": "tiny", "seed": 0, "n_target": n, "variants_per_structure": 3},
                           resume=False)
    for i in range(n):
        image, _ = honeycomb(size=64, white=bool(i % 2), seed=i)
        image[:, 48:] = image.mean()
        classes = np.zeros((64, 64), np.uint8)
        classes[:, 30:32] = 3
        classes[:, 48:] = 2
        classes[:16, :16] = 1
        meta = np.zeros(1, dtype=META_DTYPE)
        meta["index"], meta["structure"], meta["variant"] = i, i // 3, i % 3
        meta["pixel_size"] = PIXEL  # the checkpoint records it as the model's pixel range
        writer.append_arrays((image / image.mean())[None].astype(np.float32), (classes == 1)[None].astype(np.uint8),
                             classes[None], meta, None)
    writer.close(complete=True)
    return path


def test_a_classes_model_pretrains_serves_as_a_contamination_model_and_fine_tunes(tmp_path):
    from evaluate.cli import main as evaluate_main
    from train.cli import main as train_main

    data = class_file(tmp_path / "sim.h5")
    out = tmp_path / "classes.ckpt"
    summary = pretrain(load_config("pretrain", [*TINY, "task=classes"]), [data], out)
    assert summary["task"] == "classes" and {"iou_boundary", "iou_vacuum", "miou", "jaccard"} <= set(summary["sim_val"])
    payload = torch.load(out, weights_only=True)
    assert payload["task"] == "classes" and payload["architecture"]["classes"] == 4
    with pytest.raises(ValueError, match="task=classes predicts 4 channel"):
        pretrain(load_config("pretrain", [*TINY, "task=classes", "+model.classes=2"]), [data], tmp_path / "x.ckpt")
    real = write_labelled_folder(tmp_path / "real", n=6)
    assert evaluate_main(["predict", "--model", str(out), "--input", str(real), "--out", str(tmp_path / "pred"),
                          "--pixel-size", "0.4", "--device", "cpu", "--quiet"]) == 0
    tuned = tmp_path / "tuned.ckpt"
    assert train_main(["finetune", "--pretrained", str(out), "--real", str(real), "--folds", "0", "--out", str(tuned),
                       "model.depth=2", "model.features=4", "model.batch_norm=true", "loop.batch_size=4",
                       "loop.crop=32", "loop.min_steps=0", "threads=1", "select.enabled=false",
                       "finetune.epochs=1"]) == 0
    tuned_payload = torch.load(tuned, weights_only=True)
    assert tuned_payload["task"] == "classes" and tuned_payload["architecture"]["classes"] == 4
    assert len(tuned_payload["train_images"]) == 6

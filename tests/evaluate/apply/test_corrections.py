"""Corrected masks back into the model (evaluate/apply/corrections.py, `evaluate pair`, the API):
a pair saved at the model's scale that `train finetune` reads, never overwritten silently, and a
guarded fine-tune whose every step a caller sees and can stop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from grapheneseg.formats import Micrograph
from grapheneseg.micrographs import load_labelled
from tests.conftest import TINY_BATCH, TINY_NET, synthetic_micrograph, write_labelled_folder
from train.models.checkpoints import read_checkpoint, save_checkpoint
from train.models.unet import architecture, build_model

from evaluate.apply.corrections import finetune, pair_name, save_pair
from evaluate.apply.predictor import Predictor
from evaluate.apply.scale import Scale, ScaleSource
from evaluate.apply.tiff import write_tiff


@pytest.fixture(scope="module")
def predictor():
    return Predictor(None, {"pixel_range": [0.3, 0.6], "target_pixel_size": 0.45, "tile": 256, "overlap": 32,
                            "batch_size": 4, "threshold": 0.5})


def micrograph(size: int = 96, seed: int = 0) -> tuple[Micrograph, np.ndarray]:
    image, mask = synthetic_micrograph(np.random.default_rng(seed), size)
    return Micrograph("scan 1.dm4", image.astype(np.float32), None), mask


def test_a_pair_in_range_is_saved_as_it_is_and_train_reads_it(tmp_path, predictor):
    m, mask = micrograph()
    saved = save_pair(predictor, m, mask, tmp_path, scale=Scale(0.38, ScaleSource.FILE))
    assert saved.image.name == "scan_1.png" and saved.label.name == "scan_1_LABEL.png"
    assert not saved.resampled and saved.shape == (96, 96) and saved.pixel_size == pytest.approx(0.38)
    data = load_labelled(tmp_path)
    assert data.names == ["scan_1"] and np.array_equal(data.masks[0], mask)
    assert data.images[0].min() == 0 and data.images[0].max() == 255  # stretched to 8 bits


def test_a_pair_outside_the_models_range_is_saved_at_its_scale(tmp_path, predictor):
    """0.15 A/px is outside 0.30-0.60: the pair is what the network sees, 0.45 A/px, a third the size;
    the mask resampled with it (a planted bug saving the native grid fails the shape)."""
    m, mask = micrograph(192)
    saved = save_pair(predictor, m, mask, tmp_path, "zoomed", Scale(0.15, ScaleSource.FILE))
    assert saved.resampled and saved.shape == (64, 64) and saved.pixel_size == pytest.approx(0.45)
    data = load_labelled(tmp_path)
    assert data.images[0].shape == data.masks[0].shape == (64, 64)
    assert abs(data.masks[0].mean() - mask.mean()) < 0.02


def test_an_existing_pair_is_never_overwritten_silently(tmp_path, predictor):
    m, mask = micrograph()
    scale = Scale(0.38, ScaleSource.FILE)
    first = save_pair(predictor, m, mask, tmp_path, scale=scale)
    before = first.label.read_bytes()
    assert save_pair(predictor, m, mask, tmp_path, scale=scale).unchanged  # the same pair: nothing to do
    corrected = mask.copy()
    corrected[:10] = True
    with pytest.raises(FileExistsError, match="scan_1.png"):
        save_pair(predictor, m, corrected, tmp_path, scale=scale)
    assert first.label.read_bytes() == before
    again = save_pair(predictor, m, corrected, tmp_path, scale=scale, overwrite=True)
    assert not again.unchanged and np.array_equal(load_labelled(tmp_path).masks[0], corrected)
    with pytest.raises(ValueError, match="mask shape"):
        save_pair(predictor, m, corrected[:50], tmp_path, "other", scale)


def test_pair_names_are_safe():
    assert pair_name("/data/day 1/scan#3.dm4") == "scan_3"
    assert not pair_name("x_LABEL.png").endswith("_LABEL")


def tiny_start(path):
    arch = architecture({"depth": 2, "features": 4, "batch_norm": True})
    torch.manual_seed(0)
    return save_checkpoint(path, build_model(arch), arch, {}, epoch=0)


TINY_FT = [*TINY_NET, "model.batch_norm=true", *TINY_BATCH, "finetune.epochs=2", "select.inner_folds=2",
           "select.bootstrap=200"]


def test_finetune_is_guarded_observed_and_stoppable(tmp_path):
    pairs = write_labelled_folder(tmp_path / "pairs", n=4)
    start = tiny_start(tmp_path / "start.ckpt")
    seen = []
    result = finetune(pairs, tmp_path / "mine.ckpt", start, "cpu", TINY_FT,
                      progress=lambda desc, done, total: seen.append((desc, done, total)))
    assert (tmp_path / "mine.ckpt").exists() and result["message"].startswith(("kept the pretrained", "fine-tuned"))
    assert {d for d, _, _ in seen} >= {"all images inner 0", "all images inner 1"}
    assert all(0 < done <= total for _, done, total in seen)
    assert read_checkpoint(tmp_path / "mine.ckpt")["train_images"] == [f"img{i:02d}" for i in range(4)]
    with pytest.raises(FileExistsError):
        finetune(pairs, tmp_path / "mine.ckpt", start, "cpu", TINY_FT)

    def cancel(desc, done, total):
        raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        finetune(pairs, tmp_path / "stopped.ckpt", start, "cpu", TINY_FT, progress=cancel)
    assert not (tmp_path / "stopped.ckpt").exists()  # a cancelled run leaves no model behind


def test_the_cli_pairs_a_corrected_mask_and_finetunes_the_packaged_model(tmp_path, capsys):
    from PIL import Image

    from evaluate.cli import main as evaluate_main
    from train.cli import main as train_main

    image, mask = synthetic_micrograph(np.random.default_rng(3), 96)
    scan = write_tiff(tmp_path / "scan.tif", image.astype(np.float32), 0.38)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "scan_mask.png")
    assert evaluate_main(["pair", str(scan), str(tmp_path / "scan_mask.png"), "--out", str(tmp_path / "pairs"),
                          "--device", "cpu"]) == 0
    assert "scan.png + scan_LABEL.png: 96 x 96 px at 0.38 A/px" in capsys.readouterr().out
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small_mask.png")
    assert evaluate_main(["pair", str(scan), str(tmp_path / "small_mask.png"), "--out", str(tmp_path / "pairs")]) != 0
    assert "10 x 10 px, but" in capsys.readouterr().err
    write_labelled_folder(tmp_path / "pairs", n=2, size=96, seed=5)
    out = tmp_path / "mine.ckpt"
    args = ["finetune", "--real", str(tmp_path / "pairs"), "--folds", "0", "--out", str(out), "--device", "cpu",
            "finetune.epochs=1", "select.enabled=false", *TINY_BATCH]
    assert train_main(args) == 0
    assert "fine-tuning the packaged simulation-only model" in capsys.readouterr().err
    assert train_main(args) != 0 and f"--out {out} exists" in capsys.readouterr().err  # no silent overwrite


def test_pairs_of_different_sizes_train_and_validate(tmp_path):
    """A lab's corrections come at their own sizes (and resampled ones at the model's scale): the
    inner validation predicts them in groups of one size (np.stack of mixed shapes failed)."""
    pairs = write_labelled_folder(tmp_path / "pairs", n=3, size=64)
    write_labelled_folder(tmp_path / "big", n=3, size=96, seed=1)
    for path in (tmp_path / "big").iterdir():
        path.rename(pairs / f"big_{path.name}")
    result = finetune(pairs, tmp_path / "mine.ckpt", tiny_start(tmp_path / "start.ckpt"), "cpu", TINY_FT)
    assert len(result["train_images"]) == 6 and (tmp_path / "mine.ckpt").exists()
    assert result["selection"]["inner_images"] == 6

"""The pixel range a model was trained at travels in its checkpoint, and `evaluate predict`
resamples micrographs into that range, not into a global one (a model simulated at a user's own
magnification must not see images resampled to the public set's)."""
from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from evaluate.apply.predictor import FALLBACK_RANGE, FALLBACK_TARGET, Predictor, model_scale
from evaluate.apply.scale import decide_scale
from grapheneseg.config import load_config
from grapheneseg.formats import Micrograph
from tests.conftest import write_labelled_folder
from tests.train.test_pretrain import FT, TINY_LOOP, TINY_MODEL, write_sim
from train.models.checkpoints import read_checkpoint
from train.cli import main
from train.pretrain import pretrain


@pytest.fixture
def sim_ckpt(tmp_path: Path) -> Path:
    """A tiny pretrained model on simulations at 0.10-0.14 A/px."""
    sim = write_sim(tmp_path / "sim.h5")
    with h5py.File(sim, "r+") as f:
        meta = f["meta"][:]
        meta["pixel_size"] = np.linspace(0.10, 0.14, len(meta))
        f["meta"][:] = meta
    ckpt = tmp_path / "sim.ckpt"
    pretrain(load_config("pretrain", TINY_MODEL + TINY_LOOP + ["sim.val_fraction=0"]), [sim], ckpt)
    return ckpt


def test_pretrained_and_fine_tuned_checkpoints_record_the_simulated_pixel_range(sim_ckpt, tmp_path):
    assert read_checkpoint(sim_ckpt)["pixel_range"] == [0.1, 0.14]
    real = write_labelled_folder(tmp_path / "real", n=4)
    out = tmp_path / "ft.ckpt"
    assert main(["finetune", "--pretrained", str(sim_ckpt), "--real", str(real), "--folds", "0",
                 "--out", str(out), *TINY_MODEL, *TINY_LOOP, *FT]) == 0
    assert read_checkpoint(out)["pixel_range"] == [0.1, 0.14]  # fine-tuning keeps the model's scale
    assert main(["real", "--real", str(real), "--folds", "0", "--out", str(tmp_path / "real.ckpt"),
                 *TINY_MODEL, *TINY_LOOP]) == 0
    assert "pixel_range" not in read_checkpoint(tmp_path / "real.ckpt")  # no simulation, no lattice read: not known


def test_real_labels_widen_the_recorded_range_to_their_own_scales(sim_ckpt, tmp_path):
    """A model trained on real micrographs saw them at their own scales: the checkpoint records the
    range of their lattice readings (joined with the pretrained range), so `evaluate predict` does
    not resample micrographs at scales the model was trained on."""
    from PIL import Image

    from tests.core.test_lattice import graphene

    real = tmp_path / "graphene"
    real.mkdir()
    for i, pixel in enumerate((0.42, 0.55, 0.55)):
        image = graphene(pixel, 128, seed=i)
        Image.fromarray(np.clip((image - image.min()) / np.ptp(image) * 255, 0, 255).astype(np.uint8)).save(
            real / f"g{i}.png")
        Image.fromarray(np.zeros((128, 128), np.uint8)).save(real / f"g{i}_LABEL.png")
    assert main(["real", "--real", str(real), "--folds", "0", "--out", str(tmp_path / "real.ckpt"),
                 *TINY_MODEL, *TINY_LOOP]) == 0
    assert read_checkpoint(tmp_path / "real.ckpt")["pixel_range"] == pytest.approx([0.42, 0.55], abs=0.01)
    assert main(["finetune", "--pretrained", str(sim_ckpt), "--real", str(real), "--folds", "0",
                 "--out", str(tmp_path / "ft.ckpt"), *TINY_MODEL, *TINY_LOOP, *FT]) == 0
    assert read_checkpoint(tmp_path / "ft.ckpt")["pixel_range"] == pytest.approx([0.1, 0.55], abs=0.01)


def test_predict_resamples_into_the_models_range(sim_ckpt, tmp_path):
    apply = load_config("evaluate").apply
    cfg, notices = model_scale(sim_ckpt, apply)
    assert list(cfg.pixel_range) == [0.1, 0.14] and cfg.target_pixel_size == pytest.approx(0.12) and not notices
    predictor = Predictor(sim_ckpt, apply, "cpu")
    assert list(predictor.cfg.pixel_range) == [0.1, 0.14] and not predictor.notices
    micrograph = Micrograph(Path("m.tif"), np.ones((200, 200), np.float32), 0.4)
    scale = decide_scale(micrograph)
    image = predictor.plan(micrograph, scale)
    assert scale.pixel_size == 0.4 and image.shape == (667, 667)  # 0.4 A/px -> 0.12 A/px: 200 * 0.4 / 0.12
    # the global fallback would have fed it as it is (0.4 lies in 0.28-0.50): the bug this prevents
    fallback = predictor.configured({**apply, "pixel_range": list(FALLBACK_RANGE), "target_pixel_size": FALLBACK_TARGET})
    assert fallback.plan(micrograph, scale).shape == (200, 200)


def test_models_without_a_range_and_explicit_ranges(sim_ckpt, tmp_path):
    real = write_labelled_folder(tmp_path / "real", n=4)
    assert main(["real", "--real", str(real), "--folds", "0", "--out", str(tmp_path / "real.ckpt"),
                 *TINY_MODEL, *TINY_LOOP]) == 0
    apply = load_config("evaluate").apply
    cfg, notices = model_scale(tmp_path / "real.ckpt", apply)
    assert tuple(cfg.pixel_range) == FALLBACK_RANGE and cfg.target_pixel_size == FALLBACK_TARGET and not notices
    cfg, notices = model_scale(sim_ckpt, load_config("evaluate", ["apply.pixel_range=[0.1,0.3]"]).apply)
    assert len(notices) == 1 and notices[0].kind == "model"
    assert re.search(r"sim.ckpt: apply.pixel_range \[0.1, 0.3\].*0.100-0.140", notices[0].message)
    assert list(cfg.pixel_range) == [0.1, 0.3]  # the user's explicit choice stands, with the notice
    assert model_scale(sim_ckpt, load_config("evaluate", ["apply.pixel_range=[0.11,0.13]"]).apply)[1] == []

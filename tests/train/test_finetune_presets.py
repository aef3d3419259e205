"""Fine-tuning settings follow the preset: never a higher rate than the preset's own."""
from __future__ import annotations

import dataclasses
import warnings

import pytest

from grapheneseg.config import load_config, to_plain
from train.models import registry
from train.models.checkpoints import save_checkpoint
from train.crossval import finetune_setup
from train.models.unet import architecture, build_model


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_every_preset_fine_tunes_at_or_below_its_own_rate(preset, tmp_path):
    cfg = to_plain(load_config("train", [f"preset={preset}"]))
    arch = architecture(cfg["model"])
    ckpt = save_checkpoint(tmp_path / "sim.ckpt", build_model(arch), arch, {}, epoch=0)
    cfg["finetune"]["pretrained"] = str(ckpt)
    tuned, init, _ = finetune_setup(cfg)
    assert init is not None
    assert tuned["optim"]["lr"] == cfg["finetune"]["lr"] <= cfg["optim"]["lr"]
    assert tuned["optim"]["name"] == cfg["optim"]["name"] and tuned["optim"]["schedule"] == cfg["optim"]["schedule"]
    if preset == "paper":
        assert tuned["optim"]["lr"] <= 1e-4 and tuned["loop"]["batch_size"] == 1


def test_a_rate_above_the_preset_warns(tmp_path):
    cfg = to_plain(load_config("train", ["preset=paper", "finetune.lr=1e-3"]))
    arch = architecture(cfg["model"])
    cfg["finetune"]["pretrained"] = str(save_checkpoint(tmp_path / "s.ckpt", build_model(arch), arch, {}, epoch=0))
    with pytest.warns(UserWarning, match="exceeds the preset's own optim.lr"):
        finetune_setup(cfg)


def test_a_wider_pretrained_network_is_fine_tuned_as_it_is(tmp_path):
    """The cpu preset names 8 features; a 16-feature pretrained model keeps its 16 (its weights fit
    no other network), and the run says which config values it did not use."""
    cfg = to_plain(load_config("train", ["preset=cpu"]))
    arch = architecture({**cfg["model"], "features": 16})
    model = build_model(arch)
    cfg["finetune"]["pretrained"] = str(save_checkpoint(tmp_path / "wide.ckpt", model, arch, {}, epoch=0))
    with pytest.warns(UserWarning, match=r"wide\.ckpt: fine-tuning the pretrained network as it is: model.features 8 -> 16"):
        tuned, init, _ = finetune_setup(cfg)
    assert tuned["model"]["features"] == 16 and architecture(tuned["model"]) == arch
    net = build_model(tuned["model"])
    net.load_state_dict(init)  # the initial weights fit the network that will be trained
    cfg["finetune"]["architecture"] = "conifg"  # a typo is an error, not the other rule
    with pytest.raises(ValueError, match="finetune.architecture must be checkpoint or config"):
        finetune_setup(cfg)


def test_the_packaged_default_is_fine_tuned_as_it_is_without_a_warning():
    """A plain `train finetune` starts from the packaged model (16 features) under the cpu preset (8):
    its network is adopted as documented in its card, with no warning on every run; a checkpoint
    the user names still warns (above)."""
    cfg = to_plain(load_config("train", ["preset=cpu"]))
    cfg["finetune"]["pretrained"] = str(registry.packaged("contamination"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tuned, init, _ = finetune_setup(cfg)
    assert tuned["model"]["features"] == 16 != cfg["model"]["features"]
    build_model(tuned["model"]).load_state_dict(init)


def test_a_named_wider_checkpoint_warns_even_where_the_packaged_model_is_missing(tmp_path, monkeypatch):
    """Recognising the packaged default must not require it: an installation without it still
    fine-tunes the user's checkpoint (with the warning)."""
    monkeypatch.setitem(registry.PACKAGED, "contamination",
                        dataclasses.replace(registry.PACKAGED["contamination"], file="absent.ckpt"))
    cfg = to_plain(load_config("train", ["preset=cpu"]))
    arch = architecture({**cfg["model"], "features": 16})
    cfg["finetune"]["pretrained"] = str(save_checkpoint(tmp_path / "wide.ckpt", build_model(arch), arch, {}, epoch=0))
    with pytest.warns(UserWarning, match="model.features 8 -> 16"):
        tuned, _, _ = finetune_setup(cfg)
    assert tuned["model"]["features"] == 16

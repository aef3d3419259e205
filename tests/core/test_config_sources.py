"""One source of truth for config blocks shared by commands: the model of each preset and the
augmentation live in one file each (configs/model/, configs/augment/), so pretraining and
fine-tuning cannot drift apart."""
from __future__ import annotations


import yaml

from grapheneseg.config import load_config
from tests.conftest import ROOT

CONFIGS = ROOT / "configs"


def test_pretraining_and_finetuning_presets_share_model_and_augmentation():
    for pretrain_preset, train_preset, model in (("cpu", "cpu", "cpu"), ("gpu", "paper", "paper")):
        pre = load_config("pretrain", [f"pretrain_preset={pretrain_preset}"])
        tune = load_config("train", [f"preset={train_preset}"])
        assert pre.model == tune.model == yaml.safe_load((CONFIGS / "model" / f"{model}.yaml").read_text())
        assert pre.augment == tune.augment == yaml.safe_load((CONFIGS / "augment" / "default.yaml").read_text())


def test_no_other_file_defines_them():
    for path in CONFIGS.rglob("*.yaml"):
        if path.parent.name in ("model", "augment"):
            continue
        keys = set(yaml.safe_load(path.read_text()) or {})
        assert not keys & {"model", "augment"}, f"{path.relative_to(CONFIGS)} defines {keys & {'model', 'augment'}}"

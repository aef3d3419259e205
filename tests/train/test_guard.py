"""The fine-tuning guard and inner-validated training length (train/selection.py) on tiny data."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from grapheneseg.config import load_config
from tests.conftest import TINY_NET, write_labelled_folder
from train.models.checkpoints import read_checkpoint, save_checkpoint
from train.crossval import cross_validate, train_all
from train.models.unet import architecture, build_model
from train.selection import choose, describe, inner_splits

TINY = [*TINY_NET, "model.batch_norm=true", "loop.batch_size=4", "loop.crop=32", "loop.crops_per_image=2",
        "loop.val_every=1", "loop.checkpoint_every=100", "threads=1", "optim.lr=1e-2"]
SELECT = {"seed": 1, "few": 10, "inner_folds": 3, "holdout": 0.2}


def test_inner_splits_hold_out_whole_images_once():
    names = [f"img{i:02d}" for i in range(12)]
    (train, held), = inner_splits(names, SELECT)
    assert len(held) == 2 and not set(train) & set(held) and set(train) | set(held) == set(names)
    few = inner_splits(names[:5], SELECT)  # below `few`: 3-fold inner CV, every image held out once
    assert len(few) == 3 and sorted(n for _, h in few for n in h) == names[:5]
    assert all(not set(t) & set(h) and len(t) + len(h) == 5 for t, h in few)
    assert inner_splits(names[:5], SELECT) == few and inner_splits(names[:1], SELECT) == []


def test_inner_splits_hold_out_whole_series():
    # 12 images in 5 series (frames NAME_layer_NNNN): a frame is never held out without its series
    names = [f"{s}_layer_{i:04d}" for s, n in zip("ABCDE", (3, 3, 2, 2, 2)) for i in range(n)]
    for seed in range(20):
        for select in ({**SELECT, "seed": seed}, {**SELECT, "seed": seed, "few": 20}):
            splits = inner_splits(names, select)
            assert splits and all(len(t) + len(h) == 12 for t, h in splits)
            for train, held in splits:
                series = {n.split("_layer_")[0] for n in train} & {n.split("_layer_")[0] for n in held}
                assert not series, f"series {series} both trained on and held out (seed {seed})"
    assert {len(h) for _, h in inner_splits(names, SELECT)} <= {2, 3, 4}  # about 20 % of 12, whole series
    assert inner_splits(["A_layer_0001", "A_layer_0002"], SELECT) == []  # one series: nothing to hold out
    assert len(inner_splits(["A_layer_0001", "A_layer_0002"], SELECT, grouping="image")) == 2


def test_choice_prefers_the_pretrained_model_on_ties_and_the_shorter_length():
    good, bad = [80, 10, 10, 900], [40, 40, 50, 870]
    kept = choose({5: bad, 10: good}, 10, pretrained=good, images=({5: [bad], 10: [good]}, [good]))
    assert kept["choice"] == "pretrained" and kept["epochs"] == 0 and kept["reason"] == "not better"
    assert describe({**kept, "inner_images": 1, "inner_splits": 1}).startswith(
        "kept the pretrained model: inner validation J 0.800 vs best fine-tuned 0.800")
    tuned = choose({5: good, 10: good}, 10, pretrained=bad, n_boot=0)  # no noise check: the former rule
    assert tuned["choice"] == "fine-tuned" and tuned["epochs"] == 5 and tuned["gain"] is None
    assert choose({5: bad, 10: good}, 10)["choice"] == "trained"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A labelled folder and a model trained on it (a 'pretrained' start that already works)."""
    root = tmp_path_factory.mktemp("guard")
    real = write_labelled_folder(root / "real", n=8)
    cfg = load_config("train", TINY + ["loop.epochs=30", "loop.min_steps=0", "select.enabled=false"])
    train_all(cfg, real, root / "good.ckpt")
    return real, root


def test_guard_keeps_the_pretrained_model_when_fine_tuning_collapses(tiny, tmp_path):
    real, root = tiny
    good = root / "good.ckpt"
    cfg = load_config("train", TINY + ["loop.epochs=2", "loop.min_steps=0", f"finetune.pretrained={good}",
                                       "finetune.epochs=2", "finetune.lr=50", "optim.weight_decay=0"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_all(cfg, real, tmp_path / "ft.ckpt")
    selection = result["selection"]
    assert selection["choice"] == "pretrained" and selection["epochs"] == 0
    assert selection["pretrained_jaccard"] > selection["best_trained_jaccard"]
    saved, pre = read_checkpoint(tmp_path / "ft.ckpt"), read_checkpoint(good)
    assert all(torch.equal(saved["state_dict"][k], pre["state_dict"][k]) for k in pre["state_dict"])
    assert saved["selection"]["choice"] == "pretrained" and len(saved["train_images"]) == 8


def test_guard_fine_tunes_when_that_helps(tiny, tmp_path):
    real, _ = tiny
    arch = architecture({"depth": 2, "features": 4, "batch_norm": True})
    torch.manual_seed(3)
    useless = save_checkpoint(tmp_path / "random.ckpt", build_model(arch), arch, {}, epoch=0)
    cfg = load_config("train", TINY + ["loop.epochs=20", "loop.min_steps=0", f"finetune.pretrained={useless}",
                                       "finetune.epochs=20", "finetune.lr=1e-2", "loop.val_every=5",
                                       "cv.folds=2"])
    summary = cross_validate(cfg, real, tmp_path / "run")
    for fold in summary["selection"]:
        assert fold["choice"] == "fine-tuned" and fold["epochs"] in (5, 10, 15, 20)
        assert fold["best_trained_jaccard"] > fold["pretrained_jaccard"]
        assert fold["gain"]["low"] > 0 and fold["gain"]["n_images"] == fold["inner_images"]
        assert set(fold["curve"]) == {"5", "10", "15", "20"}
    metrics = json.loads((tmp_path / "run" / "fold_0" / "metrics.json").read_text())
    assert metrics["selection"]["choice"] == "fine-tuned"
    assert len(metrics["history"]) == metrics["selection"]["epochs"]  # retrained for the chosen length
    assert not set(metrics["train_images"]) & set(metrics["counts"])


def test_real_only_runs_choose_their_length_the_same_way(tiny, tmp_path):
    real, _ = tiny
    cfg = load_config("train", TINY + ["loop.epochs=4", "loop.min_steps=0", "loop.val_every=2"])
    result = train_all(cfg, real, tmp_path / "real.ckpt")
    assert result["selection"]["choice"] == "trained" and result["selection"]["epochs"] in (2, 4)
    assert result["selection"]["pretrained_jaccard"] is None
    assert read_checkpoint(tmp_path / "real.ckpt")["epoch"] == result["selection"]["epochs"]


def test_cli_says_what_the_guard_chose(tiny, tmp_path, capsys):
    from train.cli import main

    real, root = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["finetune", "--pretrained", str(root / "good.ckpt"), "--real", str(real), "--folds", "0",
                     "--out", str(tmp_path / "ft.ckpt"), "--json", *TINY, "loop.min_steps=0", "finetune.epochs=2",
                     "finetune.lr=50"])
    out = capsys.readouterr().out
    assert code == 0 and "kept the pretrained model: inner validation J 0." in out
    assert json.loads(out.strip().splitlines()[-1])["selection"]["choice"] == "pretrained"
    assert not (tmp_path / "ft.training").exists()

"""Honest protocol: the test fold never validates, checkpoints know their training images, and
`evaluate score` warns when a test folder overlaps them."""
from __future__ import annotations

import json

import train.crossval as crossval
from evaluate.cli import main as evaluate_main
from grapheneseg.config import load_config
from tests.conftest import TINY_BATCH, TINY_NET, write_labelled_folder
from train.models.checkpoints import read_checkpoint

TINY = [*TINY_NET, *TINY_BATCH, "loop.epochs=2", "loop.val_every=1", "loop.checkpoint_every=1", "cv.folds=2"]


def test_test_fold_never_validates_and_checkpoints_name_their_images(tmp_path, monkeypatch, capsys):
    real = write_labelled_folder(tmp_path / "real", n=6)
    made, validated, current = {}, [], {}
    real_pairs, fit, train_fold = crossval.real_pairs, crossval.fit, crossval.train_fold

    def spy_fold(config, data, split, *args, **kw):
        current["test"] = set(split["test"])
        return train_fold(config, data, split, *args, **kw)

    def spy_pairs(data, names=None, **kw):
        dataset = real_pairs(data, names, **kw)
        made[id(dataset)] = list(names)
        return dataset

    def spy_fit(config, train_set, val_set, *args, **kw):
        validated.append((current["test"], None if val_set is None else set(made[id(val_set)])))
        return fit(config, train_set, val_set, *args, **kw)

    monkeypatch.setattr(crossval, "real_pairs", spy_pairs)
    monkeypatch.setattr(crossval, "fit", spy_fit)
    monkeypatch.setattr(crossval, "train_fold", spy_fold)
    run = tmp_path / "run"
    crossval.cross_validate(load_config("train", TINY), real, run)
    splits = json.loads((run / "splits.json").read_text())
    assert len(validated) >= 2 and all(val is None or not test & val for test, val in validated)
    for split in splits:
        fold = run / f"fold_{split['fold']}"
        assert read_checkpoint(fold / "model.ckpt")["train_images"] == sorted(split["train"])
        history = json.loads((fold / "metrics.json").read_text())["history"]
        assert not any("jaccard" in h for h in history)  # no test-fold score during training

    # scoring a fold model on its own training images warns and names them
    capsys.readouterr()
    assert evaluate_main(["score", "--model", str(run / "fold_0" / "model.ckpt"), "--test", str(real), "--json"]) == 0
    err = capsys.readouterr().err
    assert "warning: 3 of the 6 test images" in err and "fold_0" in err
    assert all(name in err for name in splits[0]["train"])
    # the run folder (ensemble): every fold warns
    assert evaluate_main(["score", "--model", str(run), "--test", str(real), "--json"]) == 0
    overlap = [line for line in capsys.readouterr().err.splitlines()  # (each image's scale notices besides)
               if line.startswith("warning: ") and "test images in" in line and "were used to train" in line]
    assert len(overlap) == 2 and all(any(f"fold_{s['fold']}" in line for line in overlap) for s in splits)
    # a folder of other images: no warning
    other = write_labelled_folder(tmp_path / "other", n=2, seed=5)
    for path in other.iterdir():
        path.rename(other / path.name.replace("img", "new"))
    assert evaluate_main(["score", "--model", str(run), "--test", str(other), "--json"]) == 0
    assert "were used to train" not in capsys.readouterr().err

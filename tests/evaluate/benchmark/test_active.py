"""Training a CV fold on a given subset (cv.subset_seed, cv.train_names) and the active-labelling
simulation (evaluate/active.py) on tiny data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluate.benchmark.active import active_markdown, run_active
from evaluate.apply.predictor import Predictor
from evaluate.benchmark.scoring import fold_arm
from grapheneseg.config import load_config, to_plain
from grapheneseg.metrics import pooled
from grapheneseg.splits import kfold_splits
from tests.conftest import TINY_BATCH, TINY_NET, write_labelled_folder
from train.models.checkpoints import save_checkpoint
from train.crossval import fold_train_names, real_subset, train_all
from train.models.unet import architecture, build_model

TINY = [*TINY_NET, *TINY_BATCH, "model.batch_norm=true", "loop.epochs=1", "loop.crops_per_image=1",
        "loop.checkpoint_every=100", "finetune.epochs=1", "select.enabled=false"]
NAMES = [f"img{i:02d}" for i in range(10)]


def test_fold_train_names_from_a_file_or_another_subset_seed(tmp_path: Path) -> None:
    split = kfold_splits(NAMES, 5, 1, 12345)[1]
    cv = {"split_seed": 12345, "n_real": 3, "subset_seed": None, "train_names": None}
    assert fold_train_names(cv, split) == real_subset(split["train"], 3, 12345, 0, 1)
    other = fold_train_names({**cv, "subset_seed": 7}, split)
    assert len(other) == 3 and set(other) <= set(split["train"]) and other == real_subset(split["train"], 3, 7, 0, 1)
    assert {tuple(fold_train_names({**cv, "subset_seed": s}, split)) for s in range(6)} != {tuple(other)}

    path = tmp_path / "names.json"
    chosen = split["train"][-2:]
    path.write_text(json.dumps([{"repeat": 0, "fold": 1, "train": chosen}]))
    named = {**cv, "n_real": None, "train_names": str(path)}
    assert fold_train_names(named, split) == chosen
    with pytest.raises(ValueError, match="n_real = 3"):
        fold_train_names({**named, "n_real": 3}, split)
    with pytest.raises(ValueError, match="no training names for repeat 0 fold 2"):
        fold_train_names(named, kfold_splits(NAMES, 5, 1, 12345)[2])
    path.write_text(json.dumps([{"repeat": 0, "fold": 1, "train": [split["train"][0], split["test"][0]]}]))
    with pytest.raises(ValueError, match=r"names\.json.*test images"):
        fold_train_names(named, split)
    path.write_text(json.dumps([{"repeat": 0, "fold": 1, "train": [chosen[0], chosen[0]]}]))
    with pytest.raises(ValueError, match="distinct"):
        fold_train_names(named, split)
    with pytest.raises(ValueError, match="per CV fold"):
        train_all(load_config("train", [*TINY, f"cv.train_names={path}"]), write_labelled_folder(tmp_path / "r"),
                  tmp_path / "all.ckpt")


@pytest.mark.slow
def test_active_labelling_trains_each_arm_on_its_choice(tmp_path: Path) -> None:
    real = write_labelled_folder(tmp_path / "real", n=8)
    cfg = load_config("train", TINY)
    ckpt = save_checkpoint(tmp_path / "sim.ckpt", build_model(architecture(cfg.model)), architecture(cfg.model),
                           to_plain(cfg), 0)
    splits = kfold_splits([f"img{i:02d}" for i in range(8)], 2, 1, 5)
    out = tmp_path / "active"
    results = run_active(real, ckpt, out, splits, [1, 3], [0, 1], TINY)

    order = json.loads((out / "suggested.json").read_text())["splits"]
    for split, chosen in zip(splits, order):
        assert len(chosen["train"]) == 3 == len(set(chosen["train"])) and set(chosen["train"]) <= set(split["train"])
        fold = split["fold"]
        for k in (1, 3):
            trained = json.loads((out / f"suggest-K{k}" / f"fold_{fold}" / "metrics.json").read_text())
            assert trained["train_images"] == chosen["train"][:k]  # nested: the top 1 starts the top 3
        randoms = [json.loads((out / f"random-K3-seed{s}" / f"fold_{fold}" / "metrics.json").read_text())
                   for s in (0, 1)]
        assert all(len(r["train_images"]) == 3 and set(r["train_images"]) <= set(split["train"]) for r in randoms)
        assert sorted(randoms[0]["counts"]) == sorted(split["test"])

    by_k = results["by_k"]["3"]
    # each arm's fold models scored through the Predictor on their fold's test images
    randoms = [fold_arm(out / f"random-K3-seed{s}", "r", real, splits).pooled_all["jaccard"] for s in (0, 1)]
    assert by_k["random"] == randoms and by_k["random_mean"] == pytest.approx(np.mean(randoms))
    assert by_k["suggest"] == fold_arm(out / "suggest-K3", "s", real, splits).pooled_all["jaccard"]
    assert by_k["suggest_minus_random_mean"] == pytest.approx(by_k["suggest"] - np.mean(randoms))
    assert by_k["random_min"] <= by_k["random_mean"] <= by_k["random_max"]
    assert sum(g["images"] for g in by_k["by_label_area"]) == 8  # every test image in one group
    assert json.loads((out / "active.json").read_text())["by_k"]["3"]["suggest"] == by_k["suggest"]
    assert active_markdown(results).count("\n") == 3  # header, rule, one row per K
    zero = Predictor(ckpt, load_config("evaluate").apply).score(real)["counts"]
    assert results["zero_shot"] == pooled(np.array(zero[n]) for s in splits for n in s["test"])["jaccard"]
    save_checkpoint(ckpt, build_model(architecture(cfg.model)), architecture(cfg.model), to_plain(cfg), 1)
    with pytest.raises(ValueError, match="another checkpoint"):  # never reuse runs of other weights
        run_active(real, ckpt, out, splits, [1, 3], [0, 1], TINY)


@pytest.mark.slow
def test_full_report_holds_the_active_labelling_table(tmp_path: Path, capsys) -> None:
    from evaluate.cli import main
    from tests.evaluate.benchmark.test_report_protocol import TINY as REPORT_TINY, tiny_checkpoint

    real = write_labelled_folder(tmp_path / "real", n=8)
    out = tmp_path / "report"
    args = ["report", "--real", str(real), "--pretrained", str(tiny_checkpoint(tmp_path / "sim.ckpt", 0)),
            "--out", str(out), "--quiet", "--budget", "full", *REPORT_TINY, "report.active.ks=[2]",
            "report.active.seeds=[0,1]"]
    assert main(args) == 0, capsys.readouterr().err
    active = json.loads((out / "metrics.json").read_text())["active_labelling"]
    assert active["ks"] == [2] and active["folds"] == [0, 1] and "select.enabled=false" in active["train_overrides"]
    folder = Path(json.loads((out / "metrics.json").read_text())["provenance"]["runs"]["active labelling"]["folder"])
    assert sorted(p.name for p in folder.glob("*-K2*") if p.is_dir()) == ["random-K2-seed0", "random-K2-seed1",
                                                                           "suggest-K2"]
    splits = json.loads((folder / "suggest-K2" / "splits.json").read_text())  # the folds the arm was trained on
    assert active["by_k"]["2"]["suggest"] == fold_arm(folder / "suggest-K2", "s", real, splits).pooled_all["jaccard"]
    assert "| 2 | " in (out / "report.md").read_text() and "Active labelling" in (out / "report.html").read_text()
    # the uncertainty check: every image once, by the fold model of the fine-tuned arm that did not train on it
    check = json.loads((out / "metrics.json").read_text())["uncertainty_vs_error"]
    assert check["n_images"] == 8 and 0.0 <= check["mean_error"] <= 1.0
    assert check["error_top10_worst"] >= check["mean_error"] and "mean pixel std" in (out / "report.md").read_text()

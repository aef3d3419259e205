"""The fine-tuning guard's consistency rule (train/selection.py): with inner cross-validation,
fine-tuning must beat the pretrained model on every inner split, not only on the pooled counts."""
from __future__ import annotations

import json

import torch

from grapheneseg.config import load_config, to_plain
from grapheneseg.micrographs import load_labelled
from tests.conftest import write_labelled_folder
from train.crossval import fit_selected
from train.models.unet import architecture, build_model
from train.selection import choose, describe

# Inner counts [tp, fp, fn, tn] of fold 3 of `train finetune --n-real 5` on the 105 images
# (data/measure/ft_K5/fold_3/inner_*/curve.json): pooled, fine-tuning won 0.824 vs 0.773 at
# epoch 20, carried by the third split alone; the fine-tuned fold then scored 0.718 on its test
# images against 0.859 zero-shot.
PRETRAINED = [[12264, 1767, 399, 116642], [14794, 3344, 1448, 111486], [6231, 431, 2371, 56503]]
TUNED = [{"5": [12006, 1169, 657, 117240], "20": [12278, 1537, 385, 116872]},
         {"5": [12846, 1140, 3396, 113690], "20": [13065, 1135, 3177, 113695]},
         {"5": [7943, 425, 659, 56509], "20": [8261, 591, 341, 56343]}]


def pooled(per_split):
    return [sum(column) for column in zip(*per_split)]


def test_a_pooled_gain_carried_by_one_split_keeps_the_pretrained_model():
    curve = {e: pooled([t[e] for t in TUNED]) for e in ("5", "20")}
    splits = list(zip(TUNED, PRETRAINED))
    without = choose(curve, 20, pooled(PRETRAINED), n_boot=0)  # the pooled rule alone fine-tunes
    assert without["choice"] == "fine-tuned" and without["epochs"] == 20
    kept = choose(curve, 20, pooled(PRETRAINED), splits, n_boot=0)
    assert kept["choice"] == "pretrained" and kept["epochs"] == 0 and kept["splits_won"] == 2
    assert kept["reason"] == "splits"
    assert kept["best_trained_jaccard"] > kept["pretrained_jaccard"] == kept["jaccard"]
    line = describe({**kept, "inner_images": 5, "inner_splits": 3})
    assert line.startswith("kept the pretrained model: best fine-tuned inner validation J 0.824 vs pretrained 0.773")
    assert "won only 2 of 3 inner splits" in line


def test_fine_tuning_that_wins_every_split_is_kept():
    better = [{"20": [c[0] + c[2] // 2, c[1] // 2, c[2] - c[2] // 2, c[3] + c[1] - c[1] // 2]} for c in PRETRAINED]
    # each split's counts stand for one held-out image: fine-tuning better on all three is beyond noise
    tuned = choose({"20": pooled([b["20"] for b in better])}, 20, pooled(PRETRAINED), list(zip(better, PRETRAINED)),
                   images=({"20": [b["20"] for b in better]}, PRETRAINED))
    assert tuned["choice"] == "fine-tuned" and tuned["epochs"] == 20 and tuned["splits_won"] == 3
    assert tuned["gain"]["low"] > 0 and tuned["gain"]["n_images"] == 3
    assert choose({"20": pooled(PRETRAINED)}, 20)["splits_won"] is None  # real-only: no pretrained model


def test_fit_selected_hands_every_inner_split_to_the_guard(tmp_path):
    real = write_labelled_folder(tmp_path / "real", n=4)  # 4 < select.few: 3-fold inner CV
    cfg = to_plain(load_config("train", [
        "model.depth=2", "model.features=4", "model.batch_norm=true", "loop.batch_size=4", "loop.crop=32",
        "loop.epochs=4", "loop.val_every=2", "loop.min_steps=0", "optim.lr=1e-2", "threads=1"]))
    arch = architecture(cfg["model"])
    torch.manual_seed(3)
    init = build_model(arch).state_dict()  # random weights: any training beats them
    data = load_labelled(real)
    _, _, selection = fit_selected(cfg, data, data.names, init, tmp_path / "run")
    assert selection["inner_splits"] == 3 and selection["splits_won"] == 3
    assert selection["choice"] == "fine-tuned" and selection["best_trained_jaccard"] > selection["pretrained_jaccard"]
    # every held-out image's counts reached the guard: the interval is over the 4 images
    assert selection["gain"]["n_images"] == 4 and selection["gain"]["low"] > 0
    curves = [json.loads((tmp_path / "run" / f"inner_{i}" / "curve.json").read_text()) for i in range(3)]
    assert sum(len(c["pretrained_images"]) for c in curves) == 4
    assert all(len(c["image_counts"][e]) == len(c["held_out"]) for c in curves for e in c["counts"])


def test_inner_runs_from_before_per_image_counts_are_redone_on_resume(tmp_path):
    real = write_labelled_folder(tmp_path / "real", n=4)
    cfg = to_plain(load_config("train", [
        "model.depth=2", "model.features=4", "model.batch_norm=true", "loop.batch_size=4", "loop.crop=32",
        "loop.epochs=2", "loop.val_every=1", "loop.min_steps=0", "optim.lr=1e-2", "threads=1"]))
    torch.manual_seed(3)
    init = build_model(architecture(cfg["model"])).state_dict()
    data = load_labelled(real)
    _, _, first = fit_selected(cfg, data, data.names, init, tmp_path / "run")
    for path in (tmp_path / "run").glob("inner_*/curve.json"):  # as the former code wrote them
        old = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in old.items() if k not in ("image_counts", "pretrained_images")}))
    _, _, again = fit_selected(cfg, data, data.names, init, tmp_path / "run", resume=True)
    assert again["gain"] == first["gain"] and again["gain"]["n_images"] == 4
    assert all("pretrained_images" in json.loads(p.read_text()) for p in (tmp_path / "run").glob("inner_*/curve.json"))

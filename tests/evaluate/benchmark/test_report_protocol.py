"""`evaluate report`: one splits.json for every arm, reuse keyed by contents, quoted paths, and
paired bootstrap intervals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluate.benchmark import arms
from evaluate.cli import main
from grapheneseg.stats import paired_bootstrap
from grapheneseg.config import load_config
from tests.conftest import write_labelled_folder
from train.models.checkpoints import save_checkpoint
from train.models.unet import architecture, build_model

TINY = ["report.folds=2", "report.repeats=1", "report.ks=[3]", "report.train=[]",
        "bragg.fit.sigma_grid=[0.01]", "bragg.fit.g_thresh_grid=[2.0]", "bragg.pad=8",
        "train.model.depth=2", "train.model.features=4", "train.model.batch_norm=false",
        "train.loop.epochs=2", "train.loop.min_steps=2", "train.loop.crop=32", "train.loop.batch_size=4",
        "train.loop.crops_per_image=1", "train.finetune.epochs=2", "train.loop.val_every=1", "train.threads=1"]
ARCH = architecture({"depth": 2, "features": 4, "batch_norm": False})


def tiny_checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(path, build_model(ARCH), ARCH, {"note": "tiny"}, epoch=0)


def arm_folders(out: Path) -> set[str]:
    return {p.name for p in (out / "arms").iterdir()}


@pytest.mark.slow
def test_one_split_file_for_every_arm_and_reuse_keyed_by_contents(tmp_path, capsys):
    real = write_labelled_folder(tmp_path / "my real=data", n=8)  # a space and '=' in the path
    ckpt = tiny_checkpoint(tmp_path / "sim.ckpt", 0)
    out = tmp_path / "report"
    args = ["report", "--real", str(real), "--pretrained", str(ckpt), "--out", str(out), "--quiet", *TINY,
            "seed=7"]  # the evaluate seed differs from the U-Net arms' default cv.split_seed
    assert main(args) == 0, capsys.readouterr().err
    splits = json.loads((out / "splits.json").read_text())
    arm_splits = sorted((out / "arms").glob("*/splits.json"))
    assert len(arm_splits) == 5  # Bragg, real-only and fine-tuned at K=3 and at all
    assert all(json.loads(p.read_text()) == splits for p in arm_splits)
    for fold in (out / "arms").glob("*/fold_*/metrics.json"):
        record = json.loads(fold.read_text())
        split = next(s for s in splits if s["fold"] == record["fold"])
        assert sorted(record["counts"]) == split["test"] and set(record["train_images"]) <= set(split["train"])

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["paired_bootstrap"]) == {"3", "4"}
    for pairs in metrics["paired_bootstrap"].values():
        assert set(pairs) == {"fine-tuned - real-only", "fine-tuned - sim-only"}
        assert all(d["low"] <= d["mean"] <= d["high"] and d["n_images"] == 8 for d in pairs.values())
        assert all(d["resampled"] == "series" for d in pairs.values())  # the folds' grouping, not images
    assert "paired bootstrap 95% interval resampling whole focal series" in (out / "report.md").read_text()

    before = arm_folders(out)
    assert main(args) == 0  # same inputs: every arm reused
    assert arm_folders(out) == before
    tiny_checkpoint(ckpt, 1)  # new weights at the same path: the fine-tuned arms rerun, the others not
    assert main(args) == 0
    after = arm_folders(out)
    new = after - before
    assert len(new) == 2 and all(n.startswith("finetuned-") for n in new)
    image = real / "img00.png"  # a changed image: every arm reruns
    Image.fromarray(255 - np.array(Image.open(image))).save(image)
    assert main(args) == 0
    assert len(arm_folders(out) - after) == 5


def test_a_new_sim_file_at_the_same_path_is_pretrained_again(tmp_path):
    from tests.train.test_pretrain import TINY_LOOP, TINY_MODEL, write_sim

    sim = write_sim(tmp_path / "sim.h5", seed=0)
    budget = load_config("evaluate", ["report=quick"]).report
    extra = [*TINY_MODEL, *TINY_LOOP]
    first, sha_first = arms.pretrained_checkpoint(tmp_path, budget, sim, None, extra, {"runs": {}})
    again, _ = arms.pretrained_checkpoint(tmp_path, budget, sim, None, extra, {"runs": {}})
    sim.unlink()
    write_sim(sim, seed=1)
    second, sha_second = arms.pretrained_checkpoint(tmp_path, budget, sim, None, extra, {"runs": {}})
    assert again == first and second != first and sha_second != sha_first


def test_paired_bootstrap_interval():
    names = [f"img{i}" for i in range(40)]
    rng = np.random.default_rng(0)
    base = {n: float(v) for n, v in zip(names, rng.uniform(0.5, 0.9, 40))}
    better = {n: v + 0.05 + rng.normal(0, 0.01) for n, v in base.items()}
    d = paired_bootstrap(better, base)
    assert d["excludes_zero"] and 0.04 < d["low"] < d["mean"] < d["high"] < 0.06
    noisy = {n: v + rng.normal(0, 0.1) for n, v in base.items()}
    assert not paired_bootstrap(noisy, base)["excludes_zero"]
    repeated = {**{f"{n}@repeat1": v for n, v in better.items()}, **better}
    both = {**{f"{n}@repeat1": v for n, v in base.items()}, **base}
    assert paired_bootstrap(repeated, both)["n_images"] == 40  # repeats averaged per image
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(better, {"other": 0.5})


def test_an_arm_stopped_by_its_budget_is_said_to_be_capped():
    runs = {"U-Net real-only": {"chosen_epochs": [12, 12, 8, 12, 12], "of_epochs": [12] * 5},
            "U-Net sim-pretrained + fine-tuned": {"chosen_epochs": [0, 4, 6, 0, 2], "of_epochs": [12] * 5},
            "Bragg filter": {"folder": "x"}}
    notes = arms.capped_notes(runs)
    assert len(notes) == 1 and notes[0].startswith("U-Net real-only chose its longest training (12 epochs) "
                                                   "in 4 of 5 folds")


def test_an_arm_that_hits_its_cap_is_trained_again_longer(tmp_path, monkeypatch):
    """The real-only arm chooses the cap in some fold: it runs again at twice the epochs (and step
    floor) until no fold does, at most `extend_capped` times; the fine-tuned arm, uncapped, runs once.
    A planted report that published the capped run would show doublings 0 and 12 epochs."""
    runs = []

    def fake_cv(cfg, real, run_dir, resume=True, splits=None):
        epochs = int(cfg.finetune.epochs if cfg.finetune.pretrained else cfg.loop.epochs)
        runs.append((cfg.finetune.pretrained is None, epochs, int(cfg.loop.min_steps)))
        chosen = epochs if cfg.finetune.pretrained is None and epochs < 48 else epochs // 2
        return {"train_seconds": 1.0, "selection": [{"epochs": chosen, "of_epochs": epochs, "choice": "trained"}] * 2}

    class FakeArm:
        def __init__(self, name):
            self.name, self.summary = name, {"jaccard": {"mean": 0.5}}

    monkeypatch.setattr("train.crossval.cross_validate", fake_cv)
    monkeypatch.setattr(arms, "fold_arm", lambda run_dir, name, *a: FakeArm(name))
    budget = load_config("evaluate", ["report=quick", "report.ks=[]"]).report
    assert budget.extend_capped == 2
    provenance = {"runs": {}}
    real = write_labelled_folder(tmp_path / "real", n=4)
    splits = [{"repeat": 0, "fold": f, "train": [], "test": []} for f in range(2)]
    arms.trained_arms(tmp_path, real, budget, [], tmp_path / "sim.ckpt", "sha", "images", provenance, splits)
    real_runs = [(e, m) for real_only, e, m in runs if real_only]
    assert real_runs == [(12, 150), (24, 300), (48, 600)]
    assert [r for r in runs if not r[0]] == [(False, 12, 150)]
    record = provenance["runs"]["U-Net real-only"]
    assert record["doublings"] == 2 and record["of_epochs"] == [48, 48] and not arms.capped(record)
    notes = arms.capped_notes(provenance["runs"])
    assert notes == ["U-Net real-only hit the budget's training length and was trained again 2 time(s) at twice the "
                     "length; at 48 epochs no fold chose the cap"]

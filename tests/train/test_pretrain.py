"""Pretraining on simulated HDF5 data and fine-tuning: tiny files in the simulator's schema,
tiny U-Nets, a few steps."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from grapheneseg.config import load_config
from grapheneseg.metrics import pooled
from simulate.dataset import DatasetWriter
from simulate.pipeline import META_DTYPE
from tests.conftest import TINY_BATCH, TINY_NET, synthetic_micrograph, write_labelled_folder
from train.models.checkpoints import CheckpointError, read_checkpoint
from train.cli import main
from train.crossval import cross_validate, real_subset
from train.datasets import H5Rows, sim_pairs
from train.pretrain import pretrain, split_by_structure

TINY_MODEL = [*TINY_NET, "model.batch_norm=true"]
TINY_LOOP = [*TINY_BATCH, "loop.epochs=2", "loop.samples_per_epoch=8", "loop.val_every=1",
             "loop.checkpoint_every=1"]
SIM_PIXEL = 2.13 / 5  # A/px: the synthetic lattice's 5 px period read as graphene's 2.13 A {100} planes
FT = ["finetune.epochs=null"]  # the CPU preset fine-tunes for 20 epochs; here loop.epochs


def write_sim(path: Path, n: int = 12, variants: int = 3, seed: int = 0) -> Path:
    """A tiny simulated dataset in the simulator's HDF5 schema (written by its DatasetWriter)."""
    rng = np.random.default_rng(seed)
    attrs = {"config": "tiny", "seed": seed, "n_target": n, "variants_per_structure": variants}
    writer = DatasetWriter(path, n, 64, attrs, resume=False)
    for i in range(n):
        image, mask = synthetic_micrograph(rng, 64)
        meta = np.zeros(1, dtype=META_DTYPE)
        meta["index"], meta["seed"], meta["structure"], meta["variant"] = i, seed, i // variants, i % variants
        meta["pixel_size"] = SIM_PIXEL  # the checkpoint records it as the model's pixel range
        writer.append_arrays(image[None].astype(np.float32) / 120, mask[None].astype(np.uint8),
                             mask[None].astype(np.uint8), meta)
    writer.close(complete=True)
    return path


@pytest.fixture
def sim_file(tmp_path: Path) -> Path:
    return write_sim(tmp_path / "sim.h5")


def test_h5_rows_read_lazily_and_survive_pickling(sim_file, monkeypatch):
    rows = np.array([[0, 5], [0, 2]])
    images = H5Rows([sim_file], "images", rows)
    assert images._files == {}  # nothing opened before the first read
    opened = []
    real_open = h5py.File
    monkeypatch.setattr(h5py, "File", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    first = images[0]
    images[1]
    assert len(opened) == 1  # one handle per process, reused
    with real_open(sim_file, "r") as f:
        raw = f["images"][5]
    assert first.shape == (64, 64) and first.dtype == np.float32
    assert abs(float(first.mean()) - 1) < 0.05 and not np.allclose(first, raw)  # flat-fielded
    clone = pickle.loads(pickle.dumps(images))  # as sent to data-loader workers: no open handle
    assert clone._files == {} and np.array_equal(clone[0], first)
    dataset = sim_pairs([sim_file], rows, crop=32)
    image, mask = dataset[1]
    assert image.shape == (1, 64, 64) and mask.shape == (64, 64)


def test_validation_split_keeps_structures_whole(sim_file, tmp_path):
    other = write_sim(tmp_path / "other.h5", n=9, seed=1)
    train, val = split_by_structure([sim_file, other], 0.5, 100, seed=3)
    assert len(train) + len(val) == 21 and len(val) > 0
    key = lambda rows: {(int(f), int(r) // 3) for f, r in rows}  # (file, structure)
    assert not key(train) & key(val)
    again = split_by_structure([sim_file, other], 0.5, 100, seed=3)
    assert np.array_equal(again[1], val)
    assert len(split_by_structure([sim_file, other], 0.5, 2, seed=3)[1]) == 2


def test_real_subsets_are_seeded_and_nested():
    names = [f"im{i:03d}" for i in range(84)]
    k5, k10, k20 = (real_subset(names, k, seed=12345, repeat=0, fold=2) for k in (5, 10, 20))
    assert len(set(k10)) == 10 and set(k5) <= set(k10) <= set(k20) <= set(names)
    assert real_subset(list(reversed(names)), 10, 12345, 0, 2) == k10  # order of the input irrelevant
    assert real_subset(names, 10, 12345, 0, 3) != k10  # another fold, another subset
    assert real_subset(names, None, 12345) == names
    with pytest.raises(ValueError, match="n_real"):
        real_subset(names, 85, 12345)


def test_pretrain_then_finetune_round_trip(sim_file, tmp_path, capsys):
    real = write_labelled_folder(tmp_path / "real", n=6)
    ckpt = tmp_path / "sim.ckpt"
    cfg = load_config("pretrain", TINY_MODEL + TINY_LOOP + ["sim.val_fraction=0.3"])
    summary = pretrain(cfg, [sim_file], ckpt, real_val=real)
    assert summary["train_images"] + summary["val_images"] == 12 and summary["val_images"] > 0
    assert set(summary["sim_val"]) >= {"jaccard", "precision"} and "jaccard" in summary["real_val"]
    # throughput = samples / seconds: 2 epochs x 8 samples (seconds rounded to 0.1 in the summary)
    ips, seconds = summary["images_per_second"], summary["seconds"]
    assert summary["samples"] == 16  # what was seen (2 epochs x 8), not the size of the training part
    assert 16 / (seconds + 0.05) - 0.05 <= ips <= 16 / max(seconds - 0.05, 1e-9) + 0.05
    payload = read_checkpoint(ckpt)
    assert payload["architecture"]["features"] == 4 and (tmp_path / "sim.yaml").exists()
    assert json.loads((tmp_path / "sim.history.json").read_text())["history"][-1]["epoch"] == 2
    assert pretrain(cfg, [sim_file], ckpt, resume=True) == summary  # finished: read back

    # the real images watched while pretraining are scored at their native scale, as the inference
    # runtime scores the preprocessed images
    from grapheneseg.metrics import confusion
    from grapheneseg.micrographs import load_labelled
    from grapheneseg.preprocessing import preprocess
    from train.models.runtime import load_models, predict_probability

    data = load_labelled(real)
    prob = predict_probability(load_models(ckpt, "cpu"), np.stack([preprocess(im) for im in data.images]))
    native = pooled([confusion(p > 0.5, m) for p, m in zip(prob, data.masks)])
    assert summary["real_val"] == pytest.approx(native, abs=1e-6)

    # fine-tune with the CLI: 3-fold CV on 2 of each fold's 4 training images, simulations mixed in
    run = tmp_path / "ft"
    code = main(["finetune", "--pretrained", str(ckpt), "--real", str(real), "--out", str(run),
                 "--folds", "3", "--n-real", "2", "--json", *TINY_MODEL, *TINY_LOOP, *FT,
                 "loop.samples_per_epoch=null", "finetune.freeze_encoder_epochs=1",
                 f"finetune.sim_data=[{sim_file}]", "finetune.sim_fraction=0.5"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cv = json.loads((run / "cv_metrics.json").read_text())
    # the printed figure is the pooled metric over every test pixel of the 3 folds
    folds = [json.loads(p.read_text()) for p in sorted(run.glob("fold_*/metrics.json"))]
    counts = [np.array(c) for f in folds for c in f["counts"].values()]
    assert len(counts) == 6 and printed == cv["pooled"] == pytest.approx(pooled(counts))
    assert cv["n_real"] == 2 and cv["pretrained"] == str(ckpt)
    fold = json.loads((run / "fold_0" / "metrics.json").read_text())
    assert len(fold["train_images"]) == 2
    # the real-only arm at the same K uses the same folds and the same subsets
    code = main(["real", "--real", str(real), "--out", str(tmp_path / "real"), "--folds", "3",
                 "--n-real", "2", *TINY_MODEL, *TINY_LOOP, "loop.samples_per_epoch=null"])
    assert code == 0
    assert (run / "splits.json").read_text() == (tmp_path / "real" / "splits.json").read_text()
    assert json.loads((tmp_path / "real" / "fold_0" / "metrics.json").read_text())["train_images"] == fold["train_images"]

    # one model on all images
    code = main(["finetune", "--pretrained", str(ckpt), "--real", str(real), "--folds", "0",
                 "--out", str(tmp_path / "model.ckpt"), *TINY_MODEL, *TINY_LOOP, *FT])
    assert code == 0 and read_checkpoint(tmp_path / "model.ckpt")["architecture"]["features"] == 4


def test_min_steps_scale_small_sets_and_freezing_keeps_encoder(sim_file, tmp_path):
    real = write_labelled_folder(tmp_path / "real", n=6)
    ckpt = tmp_path / "sim.ckpt"
    pretrain(load_config("pretrain", TINY_MODEL + TINY_LOOP), [sim_file], ckpt)
    loop = [o for o in TINY_LOOP if not o.startswith("loop.min_steps")]
    cfg = load_config("train", TINY_MODEL + loop + FT + [
        "cv.folds=2", "cv.n_real=2", "loop.samples_per_epoch=null", "loop.crops_per_image=1",
        "loop.min_steps=6", f"finetune.pretrained={ckpt}", "finetune.freeze_encoder_epochs=100",
        "select.enabled=false"])  # the fixed length under test, not the inner choice
    cross_validate(cfg, real, tmp_path / "run")
    history = json.loads((tmp_path / "run" / "fold_0" / "metrics.json").read_text())["history"]
    assert len(history) == 6  # 2 epochs x 1 step < 6 steps: each epoch repeated 3 times
    from train.models.checkpoints import load_model
    tuned, pre = load_model(tmp_path / "run" / "fold_0" / "model.ckpt")[0], read_checkpoint(ckpt)["state_dict"]
    weights = tuned.state_dict()
    assert np.allclose(weights["down.0.0.weight"], pre["down.0.0.weight"])  # frozen encoder
    assert not np.allclose(weights["head.weight"], pre["head.weight"])  # decoder trained


def test_mismatched_checkpoint_names_the_field(sim_file, tmp_path, capsys):
    real = write_labelled_folder(tmp_path / "real", n=6)
    ckpt = tmp_path / "sim.ckpt"
    pretrain(load_config("pretrain", TINY_MODEL + TINY_LOOP), [sim_file], ckpt)
    cfg = load_config("train", ["model.depth=2", "model.features=8", "model.batch_norm=true",
                                f"finetune.pretrained={ckpt}", "cv.folds=2", "finetune.architecture=config"])
    with pytest.raises(CheckpointError, match="model.features is 4 in the pretrained checkpoint but 8"):
        cross_validate(cfg, real, tmp_path / "run")
    code = main(["finetune", "--pretrained", str(ckpt), "--real", str(real), "--out",
                 str(tmp_path / "run2"), "model.depth=3", "model.features=4", "model.batch_norm=true"])
    assert code == 1 and "model.depth is 2 in the pretrained checkpoint but 3" in capsys.readouterr().err


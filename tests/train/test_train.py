"""Training machinery on tiny synthetic data: 64x64 image pairs, tiny U-Nets, a few steps."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from grapheneseg.config import load_config, to_plain
from grapheneseg.micrographs import load_labelled
from grapheneseg.splits import load_or_make_splits
from train.models.checkpoints import CheckpointError, load_model, load_weights, read_checkpoint, save_checkpoint
from train.cli import main
from train.datasets import PairDataset, real_pairs
from train.loops import ce_dice_loss, fit
from train.models.unet import build_model
from tests.conftest import ROOT, TINY_BATCH, TINY_NET

TINY = [*TINY_NET, *TINY_BATCH, "loop.epochs=2", "loop.val_every=1", "loop.checkpoint_every=1"]


def write_pairs(folder: Path, n: int = 6, size: int = 64, seed: int = 0) -> Path:
    """Lattice-like stripes with noisy blobs (the 'contamination') and their labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        lattice = np.sin(xx * 1.3 + i) * np.sin(yy * 1.3)
        cy, cx, r = rng.integers(16, size - 16, 2).tolist() + [int(rng.integers(8, 14))]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        image = np.where(mask, rng.normal(0, 1.5, (size, size)), lattice) + 4
        image = np.clip(image / image.max() * 255, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"img{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"img{i}_LABEL.png")
    return folder


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("real"))


def tiny_config(*extra: str) -> dict:
    return to_plain(load_config("train", TINY + list(extra)))


def test_presets_compose():
    cpu, paper = load_config("train"), load_config("train", ["preset=paper"])
    assert cpu.model.features == 8 and cpu.model.batch_norm
    assert (paper.model.depth, paper.model.features, paper.loop.batch_size, paper.loop.epochs) == (4, 32, 1, 300)
    assert paper.optim.name == "adam" and paper.optim.lr == pytest.approx(1e-4)


@pytest.mark.parametrize("depth,bn", [(1, False), (3, True)])
def test_unet_shapes(depth, bn):
    model = build_model({"depth": depth, "features": 4, "batch_norm": bn})
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 2, 64, 64)
    with pytest.raises(ValueError, match="unknown model config keys"):
        build_model({"depth": 2, "width": 3})


def test_augmentation_is_seeded_and_geometry_follows_mask(real):
    data = load_labelled(real)
    ds = real_pairs(data, augment=tiny_config()["augment"], crop=32, seed=3)
    (a, ma), (b, mb) = ds[1], ds[1]
    assert a.shape == (1, 32, 32) and ma.shape == (32, 32) and torch.equal(a, b) and torch.equal(ma, mb)
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], a)
    # geometric transforms move mask and image together: a mask-coloured image keeps matching
    plain = PairDataset([m.astype(np.float32) + 1.0 for m in data.masks], data.masks,
                        augment={**tiny_config()["augment"], "p_brightness_contrast": 0, "p_gamma": 0,
                                 "p_shot_noise": 0, "p_gauss_noise": 0, "p_blur": 0}, crop=48, seed=5)
    for i in range(len(plain)):
        image, mask = plain[i]
        assert torch.equal(image[0] > 0, mask.bool())


def test_a_few_steps_lower_the_loss(real):
    torch.manual_seed(0)
    model = build_model({"depth": 2, "features": 4, "batch_norm": True})
    ds = real_pairs(real)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.stack([ds[i][1] for i in range(len(ds))])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = ce_dice_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_checkpoint_round_trip(tmp_path):
    model = build_model({"depth": 2, "features": 4, "batch_norm": True}).eval()
    arch = {"depth": 2, "features": 4, "batch_norm": True, "in_channels": 1, "classes": 2}
    path = save_checkpoint(tmp_path / "m.ckpt", model, arch, {"seed": 1}, 3, {"jaccard": 0.5})
    payload = torch.load(path, weights_only=True)
    assert payload["epoch"] == 3 and payload["metrics"]["jaccard"] == 0.5 and "torch" in payload["versions"]
    loaded, _ = load_model(path)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_bad_checkpoints_name_the_file(tmp_path):
    model = build_model({"depth": 2, "features": 4})
    arch = {"depth": 2, "features": 4, "batch_norm": False, "in_channels": 1, "classes": 2}
    good = save_checkpoint(tmp_path / "good.ckpt", model, arch, {}, 1)
    with pytest.raises(CheckpointError, match=r"good\.ckpt: weights do not fit"):
        load_weights(build_model({"depth": 3, "features": 4}), read_checkpoint(good), good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt: not a readable checkpoint"):
        load_model(truncated)
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match=r"other\.ckpt: not a grapheneseg-unet checkpoint"):
        load_model(other)
    png = tmp_path / "image.ckpt"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, format="PNG")
    with pytest.raises(CheckpointError, match="image.ckpt"):
        load_model(png)
    with pytest.raises(CheckpointError, match="missing.ckpt: checkpoint file not found"):
        load_model(tmp_path / "missing.ckpt")


def test_cv_splits_disjoint_and_cover(real, tmp_path):
    names = load_labelled(real).names
    splits = load_or_make_splits(tmp_path / "splits.json", names, 3, 2, 7)
    assert len(splits) == 6
    for repeat in (0, 1):
        tests = [set(s["test"]) for s in splits if s["repeat"] == repeat]
        assert sorted(set().union(*tests)) == sorted(names) and sum(map(len, tests)) == len(names)
        for s in splits:
            assert not set(s["train"]) & set(s["test"]) and set(s["train"]) | set(s["test"]) == set(names)
    assert load_or_make_splits(tmp_path / "splits.json", names, 3, 2, 7) == splits


def test_resume_continues_to_the_same_weights(real, tmp_path):
    config = tiny_config("loop.epochs=3")
    data = load_labelled(real)

    def dataset(stop_at: int | None = None) -> PairDataset:
        ds = real_pairs(data, augment=config["augment"], crop=32, seed=config["seed"])
        if stop_at is not None:  # an interruption at the start of epoch `stop_at`
            original = ds.set_epoch

            def set_epoch(epoch: int) -> None:
                if epoch == stop_at:
                    raise KeyboardInterrupt
                original(epoch)

            ds.set_epoch = set_epoch
        return ds

    full, _ = fit(config, dataset(), None, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        fit(config, dataset(stop_at=2), None, tmp_path / "resumed")
    assert read_checkpoint(tmp_path / "resumed" / "last.ckpt")["epoch"] == 2
    resumed, result = fit(config, dataset(), None, tmp_path / "resumed", resume=True)
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    with pytest.raises(CheckpointError, match="last.ckpt: architecture"):
        fit(tiny_config("loop.epochs=3", "model.features=8"), dataset(), None, tmp_path / "resumed",
            resume=True)


def test_cli_cross_validation_and_all_images(real, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["real", "--real", str(real), "--out", str(run), "--folds", "3", "--json", *TINY]) == 0
    pooled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(pooled) == {"accuracy", "balanced_accuracy", "jaccard", "f1", "precision", "recall"}
    assert (run / "splits.json").exists() and (run / "config.yaml").exists()
    assert sorted(p.name for p in run.glob("fold_*")) == ["fold_0", "fold_1", "fold_2"]
    for fold in run.glob("fold_*"):
        assert (fold / "model.ckpt").exists() and not (fold / "last.ckpt").exists()
        assert "test" in json.loads((fold / "metrics.json").read_text())
    summary = json.loads((run / "cv_metrics.json").read_text())
    assert len(summary["per_image"]) == 6 and len(summary["per_fold"]) == 3
    # --resume on a finished run reads the folds back instead of retraining
    assert main(["real", "--real", str(real), "--out", str(run), "--folds", "3", "--resume", "--json", *TINY]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == pooled

    ckpt = tmp_path / "all.ckpt"
    assert main(["real", "--real", str(real), "--folds", "0", "--out", str(ckpt), *TINY]) == 0
    assert read_checkpoint(ckpt)["config"]["cv"]["folds"] == 0 and (tmp_path / "all.yaml").exists()


def test_cli_quiet_hides_the_training_bars(real, tmp_path, capsys):
    assert main(["real", "--real", str(real), "--folds", "0", "--out", str(tmp_path / "a.ckpt"), *TINY]) == 0
    assert "step/s" in capsys.readouterr().err  # the bar, where it is not asked away
    assert main(["real", "--real", str(real), "--folds", "0", "--out", str(tmp_path / "b.ckpt"), "--quiet", *TINY]) == 0
    assert "step/s" not in capsys.readouterr().err


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    assert main(["real", "--real", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "Traceback" not in err
    assert main(["real", "--out", str(tmp_path / "r"), "loop.nonsense=1"]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_installed_command_uses_this_package():
    exe = Path(sys.executable).with_name("train")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "real" in out
    code = "import train, pathlib; print(pathlib.Path(train.__file__).resolve().parent.parent)"
    root = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd="/").stdout.strip()
    assert Path(root) == ROOT
